"""A tampered ``spft export`` folder is one line, exit 2, before anything is built (issue 20 item 5).

Real tiny exports (a classification run and a SAM2 segmentation run, trained and exported through the CLI once for
the module) are copied and damaged the way a folder from elsewhere could be: a pickle saved as ``model.safetensors``,
``head_hidden: -1``, an unknown ``model_type``, a one-value ``mean``, a huge ``hidden_size`` (transformers would
allocate hundreds of GB), an unknown ``loss``. ``spft predict`` names the file and the key on one stderr line.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli, tiny_overrides
from PIL import Image
from segmentation_fixtures import TINY_SAM2

import spft
from spft.errors import CheckpointError, ConfigError


@pytest.fixture(scope="module")
def cls_export(spft_cache, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export_cls")
    run_cli("train", "phantom_cxr", *tiny_overrides(root / "run", n_images=60, epochs=1))
    run_cli("export", str(root / "run"), "--out", str(root / "export"))
    return root / "export"


@pytest.fixture(scope="module")
def seg_export(spft_cache, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export_seg")
    run_cli("train", "configs/phantom_segment_sam2.yaml", TINY_SAM2, "data.phantom.n_images=24",
            "data.phantom.image_size=64", "data.num_workers=0", "trainer.max_epochs=1", "trainer.batch_size=8",
            "trainer.progress_bar=false", "recipe.stage1_epochs=1", "optim.warmup_steps=0",
            "segmentation.n_overlays=0", f"run.dir={root / 'run'}")
    run_cli("export", str(root / "run"), "--out", str(root / "export"))
    return root / "export"


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("image") / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)).save(path)
    return path


def _tampered(export: Path, tmp_path: Path, change) -> Path:
    folder = tmp_path / "tampered"
    shutil.copytree(export, folder)
    if change == "pickle":
        torch.save({"weights": torch.zeros(3)}, folder / "model.safetensors")
    else:
        config = json.loads((folder / "config.json").read_text())
        change(config)
        (folder / "config.json").write_text(json.dumps(config))
    return folder


def _refused(folder: Path, image: Path, tmp_path: Path, *args: str) -> str:
    proc = run_cli("predict", str(folder), str(image), "--out", str(tmp_path / "p.csv"), *args, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "p.csv").exists()
    return lines[0]


def _set(key: str, value):
    def change(config: dict) -> None:
        *parents, last = key.split(".")
        node = config
        for p in parents:
            node = node[p]
        node[last] = value
    return change


CLASSIFICATION = {
    "pickle": ("pickle", "model.safetensors: not a safetensors file"),
    "head_hidden": (_set("spft.head_hidden", -1), "config.json: spft.head_hidden must be a positive integer"),
    "model_type": (_set("model_type", "not_a_model"), "config.json: model_type 'not_a_model' is not"),
    "mean": (_set("spft.preprocessing.mean", [0.5]), "config.json: spft.preprocessing.mean must be 3 numbers"),
    "huge_hidden_size": (_set("hidden_size", 60000), "model.safetensors: tensor"),  # shapes, on the meta device
    "absurd_hidden_size": (_set("hidden_size", 2**24), "config.json: hidden_size must be a positive integer"),
    "loss": (_set("spft.loss", "focal"), "config.json: spft.loss must be one of bce, ce, got 'focal'"),
    "classes": (_set("spft.classes", ["a", "a"]), "config.json: spft.classes must be a non-empty list"),
}


@pytest.mark.parametrize("case", list(CLASSIFICATION))
def test_tampered_classification_export_is_one_line(case, cls_export, image, tmp_path):
    change, expected = CLASSIFICATION[case]
    folder = _tampered(cls_export, tmp_path, change)
    line = _refused(folder, image, tmp_path)
    assert line.startswith("spft predict: error: ") and expected in line, line
    if case == "huge_hidden_size":
        assert "has shape" in line and "config.json describes" in line


def test_the_untampered_export_predicts_and_spft_load_refuses_the_same(cls_export, image, tmp_path):
    run_cli("predict", str(cls_export), str(image), "--out", str(tmp_path / "ok.csv"))
    assert (tmp_path / "ok.csv").is_file()
    with pytest.raises(ConfigError, match="spft.loss must be one of bce, ce"):
        spft.load(_tampered(cls_export, tmp_path, _set("spft.loss", "focal")))
    folder = tmp_path / "tampered"
    shutil.rmtree(folder)
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        spft.load(_tampered(cls_export, tmp_path, "pickle"))


SEGMENTATION = {
    "pickle": ("pickle", "model.safetensors: not a safetensors file"),
    "model_type": (_set("model_type", "dinov2"), "config.json: model_type 'dinov2' is not sam2"),
    "mean": (_set("spft.preprocessing.mean", [0.5]), "config.json: spft.preprocessing.mean must be 3 numbers"),
    "hidden_size": (_set("vision_config.backbone_config.hidden_size", 50000), "model.safetensors: tensor"),
    "structures": (_set("spft.structures", []), "config.json: spft.structures must be a non-empty list"),
}


@pytest.mark.parametrize("case", list(SEGMENTATION))
def test_tampered_segmentation_export_is_one_line(case, seg_export, image, tmp_path):
    change, expected = SEGMENTATION[case]
    folder = _tampered(seg_export, tmp_path, change)
    boxes = tmp_path / "boxes.csv"
    boxes.write_text(f"id,structure,x1,y1,x2,y2\n{image},heart,1,1,30,30\n")
    line = _refused(folder, image, tmp_path, "--prompts", str(boxes))
    assert expected in line, line


@pytest.mark.parametrize("task", ["detection", "no_such_task"])
def test_a_detection_or_unknown_export_folder_is_one_line(task, image, tmp_path):
    """spft predicts detection from run directories only: a (tampered) detection export folder is refused in one
    line, as is a folder whose config.json names a task spft does not have."""
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"spft": {"task": task, "classes": ["a"]}}))
    torch.save({"weights": torch.zeros(3)}, folder / "model.safetensors")
    line = _refused(folder, image, tmp_path)
    assert ("predicts from a run directory" if task == "detection" else "unknown task 'no_such_task'") in line


# --- spft predict --out (issue 20 item 12) and formula-looking ids in its CSVs (item 11), on the real export -------

def test_predict_refuses_an_existing_out_unless_overwrite(cls_export, image, tmp_path):
    out = tmp_path / "p.csv"
    run_cli("predict", str(cls_export), str(image), "--out", str(out))
    first = out.read_text()
    out.write_text("someone's table\n")
    line = _refused_out(cls_export, image, out)
    assert f"--out {out}: exists; choose another file, or add --overwrite to replace it" in line
    assert out.read_text() == "someone's table\n"
    run_cli("predict", str(cls_export), str(image), "--out", str(out), "--overwrite")
    assert out.read_text() == first


def _refused_out(source: Path, image: Path, out: Path) -> str:
    proc = run_cli("predict", str(source), str(image), "--out", str(out), check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    return lines[0]


def test_predict_refuses_a_folder_as_out_before_predicting(tmp_path):
    """Refused before the model is even read: a run directory that could not predict anything still gets the
    --out line (without the check it failed only after predicting)."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("task: classification\n")
    (tmp_path / "out").mkdir()
    line = _refused_out(run, tmp_path / "x.png", tmp_path / "out")
    assert "--out " in line and "is a folder; --out names the CSV file to write" in line


def test_formula_ids_are_written_as_text_and_read_back(cls_export, image, tmp_path):
    """An image named =2+3_0.png: predict's table and heatmaps.csv write the id with a leading quote (a spreadsheet
    shows text, not 5); spft.csvsafe.read_rows gives the original id back; numbers stay numbers."""
    from spft.csvsafe import read_rows

    evil = "=2+3_0.png"
    shutil.copyfile(image, tmp_path / evil)
    (tmp_path / "worklist.csv").write_text(f"path\n{evil}\n")  # the id is the CSV's cell as written
    out = tmp_path / "p.csv"
    run_cli("predict", str(cls_export), str(tmp_path / "worklist.csv"), "--out", str(out), "--heatmaps",
            str(tmp_path / "maps"), "--heatmap-classes", "all")
    for table in (out, tmp_path / "maps" / "heatmaps.csv"):
        cells = [line.split(",")[0] for line in table.read_text().splitlines()[1:]]
        assert cells and all(c == f"'{evil}" for c in cells), (table, cells)
        with open(table, newline="") as fh:
            rows = read_rows(fh)
        assert {r["id"] for r in rows} == {evil}
    prob = next(c for c in read_rows(open(out, newline=""))[0] if c.startswith("prob_"))
    assert not read_rows(open(out, newline=""))[0][prob].startswith("'")
