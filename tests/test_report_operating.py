"""Operating points in `spft report`: bootstrap intervals at fixed thresholds against materialised resamples, the
operating-point table, reliability diagrams, and older runs without thresholds.json."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from test_report import CXR, _write_run

from spft.metrics.operating_points import threshold_metrics
from spft.reporting.bootstrap import resample_units, unit_draws
from spft.reporting.operating import bootstrap_operating_points
from spft.reporting.report import build_report


def _data(seed=0, n=80):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, 2)) < 0.35).astype(float)
    labels[::11, 1] = np.nan
    probs = np.clip(0.3 * labels + rng.normal(0.4, 0.2, labels.shape), 0, 1)
    groups = np.array([f"p{i // 2}" for i in range(n)])
    return probs, labels, groups


def test_bootstrap_operating_points_match_materialised_resamples():
    probs, labels, groups = _data()
    th = {"a": 0.5, "b": 0.45}
    out = bootstrap_operating_points(probs, labels, ["a", "b"], th, groups, n_boot=40, seed=3)
    for j, c in enumerate("ab"):
        point = threshold_metrics(probs[:, j], labels[:, j], th[c])
        for m in ("sensitivity", "specificity", "ppv", "npv", "f1"):
            p, lo, hi = out[c][m]
            assert p == point[m] and lo <= p + 1e-12 and hi >= p - 1e-12
    # the replicates: each drawn unit's images, repeated as often as drawn
    unit_of, unit = resample_units(groups, len(probs))
    assert unit == "groups"
    n_units = unit_of.max() + 1
    values = []
    for _, per_unit in unit_draws(n_units, 40, np.random.default_rng(3)):
        for counts in per_unit:
            rows = np.concatenate([np.flatnonzero(unit_of == u).repeat(int(k)) for u, k in enumerate(counts)])
            values.append(threshold_metrics(probs[rows, 0], labels[rows, 0], 0.5)["specificity"])
    assert out["a"]["specificity"][1] == pytest.approx(np.percentile(values, 2.5))
    assert out["a"]["specificity"][2] == pytest.approx(np.percentile(values, 97.5))
    assert bootstrap_operating_points(probs, labels, ["a", "b"], {"a": None, "b": 0.4}, groups, 10, 0)["a"] is None


def _add_records(run_dir: Path, calibrated: bool) -> None:
    """thresholds.json, calibration.json and logit columns, as a run of this version writes them."""
    path = run_dir / "predictions_test.csv"
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    t = 2.0 if calibrated else 1.0
    for r in rows:
        for c in CXR:
            p = min(max(float(r[f"prob_{c}"]), 1e-6), 1 - 1e-6)
            r[f"logit_{c}"] = t * float(np.log(p / (1 - p)))  # so that prob = sigmoid(logit / T)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    classes = {c: {"threshold": 0.5, "sensitivity": 0.8, "specificity": 0.7, "ppv": 0.5, "npv": 0.9, "f1": 0.6}
               for c in CXR}
    classes["Hernia"] = None
    (run_dir / "thresholds.json").write_text(json.dumps({"method": "youden", "target": None, "split": "val",
                                                         "classes": classes}))
    (run_dir / "calibration.json").write_text(json.dumps({
        "method": "temperature" if calibrated else "none", "temperature": t, "fitted_on": "val",
        "ece_val_before": 0.2, "ece_val_after": 0.1, "ece_test_before": 0.21, "ece_test_after": 0.11, "bins": 15}))


def test_report_has_operating_points_and_reliability(tmp_path):
    root = tmp_path / "runs"
    _write_run(root / "seed0", 0, val=0.1)  # the best run by validation
    _write_run(root / "seed1", 1)
    _write_run(root / "seed2", 2)
    _add_records(root / "seed0", calibrated=True)
    _add_records(root / "seed1", calibrated=False)  # seed2: an older run without thresholds.json
    out = build_report(root, n_boot=50)
    html = (out / "report.html").read_text()
    assert "Operating points" in html and "Reliability diagrams of the best run" in html
    assert "before, 0.1100 after" in html  # ECE before/after temperature scaling
    assert "not shown for" in html and "seed 2" in html.split("not shown for")[1][:200]
    assert (out / "figures" / "reliability_best_run.png").is_file()
    table = (out / "tables").glob("operating_points*seed0.csv")
    with open(next(table)) as fh:
        rows = {r["Class"]: r for r in csv.DictReader(fh)}
    assert set(rows) == {"Macro", *CXR}
    report = json.loads((out / "report.json").read_text())
    ops = {r["seed"]: r["operating_points"] for r in report["runs"]}
    assert ops[2] is None and ops[0]["per_class"]["Hernia"] is None
    assert ops[0]["per_class"]["Atelectasis"]["threshold"] == 0.5


def test_report_of_older_runs_only(tmp_path):
    _write_run(tmp_path / "run", 0)
    html = (build_report(tmp_path / "run", n_boot=20) / "report.html").read_text()
    assert "not shown for seed 0" in html and "reliability_best_run" not in html
