"""Operating points: per-class decision thresholds chosen on validation, and the metrics at a threshold.

A score is called positive when ``score >= threshold``. Unknown labels (NaN) are masked per class, as everywhere in
spft. Thresholds are chosen per class among the distinct validation scores (plus, for a specificity target, one
value just above the highest score, where every image is called negative):

* ``youden`` (default): the threshold maximising Youden's J = sensitivity + specificity - 1;
* ``sensitivity``: the highest threshold whose sensitivity reaches ``target`` (the most specific such point);
* ``specificity``: the lowest threshold whose specificity reaches ``target`` (the most sensitive such point);
* ``f1``: the threshold maximising F1.

Ties (several thresholds with the same best J or F1) go to the highest threshold, so the choice is deterministic.
A class without a positive or without a negative known label has no threshold (``None``): the choice is undefined.

Metrics at a threshold: sensitivity TP/(TP+FN), specificity TN/(TN+FP), PPV TP/(TP+FP), NPV TN/(TN+FN) and F1
2TP/(2TP+FP+FN), each ``None`` when its denominator is 0 (never NaN, so JSON stays valid). Macro values are means
over the classes where the value is defined.

>>> s = np.array([0.1, 0.4, 0.35, 0.8]); y = np.array([0, 0, 1, 1])
>>> choose_threshold(s, y)  # J = 0.5 at 0.8 and at 0.35: the highest wins
0.8
>>> choose_threshold(s, y, "sensitivity", 0.9)
0.35
>>> threshold_metrics(s, y, 0.35)["sensitivity"], threshold_metrics(s, y, 0.35)["specificity"]
(1.0, 0.5)
>>> choose_threshold(s, y, "specificity", 0.9)
0.8
"""

from __future__ import annotations

import math

import numpy as np

from spft.errors import ConfigError, DataError

METHODS = ("youden", "sensitivity", "specificity", "f1")
METRICS = ("sensitivity", "specificity", "ppv", "npv", "f1")


def check_method(method: str, target: float | None) -> None:
    """Refuse an unknown method, a missing target for ``sensitivity``/``specificity``, or a target outside (0, 1)."""
    if method not in METHODS:
        raise ConfigError(f"threshold method: expected one of {', '.join(METHODS)}, got {method!r}")
    if method in ("sensitivity", "specificity"):
        if target is None:
            raise ConfigError(f"threshold method {method!r} needs a target in (0, 1) (evaluation.target)")
        if not 0.0 < float(target) < 1.0:
            raise ConfigError(f"threshold target: expected a value in (0, 1), got {target}")


def _known(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels, dtype=np.float64).ravel()
    if scores.shape != labels.shape:
        raise DataError(f"scores {scores.shape} and labels {labels.shape} must have the same length")
    known = ~np.isnan(labels)
    return scores[known], labels[known] > 0.5


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


def confusion(scores, labels, threshold: float) -> tuple[int, int, int, int]:
    """``(TP, FP, TN, FN)`` at ``threshold`` (positive when ``score >= threshold``), unknown labels ignored."""
    s, y = _known(scores, labels)
    pred = s >= threshold
    return (int((pred & y).sum()), int((pred & ~y).sum()), int((~pred & ~y).sum()), int((~pred & y).sum()))


def metrics_from_counts(tp: float, fp: float, tn: float, fn: float) -> dict[str, float | None]:
    """Sensitivity, specificity, PPV, NPV and F1 from confusion counts (``None`` where a denominator is 0)."""
    return {"sensitivity": _ratio(tp, tp + fn), "specificity": _ratio(tn, tn + fp), "ppv": _ratio(tp, tp + fp),
            "npv": _ratio(tn, tn + fn), "f1": _ratio(2 * tp, 2 * tp + fp + fn)}


def threshold_metrics(scores, labels, threshold: float | None) -> dict[str, float | None]:
    """``{threshold, sensitivity, specificity, ppv, npv, f1}`` at ``threshold`` (all ``None`` when it is None)."""
    if threshold is None:
        return {"threshold": None, **{m: None for m in METRICS}}
    return {"threshold": float(threshold), **metrics_from_counts(*confusion(scores, labels, threshold))}


def _curve(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct scores in decreasing order, and TP and FP counts when each is the threshold."""
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    ends = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]  # last index of each run of tied scores
    tp = np.cumsum(y)[ends].astype(np.float64)
    fp = np.cumsum(~y)[ends].astype(np.float64)
    return s[ends], tp, fp


def choose_threshold(scores, labels, method: str = "youden", target: float | None = None) -> float | None:
    """The threshold of one class chosen on (validation) ``scores``/``labels`` by ``method``; None when undefined
    (no positive or no negative known label)."""
    check_method(method, target)
    s, y = _known(scores, labels)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    thr, tp, fp = _curve(s, y)  # thresholds decreasing; tp, fp increasing
    sens, spec = tp / n_pos, 1.0 - fp / n_neg
    if method == "youden":
        return float(thr[int(np.argmax(sens + spec - 1.0))])  # argmax: the first (highest) of equals
    if method == "f1":
        f1 = 2 * tp / (2 * tp + fp + (n_pos - tp))
        return float(thr[int(np.argmax(f1))])
    if method == "sensitivity":
        return float(thr[int(np.flatnonzero(sens >= target - 1e-12)[0])])  # the lowest threshold gives 1.0
    ok = np.flatnonzero(spec >= target - 1e-12)
    if ok.size == 0:  # even the highest score is a false positive: call every image negative
        return float(np.nextafter(thr[0], np.inf))
    return float(thr[int(ok[-1])])


def choose_thresholds(probs, labels, classes: list[str], method: str = "youden",
                      target: float | None = None) -> dict[str, float | None]:
    """Per-class thresholds for ``probs``/``labels`` ([N, C], NaN = unknown label)."""
    probs, labels = _matrix(probs, labels, classes)
    return {c: choose_threshold(probs[:, j], labels[:, j], method, target) for j, c in enumerate(classes)}


def operating_points(probs, labels, classes: list[str],
                     thresholds: dict[str, float | None]) -> dict[str, dict[str, float | None] | None]:
    """Per class ``{threshold, sensitivity, specificity, ppv, npv, f1}`` at the given thresholds; a class whose
    threshold is None gets None."""
    probs, labels = _matrix(probs, labels, classes)
    return {c: (threshold_metrics(probs[:, j], labels[:, j], thresholds[c]) if thresholds.get(c) is not None
                else None) for j, c in enumerate(classes)}


def macro_operating_point(points: dict[str, dict | None]) -> dict[str, float | None]:
    """Mean of each metric over the classes where it is defined (``None`` when it is defined for none)."""
    out = {}
    for m in METRICS:
        values = [p[m] for p in points.values() if p is not None and p.get(m) is not None]
        out[m] = float(np.mean(values)) if values else None
    return out


def per_class_auprc(probs, labels, classes: list[str]) -> dict[str, float | None]:
    """AUPRC (scikit-learn's ``average_precision_score``) per class, unknown labels dropped; None without a positive
    (AUPRC is defined with positives alone: a class without negatives scores 1.0)."""
    from sklearn.metrics import average_precision_score

    probs, labels = _matrix(probs, labels, classes)
    out = {}
    for j, c in enumerate(classes):
        s, y = _known(probs[:, j], labels[:, j])
        out[c] = float(average_precision_score(y, s)) if y.any() else None
    return out


def macro(values: dict[str, float | None]) -> float | None:
    """Mean over the defined (not None, finite) values; None when none is defined."""
    defined = [v for v in values.values() if v is not None and math.isfinite(v)]
    return float(np.mean(defined)) if defined else None


def _matrix(probs, labels, classes) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if probs.shape != labels.shape or probs.ndim != 2 or probs.shape[1] != len(classes):
        raise DataError(f"probs {probs.shape} and labels {labels.shape} must both be [N, {len(classes)}]")
    return probs, labels
