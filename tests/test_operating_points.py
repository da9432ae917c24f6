"""Operating points (threshold rules, threshold metrics, AUPRC) and calibration (ECE, reliability, temperature)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, confusion_matrix

from spft.errors import ConfigError
from spft.metrics.calibration import (
    BINS,
    calibrated_probabilities,
    ece,
    fit_temperature,
    nll,
    per_class_ece,
    reliability,
    summary_ece,
    top_label,
)
from spft.metrics.operating_points import (
    choose_threshold,
    choose_thresholds,
    confusion,
    macro_operating_point,
    operating_points,
    per_class_auprc,
    threshold_metrics,
)


def _data(seed=0, n=300):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(float)
    s = np.round(np.clip(0.3 * y + rng.normal(0.35, 0.2, n), 0, 1), 2)  # rounded: many ties
    return s, y


def _brute(s, y, method, target=None):
    """Every candidate threshold tried one by one with plain numpy."""
    cands = np.r_[np.unique(s), np.nextafter(s.max(), np.inf)]
    best, best_t = -np.inf, None
    rows = []
    for t in cands:
        pred = s >= t
        tp, fp = (pred & (y == 1)).sum(), (pred & (y == 0)).sum()
        fn, tn = (~pred & (y == 1)).sum(), (~pred & (y == 0)).sum()
        rows.append((t, tp / (tp + fn), tn / (tn + fp), 2 * tp / (2 * tp + fp + fn)))
    if method == "sensitivity":
        return max(t for t, se, sp, f in rows if se >= target)
    if method == "specificity":
        return min(t for t, se, sp, f in rows if sp >= target)
    for t, se, sp, f in sorted(rows, key=lambda r: -r[0]):  # highest threshold first: ties go to it
        score = se + sp - 1 if method == "youden" else f
        if score > best + 1e-12:
            best, best_t = score, t
    return best_t


@pytest.mark.parametrize("method,target", [("youden", None), ("f1", None), ("sensitivity", 0.8),
                                           ("sensitivity", 0.95), ("specificity", 0.9), ("specificity", 0.6)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_threshold_rules_match_brute_force(method, target, seed):
    s, y = _data(seed)
    assert choose_threshold(s, y, method, target) == pytest.approx(_brute(s, y, method, target))
    m = threshold_metrics(s, y, choose_threshold(s, y, method, target))
    if method == "sensitivity":
        assert m["sensitivity"] >= target
    if method == "specificity":
        assert m["specificity"] >= target


def test_specificity_target_above_every_score():
    s, y = np.array([0.9, 0.2, 0.1]), np.array([0.0, 1.0, 0.0])  # the top score is a negative
    t = choose_threshold(s, y, "specificity", 0.99)
    assert t > 0.9 and threshold_metrics(s, y, t)["specificity"] == 1.0


def test_threshold_metrics_match_sklearn_and_mask_unknown():
    s, y = _data(3)
    y_nan = y.copy()
    y_nan[::7] = np.nan
    t = 0.45
    known = ~np.isnan(y_nan)
    tn, fp, fn, tp = confusion_matrix(y[known], s[known] >= t).ravel()
    assert confusion(s, y_nan, t) == (tp, fp, tn, fn)
    m = threshold_metrics(s, y_nan, t)
    assert m == pytest.approx({"threshold": t, "sensitivity": tp / (tp + fn), "specificity": tn / (tn + fp),
                               "ppv": tp / (tp + fp), "npv": tn / (tn + fn), "f1": 2 * tp / (2 * tp + fp + fn)})


def test_undefined_is_none_never_nan():
    s = np.array([0.2, 0.7, 0.9])
    assert choose_threshold(s, np.array([0.0, 0.0, 0.0])) is None  # no positive
    assert choose_threshold(s, np.array([1.0, np.nan, 1.0])) is None  # no negative
    m = threshold_metrics(s, np.array([0.0, 0.0, 0.0]), 0.95)  # no positive, nothing called positive
    assert m["sensitivity"] is None and m["ppv"] is None and m["f1"] is None and m["specificity"] == 1.0
    probs = np.stack([s, s], 1)
    labels = np.array([[0.0, 0], [1, 0], [1, 0]])
    th = choose_thresholds(probs, labels, ["a", "b"])
    assert th["b"] is None and th["a"] is not None
    ops = operating_points(probs, labels, ["a", "b"], th)
    assert ops["b"] is None
    macro = macro_operating_point(ops)
    assert macro["sensitivity"] == ops["a"]["sensitivity"]
    json.dumps({"t": th, "ops": ops, "macro": macro}, allow_nan=False)


def test_threshold_rule_refuses_bad_target():
    with pytest.raises(ConfigError, match="target"):
        choose_threshold([0.1, 0.9], [0, 1], "sensitivity")
    with pytest.raises(ConfigError, match="target"):
        choose_threshold([0.1, 0.9], [0, 1], "specificity", 1.0)
    with pytest.raises(ConfigError, match="one of"):
        choose_threshold([0.1, 0.9], [0, 1], "recall")


def test_auprc_is_sklearn_average_precision():
    rng = np.random.default_rng(0)
    probs, labels = rng.random((80, 3)), (rng.random((80, 3)) < 0.3).astype(float)
    labels[::5, 1] = np.nan
    labels[:, 2] = 0.0
    ap = per_class_auprc(probs, labels, ["a", "b", "c"])
    known = ~np.isnan(labels[:, 1])
    assert ap["a"] == pytest.approx(average_precision_score(labels[:, 0], probs[:, 0]))
    assert ap["b"] == pytest.approx(average_precision_score(labels[known, 1], probs[known, 1]))
    assert ap["c"] is None


def _ece_loop(p, y, bins=BINS):
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = (p >= lo) & ((p < hi) if b < bins - 1 else (p <= hi))
        if inside.any():
            total += inside.sum() / len(p) * abs(y[inside].mean() - p[inside].mean())
    return total


def test_ece_and_reliability_against_a_plain_loop():
    rng = np.random.default_rng(1)
    p = rng.random(500)
    y = (rng.random(500) < p ** 1.5).astype(float)
    assert ece(p, y) == pytest.approx(_ece_loop(p, y))
    curve = reliability(p, y)
    assert sum(curve["counts"]) == 500 and len(curve["centres"]) == BINS
    n = np.array(curve["counts"], float)
    gaps = [abs(a - c) for a, c in zip(curve["accuracy"], curve["confidence"], strict=True) if a is not None]
    assert float(np.dot(n[n > 0], gaps) / n.sum()) == pytest.approx(ece(p, y))
    y_nan = y.copy()
    y_nan[:100] = np.nan
    assert ece(p, y_nan) == pytest.approx(_ece_loop(p[100:], y[100:]))
    probs = np.stack([p, 1 - p], 1)
    per = per_class_ece(probs, np.stack([y, 1 - y], 1), ["a", "b"])
    assert summary_ece(probs, np.stack([y, 1 - y], 1), ["a", "b"]) == pytest.approx(np.mean(list(per.values())))


def test_top_label_ece_for_single_label():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.5, 0.4, 0.1]])
    labels = np.array([[1.0, 0, 0], [0, 0, 1], [0, 0, 1], [np.nan, np.nan, np.nan]])
    conf, correct = top_label(probs, labels)
    assert conf.tolist() == [0.7, 0.8, 0.4] and correct.tolist() == [1.0, 0.0, 1.0]
    assert summary_ece(probs, labels, ["a", "b", "c"], multiclass=True) == pytest.approx(_ece_loop(conf, correct))


def test_temperature_recovers_the_true_temperature_and_keeps_ranking():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 3, (20000, 2))
    labels = (rng.random(z.shape) < 1 / (1 + np.exp(-z / 2.0))).astype(float)  # logits 2x overconfident
    t = fit_temperature(z, labels)
    assert t == pytest.approx(2.0, rel=0.05)
    assert t == fit_temperature(z, labels)  # deterministic
    assert nll(z, labels, t) < nll(z, labels, 1.0)
    cal = calibrated_probabilities(z, t)
    assert np.array_equal(np.argsort(cal[:, 0], kind="stable"), np.argsort(z[:, 0], kind="stable"))
    assert summary_ece(cal, labels, ["a", "b"]) < summary_ece(calibrated_probabilities(z), labels, ["a", "b"])


def test_temperature_single_label_and_degenerate_cases():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 1, (5000, 3)) * 4
    p = calibrated_probabilities(z / 4 * 1.0, 1.0, multiclass=True)  # true logits: z / 4
    target = np.array([rng.choice(3, p=row) for row in p])
    labels = np.eye(3)[target]
    t = fit_temperature(z, labels, multiclass=True)
    assert t == pytest.approx(4.0, rel=0.1)
    assert calibrated_probabilities(z, t, multiclass=True).sum(1) == pytest.approx(np.ones(len(z)))
    assert fit_temperature(z[:3], np.full((3, 3), np.nan), multiclass=True) == 1.0
    assert fit_temperature(z[:3, :1], np.full((3, 1), np.nan)) == 1.0
