"""``spft predict --heatmaps DIR`` / ``Classifier.save_heatmaps`` / the pointing game on phantoms / the demo's last
step, on one tiny run trained once for the module (through the Python API).

What is checked: each (image, class) map is a float32 ``H x W`` array at the image's own size, finite and
non-negative, with an RGB overlay of the same size, listed in ``heatmaps.csv``; the default classes are exactly the
ones predicted positive at the run's thresholds; same-stem images in different folders and the same file twice get
distinct names; rollout writes one map per image; wrong requests fail before predicting; failures are listed, not
skipped. The pointing game is scored correctly against synthetic maps whose peak is placed inside / outside a box
and against the union area of several boxes; on the tiny run it returns well-formed numbers and no empty map.
Whether the maps point at the findings is not tested at this size: a 2- or 4-block Dinov2 trained for a minute
(1000 phantoms at 64 px) scored at or below chance, so that claim rests on the demo-sized measurement of
benchmarks/pointing_game.py (docs/using-a-model.md, "Heatmaps").
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
from spft.errors import ConfigError
from spft.models.heatmaps import pointing_game
from spft.tasks.classification.explain import safe_name, unique_names
from spft.tasks.classification.pointing import box_fraction, phantom_pointing_game
from spft.tasks.classification.predict import demo_predictions, predict


def _train(run_dir: Path, overrides: list[str]) -> Path:
    from spft.config import load_config
    from spft.tasks.classification.train import train

    return train(load_config("configs/phantom_cxr.yaml", overrides + [f"run.dir={run_dir}"]))


@pytest.fixture(scope="module")
def run(spft_cache, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("heatmaps") / "run"
    return _train(run_dir, tiny_overrides(run_dir, n_images=120, epochs=2))


@pytest.fixture(scope="module")
def images(run) -> list[str]:
    from spft.data.registry import load_table
    from spft.experiments.rundir import load_run_config

    cfg = load_run_config(run)
    table = load_table(cfg.data, cfg.seed)
    return [p for p, s in zip(table.paths, table.splits) if s == "test"][:3]


def test_names_are_safe_and_unique():
    assert safe_name("../a b/ç.png") == "a_b_.png" and safe_name("...") == "image"
    assert safe_name("array[0]") == "array_0"
    ids = ["/d/x/img.png", "/d/y/img.png", "/d/x/img.jpg", "/d/x/other.png", "/d/x/other.png", "a?b.png"]
    names = unique_names(ids)
    assert names == ["x_img.png", "y_img.png", "x_img.jpg", "other", "other_2", "a_b"]  # the same file twice: _2
    assert unique_names(["s/Scan.png", "t/scan.png"]) == ["s_Scan", "t_scan"]  # case-insensitive file systems
    assert unique_names(["/d/x/img.png", "/d/y/img.png"]) == ["x_img", "y_img"]  # the path below the shared folder
    assert unique_names(["s/a.png", "s/a.jpg"]) == ["a.png", "a.jpg"]  # only the suffix differs


def test_pointing_game_against_synthetic_maps():
    boxes = [(10, 20, 30, 25)]  # x 10..29, y 20..24
    inside, outside, edge = (np.zeros((40, 50), np.float32) for _ in range(3))
    inside[22, 15] = 1.0
    outside[22, 30] = 1.0  # x = 30 is the exclusive max
    edge[24, 29] = 2.0
    assert pointing_game([inside, outside, edge, np.zeros((40, 50))], [boxes] * 4) == [True, False, True, None]
    assert box_fraction(boxes, 40, 50) == pytest.approx(20 * 5 / 2000)
    overlapping = [(0, 0, 10, 10), (5, 5, 15, 15), (45, 35, 60, 60)]  # union, clipped to the image
    assert box_fraction(overlapping, 40, 50) == pytest.approx((100 + 100 - 25 + 25) / 2000)


def _thresholds(run: Path, copy: Path, value: dict[str, float]) -> Path:
    shutil.copytree(run, copy)
    classes = json.loads((run / "data.json").read_text())["classes"]
    chosen = {c: {"threshold": value.get(c, 1.0)} for c in classes}
    (copy / "thresholds.json").write_text(json.dumps({"method": "youden", "target": None, "split": "val",
                                                      "classes": chosen}))
    return copy


def test_heatmap_files_default_classes_and_failures(run, images, tmp_path):
    classes = json.loads((run / "data.json").read_text())["classes"]
    copy = _thresholds(run, tmp_path / "run", {classes[0]: 0.0, classes[2]: 0.0})  # those two positive everywhere
    folders = [tmp_path / "x", tmp_path / "y"]
    for f in folders:
        f.mkdir()
        shutil.copy(images[0], f / "scan one.png")  # same stem in two folders, a space in the name
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    inputs = [str(folders[0] / "scan one.png"), str(folders[1] / "scan one.png"), images[1], str(bad)]
    out = tmp_path / "maps"
    result = predict(copy, inputs, workers=1, heatmaps=out)
    assert [f.id for f in result.failures] == [str(bad)]  # listed by predict, no heatmap either
    listing = pd.read_csv(out / "heatmaps.csv")
    assert result.heatmaps == out / "heatmaps.csv"
    assert list(listing.columns) == ["id", "class", "prob", "npy", "png", "figure"]
    assert list(zip(listing["id"], listing["class"])) == [(i, c) for i in inputs[:3] for c in (classes[0], classes[2])]
    assert listing["npy"].tolist()[:4] == [f"x_scan_one__{classes[0]}.npy", f"x_scan_one__{classes[2]}.npy",
                                           f"y_scan_one__{classes[0]}.npy", f"y_scan_one__{classes[2]}.npy"]
    table = result.table.set_index("id")
    for row in listing.to_dict("records"):
        heat = np.load(out / row["npy"])
        w, h = Image.open(row["id"]).size
        assert heat.shape == (h, w) and heat.dtype == np.float32
        assert np.isfinite(heat).all() and (heat >= 0).all() and heat.max() > 0
        picture = Image.open(out / row["png"])
        assert picture.mode == "RGB" and picture.size == (w, h)
        figure = Image.open(out / row["figure"])  # image, overlay, colour bar, title: readable whatever the image size
        assert row["figure"] == f"figures/{row['png']}" and figure.size[0] >= 800 and figure.size[1] >= 400
        assert row["prob"] == pytest.approx(table.loc[row["id"], f"prob_{row['class']}"])
    a, b = (np.load(out / f"{s}_scan_one__{classes[0]}.npy") for s in "xy")
    np.testing.assert_allclose(a, b, atol=1e-5)  # same pixels, same map
    direct = spft.load(copy).heatmaps(images[1], classes[2])[classes[2]]  # batched == one image at a time
    np.testing.assert_allclose(np.load(out / listing["npy"].iloc[-1]), direct, rtol=1e-4, atol=1e-6)


def test_rollout_all_classes_and_wrong_requests(run, images, tmp_path):
    m = spft.load(run)
    listing = m.save_heatmaps(images[:2], tmp_path / "roll", method="rollout")
    assert listing["class"].tolist() == ["rollout", "rollout"] and listing["prob"].isna().all()
    assert all((tmp_path / "roll" / f).is_file() for f in listing["npy"].tolist() + listing["png"].tolist())
    everything = m.save_heatmaps([images[0], np.zeros((30, 20), np.uint8), "missing.png"], tmp_path / "all",
                                 classes="all")
    assert len(everything) == 2 * len(m.classes) and everything.attrs["failed"][0][0] == "missing.png"
    assert np.load(tmp_path / "all" / everything["npy"].iloc[-1]).shape == (30, 20)
    assert everything["npy"].iloc[-1].startswith("array_1__")
    for kwargs, message in (({"heatmap_classes": "Nope"}, "unknown class"),
                            ({"heatmap_method": "lrp"}, "gradcam or rollout"),
                            ({"heatmap_method": "rollout", "heatmap_classes": m.classes[0]}, "class-agnostic")):
        with pytest.raises(ConfigError, match=message):
            predict(run, images[:1], heatmaps=tmp_path / "no", **kwargs)
    with pytest.raises(ConfigError, match="heatmap folder"):
        predict(run, images[:1], heatmap_classes="all")
    assert not (tmp_path / "no").exists()  # refused before anything ran


def test_pointing_game_and_demo_step_on_the_tiny_run(run):
    r = phantom_pointing_game(run)
    assert r["no_signal"] == 0  # no all-zero Grad-CAM map, even on a barely trained model
    assert r["n"] == len(r["pairs"]) > 0 and 0 <= r["hit_rate"] <= 1 and 0 < r["chance"] < 1
    assert sum(c["n"] for c in r["per_class"].values()) == r["n"]
    assert r["hit_rate"] == pytest.approx(np.mean([p[2] for p in r["pairs"]]))
    assert r["chance"] == pytest.approx(np.mean([p[3] for p in r["pairs"]]))
    table_file, folder, n_maps = demo_predictions(run)
    assert table_file == run / "demo_predictions" / "predictions.csv" and len(pd.read_csv(table_file)) == 4
    assert len(pd.read_csv(folder / "heatmaps.csv")) == n_maps


@pytest.mark.slow
def test_cli_predict_writes_heatmaps(run, images, tmp_path):
    proc = run_cli("predict", str(run), *images[:2], "--out", str(tmp_path / "p.csv"), "--heatmaps",
                   str(tmp_path / "maps"), "--heatmap-classes", "Effusion,Cardiomegaly")
    assert proc.stdout.strip().splitlines()[-1] == str(tmp_path / "p.csv")
    listing = pd.read_csv(tmp_path / "maps" / "heatmaps.csv")
    assert listing["class"].tolist() == ["Effusion", "Cardiomegaly"] * 2 and "heatmaps" in proc.stderr
