"""`spft report` on detection runs (mAP@50, mAP@50-95, per-class AP@50, mean ± std across seeds and per ablation
row), the task read from config.yaml (never guessed from metric keys), mixed-task sweeps refused in one line, and the
exact overrides of a sweep and its runs shown in report.html / report.json / report.md.

The fast tests write run directories with exactly the files a detection run writes (config.yaml, env.json,
metrics.json, history.csv, DONE); the slow one runs a tiny real `spft repeat` + `spft report` (yolov8n.yaml, offline).
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import run_cli

from spft.cli import main
from spft.errors import DataError
from spft.reporting.report import build_report

CLASSES = ["Aortic enlargement", "Nodule/Mass", "Pleural effusion"]
STUDY = {"name": "ladder2", "kind": "custom", "overlays": [
    {"name": "head_only", "label": "head only", "overrides": ["recipe.unfreeze.enabled=false"]},
    {"name": "spft", "label": "full SPFT", "overrides": ["recipe.unfreeze.enabled=true", "recipe.ema.enabled=true"]}]}
COMMON = ["trainer.max_epochs=2", "detection.imgsz=64"]


def write_detection_run(run_dir: Path, seed: int, map50: float, map50_95: float, ap: dict, task: str = "detection",
                        overrides: list[str] | None = None, done: bool = True, unfreeze: bool = True) -> None:
    """A finished detection run directory as `spft train` (detection) writes it."""
    run_dir.mkdir(parents=True)
    config = {"task": task, "seed": seed, "name": "phantom_detect", "data": {"name": "phantom_detect"},
              "model": {"name": "yolov8n.yaml"},
              "recipe": {"unfreeze": {"enabled": unfreeze, "top_k": None}, "class_weights": {"enabled": True},
                         "ema": {"enabled": True}}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    command = ["/venv/bin/spft", "train", "configs/phantom_detect_yolov8.yaml", *(overrides or []), f"seed={seed}",
               f"run.dir={run_dir}"]
    (run_dir / "env.json").write_text(json.dumps({"spft": "0", "command": command, "ultralytics": "8"}))
    (run_dir / "metrics.json").write_text(json.dumps({
        "split": "test", "n": 12, "map50": map50, "map50_95": map50_95, "precision": 0.5, "recall": 0.4,
        "per_class_ap50": ap, "best_epoch": 1, "checkpoint": "best.pt"}))
    hist = [{"epoch": e, "stage": 1 if e == 0 else 2, "trainable_params": 10 + e, "open_backbone_modules": 2 * e,
             "lr_backbone": 0.0 if e == 0 else 1e-4, "lr_head": 1e-3, "backbone_change": 0.0 if e == 0 else 0.1,
             "changed_blocks": 2 * e, "train_box_loss": 2.0 - e * 0.1, "train_cls_loss": 3.0 - e * 0.2,
             "val_map50": 0.1 * (e + 1), "val_map50_95": 0.05 * (e + 1)} for e in range(3)]
    with open(run_dir / "history.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(hist[0]))
        writer.writeheader()
        writer.writerows(hist)
    if done:
        (run_dir / "DONE").write_text("now\n")


VALUES = {  # (overlay, seed): (map50, map50_95, per-class AP@50)
    ("head_only", 0): (0.40, 0.20, [0.5, 0.3, None]), ("head_only", 1): (0.44, 0.22, [0.6, 0.2, None]),
    ("spft", 0): (0.60, 0.31, [0.7, 0.5, 0.6]), ("spft", 1): (0.70, 0.35, [0.8, 0.6, 0.7]),
}


def write_detection_sweep(root: Path) -> None:
    for (overlay, seed), (m50, m5095, ap) in VALUES.items():
        own = next(o["overrides"] for o in STUDY["overlays"] if o["name"] == overlay)
        write_detection_run(root / overlay / f"seed{seed}", seed, m50, m5095, dict(zip(CLASSES, ap, strict=True)),
                            overrides=[*COMMON, *own], unfreeze=overlay == "spft")
    runs = [{"overlay": o, "seed": s, "run_dir": f"{o}/seed{s}", "status": "done", "returncode": 0}
            for o, s in VALUES]
    runs.append({"overlay": "spft", "seed": 2, "run_dir": "spft/seed2", "status": "failed", "returncode": 1,
                 "note": "exit code 1"})
    (root / "sweep.json").write_text(json.dumps({
        "definition": {"kind": "ablate", "config": "/repo/configs/phantom_detect_yolov8.yaml", "overrides": COMMON,
                       "study": STUDY},
        "command": ["spft", "ablate", "configs/phantom_detect_yolov8.yaml", *COMMON, "--study", "s.yaml"],
        "runs": runs}))


def _csv(path: Path) -> dict[str, dict]:
    with open(path) as fh:
        return {row[next(iter(row))]: row for row in csv.DictReader(fh)}


def test_detection_sweep_report_has_map_and_per_class_ap_mean_std_per_row(tmp_path):
    sweep = tmp_path / "ablate"
    write_detection_sweep(sweep)
    out = build_report(sweep)  # before the fix: KeyError 'per_class_auc'
    summary = _csv(out / "tables" / "detection_mean_std.csv")
    for key, name in (("map50", "mAP@50"), ("map50_95", "mAP@50-95")):
        for overlay, label in (("head_only", "head only"), ("spft", "full SPFT")):
            values = [VALUES[overlay, s][0 if key == "map50" else 1] for s in (0, 1)]
            assert float(summary[name][f"{label} mean"]) == pytest.approx(np.mean(values))
            assert float(summary[name][f"{label} std"]) == pytest.approx(np.std(values, ddof=1))
            assert summary[name][f"{label} n"] == "2"
    ap = _csv(out / "tables" / "ap50_mean_std.csv")
    assert float(ap["Nodule/Mass"]["full SPFT mean"]) == pytest.approx(0.55)
    assert float(ap["Nodule/Mass"]["head only std"]) == pytest.approx(np.std([0.3, 0.2], ddof=1))
    assert ap["Pleural effusion"]["head only mean"] == ""  # no box of that class: n/a, never 0
    ablation = _csv(out / "tables" / "ablation.csv")
    delta = ablation["full SPFT"]["Δ mAP@50-95 vs previous row (paired) mean"]
    assert float(delta) == pytest.approx(np.mean([0.31 - 0.20, 0.35 - 0.22]))
    assert ablation["head only"]["unfreeze"] == "×" and ablation["full SPFT"]["unfreeze"] == "✓"
    per_run = _csv(out / "tables" / "detection_per_run_spft.csv")
    assert float(per_run["Aortic enlargement"]["seed 1"]) == 0.8
    for fig in ("ap50_error_bars", "training_curves_spft", "training_curves_head_only"):
        assert (out / "figures" / f"{fig}.png").is_file() and (out / "figures" / f"{fig}.svg").is_file()
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "detection" and len(report["runs"]) == 4
    assert [s["run_dir"] for s in report["skipped"]] == ["spft/seed2"]
    page = (out / "report.html").read_text()
    assert "SPFT detection report" in page and "mAP@50-95" in page and "Runs skipped (1)" in page
    text = re.sub(r"base64,[^\"]*", "", page)  # the embedded figures' bytes
    assert "AUC" not in text and "ROC" not in text  # no classification column or caption on a detection report


def test_report_shows_the_exact_overrides_of_the_sweep_its_rows_and_runs(tmp_path):
    sweep = tmp_path / "ablate"
    write_detection_sweep(sweep)
    out = build_report(sweep)
    report = json.loads((out / "report.json").read_text())
    assert report["config"] == "/repo/configs/phantom_detect_yolov8.yaml" and report["overrides"] == COMMON
    assert report["overlay_overrides"]["spft"] == ["recipe.unfreeze.enabled=true", "recipe.ema.enabled=true"]
    run = next(r for r in report["runs"] if r["run_dir"] == "spft/seed1")
    assert run["overrides"] == [*COMMON, "recipe.unfreeze.enabled=true", "recipe.ema.enabled=true", "seed=1",
                                f"run.dir={sweep / 'spft' / 'seed1'}"]
    page = (out / "report.html").read_text()
    assert "trainer.max_epochs=2 detection.imgsz=64" in page  # every run's, in the header
    assert "recipe.unfreeze.enabled=false" in page and "recipe.ema.enabled=true" in page  # per row
    assert f"run.dir={sweep / 'head_only' / 'seed0'}" in page  # per run, exact
    md = (out / "report.md").read_text()
    assert "Config and overrides" in md and "recipe.unfreeze.enabled=false" in md and "seed=1" in md


def test_task_comes_from_config_yaml_not_from_metric_keys(tmp_path):
    # detection-shaped metrics, but config.yaml has no task: the schema default (classification) is used, and the
    # classification reader says what is missing instead of guessing detection
    run = tmp_path / "run"
    write_detection_run(run, 0, 0.5, 0.3, {"a": 0.5})
    config = yaml.safe_load((run / "config.yaml").read_text())
    del config["task"]
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(DataError, match="per_class_auc"):
        build_report(run)
    # a run whose config says detection is reported as detection even when its metrics also hold AUC keys
    det = tmp_path / "det"
    write_detection_run(det, 0, 0.5, 0.3, {"a": 0.5})
    metrics = json.loads((det / "metrics.json").read_text())
    (det / "metrics.json").write_text(json.dumps({**metrics, "per_class_auc": {"a": 0.9}, "macro_auc": 0.9}))
    out = build_report(det)
    assert json.loads((out / "report.json").read_text())["task"] == "detection"


def test_a_sweep_mixing_tasks_is_refused_in_one_line(tmp_path, capsys):
    root = tmp_path / "mixed"
    write_detection_run(root / "det" / "seed0", 0, 0.5, 0.3, {"a": 0.5})
    write_detection_run(root / "cls" / "seed0", 0, 0.5, 0.3, {"a": 0.5}, task="classification")
    with pytest.raises(DataError, match=r"mixes tasks \(classification: cls/seed0; detection: det/seed0\)"):
        build_report(root)
    assert main(["report", str(root)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "mixes tasks" in err and "Traceback" not in err


@pytest.mark.slow
def test_real_detection_repeat_and_report_through_the_cli(tmp_path, spft_cache):
    sweep = tmp_path / "repeat"
    tiny = ["model.name=yolov8n.yaml", "data.phantom.n_images=24", "data.phantom.image_size=64", "data.num_workers=0",
            "detection.imgsz=64", "detection.mosaic=0.0", "detection.figures=0", "recipe.stage1_epochs=1",
            "trainer.max_epochs=2", "trainer.batch_size=8"]
    run_cli("repeat", "configs/phantom_detect_yolov8.yaml", *tiny, "--seeds", "0", "--out", str(sweep))
    proc = run_cli("report", str(sweep))
    assert proc.stdout.strip().splitlines()[-1] == str(sweep / "report")
    report = json.loads((sweep / "report" / "report.json").read_text())
    assert report["task"] == "detection" and report["overrides"] == tiny
    metrics = json.loads((sweep / "base" / "seed0" / "metrics.json").read_text())
    summary = _csv(sweep / "report" / "tables" / "detection_mean_std.csv")
    assert float(summary["mAP@50-95"]["ours mean"]) == pytest.approx(metrics["map50_95"])
    assert set(_csv(sweep / "report" / "tables" / "ap50_mean_std.csv")) == {"mAP@50", *metrics["per_class_ap50"]}
    assert "model.name=yolov8n.yaml" in (sweep / "report" / "report.html").read_text()
