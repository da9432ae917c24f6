"""Class-aware weights for SPFT: inverse-prevalence init, heuristic multipliers, AUC-driven refinement.

w0_c = N_neg,c / N_pos,c on the training split (unknown labels not counted), normalised to mean 1, multiplied by
optional per-class heuristics, then refined after each stage-2 validation from per-class AUC
(docs/design.md#class-weights). Detection uses instance counts instead (docs/design.md#detection). Torch and the
standard library only, so every engine can share it.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence

import torch

from spft.errors import ConfigError


def _fill_undefined(w0: torch.Tensor, defined: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Replace undefined entries by the mean of the defined ones (1.0 if none is defined)."""
    fill = w0[defined].mean() if bool(defined.any()) else torch.tensor(1.0, dtype=w0.dtype)
    undefined = [int(i) for i in torch.nonzero(~defined).flatten()]
    return torch.where(defined, w0, fill), undefined


def initial_weights(labels: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Inverse-prevalence weights ``w0_c = N_neg,c / N_pos,c`` over known labels.

    Args:
        labels: ``[N, C]`` floats, 1 positive, 0 negative, NaN unknown (soft labels count fractionally).

    Returns:
        ``(w0, undefined)``: un-normalised weights ``[C]`` and the indices of classes without positives or without
        negatives, which get the mean of the defined weights (the engine warns about them).

    >>> initial_weights(torch.tensor([[1.0], [0.0], [0.0]]))
    (tensor([2.]), [])
    """
    labels = torch.as_tensor(labels, dtype=torch.float64)
    if labels.ndim != 2:
        raise ConfigError(f"labels must be [N, C], got shape {tuple(labels.shape)}")
    known = ~torch.isnan(labels)
    y = torch.where(known, labels, torch.zeros_like(labels))
    n_pos = y.sum(0)
    n_neg = (known.to(labels.dtype) - y).sum(0)
    defined = (n_pos > 0) & (n_neg > 0)
    w0 = torch.where(defined, n_neg / n_pos.clamp_min(1e-12), torch.zeros_like(n_pos))
    w0, undefined = _fill_undefined(w0, defined)
    return w0.to(torch.float32), undefined


def detection_initial_weights(instance_counts: Sequence[int]) -> torch.Tensor:
    """Detection class weights ``w0_c = (N_total - n_c) / n_c``, normalised to mean 1 (docs/design.md#detection).

    Classes with no instances (or holding every instance) get the mean of the defined weights.

    >>> detection_initial_weights([1, 3])
    tensor([1.8000, 0.2000])
    """
    counts = torch.as_tensor(list(instance_counts), dtype=torch.float64)
    if counts.ndim != 1 or counts.numel() == 0:
        raise ConfigError("instance_counts must be a non-empty list of per-class counts")
    if bool((counts < 0).any()):
        raise ConfigError(f"instance_counts must be >= 0, got {list(instance_counts)}")
    total = counts.sum()
    defined = (counts > 0) & (counts < total)
    w0 = torch.where(defined, (total - counts) / counts.clamp_min(1.0), torch.zeros_like(counts))
    w0, _ = _fill_undefined(w0, defined)
    return normalise(w0.to(torch.float32))


def normalise(w: torch.Tensor) -> torch.Tensor:
    """``w / mean(w)``: weights with mean 1."""
    mean = w.mean()
    if not bool(mean > 0):
        raise ConfigError(f"cannot normalise weights with mean {float(mean)}")
    return w / mean


def _check_multipliers(classes: Sequence[str], multipliers: dict[str, float]) -> None:
    for name, value in multipliers.items():
        if name not in classes:
            close = difflib.get_close_matches(str(name), list(classes), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"recipe.class_weights.heuristic: unknown class {name!r}.{hint} Valid names: "
                              f"{', '.join(classes)} (recipe.class_weights.heuristic={{}} sets no multiplier)")
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ConfigError(f"recipe.class_weights.heuristic: the multiplier for {name!r} must be a positive "
                              f"number, got {value!r}")


def apply_heuristics(w: torch.Tensor, classes: Sequence[str], multipliers: dict[str, float]) -> torch.Tensor:
    """Multiply weights by per-class-name multipliers, then renormalise to mean 1.

    Raises:
        ValueError: For an unknown class name (the message names it and lists valid names) or a non-positive
            multiplier.
    """
    if len(classes) != w.numel():
        raise ConfigError(f"{len(classes)} class names for {w.numel()} weights")
    _check_multipliers(classes, multipliers)
    factors = torch.tensor([float(multipliers.get(c, 1.0)) for c in classes], dtype=w.dtype)
    return normalise(w * factors)


def _is_defined(auc: float | None) -> bool:
    return auc is not None and not math.isnan(auc)


def refine(w: torch.Tensor, aucs: Sequence[float | None], reference: torch.Tensor, eta: float = 1.0,
           w_min: float = 0.1, w_max: float = 10.0) -> torch.Tensor:
    """One AUC-driven refinement: ``w_c *= exp(eta * (mean_auc - auc_c))``, clip, renormalise to mean 1.

    Classes whose AUC is None or NaN keep their weight (before renormalisation); ``mean_auc`` is over the defined
    ones. Weights are clipped to ``[w_min * reference_c, w_max * reference_c]``.
    """
    if len(aucs) != w.numel() or reference.numel() != w.numel():
        raise ConfigError(f"got {len(aucs)} AUCs and {reference.numel()} reference weights for {w.numel()} classes")
    if eta < 0:
        raise ConfigError(f"eta must be >= 0, got {eta}")
    if not 0 < w_min <= w_max:
        raise ConfigError(f"need 0 < w_min <= w_max, got w_min={w_min}, w_max={w_max}")
    defined = [_is_defined(a) for a in aucs]
    if not any(defined):
        return w.clone()
    mean_auc = sum(float(a) for a, d in zip(aucs, defined) if d) / sum(defined)
    exponent = torch.tensor([eta * (mean_auc - float(a)) if d else 0.0 for a, d in zip(aucs, defined)],
                            dtype=torch.float64)
    new = w.to(torch.float64) * torch.exp(exponent)
    ref = reference.to(torch.float64)
    new = torch.minimum(torch.maximum(new, w_min * ref), w_max * ref)
    return normalise(new).to(w.dtype)


def _to_dict(classes: Sequence[str], w: torch.Tensor) -> dict[str, float]:
    return {c: float(v) for c, v in zip(classes, w.tolist())}


class ClassWeights:
    """Class weights of one run: initial, after heuristics, current, and every refinement (for logs and resume).

    Args:
        classes: Class names, in label-column order.
        labels: Training-split labels ``[N, C]`` (NaN unknown); may be None when ``enabled`` is False.
        heuristic: Optional ``{class_name: multiplier}``; names are validated even when disabled.
        enabled: False gives all weights 1.0 and makes :meth:`refine` a no-op (the "no class weights" ablation).
        eta: Refinement step size.
        w_min: Lower clip, relative to the weights after heuristics.
        w_max: Upper clip, relative to the weights after heuristics.
    """

    def __init__(self, classes: Sequence[str], labels: torch.Tensor | None, heuristic: dict[str, float] | None = None,
                 enabled: bool = True, eta: float = 1.0, w_min: float = 0.1, w_max: float = 10.0) -> None:
        self.classes = list(classes)
        self.heuristic = dict(heuristic or {})
        self.enabled = enabled
        self.eta, self.w_min, self.w_max = eta, w_min, w_max
        self.refinements: list[dict] = []
        self.undefined: list[int] = []
        _check_multipliers(self.classes, self.heuristic)
        if enabled:
            if labels is None:
                raise ConfigError("labels are required when class weights are enabled")
            w0, self.undefined = initial_weights(labels)
            if w0.numel() != len(self.classes):
                raise ConfigError(f"labels have {w0.numel()} columns but {len(self.classes)} classes were given")
            self.initial = normalise(w0)
            self.after_heuristics = apply_heuristics(self.initial, self.classes, self.heuristic)
        else:
            self.initial = torch.ones(len(self.classes))
            self.after_heuristics = self.initial.clone()
        self.current = self.after_heuristics.clone()

    @property
    def undefined_classes(self) -> list[str]:
        """Names of classes whose initial weight was undefined (no positives or no negatives)."""
        return [self.classes[i] for i in self.undefined]

    def refine(self, epoch: int, aucs: Sequence[float | None]) -> torch.Tensor:
        """Refine from per-class validation AUCs (None/NaN: undefined) and record the update; returns current."""
        if not self.enabled:
            return self.current
        self.current = refine(self.current, aucs, self.after_heuristics, self.eta, self.w_min, self.w_max)
        self.refinements.append({"epoch": int(epoch), "weights": _to_dict(self.classes, self.current)})
        return self.current

    def as_dict(self) -> dict:
        """JSON-ready summary for metrics/run directories."""
        return {
            "classes": list(self.classes),
            "initial": _to_dict(self.classes, self.initial),
            "after_heuristics": _to_dict(self.classes, self.after_heuristics),
            "current": _to_dict(self.classes, self.current),
            "refinements": [{"epoch": r["epoch"], "weights": dict(r["weights"])} for r in self.refinements],
            "enabled": self.enabled,
            "undefined_classes": self.undefined_classes,
        }

    def state_dict(self) -> dict:
        """Everything needed to resume exactly (tensors cloned, so later refinements do not alter it)."""
        return {
            "classes": list(self.classes), "heuristic": dict(self.heuristic), "enabled": self.enabled,
            "eta": self.eta, "w_min": self.w_min, "w_max": self.w_max, "undefined": list(self.undefined),
            "initial": self.initial.clone(), "after_heuristics": self.after_heuristics.clone(),
            "current": self.current.clone(),
            "refinements": [{"epoch": r["epoch"], "weights": dict(r["weights"])} for r in self.refinements],
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore from :meth:`state_dict`; the class list must match."""
        if list(state["classes"]) != self.classes:
            raise ConfigError(f"class-weight state is for classes {state['classes']}, this run has {self.classes}")
        self.heuristic = dict(state["heuristic"])
        self.enabled = bool(state["enabled"])
        self.eta, self.w_min, self.w_max = state["eta"], state["w_min"], state["w_max"]
        self.undefined = list(state["undefined"])
        self.initial = state["initial"].clone()
        self.after_heuristics = state["after_heuristics"].clone()
        self.current = state["current"].clone()
        self.refinements = [{"epoch": r["epoch"], "weights": dict(r["weights"])} for r in state["refinements"]]
