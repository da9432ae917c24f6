"""``spft predict --engine torch|onnx`` (issue 21 item 6, CPU serving) on one tiny run exported with ``--format onnx``.

The run is trained and exported through the real CLI once for the module; its ``calibration.json`` is then given a
temperature that ``model.onnx`` does not have baked in, and its thresholds one per class, so the check that the two
engines' tables agree (probabilities within 1e-4, the same ``pred_<class>``) also checks that the onnx engine applies
the folder's calibration and thresholds, not the export's ``probabilities`` output. The default stays torch (the
measurement in benchmarks/RESULTS.md, "CPU serving"), also for a folder with model.onnx. The refusals are one
stderr line each, exit 2, before a model is built: ``--engine onnx`` on a run directory or an export without
``model.onnx``, without onnxruntime, with ``--heatmaps`` or ``--device cuda``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli, tiny_overrides
from PIL import Image

import spft
from spft.cli import main
from spft.data.io import load_image
from spft.errors import ConfigError

TEMPERATURE = 1.7
NEEDS_EXPORT = "has no model.onnx; export it with spft export RUN --out DIR --format onnx"


@pytest.fixture(scope="module")
def exported(spft_cache, tmp_path_factory) -> tuple[Path, Path]:
    """(run directory, its ``--format onnx`` export folder with a temperature and thresholds of its own)."""
    root = tmp_path_factory.mktemp("engine")
    run_cli("train", "phantom_cxr", *tiny_overrides(root / "run", n_images=60, epochs=1))
    run_cli("export", str(root / "run"), "--out", str(root / "export"), "--format", "onnx")
    folder = root / "export"
    classes = json.loads((folder / "config.json").read_text())["spft"]["classes"]
    (folder / "calibration.json").write_text(json.dumps({"method": "temperature", "temperature": TEMPERATURE}))
    (folder / "thresholds.json").write_text(json.dumps({"method": "test", "target": None, "split": None, "classes": {
        c: {"threshold": t} for c, t in zip(classes, np.linspace(0.3, 0.7, len(classes)))}}))
    return root / "run", folder


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """Five grey PNGs of other sizes than the model's (resize and crop run), one 16-bit."""
    folder = tmp_path_factory.mktemp("engine_images")
    rng = np.random.default_rng(0)
    for i, side in enumerate((64, 80, 48, 100, 64)):
        Image.fromarray(rng.integers(0, 256, (side, side + 8 * i), dtype=np.uint8)).save(folder / f"img{i}.png")
    Image.fromarray(rng.integers(0, 65536, (72, 72), dtype=np.uint16)).save(folder / "deep.png")
    return folder


def _probs(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith("prob_")]


def test_onnx_and_torch_engines_give_the_same_table(exported, images, tmp_path):
    """Through the CLI, batch size 4 over 6 images (a full and a partial batch): same ids, probabilities within 1e-4,
    the same predictions; the log says which engine ran; the folder's temperature is applied by both."""
    _, folder = exported
    tables = {}
    for engine in ("onnx", "torch"):
        out = tmp_path / f"{engine}.csv"
        proc = run_cli("predict", str(folder), str(images), "--out", str(out), "--engine", engine,
                       "--batch-size", "4", "--device", "cpu")
        assert f"({engine}, cpu, temperature {TEMPERATURE:g})" in proc.stderr, proc.stderr
        tables[engine] = pd.read_csv(out)
    onnx, torch_ = tables["onnx"], tables["torch"]
    assert len(onnx) == 6 and list(onnx["id"]) == list(torch_["id"]) and list(onnx.columns) == list(torch_.columns)
    np.testing.assert_allclose(onnx[_probs(onnx)].to_numpy(), torch_[_probs(torch_)].to_numpy(), rtol=0, atol=1e-4)
    preds = [c for c in onnx.columns if c.startswith("pred_")]
    assert (onnx[preds].to_numpy() == torch_[preds].to_numpy()).all()
    # the temperature is the folder's, not the T = 1 that model.onnx's own probabilities output has baked in
    m = spft.load(folder, device="cpu", engine="torch")
    pixels = m.transform(load_image(images / "img0.png", color=m.color))[None]
    expected = 1 / (1 + np.exp(-m.logits(pixels).numpy().astype(np.float64) / TEMPERATURE))
    row = onnx[onnx["id"].str.endswith("img0.png")]
    np.testing.assert_allclose(row[_probs(onnx)].to_numpy()[0], expected[0], atol=1e-4)


def test_python_api_engine(exported):
    """``spft.load(..., engine=)``: torch by default (also for a folder with model.onnx), onnx when asked; the onnx
    classifier refuses heatmaps in one line and predicts arrays as the torch one does."""
    run, folder = exported
    m = spft.load(folder, device="cpu", engine="onnx")
    assert m.engine == "onnx" and m.onnx is not None and "engine='onnx'" in repr(m)
    assert spft.load(run, device="cpu").engine == "torch"
    reference = spft.load(folder, device="cpu")
    assert reference.engine == "torch" and reference.onnx is None
    with pytest.raises(ConfigError, match="heatmaps need engine='torch'"):
        m.heatmaps(np.zeros((40, 40), np.uint8))
    arrays = [np.random.default_rng(i).integers(0, 256, (50, 60), dtype=np.uint8) for i in range(3)]
    a, b = m.predict(arrays, batch_size=2), reference.predict(arrays, batch_size=2)
    np.testing.assert_allclose(a[_probs(a)].to_numpy(), b[_probs(b)].to_numpy(), rtol=0, atol=1e-4)


def _refused(args: list[str], capsys) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_engine_refusals_are_one_line(exported, images, tmp_path, capsys, monkeypatch):
    run, folder = exported
    image = str(images / "img0.png")
    out = ["--out", str(tmp_path / "p.csv")]
    line = _refused(["predict", str(run), image, "--engine", "onnx", *out], capsys)
    assert line == f"spft predict: error: {run} {NEEDS_EXPORT}"
    plain = tmp_path / "plain"
    shutil.copytree(folder, plain, ignore=shutil.ignore_patterns("model.onnx"))
    line = _refused(["predict", str(plain), image, "--engine", "onnx", *out], capsys)
    assert line == f"spft predict: error: {plain} {NEEDS_EXPORT}"
    line = _refused(["predict", str(folder), image, "--engine", "onnx", "--heatmaps", str(tmp_path / "maps"), *out],
                    capsys)
    assert line.startswith("spft predict: error: --heatmaps needs --engine torch"), line
    line = _refused(["predict", str(folder), image, "--engine", "onnx", "--device", "cuda", *out], capsys)
    assert "--engine onnx runs on the CPU" in line or "no CUDA device" in line, line
    monkeypatch.setattr("spft.tasks.classification.engine.onnxruntime_installed", lambda: False)
    line = _refused(["predict", str(folder), image, "--engine", "onnx", *out], capsys)
    assert line == "spft predict: error: --engine onnx needs onnxruntime: pip install 'spft[export]'"
    assert not (tmp_path / "p.csv").exists() and not (tmp_path / "maps").exists()
    assert spft.load(folder, device="cpu").engine == "torch"  # the default needs no onnxruntime
