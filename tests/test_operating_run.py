"""Operating points and calibration wired into a run: thresholds.json, calibration.json, the metrics.json keys, and
parity — every operating-point number in metrics.json recomputed from predictions_test.csv + thresholds.json."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest

from spft.config.schema import EvaluationConfig
from spft.metrics import multilabel_auc
from spft.metrics.calibration import calibrated_probabilities, summary_ece
from spft.metrics.operating_points import operating_points, per_class_auprc
from spft.tasks.classification.evaluate import ClassificationEvaluation, format_table, write_evaluation
from spft.tasks.classification.operating import (
    CALIBRATION,
    THRESHOLDS,
    apply_run_records,
    fit_and_apply,
)

CLASSES = ["Effusion", "Nodule", "Rare"]
OP_KEYS = ("threshold", "sensitivity", "specificity", "ppv", "npv", "f1")


def _evaluation(split: str, n: int, seed: int, multiclass: bool = False) -> ClassificationEvaluation:
    rng = np.random.default_rng(seed)
    if multiclass:
        target = rng.choice(3, size=n, p=[0.5, 0.3, 0.2])
        labels = np.eye(3)[target]
        logits = (3.0 * labels + rng.normal(0, 1.5, (n, 3))).astype(np.float32)
    else:
        true = rng.normal([-1.0, -1.5, -9.0], 2.0, (n, 3))
        labels = (rng.random((n, 3)) < 1 / (1 + np.exp(-true))).astype(np.float64)
        labels[:, 2] = 0.0  # "Rare": no positive anywhere
        labels[::9, 0] = np.nan  # unknown labels
        logits = (3.0 * true).astype(np.float32)  # overconfident: the best temperature is near 3
    probs = calibrated_probabilities(logits, 1.0, multiclass)
    return ClassificationEvaluation(split, [f"{split}{i}" for i in range(n)], [f"p{i // 2}" for i in range(n)], probs,
                                    labels, multilabel_auc(probs, labels, CLASSES), logits=logits)


def _cfg(calibration="temperature", threshold="youden", target=None, loss="bce"):
    return SimpleNamespace(loss=loss, evaluation=EvaluationConfig(threshold, target, calibration))


def _read_csv(path):
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    col = {k: np.array([float(r[k]) if r[k] != "" else np.nan for r in rows]) for k in rows[0] if k not in ("id",
                                                                                                          "group")}
    return rows, col


def _plain_numpy(p, y, t):
    """Operating point at t with nothing but numpy (the reference of the parity test)."""
    known = ~np.isnan(y)
    p, y = p[known], y[known] > 0.5
    pred = p >= t
    tp, fp, tn, fn = (pred & y).sum(), (pred & ~y).sum(), (~pred & ~y).sum(), (~pred & y).sum()

    def ratio(a, b):
        return None if b == 0 else a / b

    return {"threshold": t, "sensitivity": ratio(tp, tp + fn), "specificity": ratio(tn, tn + fp),
            "ppv": ratio(tp, tp + fp), "npv": ratio(tn, tn + fn), "f1": ratio(2 * tp, 2 * tp + fp + fn)}


@pytest.mark.parametrize("calibration", ["temperature", "none"])
def test_run_files_and_parity_from_predictions(tmp_path, calibration):
    val, test = _evaluation("val", 200, 0), _evaluation("test", 180, 1)
    fit_and_apply(tmp_path, _cfg(calibration), val, test)
    write_evaluation(tmp_path, test, best_epoch=3)

    cal = json.loads((tmp_path / CALIBRATION).read_text())
    assert set(cal) == {"method", "temperature", "fitted_on", "ece_val_before", "ece_val_after", "ece_test_before",
                        "ece_test_after", "bins"}
    assert cal["method"] == calibration and cal["fitted_on"] == "val" and cal["bins"] == 15
    t = cal["temperature"]
    if calibration == "none":
        assert t == 1.0 and cal["ece_val_before"] == cal["ece_val_after"]
    else:
        assert t > 1.0  # the logits are overconfident
        assert cal["ece_val_after"] <= cal["ece_val_before"]

    th = json.loads((tmp_path / THRESHOLDS).read_text())
    assert th["method"] == "youden" and th["target"] is None and th["split"] == "val"
    assert th["classes"]["Rare"] is None and set(th["classes"]["Nodule"]) == set(OP_KEYS)

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("split", "n", "macro_auc", "per_class_auc", "excluded_classes", "best_epoch"):  # unchanged keys
        assert key in metrics
    assert metrics["excluded_classes"] == ["Rare"] and metrics["best_epoch"] == 3
    assert metrics["operating_points"]["Rare"] is None

    rows, col = _read_csv(tmp_path / "predictions_test.csv")
    assert list(rows[0])[:2] == ["id", "group"]
    for j, c in enumerate(CLASSES):
        # prob_<class> is sigmoid(logit_<class> / T), exactly as written
        assert np.array_equal(col[f"prob_{c}"], calibrated_probabilities(col[f"logit_{c}"], t))
        assert np.array_equal(col[f"logit_{c}"], test.logits[:, j].astype(np.float64))
        thr = th["classes"][c]
        if thr is None:
            continue
        mine = operating_points(np.stack([col[f"prob_{c}"]], 1), np.stack([col[f"label_{c}"]], 1), [c],
                                {c: thr["threshold"]})[c]
        plain = _plain_numpy(col[f"prob_{c}"], col[f"label_{c}"], thr["threshold"])
        assert metrics["operating_points"][c] == mine == pytest.approx(plain)
    probs = np.stack([col[f"prob_{c}"] for c in CLASSES], 1)
    labels = np.stack([col[f"label_{c}"] for c in CLASSES], 1)
    assert metrics["per_class_auprc"] == per_class_auprc(probs, labels, CLASSES)
    assert metrics["per_class_auc"] == multilabel_auc(probs, labels, CLASSES).per_class
    defined = [metrics["operating_points"][c]["f1"] for c in CLASSES if metrics["operating_points"][c]]
    assert metrics["macro_operating_point"]["f1"] == pytest.approx(np.mean(defined))
    logits = np.stack([col[f"logit_{c}"] for c in CLASSES], 1)
    assert metrics["ece"]["before"] == pytest.approx(summary_ece(calibrated_probabilities(logits), labels, CLASSES))
    assert metrics["ece"]["after"] == pytest.approx(summary_ece(probs, labels, CLASSES))
    assert metrics["ece"]["after"] == pytest.approx(cal["ece_test_after"])
    assert metrics["calibration"] == {"method": calibration, "temperature": t}

    # spft evaluate: the run's T and thresholds applied, never refitted — the same numbers on the same rows
    again = _evaluation("test", 180, 1)
    apply_run_records(tmp_path, _cfg("none", "f1"), again)  # a different config must not refit anything
    assert again.extra["operating_points"] == metrics["operating_points"]
    assert again.extra["calibration"]["temperature"] == t
    assert "Effusion" in format_table(again) and "specificity" in format_table(again)


def test_target_rules_and_single_label(tmp_path):
    val, test = _evaluation("val", 300, 2, multiclass=True), _evaluation("test", 200, 3, multiclass=True)
    fit_and_apply(tmp_path, _cfg("temperature", "sensitivity", 0.9, loss="ce"), val, test)
    th = json.loads((tmp_path / THRESHOLDS).read_text())
    assert th["method"] == "sensitivity" and th["target"] == 0.9
    assert all(p["sensitivity"] >= 0.9 for p in th["classes"].values())  # on validation
    assert test.probs.sum(1) == pytest.approx(np.ones(len(test.probs)))  # softmax(logits / T)
    assert test.extra["ece"]["kind"] == "top-label"
    json.dumps(test.metrics(), allow_nan=False)


def test_older_run_without_records(tmp_path):
    ev = _evaluation("test", 50, 4)
    apply_run_records(tmp_path, _cfg("none"), ev)
    assert "operating_points" not in ev.extra and ev.extra["calibration"]["temperature"] == 1.0
    assert "per_class_auprc" in ev.extra and "specificity" not in format_table(ev)


def test_no_validation_images(tmp_path):
    test = _evaluation("test", 50, 5)
    fit_and_apply(tmp_path, _cfg(), None, test)
    th = json.loads((tmp_path / THRESHOLDS).read_text())
    assert all(v is None for v in th["classes"].values())
    assert json.loads((tmp_path / CALIBRATION).read_text())["temperature"] == 1.0
