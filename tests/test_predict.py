"""``spft predict`` / ``spft.load`` / ``spft export`` on one tiny classification run (trained once for the module).

What is checked: predicting the run's own test images reproduces ``predictions_test.csv`` (1e-6), and with a
``calibration.json`` temperature the probabilities are ``sigmoid(logit / T)``; ``thresholds.json`` decides
``pred_<class>`` (null -> 0.5, warned; no file -> 0.5 and T = 1, said once); every input kind (files, folders, globs,
CSV, 8/16-bit PNG, RGBA, JPEG, DICOM, numpy arrays, PIL images) and every failure kind (missing, unmatched glob,
corrupt file, blank CSV cell) is listed, never skipped; the export folder predicts identically, loads in transformers
(``AutoModel`` weights, ``AutoImageProcessor`` pixels), and its ONNX / TorchScript models match PyTorch on 16 images.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO, run_cli, tiny_overrides
from PIL import Image

import spft
from spft.errors import ConfigError
from spft.tasks.classification.predict import predict


@pytest.fixture(scope="module")
def run(spft_cache, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("predict") / "run"
    run_cli("train", "phantom_cxr", *tiny_overrides(run_dir, n_images=120, epochs=2,
                                                     extra=("evaluation.calibration=temperature",)))
    return run_dir


@pytest.fixture(scope="module")
def table(run):
    from spft.data.registry import load_table
    from spft.experiments.rundir import load_run_config

    cfg = load_run_config(run)
    return load_table(cfg.data, cfg.seed)


def _probs(df: pd.DataFrame) -> list[str]:
    return [c for c in df.columns if c.startswith("prob_")]


def _copy_run(run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


def _logits(expected: pd.DataFrame) -> np.ndarray:
    return expected[[c for c in expected.columns if c.startswith("logit_")]].to_numpy()


def test_reproduces_predictions_test_csv(run, table, caplog):
    """The run's own test images: the calibrated probabilities of predictions_test.csv, its thresholds."""
    calibration = json.loads((run / "calibration.json").read_text())
    record = json.loads((run / "thresholds.json").read_text())
    assert calibration["method"] == "temperature" and calibration["temperature"] != 1.0
    caplog.set_level(logging.WARNING, logger="spft")
    result = predict(run, [table.source], workers=2)
    assert not result.failures
    assert not [r for r in caplog.records if "has no calibration.json" in r.getMessage()]
    expected = pd.read_csv(run / "predictions_test.csv").set_index("id")
    got = result.table.set_index("id")
    assert list(result.table["id"]) == list(table.ids)  # every row of the CSV, in its order
    cols = _probs(expected)
    assert cols == _probs(got)
    np.testing.assert_allclose(got.loc[expected.index, cols].to_numpy(), expected[cols].to_numpy(), rtol=0, atol=1e-6)
    t = calibration["temperature"]
    np.testing.assert_allclose(expected[cols].to_numpy(), 1 / (1 + np.exp(-_logits(expected) / t)), atol=1e-12)
    for c in cols:
        name = c[len("prob_"):]
        entry = record["classes"][name]
        threshold = 0.5 if entry is None else entry["threshold"]
        assert (got[f"pred_{name}"] == (got[c] >= threshold).astype(int)).all()


def test_older_run_without_records_uses_t1_and_half(run, table, tmp_path, caplog):
    copy = _copy_run(run, tmp_path)
    (copy / "calibration.json").unlink()
    (copy / "thresholds.json").unlink()
    caplog.set_level(logging.WARNING, logger="spft")
    m = spft.load(copy)
    said = [r.getMessage() for r in caplog.records if "calibration.json" in r.getMessage()]
    assert len(said) == 1 and "thresholds.json" in said[0] and "temperature 1" in said[0]
    assert m.temperature == 1.0 and set(m.thresholds.values()) == {0.5}
    expected = pd.read_csv(run / "predictions_test.csv")
    df = m.predict([str(Path(table.source).parent / i) for i in expected["id"]])
    np.testing.assert_allclose(df[_probs(expected)].to_numpy(), 1 / (1 + np.exp(-_logits(expected))), atol=1e-6)
    for c in _probs(expected):
        assert (df["pred_" + c[5:]] == (df[c] >= 0.5).astype(int)).all()


def test_calibration_and_thresholds_are_applied(run, table, tmp_path, caplog):
    copy = _copy_run(run, tmp_path)
    classes = json.loads((run / "data.json").read_text())["classes"]
    (copy / "calibration.json").write_text(json.dumps({"method": "temperature", "temperature": 2.0, "nll": 0.3}))
    chosen = {c: {"threshold": 0.3 + 0.05 * i, "sensitivity": 0.9, "specificity": 0.5} for i, c in enumerate(classes)}
    chosen[classes[1]] = None
    (copy / "thresholds.json").write_text(json.dumps({"method": "youden", "target": None, "split": "val",
                                                      "classes": chosen}))
    caplog.set_level(logging.WARNING, logger="spft")
    m = spft.load(copy)
    assert m.temperature == 2.0
    assert m.thresholds[classes[0]] == pytest.approx(0.3) and m.thresholds[classes[1]] == 0.5
    assert any(classes[1] in r.getMessage() and "0.5" in r.getMessage() for r in caplog.records)
    expected = pd.read_csv(run / "predictions_test.csv")
    df = m.predict([str(Path(table.source).parent / i) for i in expected["id"]])
    np.testing.assert_allclose(df[_probs(expected)].to_numpy(), 1 / (1 + np.exp(-_logits(expected) / 2.0)),
                               rtol=0, atol=1e-6)
    for c in classes:
        assert (df[f"pred_{c}"] == (df[f"prob_{c}"] >= m.thresholds[c]).astype(int)).all()


def test_single_label_models_use_softmax_and_argmax(run):
    m = spft.load(run)
    m.loss, m.temperature = "ce", 1.5
    pad = [0.0] * (len(m.classes) - 3)
    logits = torch.tensor([[2.0, 0.0, -1.0, *pad], [0.0, 3.0, 0.0, *pad]])
    probs = m.probabilities_of_logits(logits)
    np.testing.assert_allclose(probs, torch.softmax(logits.double() / 1.5, -1).numpy(), atol=1e-12)
    t = m.table(["a", "b"], probs)
    assert t[[f"pred_{c}" for c in m.classes]].sum(axis=1).tolist() == [1, 1]
    assert t[f"pred_{m.classes[0]}"].tolist() == [1, 0] and t[f"pred_{m.classes[1]}"].tolist() == [0, 1]


def _write_inputs(folder: Path, source_png: Path) -> dict[str, Path]:
    """One image in each supported form, made from the same 8-bit phantom."""
    from test_dicom import write_dicom

    grey = np.asarray(Image.open(source_png).convert("L")).astype(np.float64)
    grey = np.rint((grey - grey.min()) * 255 / (grey.max() - grey.min())).astype(np.uint8)  # DICOM is min-max scaled
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sub").mkdir()
    files = {"png8": folder / "a.png", "png16": folder / "sub" / "b16.png", "rgba": folder / "sub" / "c.png",
             "jpeg": folder / "d.jpg", "dicom": folder / "sub" / "e.dcm"}
    Image.fromarray(grey).save(files["png8"])
    Image.fromarray(grey.astype(np.uint16) * 257).save(files["png16"])
    rgba = np.dstack([grey, grey, grey, np.full_like(grey, 200)])
    Image.fromarray(rgba, "RGBA").save(files["rgba"])
    Image.fromarray(grey).save(files["jpeg"], quality=95)
    write_dicom(files["dicom"], grey.astype(np.uint16))
    (folder / "notes.txt").write_text("not an image")
    return files


def test_every_input_kind_and_every_failure_is_reported(run, table, tmp_path):
    files = _write_inputs(tmp_path / "in", Path(table.paths[0]))
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    csv = tmp_path / "list.csv"
    pd.DataFrame({"image": ["in/a.png", "", "in/d.jpg", "missing.png"], "x": [1, 2, 3, 4]}).to_csv(csv, index=False)
    result = predict(run, [str(tmp_path / "in"), str(tmp_path / "in" / "*.jpg"), str(csv), str(bad),
                           str(tmp_path / "nothing*.png"), str(tmp_path / "absent.png")], workers=2)
    ids = list(result.table["id"])
    folder_ids = [str(tmp_path / "in" / "a.png"), str(tmp_path / "in" / "d.jpg"),
                  str(tmp_path / "in" / "sub" / "b16.png"), str(tmp_path / "in" / "sub" / "c.png"),
                  str(tmp_path / "in" / "sub" / "e.dcm")]
    assert ids == folder_ids + [str(files["jpeg"]), "in/a.png", "in/d.jpg"]
    failed = {f.id: f.error for f in result.failures}
    assert set(failed) == {f"{csv}:3", "missing.png", str(bad), str(tmp_path / "nothing*.png"),
                           str(tmp_path / "absent.png")}
    assert "cannot decode" in failed[str(bad)] and "no file matches" in failed[str(tmp_path / "nothing*.png")]
    probs = result.table.set_index("id")[_probs(result.table)]
    same = probs.loc[[str(files["png8"]), str(files["png16"]), str(files["rgba"]), str(files["dicom"])]].to_numpy()
    np.testing.assert_allclose(same, np.repeat(same[:1], 4, axis=0), atol=1e-6)  # same pixels, same prediction
    out, sidecar = result.write(tmp_path / "preds.csv")
    assert sidecar == tmp_path / "preds.failed.csv"
    assert len(pd.read_csv(sidecar)) == 5 and list(pd.read_csv(sidecar).columns) == ["path", "error"]
    assert len(pd.read_csv(out)) == 8


def test_arrays_and_pil_images_match_files(run, table, tmp_path):
    files = _write_inputs(tmp_path / "in", Path(table.paths[0]))
    grey = np.asarray(Image.open(files["png8"]))
    m = spft.load(run)
    df = m.predict([files["png8"], grey, grey.astype(np.uint16) * 257, grey / 255.0, np.dstack([grey] * 3),
                    Image.open(files["rgba"]), grey[:, :, None]])
    assert list(df["id"]) == [str(files["png8"]), "array[1]", "array[2]", "array[3]", "array[4]", "image[5]",
                              "array[6]"]
    p = df[_probs(df)].to_numpy()
    np.testing.assert_allclose(p, np.repeat(p[:1], len(p), axis=0), atol=1e-6)
    bad = m.predict([np.zeros((2, 2, 5), np.uint8), grey])
    assert len(bad) == 1 and bad.attrs["failed"][0][0] == "array[0]"
    with pytest.raises(Exception, match="shape"):
        m.predict([np.zeros((2, 2, 5), np.uint8)], on_error="raise")
    assert sorted(m.thresholds) == sorted(m.classes) and m.preprocessing.size == 32


def test_heatmaps_of_one_image(run, table):
    m = spft.load(run)
    image = Image.open(table.paths[0])
    maps = m.heatmaps(table.paths[0], classes=m.classes[:2])
    assert list(maps) == m.classes[:2]
    for heat in maps.values():
        assert heat.shape == (image.size[1], image.size[0]) and heat.dtype == np.float32 and (heat >= 0).all()
    crop = m.heatmaps(np.asarray(image), method="rollout", original=False)["rollout"]
    assert crop.shape == (m.preprocessing.size, m.preprocessing.size)
    with pytest.raises(ConfigError, match="unknown class"):
        m.heatmaps(table.paths[0], classes="nope")


def test_export_predicts_identically_and_loads_in_transformers(run, table, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoImageProcessor, AutoModel
    from transformers.utils import logging as hf_logging

    from spft.data.io import load_image
    from spft.data.transforms import ImageTransform

    out = spft.load(run).loaded  # reference weights
    folder = tmp_path / "export"
    assert run_export(run, folder) == folder
    for name in ("model.safetensors", "config.json", "preprocessor_config.json", "thresholds.json",
                 "calibration.json", "MODEL_CARD.md", "export.json"):
        assert (folder / name).is_file(), name
    block = json.loads((folder / "config.json").read_text())["spft"]
    assert block["task"] == "classification" and block["classes"] == out.classes and block["n_prefix"] == 1
    assert block["pooling"] == "mean" and block["head_hidden"] == 32 and block["loss"] == "bce"
    assert json.loads((folder / "calibration.json").read_text()) == json.loads((run / "calibration.json").read_text())
    assert json.loads((folder / "thresholds.json").read_text()) == json.loads((run / "thresholds.json").read_text())
    keys = load_file(folder / "model.safetensors")
    assert any(k.startswith("spft_head.") for k in keys) and "embeddings.cls_token" in keys

    rows = [p for p, s in zip(table.paths, table.splits) if s == "test"]
    from_run = spft.load(run).predict(rows)
    from_export = spft.load(folder).predict(rows)
    pd.testing.assert_frame_equal(from_run, from_export, check_exact=False, atol=1e-6, rtol=0)

    hf_logging.set_verbosity_error()  # the spft_head.* keys are reported as unused: that is the head
    encoder = AutoModel.from_pretrained(folder)
    ours = out.model.encoder.state_dict()
    for k, v in encoder.state_dict().items():
        torch.testing.assert_close(v, ours[k], rtol=0, atol=0)

    transform = ImageTransform(out.preprocessing)
    grey = Image.fromarray(np.random.default_rng(0).integers(0, 256, (45, 61), dtype=np.uint8))
    image = load_image(rows[0], color="grey")
    pil = AutoImageProcessor.from_pretrained(folder, backend="pil")  # the same PIL steps: the same pixels
    default = AutoImageProcessor.from_pretrained(folder)  # torchvision's bicubic: at most one grey level apart
    one_level = 1 / 255 / min(out.preprocessing.std) + 1e-5
    for picture in (image, grey, grey.convert("RGB")):
        ours = transform(picture)
        theirs = pil(images=picture.convert("RGB"), return_tensors="pt")["pixel_values"][0]
        torch.testing.assert_close(theirs.float(), ours, rtol=0, atol=1e-5)
        theirs = default(images=picture.convert("RGB"), return_tensors="pt")["pixel_values"][0]
        assert theirs.shape == ours.shape and float((theirs.float() - ours).abs().max()) <= one_level
    card = (folder / "MODEL_CARD.md").read_text()
    for section in ("## Data", "## Preprocessing", "## Training recipe", "## Test metrics", "## Operating points",
                    "## Calibration", "Not a medical device", "method `youden`", "Method `temperature`"):
        assert section in card
    with pytest.raises(ConfigError, match="not an empty folder"):
        run_export(run, folder)


def run_export(run: Path, folder: Path, fmt: str = "safetensors") -> Path:
    from spft.tasks.registry import predict_api

    return predict_api("classification").export(run, folder, fmt)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_onnx_and_torchscript_match_pytorch(run, table, tmp_path, fmt):
    if fmt == "onnx":  # the export extra (onnx, onnxruntime, onnxscript) is installed by `make test`: no skip
        import onnxruntime as ort
    copy = _copy_run(run, tmp_path)
    (copy / "calibration.json").write_text(json.dumps({"method": "temperature", "temperature": 1.7}))
    folder = run_export(copy, tmp_path / "export", fmt)
    m = spft.load(folder)
    rows = [p for p, s in zip(table.paths, table.splits) if s == "test"][:16]
    pixels = torch.stack([m.transform(Image.open(p).convert("L")) for p in rows])
    expected = m.predict_pixels(pixels)
    info = json.loads((folder / "export.json").read_text())["formats"][fmt]
    if fmt == "onnx":
        assert info["opset"] >= 17 and info["exporter"]
        assert json.loads((folder / "config.json").read_text())["spft"]["export"]["onnx"]["opset"] == info["opset"]
        session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == ["pixel_values"]
        logits, probs = session.run(["logits", "probabilities"], {"pixel_values": pixels.numpy()})
    else:
        traced = torch.jit.load(str(folder / "model.torchscript.pt"))
        logits, probs = (t.numpy() for t in traced(pixels))
    assert probs.shape == (16, len(m.classes))
    np.testing.assert_allclose(probs, expected, rtol=0, atol=1e-4)
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-logits / 1.7)), rtol=0, atol=1e-5)


def test_export_refused_for_unknown_format(tmp_path, capsys):
    """A format a task has no exporter for is one line, not a traceback (detection / segmentation export:
    tests/test_predict_detection.py, test_predict_segmentation.py)."""
    from spft.cli import main

    for task, fmt in (("detection", "torchscript"), ("segmentation", "onnx")):
        run = tmp_path / task
        run.mkdir()
        (run / "config.yaml").write_text(f"task: {task}\n")
        assert main(["export", str(run), "--out", str(tmp_path / f"{task}-out"), "--format", fmt]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"spft export: error: --format {fmt}: not available for {task} runs")


def test_import_spft_stays_light(run):
    code = ("import sys, spft; assert 'torch' not in sys.modules; spft.load; assert 'torch' not in sys.modules; "
            f"m = spft.load({str(run)!r}); assert 'lightning' not in sys.modules, 'lightning imported'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.slow
def test_cli_predict_and_export(run, table, tmp_path):
    folder = Path(table.paths[0]).parent
    out = tmp_path / "p.csv"
    proc = run_cli("predict", str(run), str(folder), "--out", str(out), "--batch-size", "7", str(tmp_path / "no.png"),
                   check=False)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str(out)
    assert "no.png" in proc.stderr and (tmp_path / "p.failed.csv").is_file()
    assert len(pd.read_csv(out)) == len(table.paths)
    proc = run_cli("export", str(run), "--out", str(tmp_path / "exp"))
    assert proc.stdout.strip().splitlines()[-1] == str(tmp_path / "exp")
    proc = run_cli("predict", str(tmp_path / "exp"), table.paths[0], "--out", str(tmp_path / "q.csv"))
    assert proc.returncode == 0 and not (tmp_path / "q.failed.csv").exists()
    a = pd.read_csv(out).set_index("id").loc[[table.paths[0]]]
    b = pd.read_csv(tmp_path / "q.csv").set_index("id")
    np.testing.assert_allclose(a[_probs(a)].to_numpy(), b[_probs(b)].to_numpy(), atol=1e-6)
