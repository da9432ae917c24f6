"""The pre-resized image cache: same pixels into the model, resumable preparation, and training reads it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import TINY_MODEL, run_cli
from datasets_fixtures import make_chestxray14, make_ham10000

from spft.config import load_config
from spft.data.cache import ImageCache, prepare_cache
from spft.data.dataset import ImageDataset
from spft.data.registry import build_table
from spft.data.transforms import ImageTransform


def _cfg(config: str, root: Path, cache: Path, *extra: str):
    return load_config(config, [f"data.root={root}", f"data.image_cache={cache}", "model.name=null", *TINY_MODEL,
                                *extra])


@pytest.mark.parametrize("config, make", [("configs/chestxray14.yaml", make_chestxray14),
                                          ("configs/ham10000.yaml", make_ham10000)], ids=["grey_rgba", "rgb_jpeg"])
def test_cached_images_give_the_same_pixels(tmp_path, config, make):
    make(tmp_path / "data")
    cfg = _cfg(config, tmp_path / "data", tmp_path / "cache")
    summary = prepare_cache(cfg, workers=2)
    table = build_table(cfg.data, cfg.seed)
    assert summary["written"] == len(table.paths) and summary["size"] == 32 and not summary["failed"]
    cached = ImageCache(cfg.data.image_cache, 32, cfg.data.color).redirect(table)
    assert all(p.startswith(str(tmp_path / "cache")) for p in cached.paths)
    transform = ImageTransform(32, (0.53,) * 3, (0.26,) * 3)
    for split in ("train", "val", "test"):
        original = ImageDataset(table, split, transform, cfg.data.color)
        from_cache = ImageDataset(cached, split, transform, cfg.data.color)
        for i in range(len(original)):
            assert torch.equal(original[i]["image"], from_cache[i]["image"]), (split, i)
            assert torch.equal(original[i]["labels"], from_cache[i]["labels"])


def test_preparation_resumes_after_an_interruption(tmp_path):
    make_chestxray14(tmp_path / "nih")
    cfg = _cfg("configs/chestxray14.yaml", tmp_path / "nih", tmp_path / "cache")
    first = prepare_cache(cfg, workers=2)
    cache = ImageCache(cfg.data.image_cache, 32, "grey")
    table = build_table(cfg.data, cfg.seed)
    lost = [cache.entry(p) for p in table.paths[:5]]
    for entry in lost:  # an interrupted run: entries never renamed into place, a temp file left behind
        entry.unlink()
    partial = lost[0].with_name(lost[0].name + ".tmp123-456")
    partial.write_bytes(b"\x89PNG half")
    again = prepare_cache(cfg, workers=2)
    assert (again["written"], again["skipped"]) == (5, first["written"] - 5)
    assert all(e.is_file() for e in lost) and not partial.exists()
    assert prepare_cache(cfg, workers=2)["written"] == 0


def test_cache_is_keyed_by_path_size_and_colour(tmp_path):
    a = ImageCache(tmp_path, 32, "grey")
    assert a.entry("/x/1.png") != a.entry("/x/2.png")
    assert a.entry("/x/1.png") != ImageCache(tmp_path, 64, "grey").entry("/x/1.png")
    assert ImageCache(tmp_path, 32, "rgb").folder != a.folder and a.folder.name == "32px-grey-v1"


def test_training_reads_the_cache(tmp_path):
    """build_run (what spft train and evaluate use) hands the cached files to the datasets; same tensors."""
    from spft.tasks.classification.train import build_run

    make_chestxray14(tmp_path / "nih")
    cfg = _cfg("configs/chestxray14.yaml", tmp_path / "nih", tmp_path / "cache")
    proc = run_cli("prepare", "cache", "configs/chestxray14.yaml", f"data.root={tmp_path / 'nih'}",
                   f"data.image_cache={tmp_path / 'cache'}", "model.name=null", *TINY_MODEL)
    assert "written, 0 already there, 0 missing, 0 failed" in proc.stdout
    table, _, _, dm = build_run(cfg, None)
    _, _, _, plain = build_run(load_config("configs/chestxray14.yaml", [f"data.root={tmp_path / 'nih'}",
                                                                          "model.name=null", *TINY_MODEL]), None)
    train = dm.datasets["train"]
    assert all(train.table.paths[i].startswith(str(tmp_path / "cache")) for i in train.index)
    assert table.paths[0].startswith(str(tmp_path / "nih"))  # the table itself keeps the original paths
    for i in range(len(train)):
        assert torch.equal(train[i]["image"], plain.datasets["train"][i]["image"])
