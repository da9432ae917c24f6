"""Calibration: expected calibration error, reliability-curve data and temperature scaling (numpy/scipy only).

Probabilities spft reports are ``sigmoid(logit / T)`` (multi-label, ``loss: bce``) or ``softmax(logits / T)``
(single-label, ``loss: ce``) with one scalar temperature ``T > 0`` fitted on the validation logits by minimising
the negative log-likelihood (``T = 1``: no calibration). Dividing by ``T`` keeps each class's ranking for sigmoid
outputs, so per-class AUC is unchanged there.

ECE uses ``BINS = 15`` equal-width bins on [0, 1]: a probability ``p`` falls in bin ``min(floor(15 p), 14)``, and
ECE = sum over bins of (images in bin / images) x |fraction positive - mean probability|. Multi-label: one ECE per
class over its known labels (unknown = NaN, masked), and the macro mean over classes with a known label.
Single-label: the top-label ECE (confidence = the highest probability, accuracy = whether that class is the label;
rows without a known label are left out).

>>> round(ece(np.array([0.9, 0.9, 0.1, 0.1]), np.array([1, 0, 0, 0])), 4)
0.25
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, log_expit, log_softmax, softmax

from spft.errors import ConfigError, DataError

BINS = 15
METHODS = ("none", "temperature")
T_BOUNDS = (0.05, 20.0)  # the temperature is searched in this range (log scale)


def calibrated_probabilities(logits, temperature: float = 1.0, multiclass: bool = False) -> np.ndarray:
    """``sigmoid(logits / T)`` (multi-label) or ``softmax(logits / T)`` over the last axis (``multiclass``), float64."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    return softmax(z, axis=-1) if multiclass else expit(z)


def _bin_index(p: np.ndarray, bins: int) -> np.ndarray:
    return np.minimum(np.floor(p * bins), bins - 1).astype(np.int64)


def reliability(probs, labels, bins: int = BINS) -> dict[str, list]:
    """Reliability-curve data of one class (or top-label confidences): per bin its centre, the fraction of positives
    (``accuracy``), the mean probability (``confidence``) and the count; empty bins have None accuracy/confidence."""
    p, y = _known(probs, labels)
    idx = _bin_index(p, bins)
    counts = np.bincount(idx, minlength=bins)
    pos = np.bincount(idx, weights=y.astype(np.float64), minlength=bins)
    conf = np.bincount(idx, weights=p, minlength=bins)
    centres = (np.arange(bins) + 0.5) / bins
    return {"centres": [float(c) for c in centres],
            "accuracy": [float(pos[b] / counts[b]) if counts[b] else None for b in range(bins)],
            "confidence": [float(conf[b] / counts[b]) if counts[b] else None for b in range(bins)],
            "counts": [int(c) for c in counts]}


def ece(probs, labels, bins: int = BINS) -> float | None:
    """Expected calibration error of one class's probabilities against 0/1 labels (NaN = unknown, masked); None
    without a known label."""
    p, y = _known(probs, labels)
    if p.size == 0:
        return None
    idx = _bin_index(p, bins)
    counts = np.bincount(idx, minlength=bins).astype(np.float64)
    gap = np.abs(np.bincount(idx, weights=y.astype(np.float64), minlength=bins)
                 - np.bincount(idx, weights=p, minlength=bins))  # per bin: n x |accuracy - confidence|
    return float(gap.sum() / counts.sum())


def per_class_ece(probs, labels, classes: list[str], bins: int = BINS) -> dict[str, float | None]:
    probs, labels = _matrix(probs, labels, classes)
    return {c: ece(probs[:, j], labels[:, j], bins) for j, c in enumerate(classes)}


def top_label(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    """Single-label: (confidence = highest probability, 1.0 where that class is the label) over rows with a known
    label (a row whose labels are all NaN is left out)."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    known = ~np.isnan(labels).all(axis=1) if labels.size else np.zeros(len(labels), bool)
    probs, labels = probs[known], np.nan_to_num(labels[known])
    pred = probs.argmax(axis=1)
    return probs.max(axis=1), (labels[np.arange(len(pred)), pred] > 0.5).astype(np.float64)


def summary_ece(probs, labels, classes: list[str], multiclass: bool = False, bins: int = BINS) -> float | None:
    """The one ECE number spft reports: macro over classes (multi-label) or top-label (single-label)."""
    if multiclass:
        return ece(*top_label(probs, labels), bins)
    defined = [v for v in per_class_ece(probs, labels, classes, bins).values() if v is not None]
    return float(np.mean(defined)) if defined else None


def nll(logits, labels, temperature: float = 1.0, multiclass: bool = False) -> float:
    """Mean negative log-likelihood at ``temperature``: per known label (multi-label BCE), or per row with a known
    label (single-label CE with the argmax of the one-hot label)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    labels = np.asarray(labels, dtype=np.float64)
    if multiclass:
        known = ~np.isnan(labels).all(axis=1)
        if not known.any():
            return float("nan")
        target = np.nan_to_num(labels[known]).argmax(axis=1)
        return float(-log_softmax(z[known], axis=1)[np.arange(len(target)), target].mean())
    known = ~np.isnan(labels)
    if not known.any():
        return float("nan")
    y = labels[known] > 0.5
    zk = z[known]
    return float(-np.where(y, log_expit(zk), log_expit(-zk)).mean())


def fit_temperature(logits, labels, multiclass: bool = False) -> float:
    """The scalar ``T`` in :data:`T_BOUNDS` minimising the validation NLL of ``logits / T`` (bounded Brent search on
    log T: deterministic, no randomness). 1.0 when there is no known label to fit on."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if not math.isfinite(nll(logits, labels, 1.0, multiclass)):
        return 1.0
    lo, hi = (math.log(b) for b in T_BOUNDS)
    res = minimize_scalar(lambda log_t: nll(logits, labels, math.exp(log_t), multiclass), bounds=(lo, hi),
                          method="bounded", options={"xatol": 1e-6})
    t = float(math.exp(res.x))
    # never worse than no calibration (the search is over a bounded range; equal NLL keeps T = 1)
    return t if nll(logits, labels, t, multiclass) < nll(logits, labels, 1.0, multiclass) else 1.0


def check_method(method: str) -> None:
    if method not in METHODS:
        raise ConfigError(f"calibration: expected one of {', '.join(METHODS)}, got {method!r}")


def _known(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=np.float64).ravel()
    if p.shape != y.shape:
        raise DataError(f"probabilities {p.shape} and labels {y.shape} must have the same length")
    known = ~np.isnan(y)
    return p[known], y[known] > 0.5


def _matrix(probs, labels, classes) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if probs.shape != labels.shape or probs.ndim != 2 or probs.shape[1] != len(classes):
        raise DataError(f"probabilities {probs.shape} and labels {labels.shape} must both be [N, {len(classes)}]")
    return probs, labels
