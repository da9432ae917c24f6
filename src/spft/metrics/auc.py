"""Per-class ROC AUC and macro AUC over a whole evaluated set — never per batch.

AUC is the Mann-Whitney statistic with average ranks for ties (identical to scikit-learn's `roc_auc_score`,
which the tests use as reference). We compute it ourselves because the recipe needs the per-class bookkeeping
sklearn does not do: unknown labels (NaN) masked per class, and classes without both a positive and a negative
reported as undefined and excluded from the macro mean (listed, never scored 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.stats import rankdata

from spft.errors import DataError


def binary_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """ROC AUC of ``scores`` for binary ``labels`` (NaN labels ignored); ``None`` when undefined.

    >>> binary_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    0.75
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    known = ~np.isnan(labels)
    scores, labels = scores[known], labels[known] > 0.5
    n_pos = int(labels.sum())
    n_neg = int(labels.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(scores)  # average ranks for ties
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


@dataclass
class AucResult:
    """Per-class AUC (None where undefined), the macro mean over defined classes and the excluded classes."""

    classes: list[str]
    per_class: dict[str, float | None]
    macro: float | None
    excluded: list[str] = field(default_factory=list)

    def as_list(self) -> list[float | None]:
        return [self.per_class[c] for c in self.classes]


def multilabel_auc(probs: np.ndarray, labels: np.ndarray, classes: list[str]) -> AucResult:
    """AUC per column of ``probs``/``labels`` ([N, C]; NaN labels = unknown) and their macro mean.

    A class needs at least one positive and one negative known label in the set; otherwise its AUC is
    ``None`` and it is listed in ``excluded``. ``macro`` is ``None`` only if no class is defined.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if probs.shape != labels.shape or probs.ndim != 2 or probs.shape[1] != len(classes):
        raise DataError(f"probs {probs.shape} and labels {labels.shape} must both be [N, {len(classes)}]")
    per_class = {c: binary_auc(probs[:, i], labels[:, i]) for i, c in enumerate(classes)}
    defined = [v for v in per_class.values() if v is not None]
    excluded = [c for c, v in per_class.items() if v is None]
    macro = float(np.mean(defined)) if defined else None
    return AucResult(classes=list(classes), per_class=per_class, macro=macro, excluded=excluded)
