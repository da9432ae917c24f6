"""Class-weighted losses for SPFT with unknown (NaN) labels masked out.

The weight multiplies both terms of the BCE (a class weight, not ``pos_weight``, docs/design.md#loss): the paper's
rule, ``apply="both"``. ``apply="positive"`` (``recipe.class_weights.apply``) multiplies only the positive term, as
``binary_cross_entropy_with_logits(pos_weight=w)`` does. Reduction:
sum over classes, mean over samples, i.e. the sum of the known terms divided by the batch size N. Dividing by N
rather than by the number of known labels keeps each class's share of the gradient proportional to its weight,
whatever the number of unknowns in a batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from spft.errors import ConfigError


def _check_shapes(logits: Tensor, targets: Tensor, weights: Tensor) -> None:
    if logits.shape != targets.shape or logits.ndim != 2:
        raise ConfigError(f"logits and targets must both be [N, C], got {tuple(logits.shape)} and "
                         f"{tuple(targets.shape)}")
    if weights.shape != (logits.shape[1],):
        raise ConfigError(f"weights must be [C] = [{logits.shape[1]}], got {tuple(weights.shape)}")


APPLY = ("both", "positive")


def weighted_bce(logits: Tensor, targets: Tensor, weights: Tensor, apply: str = "both") -> Tensor:
    """``mean_n -sum_c w_c [y log sigma(x) + (1 - y) log(1 - sigma(x))]`` over known (non-NaN) targets
    (``apply="both"``, the paper's rule), or ``mean_n -sum_c [w_c y log sigma(x) + (1 - y) log(1 - sigma(x))]``
    (``apply="positive"``: BCE's ``pos_weight``).

    Args:
        logits: ``[N, C]`` raw scores.
        targets: ``[N, C]`` in [0, 1], NaN for unknown.
        weights: ``[C]`` class weights.
        apply: ``"both"`` or ``"positive"`` (``recipe.class_weights.apply``).

    Returns:
        Scalar loss (0 for an empty batch, still connected to the graph).
    """
    if apply not in APPLY:
        raise ConfigError(f"'recipe.class_weights.apply': expected one of {', '.join(APPLY)}, got {apply!r}")
    weights = torch.as_tensor(weights, device=logits.device)
    _check_shapes(logits, targets, weights)
    known = ~torch.isnan(targets)
    safe_targets = torch.where(known, targets, torch.zeros_like(targets)).to(logits.dtype)
    w = weights.to(logits.dtype)
    if apply == "positive":
        per_term = F.binary_cross_entropy_with_logits(logits, safe_targets, reduction="none", pos_weight=w)
    else:
        per_term = F.binary_cross_entropy_with_logits(logits, safe_targets, reduction="none") * w
    per_term = torch.where(known, per_term, torch.zeros_like(per_term))
    return per_term.sum() / max(logits.shape[0], 1)


def weighted_ce(logits: Tensor, targets_onehot: Tensor, weights: Tensor) -> Tensor:
    """Softmax cross-entropy ``mean_n -sum_c w_c y_c log softmax(x)_c`` (one-hot or soft targets).

    Rows whose targets are all NaN are skipped (they add 0; the sum is still divided by the batch size N, as in
    :func:`weighted_bce`); stray NaNs in other rows count as 0.
    """
    weights = torch.as_tensor(weights, device=logits.device)
    _check_shapes(logits, targets_onehot, weights)
    nan = torch.isnan(targets_onehot)
    valid_rows = ~nan.all(dim=1)
    targets = torch.where(nan, torch.zeros_like(targets_onehot), targets_onehot)
    log_probs = F.log_softmax(logits.float(), dim=1)
    per_row = -(targets.float() * log_probs * weights.float()).sum(dim=1)
    per_row = torch.where(valid_rows, per_row, torch.zeros_like(per_row))
    return per_row.sum() / max(logits.shape[0], 1)
