"""SPFT on Ultralytics through the real CLI: YOLOv8 (killed after epoch 0, then resumed) and RT-DETR on phantoms.

Checks the recipe reached Ultralytics: the backbone does not move in stage 1 and moves once opened; the backbone
LR is the configured fraction of the head's; the class weights are those in the loss; the run directory and
metrics.json have the documented fields; ``spft evaluate`` works on a detection run.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import run_cli
from detection_hooks import record_norm_modes
from run_hooks import crash_after_epoch

# Not imported here: only the CLI subprocesses import Ultralytics (it patches PIL.Image.open process-wide).
pytestmark = pytest.mark.slow  # needs the detect extra, which `make install` installs

FIELDS = {"split", "n", "map50", "map50_95", "precision", "recall", "per_class_ap50"}


def overrides(run_dir: Path, model: str) -> list[str]:
    return [f"model.name={model}", "data.phantom.n_images=40", "data.phantom.image_size=64", "data.num_workers=0",
            "detection.imgsz=64", "detection.mosaic=0.0", "detection.figures=1", "optim.lr_encoder=1e-4",
            "optim.lr_head=1e-3", "recipe.stage1_epochs=1", "recipe.unfreeze.blocks_per_epoch=2",
            "trainer.max_epochs=2", "trainer.batch_size=8", f"run.dir={run_dir}"]


def read_history(run_dir: Path) -> list[dict]:
    with open(run_dir / "history.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def check_run(run_dir: Path) -> None:
    for name in ("config.yaml", "env.json", "history.csv", "class_weights.json", "metrics.json", "ultralytics.json",
                 "checkpoints/best.pt", "checkpoints/last.pt", "DONE"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "figures").glob("val_*.png"))
    h = read_history(run_dir)
    assert [(int(r["epoch"]), int(r["stage"])) for r in h] == [(0, 1), (1, 2)]
    # stage 1: backbone frozen (LR factor 0, not a single weight moved); stage 2: the top 2 modules opened and moved
    assert float(h[0]["backbone_change"]) == 0.0 and int(h[0]["changed_blocks"]) == 0
    assert float(h[0]["lr_backbone"]) == 0.0 and int(h[0]["open_backbone_modules"]) == 0
    assert int(h[1]["open_backbone_modules"]) == 2 and int(h[1]["changed_blocks"]) == 2
    assert float(h[1]["backbone_change"]) > 0
    assert int(h[1]["trainable_params"]) > int(h[0]["trainable_params"])
    assert float(h[1]["lr_backbone"]) == pytest.approx(0.1 * float(h[1]["lr_head"]))
    cw = json.loads((run_dir / "class_weights.json").read_text())
    current = [cw["current"][c] for c in cw["classes"]]
    assert cw["in_loss"] == pytest.approx(current) and len({round(w, 6) for w in current}) > 1
    assert cw["instance_counts"] and cw["refinements"] and cw["refinements"][0]["epoch"] == 1
    m = json.loads((run_dir / "metrics.json").read_text())
    assert FIELDS <= set(m) and m["split"] == "test" and m["n"] > 0
    assert set(m["per_class_ap50"]) == set(cw["classes"])


def test_yolov8_spft_crash_resume_and_evaluate(tmp_path, spft_cache):
    run_dir = tmp_path / "yolo"
    proc = run_cli("train", "configs/phantom_detect_yolov8.yaml", *overrides(run_dir, "yolov8n.yaml"),
                   env=crash_after_epoch(0), check=False)
    assert proc.returncode == 17, proc.stderr[-2000:]
    assert (run_dir / "checkpoints" / "last.pt").is_file() and not (run_dir / "DONE").exists()
    assert len(read_history(run_dir)) == 1
    norm_log = tmp_path / "norms.jsonl"
    proc = run_cli("train", "--resume", str(run_dir), env=record_norm_modes(norm_log))
    assert proc.stdout.strip().splitlines()[-1] == str(run_dir)
    check_run(run_dir)
    # yolov8n.yaml has random weights: the 8 frozen modules' batch norms estimate their statistics (train mode); in
    # eval mode their never-estimated statistics would make them the identity and the signal vanish through them
    [epoch1] = [json.loads(line) for line in norm_log.read_text().splitlines()]
    assert epoch1["epoch"] == 1 and [m["trains"] for m in epoch1["modules"]] == [False] * 8 + [True] * 2
    assert all(m["norms_in_train_mode"] for m in epoch1["modules"])
    ultra = json.loads((run_dir / "ultralytics.json").read_text())
    assert ultra["trainer"] == "SpftYoloTrainer" and "ema_decay_at" in ultra["ema"]
    # evaluate the same prepared data as if it were VinDr-CXR: metrics gain map40 (IoU 0.4)
    dataset_dir = Path(json.loads((run_dir / "data.json").read_text())["dataset_yaml"]).parent
    ev = json.loads(run_cli("evaluate", str(run_dir), "data.name=vindr_cxr", f"detection.dataset_dir={dataset_dir}",
                            "--split", "val", "--json").stdout)
    assert FIELDS | {"map40"} <= set(ev) and ev["split"] == "val" and ev["map40"] >= ev["map50"]
    assert (run_dir / "metrics_val_eval.json").is_file()


def test_rtdetr_spft_weighted_loss(tmp_path, spft_cache):
    run_dir = tmp_path / "rtdetr"
    run_cli("train", "configs/phantom_detect_yolov8.yaml", *overrides(run_dir, "rtdetr-tiny.yaml"))
    check_run(run_dir)
    assert json.loads((run_dir / "ultralytics.json").read_text())["trainer"] == "SpftRtdetrTrainer"


def test_yolov8_learns_the_phantom_boxes(tmp_path, spft_cache):
    """The shipped config (YOLOv8n from random weights, the recipe with from-scratch settings) learns: 6 of its 10
    epochs on its 600 phantoms reach validation mAP50 0.386 and test 0.420 with torch on 2 threads, 0.196 and 0.172
    with OMP_NUM_THREADS=1 (the float reduction order changes the trajectory this early; all 10 epochs: 0.781 test).
    The bound, 0.12, is far above where the broken recipe stayed: the paper's freezing settings on this random
    backbone (stage 1, then 2 modules per epoch, backbone LR 0.1x) reached validation mAP50 <= 0.005 in every epoch
    of 10 and test mAP50 0.021 before the batch-norm fix (benchmarks/RESULTS.md, "Detection: why the recipe did not
    learn")."""
    run_dir = tmp_path / "learn"
    run_cli("train", "configs/phantom_detect_yolov8.yaml", "data.num_workers=0", "detection.figures=0",
            "trainer.max_epochs=6", f"run.dir={run_dir}")
    h = read_history(run_dir)
    assert [int(r["open_backbone_modules"]) for r in h] == [10] * 6  # nothing frozen on a random backbone
    m = json.loads((run_dir / "metrics.json").read_text())
    assert max(float(r["val_map50"]) for r in h) >= 0.12 and m["map50"] >= 0.12, (h[-1], m)


def test_ultralytics_integration_callbacks_are_dropped(monkeypatch):
    """Ultralytics adds its MLflow (W&B, ClearML, ...) callbacks when the package is installed and its setting is on
    (the default): MLflow's then wrote mlflow.db into the current directory and turned on autologging whatever
    tracking.mlflow said (issue 20 item 9). spft's trainers keep only Ultralytics' own base callbacks."""
    from ultralytics.utils import SETTINGS, callbacks

    from spft.tasks.detection.trainer import drop_integration_callbacks

    monkeypatch.setitem(SETTINGS, "mlflow", True)

    class StandInTrainer:  # Ultralytics adds the training integrations to classes named like a trainer
        def __init__(self):
            self.callbacks = callbacks.get_default_callbacks()
            callbacks.add_integration_callbacks(self)

    trainer = StandInTrainer()
    modules = {f.__module__ for fs in trainer.callbacks.values() for f in fs}
    if "ultralytics.utils.callbacks.mlflow" not in modules:  # an older Ultralytics (8.4.68): never under pytest
        pytest.skip("this Ultralytics does not add its MLflow callback while pytest runs (TESTS_RUNNING)")
    assert "ultralytics.utils.callbacks.mlflow" in modules  # what Ultralytics does on its own
    assert "mlflow" in drop_integration_callbacks(trainer)
    left = {f.__module__ for fs in trainer.callbacks.values() for f in fs}
    assert left <= {"ultralytics.utils.callbacks.base"} and set(trainer.callbacks) >= set(callbacks.default_callbacks)


def test_detection_honours_a_constant_schedule_and_refuses_positive_class_weights(tmp_path, spft_cache):
    run_dir = tmp_path / "constant"
    run_cli("train", "configs/phantom_detect_yolov8.yaml", *overrides(run_dir, "yolov8n.yaml"),
            "optim.schedule=constant", "optim.warmup_steps=0")
    rows = read_history(run_dir)
    lr_columns = [k for k in rows[0] if k.startswith("lr_")]
    assert lr_columns and len(rows) == 2
    head = [float(r["lr_head"]) for r in rows]
    assert head == [pytest.approx(1e-3)] * 2  # the cosine would have lowered epoch 1's
    proc = run_cli("config", "configs/phantom_detect_yolov8.yaml", "recipe.class_weights.apply=positive", check=False)
    assert proc.returncode == 2 and "recipe.class_weights.apply" in proc.stderr
