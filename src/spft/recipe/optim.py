"""AdamW parameter groups for SPFT: one per (part, decay/no-decay), all created once at the start.

Frozen parts get their groups up front and simply receive no gradient until they open. Unfreezing therefore never
calls ``add_param_group``, which would break optimizer/scheduler state on resume (Lightning #6891, #8720, #21901;
docs/decisions.md, rule 1). Encoder parts get the encoder LR, the head the head LR (differential LRs,
docs/design.md#optimizer-groups-and-learning-rates).
"""

from __future__ import annotations

import torch
from torch import nn

from spft.errors import ConfigError
from spft.recipe.layers import HEAD, LayerGroups

_NO_DECAY_NAME_KEYS = ("token", "position")


def _no_decay(module: nn.Module, param_name: str, param: torch.Tensor) -> bool:
    """True for parameters that should not be decayed: biases, norms, 1-D params, embedding tokens/positions."""
    if param.ndim <= 1 or param_name.endswith("bias"):
        return True
    if "Norm" in type(module).__name__:
        return True
    return any(key in param_name for key in _NO_DECAY_NAME_KEYS)


def _split_part(part: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Parameters of one part split into (decay, no_decay), each listed once."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for mod_name, mod in part.named_modules():
        for p_name, p in mod.named_parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            full_name = f"{mod_name}.{p_name}" if mod_name else p_name
            (no_decay if _no_decay(mod, full_name, p) else decay).append(p)
    return decay, no_decay


def build_param_groups(
    groups: LayerGroups, lr_encoder: float, lr_head: float, weight_decay: float = 0.05
) -> list[dict]:
    """Optimizer parameter groups for every part, frozen or not.

    Each dict carries, besides ``params``/``lr``/``weight_decay``: ``name`` (``"block3/decay"``), ``part``
    (``"block3"``), ``block`` (int or None) and ``base_lr``. Empty groups are omitted.

    Raises:
        ValueError: If a learning rate or the weight decay is negative, or a parameter belongs to two parts.
    """
    for field_name, value in (("lr_encoder", lr_encoder), ("lr_head", lr_head), ("weight_decay", weight_decay)):
        if value < 0:
            raise ConfigError(f"{field_name} must be >= 0, got {value}")
    owner: dict[int, str] = {}
    param_groups: list[dict] = []
    for part, module, block in groups.named_parts():
        lr = lr_head if part == HEAD else lr_encoder
        decay, no_decay = _split_part(module)
        for p in decay + no_decay:
            if id(p) in owner:
                raise ConfigError(f"a parameter of shape {tuple(p.shape)} is shared by parts {owner[id(p)]!r} and "
                                 f"{part!r}; each parameter must belong to exactly one part")
            owner[id(p)] = part
        for kind, params, wd in (("decay", decay, weight_decay), ("no_decay", no_decay, 0.0)):
            if params:
                param_groups.append({"params": params, "lr": lr, "weight_decay": wd, "name": f"{part}/{kind}",
                                     "part": part, "block": block, "base_lr": lr})
    return param_groups


def build_optimizer(
    groups: LayerGroups,
    lr_encoder: float,
    lr_head: float,
    weight_decay: float = 0.05,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    """AdamW over :func:`build_param_groups` (defaults: encoder 3e-6, head 5e-5, weight decay 0.05, as in
    docs/design.md#defaults)."""
    param_groups = build_param_groups(groups, lr_encoder, lr_head, weight_decay)
    return torch.optim.AdamW(param_groups, lr=lr_head, betas=betas, eps=eps, weight_decay=weight_decay)
