"""A smoke run on a full-size dataset: ``trainer.limit_*`` limits every pass (stage-1 feature extraction, test
scoring, the validation predictions of thresholds/calibration), and the image check before training remembers the
files that passed it (size + mtime) so a second start does not read them again."""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import tiny_overrides
from datasets_fixtures import make_chestxray14

LIMITS = ("trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1")
BATCH = 8  # train and eval batch size of the smoke run below


@pytest.fixture
def counted(monkeypatch):
    """Images through the encoder, by phase: ``extract:<split>`` (stage-1 feature extraction), ``test`` / ``val``
    (the end-of-run scoring), ``steps`` (training and validation steps)."""
    from spft.models.classifier import SpftClassifier
    from spft.tasks.classification import train as train_mod
    from spft.tasks.classification.feature_cache import FeatureCache

    counts: Counter = Counter()
    phase = ["steps"]
    features = SpftClassifier.features

    def counting_features(self, pixel_values):
        counts[phase[0]] += len(pixel_values)
        return features(self, pixel_values)

    extract = FeatureCache._extract

    def counting_extract(self, split, *args, **kwargs):
        phase[0] = f"extract:{split}"
        try:
            return extract(self, split, *args, **kwargs)
        finally:
            phase[0] = "steps"

    evaluate = train_mod.evaluate_module

    def counting_evaluate(module, loader, split, *args, **kwargs):
        phase[0] = split
        try:
            return evaluate(module, loader, split, *args, **kwargs)
        finally:
            phase[0] = "steps"

    monkeypatch.setattr(SpftClassifier, "features", counting_features)
    monkeypatch.setattr(FeatureCache, "_extract", counting_extract)
    monkeypatch.setattr(train_mod, "evaluate_module", counting_evaluate)
    return counts


def test_limits_bound_every_pass_and_are_recorded(spft_cache, tmp_path, counted, caplog):
    from spft.config import load_config
    from spft.data.registry import build_table
    from spft.tasks.classification.train import train

    run = tmp_path / "run"
    cfg = load_config(Path("configs/phantom_cxr.yaml"), tiny_overrides(
        run, n_images=240, epochs=2, extra=(*LIMITS, f"trainer.batch_size={BATCH}",
                                            f"trainer.eval_batch_size={BATCH}", "recipe.stage1_epochs=1",
                                            "trainer.log_every_n_steps=1")))
    sizes = build_table(cfg.data, cfg.seed).split_sizes()["n_images"]
    with caplog.at_level(logging.WARNING):
        train(cfg)
    # the splits are several batches each, so every bound below is a real limit
    assert sizes["train"] > 4 * BATCH and sizes["val"] > 2 * BATCH and sizes["test"] > 2 * BATCH, sizes
    assert counted["extract:train"] == 2 * BATCH  # the rows of stage 1's two batches, not the whole split
    assert counted["extract:val"] == BATCH
    assert counted["test"] == BATCH and counted["val"] == BATCH  # test scoring; val for thresholds/calibration
    # stage 2 (1 epoch): 2 training batches + 1 validation batch through the encoder (EMA: once more)
    assert counted["steps"] <= 2 * BATCH + 2 * BATCH
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["limited"] == {"train": 2, "val": 1, "test": 1}
    assert metrics["n"] == BATCH
    assert (run / "DONE").is_file()
    warned = [r.getMessage() for r in caplog.records if "limit_*_batches is set" in r.getMessage()]
    assert len(warned) == 1 and "SUBSET" in warned[0]

    # spft evaluate: the run's recorded limits do not apply; given on its own command line they do
    from spft.tasks.classification.evaluate import evaluate_run

    whole = evaluate_run(run)
    assert len(whole.ids) == sizes["test"] and "limited" not in whole.metrics()
    part = evaluate_run(run, ("trainer.limit_test_batches=1",), name="smoke")
    assert len(part.ids) == BATCH and part.metrics()["limited"] == {"test": 1}


def test_feature_batches_stop_at_the_limit_and_refuse_uncached_rows():
    from spft.data.dataset import EpochSeededSampler
    from spft.tasks.classification.feature_cache import BatchesOf
    from spft.tasks.common.limits import batches_under

    assert [batches_under(v, 10) for v in (None, 1.0, 3, 30, 0.25, 0.5)] == [10, 10, 3, 10, 2, 5]
    batches = BatchesOf(EpochSeededSampler(100, 0), 8, stop_after=2)
    assert len(batches) == 13  # the whole epoch's length: Lightning's fraction counts the same batches
    assert [len(b) for b in batches] == [8, 8]


def test_stage1_rows_cover_a_fractional_limit(spft_cache, tmp_path):
    """With a float limit the stage-1 rows are those of int(fraction x batches) batches, and the feature
    batches built on them serve exactly those batches (and refuse any other row)."""
    from types import SimpleNamespace

    import numpy as np

    from spft.config import load_config
    from spft.tasks.classification.build import build_run
    from spft.tasks.classification.feature_cache import FeatureBatches

    cfg = load_config(Path("configs/phantom_cxr.yaml"), tiny_overrides(tmp_path, n_images=120, extra=(
        f"trainer.batch_size={BATCH}", f"trainer.eval_batch_size={BATCH}", "recipe.stage1_epochs=2")))
    _, _, module, dm = build_run(cfg, None)
    module.feature_cache_blocker = None
    n = len(dm.datasets["train"])
    dm.trainer = SimpleNamespace(limit_train_batches=0.25, limit_val_batches=1.0, max_epochs=5,
                                 lightning_module=module)
    rows, per_rank = dm.feature_rows("train", 1)
    k = int(-(-n // BATCH) * 0.25)
    assert per_rank == [k] and 0 < len(rows) <= 2 * k * BATCH  # two stage-1 epochs, each its own order
    assert dm.feature_rows("val", 1)[0] is None  # validation reads everything: no subset
    batches = FeatureBatches(torch.zeros(len(rows), 4), dm.datasets["train"], rows)
    assert batches[rows[:3].tolist()]["features"].shape == (3, 4)
    missing = int(np.setdiff1d(np.arange(n), rows)[0])
    with pytest.raises(RuntimeError, match="not extracted"):
        batches[[missing]]


# ---- the image check cache ----------------------------------------------------------------------------------------

def _aged(paths, seconds: float = 60) -> None:
    """Modification times in the past: files written this very second are not remembered (racily clean)."""
    then = time.time_ns() - int(seconds * 1e9)
    for p in paths:
        os.utime(p, ns=(then, then))


@pytest.fixture
def images(tmp_path, monkeypatch):
    monkeypatch.setenv("SPFT_CACHE", str(tmp_path / "cache"))
    facts = make_chestxray14(tmp_path / "nih", n_patients=6)
    paths = sorted(str(p) for p in (tmp_path / "nih" / "images").glob("*.png"))
    assert len(paths) == len(facts["names"])
    _aged(paths)
    return paths


@pytest.fixture
def reads(monkeypatch):
    """The files the image check opens (the header reader behind ``scan_images``)."""
    import spft.data.check as check

    opened: list[str] = []
    real = check.check_image

    def counting(path, *args, **kwargs):
        opened.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(check, "check_image", counting)
    return opened


def test_second_check_reads_no_file_and_changed_files_are_checked_again(images, reads):
    from spft.data.check import scan_images

    assert scan_images(images, decode=False, progress=False) == {}
    assert sorted(reads) == images
    reads.clear()
    assert scan_images(images, decode=False, progress=False) == {}
    assert reads == []  # nothing opened: size and mtime unchanged since the files passed
    assert scan_images(images, decode=True, progress=False) == {} and sorted(reads) == images  # another mode
    reads.clear()

    touched, truncated = images[0], images[1]
    _aged([touched], seconds=30)  # same bytes, another mtime: checked again, still good
    data = Path(truncated).read_bytes()
    Path(truncated).write_bytes(data[:len(data) // 2])
    _aged([truncated], seconds=30)
    bad = scan_images(images, decode=False, progress=False)
    assert sorted(reads) == sorted([touched, truncated])
    assert list(bad) == [truncated] and "truncated" in bad[truncated]
    reads.clear()
    assert list(scan_images(images, decode=False, progress=False)) == [truncated]
    assert reads == [truncated]  # a bad file is never remembered as good


def test_bad_files_are_never_cached_and_a_damaged_cache_is_rewritten(images, reads, caplog):
    from spft.data.check import scan_images
    from spft.data.header_cache import HeaderCache
    from spft.data.io import pixel_limit

    Path(images[0]).write_bytes(b"not an image")
    _aged(images[:1])
    assert list(scan_images(images, decode=False, progress=False)) == [images[0]]
    cache = HeaderCache(images, "header", pixel_limit())
    known = cache.load()
    assert len(known) == len(images) - 1 and Path(images[0]).name not in known

    cache.file.write_text("{not json")
    reads.clear()
    with caplog.at_level(logging.WARNING):
        assert list(scan_images(images, decode=False, progress=False)) == [images[0]]
    assert "damaged" in caplog.text and len(reads) == len(images)  # ignored: everything checked again
    assert len(cache.load()) == len(images) - 1  # and rewritten


def test_files_modified_just_now_are_checked_again(images, reads):
    from spft.data.check import scan_images

    Path(images[0]).write_bytes(Path(images[0]).read_bytes())  # mtime = now: a same-size rewrite could follow
    scan_images(images, decode=False, progress=False)
    reads.clear()
    scan_images(images, decode=False, progress=False)
    assert reads == [images[0]]
