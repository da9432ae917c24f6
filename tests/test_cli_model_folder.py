"""Models given as folders laid out like a hub download (``model.name=DIR``), with their real
preprocessor_config.json: classification (a RAD-DINO-shaped Dinov2 whose processor resizes to 40 and crops 32) and
segmentation (a SAM2 with its Sam2ImageProcessor) through `spft train` and `spft evaluate`; `prepare cache` with the
RAD-DINO-shaped folder; `trainer.limit_train_batches` for quick runs."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from datasets_fixtures import make_chestxray14
from model_folders import raddino_folder, sam2_folder

from spft.config import load_config

FOLDER_MODEL = ["model.config=null", "model.head_hidden=32", "data.image_size=null"]


def _history(run_dir: Path) -> list[dict]:
    with open(run_dir / "history.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def raddino_dir(tmp_path_factory) -> Path:
    return raddino_folder(tmp_path_factory.mktemp("models") / "rad-dino")


@pytest.mark.slow
def test_classification_from_a_rad_dino_folder(spft_cache, raddino_dir, tmp_path):
    """The processor's recipe reaches data.json; train and evaluate run; limit_train_batches=2 gives 2 steps/epoch."""
    run_dir = tmp_path / "run"
    run_cli("train", "configs/phantom_cxr.yaml", f"model.name={raddino_dir}", *FOLDER_MODEL,
            "data.phantom.n_images=120", "data.phantom.image_size=64", "data.num_workers=0", "trainer.max_epochs=3",
            "trainer.batch_size=16", "trainer.progress_bar=false", "recipe.stage1_epochs=1",
            "recipe.unfreeze.blocks_per_epoch=1", "trainer.limit_train_batches=2", f"run.dir={run_dir}")
    data = json.loads((run_dir / "data.json").read_text())
    prep = data["preprocessing"]
    assert prep["source"] == f"image_processor:{raddino_dir}"
    assert (prep["size"], prep["resize"], prep["crop"]) == (32, {"shortest_edge": 40}, {"height": 32, "width": 32})
    assert (prep["interpolation"], prep["mean"], prep["std"]) == ("bicubic", [0.5307] * 3, [0.2583] * 3)
    assert prep["rescale"] == pytest.approx(1 / 255)
    assert math.ceil(data["n_images"]["train"] / 16) > 2  # without the limit an epoch would take more steps
    assert [int(r["step"]) for r in _history(run_dir)] == [2, 4, 6]
    proc = run_cli("evaluate", str(run_dir), "--json")
    result = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert result["split"] == "test" and result["n"] > 0


@pytest.mark.slow
def test_segmentation_from_a_sam2_folder(spft_cache, tmp_path):
    folder = sam2_folder(tmp_path / "sam2", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    run_dir = tmp_path / "run"
    run_cli("train", "configs/phantom_segment_sam2.yaml", f"model.name={folder}", "model.config=null",
            "data.phantom.n_images=40", "data.phantom.image_size=64", "data.num_workers=0", "trainer.max_epochs=2",
            "trainer.batch_size=8", "trainer.progress_bar=false", "recipe.stage1_epochs=1",
            "recipe.unfreeze.blocks_per_epoch=1", "optim.warmup_steps=0", "segmentation.n_overlays=1",
            f"run.dir={run_dir}")
    prep = json.loads((run_dir / "data.json").read_text())["preprocessing"]
    assert prep["source"].startswith(f"image_processor:{folder}")
    assert (prep["size"], prep["resize"], prep["crop"]) == (64, {"height": 64, "width": 64}, None)
    assert (prep["mean"], prep["std"], prep["interpolation"]) == ([0.5] * 3, [0.25] * 3, "bilinear")
    assert (run_dir / "DONE").is_file()
    run_cli("evaluate", str(run_dir))
    assert (run_dir / "metrics_test_eval.json").is_file()


def test_prepare_cache_with_a_rad_dino_folder(raddino_dir, tmp_path):
    """The cache holds the 40 px resize around the 32 px crop; training reads the same pixels through it."""
    from spft.data.cache import prepare_cache
    from spft.tasks.classification.train import build_run

    make_chestxray14(tmp_path / "nih")
    base = ["configs/chestxray14.yaml", [f"data.root={tmp_path / 'nih'}", f"model.name={raddino_dir}",
                                         *FOLDER_MODEL]]
    cfg = load_config(base[0], [*base[1], f"data.image_cache={tmp_path / 'cache'}"])
    summary = prepare_cache(cfg, workers=2)
    assert summary["size"] == 40 and summary["written"] > 0 and not summary["failed"]
    assert Path(summary["folder"]).name == "40px-grey-v1"
    _, prep, _, cached = build_run(cfg, None)
    _, _, _, plain = build_run(load_config(*base), None)
    assert (prep.size, prep.resize_size, prep.crop) == (32, (40,), (32, 32))
    train = cached.datasets["train"]
    assert all(train.table.paths[i].startswith(str(tmp_path / "cache")) for i in train.index)
    for i in range(len(train)):
        assert torch.equal(train[i]["image"], plain.datasets["train"][i]["image"])


def test_limits_are_refused_for_detection():
    from spft.errors import ConfigError
    from spft.tasks.detection.checks import check_detection_config

    with pytest.raises(ConfigError, match="trainer.limit_val_batches': not available for detection"):
        load_config("configs/phantom_detect_yolov8.yaml", ["trainer.limit_val_batches=0.5"])
    cfg = load_config("configs/phantom_detect_yolov8.yaml")  # a config changed in code is checked again
    cfg.trainer.limit_val_batches = 0.5
    with pytest.raises(ConfigError, match="trainer.limit_val_batches': not available for detection"):
        check_detection_config(cfg)


def test_the_demo_config_pointed_at_a_model_folder_loads_the_folder(spft_cache, raddino_dir, tmp_path):
    """`spft train configs/phantom_cxr.yaml model.name=DIR` — the most natural first step with RAD-DINO: the demo's
    tiny model.config must not be applied over the folder's architecture (issue 20, item 10)."""
    run_dir = tmp_path / "run"
    proc = run_cli("train", "configs/phantom_cxr.yaml", f"model.name={raddino_dir}", "data.phantom.n_images=120",
                   "data.phantom.image_size=64", "data.num_workers=0", "trainer.max_epochs=1",
                   "trainer.batch_size=16", "trainer.progress_bar=false", "recipe.stage1_epochs=1",
                   "trainer.limit_train_batches=1", "trainer.limit_val_batches=1", f"run.dir={run_dir}")
    warnings = [line for line in proc.stderr.splitlines() if "model.config" in line]
    assert len(warnings) == 1 and "hidden_size=96" in warnings[0] and "hidden_size=32" in warnings[0], proc.stderr
    assert (run_dir / "DONE").is_file()
