"""`spft train` / `--resume` / `evaluate` on SAM2 through the real CLI: a tiny SAM2 on 64 px phantoms.

One run is killed after epoch 0 (stage 1) and resumed to its end (epochs 1-2, stage 2), so the same two
processes show what stage 1 freezes, what stage 2 opens, and that a segmentation run resumes.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from run_hooks import crash_after_epoch
from segmentation_fixtures import TINY_SAM2

pytestmark = pytest.mark.slow

CONFIG = "configs/phantom_segment_sam2.yaml"
STRUCTURES = ["heart", "left_lung", "right_lung"]


def _overrides(run_dir: Path) -> list[str]:
    return [TINY_SAM2, "data.phantom.n_images=40", "data.phantom.image_size=64", "data.num_workers=0",
            "trainer.max_epochs=3", "trainer.batch_size=8", "trainer.progress_bar=false", "recipe.stage1_epochs=1",
            "recipe.unfreeze.blocks_per_epoch=1", "optim.warmup_steps=0", "segmentation.n_overlays=2",
            f"run.dir={run_dir}"]


@pytest.fixture(scope="module")
def resumed_run(spft_cache, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("seg") / "run"
    proc = run_cli("train", CONFIG, *_overrides(run_dir), env=crash_after_epoch(0), check=False)
    assert proc.returncode == 17, proc.stderr
    assert not (run_dir / "DONE").exists()
    epoch0 = run_dir.parent / "epoch0.ckpt"
    shutil.copy(run_dir / "checkpoints" / "last.ckpt", epoch0)
    resumed = run_cli("train", "--resume", str(run_dir))
    return run_dir, epoch0, proc.stderr + resumed.stderr


def _weights(path: Path, prefix: str) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith(prefix)}


def _history(run_dir: Path) -> list[dict]:
    with open(run_dir / "history.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _same(a: dict, b: dict) -> bool:
    assert a and a.keys() == b.keys()
    return all(torch.equal(a[k], b[k]) for k in a)


def _initial_model():
    """The model as the CLI builds it before training (seeded by the run's seed)."""
    import lightning as L

    from spft.config import load_config
    from spft.models.sam2 import build_sam2

    L.seed_everything(0, workers=True, verbose=False)
    model, _ = build_sam2(load_config(CONFIG, [TINY_SAM2]).model)
    return {f"model.{k}": v for k, v in model.state_dict().items()}


def test_run_directory_and_metrics(resumed_run):
    run_dir, _, log = resumed_run
    for name in ("config.yaml", "env.json", "data.json", "history.csv", "class_weights.json", "metrics.json",
                 "predictions_test.csv", "checkpoints/best.ckpt", "checkpoints/last.ckpt", "DONE"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"split", "n", "mean_dice", "per_structure_dice"} <= set(metrics) and metrics["split"] == "test"
    assert list(metrics["per_structure_dice"]) == STRUCTURES and metrics["n"] > 0
    assert 0.0 <= metrics["mean_dice"] <= 1.0
    assert list(metrics["per_structure_hd95"]) == STRUCTURES and "mean_hd95" in metrics
    header = (run_dir / "predictions_test.csv").read_text().splitlines()[0].split(",")
    assert header[:2] == ["id", "group"] and "dice_heart" in header and "hd95_right_lung" in header
    written = {p.name for p in (run_dir / "predictions_test").iterdir()}
    assert len([n for n in written if n.endswith("_overlay.png")]) == 2
    assert len([n for n in written if n.endswith("_left_lung.png")]) == 2
    assert "mask decoder only" in log and "stage 2: top 1/5 blocks" in log


def test_stage1_leaves_the_image_encoder_unchanged(resumed_run):
    _, epoch0, _ = resumed_run
    initial = _initial_model()
    prompt = "model.sam.prompt_encoder."
    assert _same(_weights(epoch0, prompt), {k: v for k, v in initial.items() if k.startswith(prompt)})  # same init
    encoder = "model.sam.vision_encoder."
    assert _same(_weights(epoch0, encoder), {k: v for k, v in initial.items() if k.startswith(encoder)})
    decoder = "model.sam.mask_decoder."
    assert not _same(_weights(epoch0, decoder), {k: v for k, v in initial.items() if k.startswith(decoder)})


def test_stage2_opens_the_top_blocks_only(resumed_run):
    run_dir, epoch0, _ = resumed_run
    last = run_dir / "checkpoints" / "last.ckpt"
    blocks = "model.sam.vision_encoder.backbone.blocks."
    for i, opened in ((4, True), (3, True), (2, False), (1, False), (0, False)):  # 3 epochs: top 2 of 5 open
        assert _same(_weights(epoch0, f"{blocks}{i}."), _weights(last, f"{blocks}{i}.")) != opened, i
    assert _same(_weights(epoch0, "model.sam.prompt_encoder."), _weights(last, "model.sam.prompt_encoder."))
    rows = _history(run_dir)
    assert [int(r["stage"]) for r in rows] == [1, 2, 2] and [int(r["open_blocks"]) for r in rows] == [0, 1, 2]
    assert float(rows[0]["lr_block4"]) == 0.0 < float(rows[1]["lr_block4"])
    assert float(rows[1]["lr_block3"]) == 0.0 < float(rows[2]["lr_block3"])


def test_structure_weights_from_pixel_prevalence_and_refined(resumed_run):
    run_dir, _, _ = resumed_run
    cw = json.loads((run_dir / "class_weights.json").read_text())
    initial = cw["initial"]
    assert sum(initial.values()) / 3 == pytest.approx(1.0)
    assert initial["heart"] > initial["left_lung"] and initial["heart"] > initial["right_lung"]  # rarest pixels
    assert [r["epoch"] for r in cw["refinements"]] == [1, 2]  # refined after each stage-2 validation
    rows = _history(run_dir)
    assert float(rows[0]["w_heart"]) == pytest.approx(initial["heart"])
    assert float(rows[-1]["w_heart"]) == pytest.approx(cw["current"]["heart"])


def test_evaluate_reproduces_test_metrics(resumed_run):
    run_dir, _, _ = resumed_run
    from spft.experiments.rundir import task_of_run
    from spft.tasks.registry import task_api

    api = task_api(task_of_run(run_dir))  # what `spft evaluate RUN_DIR` calls (in-process: one import less)
    ev = api.evaluate_run(run_dir, (), split="test", checkpoint="best")
    again = ev.metrics()
    assert "mean Dice" in api.format_table(ev)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert again["mean_dice"] == pytest.approx(metrics["mean_dice"]) and again["n"] == metrics["n"]
    assert (run_dir / "metrics_test_eval.json").is_file()
