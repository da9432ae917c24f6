"""End to end (slow): a tiny run fits T and the thresholds on validation, writes thresholds.json and
calibration.json, and every operating-point number in metrics.json is recomputed from predictions_test.csv +
thresholds.json with plain numpy; `spft evaluate` reproduces them without refitting."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from conftest import run_cli, tiny_overrides


def _columns(path):
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {k: np.array([float(r[k]) if r[k] != "" else np.nan for r in rows]) for k in rows[0]
            if k not in ("id", "group")}


def _op(p, y, t):
    known = ~np.isnan(y)
    p, y = p[known], y[known] > 0.5
    pred = p >= t
    tp, fp, tn, fn = (pred & y).sum(), (pred & ~y).sum(), (~pred & ~y).sum(), (~pred & y).sum()
    r = [None if b == 0 else a / b for a, b in ((tp, tp + fn), (tn, tn + fp), (tp, tp + fp), (tn, tn + fn),
                                                (2 * tp, 2 * tp + fp + fn))]
    return dict(zip(("sensitivity", "specificity", "ppv", "npv", "f1"), r, strict=True), threshold=t)


@pytest.mark.slow
def test_train_writes_operating_points_and_evaluate_reuses_them(tmp_path, spft_cache):
    run_dir = tmp_path / "run"
    run_cli("train", "configs/phantom_cxr.yaml",
            *tiny_overrides(run_dir, epochs=2, extra=("evaluation.calibration=temperature",
                                                      "evaluation.threshold=f1")))
    cal = json.loads((run_dir / "calibration.json").read_text())
    th = json.loads((run_dir / "thresholds.json").read_text())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert cal["method"] == "temperature" and cal["fitted_on"] == "val" and cal["temperature"] > 0
    assert th["method"] == "f1" and th["split"] == "val"
    assert metrics["calibration"]["temperature"] == cal["temperature"]
    assert metrics["ece"]["after"] == pytest.approx(cal["ece_test_after"])

    col = _columns(run_dir / "predictions_test.csv")
    t = cal["temperature"]
    for c, point in metrics["operating_points"].items():
        p = 1 / (1 + np.exp(-col[f"logit_{c}"] / t))  # prob_<class> = sigmoid(logit / T)
        assert p == pytest.approx(col[f"prob_{c}"], abs=1e-12)
        if th["classes"][c] is None:
            assert point is None
            continue
        assert point == pytest.approx(_op(col[f"prob_{c}"], col[f"label_{c}"], th["classes"][c]["threshold"]))

    out = run_cli("evaluate", str(run_dir), "--json", "evaluation.threshold=youden")  # never refitted
    again = json.loads(out.stdout)
    assert again["operating_points"] == metrics["operating_points"]
    assert again["per_class_auc"] == metrics["per_class_auc"]
    table = run_cli("evaluate", str(run_dir)).stdout
    assert "specificity" in table and f"T = {t:.4f}" in table
