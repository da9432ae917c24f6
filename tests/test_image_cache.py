"""The pre-resized image cache (png and npy formats): same pixels into the model, resumable and crash-safe
preparation, stale sources detected, corrupt arrays reported by name, and training reads it."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL, run_cli
from datasets_fixtures import make_chestxray14, make_ham10000
from PIL import Image
from torch.utils.data import DataLoader

from spft.config import load_config
from spft.data.cache import ImageCache, prepare_cache
from spft.data.dataset import ImageDataset
from spft.data.io import load_image, parse_row_ref
from spft.data.registry import build_table
from spft.data.transforms import ImageTransform


def _cfg(config: str, root: Path, cache: Path, *extra: str):
    return load_config(config, [f"data.root={root}", f"data.image_cache={cache}", "model.name=null", *TINY_MODEL,
                                *extra])


@pytest.mark.parametrize("fmt", ["png", "npy"])
@pytest.mark.parametrize("config, make", [("configs/chestxray14.yaml", make_chestxray14),
                                          ("configs/ham10000.yaml", make_ham10000)], ids=["grey_rgba", "rgb_jpeg"])
def test_cached_images_give_the_same_pixels(tmp_path, config, make, fmt):
    make(tmp_path / "data")
    cfg = _cfg(config, tmp_path / "data", tmp_path / "cache", f"data.image_cache_format={fmt}")
    summary = prepare_cache(cfg, workers=2)
    table = build_table(cfg.data, cfg.seed)
    assert summary["written"] == len(table.paths) and summary["size"] == 32 and not summary["failed"]
    assert summary["format"] == fmt
    cached = ImageCache(cfg.data.image_cache, 32, cfg.data.color, fmt).redirect(table)
    assert all(p.startswith(str(tmp_path / "cache")) for p in cached.paths)
    assert all((parse_row_ref(p) is not None) == (fmt == "npy") for p in cached.paths)
    transform = ImageTransform(32, (0.53,) * 3, (0.26,) * 3)
    for split in ("train", "val", "test"):
        original = ImageDataset(table, split, transform, cfg.data.color)
        from_cache = ImageDataset(cached, split, transform, cfg.data.color)
        for i in range(len(original)):
            assert torch.equal(original[i]["image"], from_cache[i]["image"]), (split, i)
            assert torch.equal(original[i]["labels"], from_cache[i]["labels"])


def _npy_setup(tmp_path):
    make_chestxray14(tmp_path / "nih")
    cfg = _cfg("configs/chestxray14.yaml", tmp_path / "nih", tmp_path / "cache", "data.image_cache_format=npy")
    return cfg, build_table(cfg.data, cfg.seed), ImageCache(cfg.data.image_cache, 32, "grey", "npy")


def _pixels(table, split="train") -> list[torch.Tensor]:
    ds = ImageDataset(table, split, ImageTransform(32, (0.5,) * 3, (0.25,) * 3), "grey")
    return [ds[i]["image"] for i in range(len(ds))]


def test_npy_png_and_no_cache_agree_through_dataloader_workers(tmp_path):
    """The three ways of reading give the same batches; the npy memmap is opened inside each worker process."""
    cfg, table, npy = _npy_setup(tmp_path)
    prepare_cache(cfg, workers=2)
    prepare_cache(_cfg("configs/chestxray14.yaml", tmp_path / "nih", tmp_path / "cache"), workers=2)
    png = ImageCache(cfg.data.image_cache, 32, "grey", "png")
    transform = ImageTransform(32, (0.5,) * 3, (0.25,) * 3)
    batches = []
    for reading, workers in ((table, 0), (png.redirect(table), 0), (npy.redirect(table), 2)):
        loader = DataLoader(ImageDataset(reading, "train", transform, "grey"), batch_size=4, num_workers=workers)
        batches.append(torch.cat([b["image"] for b in loader]))
    assert torch.equal(batches[0], batches[1]) and torch.equal(batches[0], batches[2])
    parts = sorted(p.name for p in npy.folder.glob("part-*.npy"))
    assert parts == ["part-0000.done.npy", "part-0000.npy"]  # one array for the whole set
    rows = np.load(npy.folder / "part-0000.npy", mmap_mode="r")
    assert rows.dtype == np.uint8 and rows.shape == (len(set(table.paths)), 32, 32)


def test_npy_preparation_resumes_after_an_interruption(tmp_path):
    cfg, table, cache = _npy_setup(tmp_path)
    first = prepare_cache(cfg, workers=2)
    n = first["written"]
    expected = _pixels(table)
    # Killed after writing some rows but before their done marks were flushed: rows hold anything, marks are 0.
    done_path = cache.folder / "part-0000.done.npy"
    done = np.load(done_path)
    done[:5] = 0
    np.save(done_path, done)
    rows = np.lib.format.open_memmap(cache.folder / "part-0000.npy", mode="r+")
    rows[:5] = 77  # half-written garbage
    rows.flush()
    del rows
    # ... and a part created by a run killed before it wrote its index, plus a temporary file.
    np.lib.format.open_memmap(cache.folder / "part-0001.npy", mode="w+", dtype=np.uint8, shape=(3, 32, 32))
    (cache.folder / "index.json.tmp1-2").write_text("{")
    redirected = cache.redirect(table)
    assert sum(parse_row_ref(p) is None for p in redirected.paths) == 5  # unfinished rows are read from the source
    assert all(torch.equal(a, b) for a, b in zip(expected, _pixels(redirected)))
    again = prepare_cache(cfg, workers=2)
    assert (again["written"], again["skipped"], again["stale"]) == (5, n - 5, 0)
    assert not (cache.folder / "part-0001.npy").exists() and not (cache.folder / "index.json.tmp1-2").exists()
    redirected = cache.redirect(table)
    assert all(parse_row_ref(p) is not None for p in redirected.paths)
    assert all(torch.equal(a, b) for a, b in zip(expected, _pixels(redirected)))
    assert prepare_cache(cfg, workers=2)["written"] == 0


def _change(path: str, value: int) -> None:
    """Rewrite a source image with other pixels and a later modification time."""
    Image.new("L", Image.open(path).size, value).save(path)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))


@pytest.mark.parametrize("fmt", ["png", "npy"])
def test_changed_source_is_read_from_the_original_then_cached_again(tmp_path, caplog, fmt):
    make_chestxray14(tmp_path / "nih")
    cfg = _cfg("configs/chestxray14.yaml", tmp_path / "nih", tmp_path / "cache", f"data.image_cache_format={fmt}")
    table = build_table(cfg.data, cfg.seed)
    cache = ImageCache(cfg.data.image_cache, 32, "grey", fmt)
    first = prepare_cache(cfg, workers=2)
    changed = table.paths[int(table.indices("train")[0])]
    _change(changed, 200)
    with caplog.at_level(logging.WARNING, logger="spft.data.cache"):
        redirected = cache.redirect(table)
    assert "1 images changed since they were cached" in caplog.text
    assert redirected.paths[table.paths.index(changed)] == changed  # the stale copy is not used
    assert all(torch.equal(a, b) for a, b in zip(_pixels(table), _pixels(redirected)))
    again = prepare_cache(cfg, workers=2)
    assert (again["written"], again["skipped"], again["stale"]) == (1, first["written"] - 1, 1)
    redirected = cache.redirect(table)
    assert redirected.paths[table.paths.index(changed)] != changed
    assert np.asarray(load_image(redirected.paths[table.paths.index(changed)])).max() == 200
    assert all(torch.equal(a, b) for a, b in zip(_pixels(table), _pixels(redirected)))


def test_corrupt_or_truncated_npy_array_is_an_error_naming_the_file(tmp_path):
    cfg, table, cache = _npy_setup(tmp_path)
    first = prepare_cache(cfg, workers=2)
    ref = cache.redirect(table).paths[0]
    array, row = parse_row_ref(ref)
    with pytest.raises(ValueError, match=r"row 9999 out of range for image cache array .*part-0000\.npy"):
        load_image(f"{array}::9999")
    data = array.read_bytes()
    array.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"image cache array .*part-0000\.npy is corrupt or truncated"):
        load_image(ref)
    with pytest.raises(ValueError, match=r"part-0000\.npy is corrupt or truncated"):
        cache.redirect(table)
    array.write_bytes(b"not an npy file at all")
    with pytest.raises(ValueError, match=r"part-0000\.npy is corrupt or truncated"):
        load_image(ref)
    array.unlink()
    with pytest.raises(FileNotFoundError, match=r"part-0000\.npy"):
        load_image(ref)
    healed = prepare_cache(cfg, workers=2)  # preparation drops the broken part's rows and writes them again
    assert healed["written"] == first["written"] and not healed["failed"]
    redirected = cache.redirect(table)
    assert all(torch.equal(a, b) for a, b in zip(_pixels(table), _pixels(redirected)))


def test_npy_rows_of_rgb_and_colour_conversion(tmp_path):
    make_ham10000(tmp_path / "ham")
    cfg = _cfg("configs/ham10000.yaml", tmp_path / "ham", tmp_path / "cache", "data.image_cache_format=npy")
    prepare_cache(cfg, workers=2)
    table = build_table(cfg.data, cfg.seed)
    ref = ImageCache(cfg.data.image_cache, 32, "rgb", "npy").redirect(table).paths[0]
    rgb = load_image(ref, "rgb")
    assert rgb.mode == "RGB" and rgb.size == (32, 32)
    assert np.array_equal(np.asarray(load_image(ref, "grey")), np.asarray(rgb.convert("L")))


def test_unknown_cache_format_names_the_key(tmp_path):
    with pytest.raises(ValueError, match="data.image_cache_format must be one of png, npy"):
        ImageCache(tmp_path, 32, "grey", "zarr")


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
    npy = ImageCache(tmp_path, 32, "grey", "npy")
    assert npy.folder.name.startswith("32px-grey-v1-npy-") and npy.folder != ImageCache(tmp_path, 64, "grey", "npy")


@pytest.mark.parametrize("fmt", ["png", "npy"])
def test_training_reads_the_cache(tmp_path, fmt):
    """build_run (what spft train and evaluate use) hands the cached files to the datasets; same tensors."""
    from spft.data.io import parse_row_ref
    from spft.tasks.classification.train import build_run

    make_chestxray14(tmp_path / "nih")
    cfg = _cfg("configs/chestxray14.yaml", tmp_path / "nih", tmp_path / "cache")
    cfg.data.image_cache_format = fmt
    proc = run_cli("prepare", "cache", "configs/chestxray14.yaml", f"data.root={tmp_path / 'nih'}",
                   f"data.image_cache={tmp_path / 'cache'}", f"data.image_cache_format={fmt}", "model.name=null",
                   *TINY_MODEL)
    assert "written, 0 already there, 0 missing, 0 failed" in proc.stdout
    table, _, _, dm = build_run(cfg, None)
    _, _, _, plain = build_run(load_config("configs/chestxray14.yaml", [f"data.root={tmp_path / 'nih'}",
                                                                          "model.name=null", *TINY_MODEL]), None)
    train = dm.datasets["train"]
    assert all(train.table.paths[i].startswith(str(tmp_path / "cache")) for i in train.index)
    assert all((parse_row_ref(train.table.paths[i]) is not None) == (fmt == "npy") for i in train.index)
    assert table.paths[0].startswith(str(tmp_path / "nih"))  # the table itself keeps the original paths
    for i in range(len(train)):
        assert torch.equal(train[i]["image"], plain.datasets["train"][i]["image"])
