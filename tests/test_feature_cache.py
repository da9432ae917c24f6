"""The stage-1 feature cache: same results as the image path, never stale, bypassed when it cannot be exact."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import torch
from conftest import TINY_MODEL, run_cli, tiny_overrides
from run_hooks import crash_after_epoch


def _history(run: Path) -> list[dict]:
    with open(run / "history.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_cached_stage1_equals_uncached_and_stage2_continues(spft_cache, tmp_path):
    cache = tmp_path / "cache"  # a fresh SPFT_CACHE: the first cached run must compute the features
    runs, logs = {}, {}
    for name, flag in (("cached", "true"), ("plain", "false"), ("reread", "true")):
        run = tmp_path / name
        proc = run_cli("train", "configs/phantom_cxr.yaml",
                       *tiny_overrides(run, epochs=3,
                                       extra=("recipe.stage1_epochs=2", f"trainer.feature_cache={flag}")),
                       env={"SPFT_CACHE": str(cache)})
        runs[name], logs[name] = run, proc.stdout + proc.stderr
    assert "stage 1 trains the head on cached encoder features" in logs["cached"]
    assert "features written to" in logs["cached"] and "features read from" in logs["reread"]
    assert "cached encoder features" not in logs["plain"]
    assert list((cache / "features").glob("*/train.npy")) and list((cache / "features").glob("*/val.npy"))
    cached, plain = _history(runs["cached"]), _history(runs["plain"])
    assert [r["stage"] for r in cached] == ["1", "1", "2"]
    for a, b in zip(cached, plain):
        for col in ("train_loss", "val_loss", "val_auc_raw", "val_auc_ema"):
            assert float(a[col]) == pytest.approx(float(b[col]), rel=1e-4, abs=1e-5), col
    assert _history(runs["reread"]) == cached  # features read back from disk: the very same run
    wa = torch.load(runs["cached"] / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    wb = torch.load(runs["plain"] / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    for name in wa:
        assert torch.allclose(wa[name].float(), wb[name].float(), atol=1e-4, rtol=1e-4), name


def _cache_and_dataset(tmp_path, model_kwargs=None):
    from spft.config import load_config
    from spft.tasks.classification.feature_cache import FeatureCache
    from spft.tasks.classification.train import build_run

    cfg = load_config(Path("configs/phantom_cxr.yaml"), [*tiny_overrides(tmp_path, n_images=60)])
    _, _, module, dm = build_run(cfg, None)
    return FeatureCache(module.model, dm.transform, cfg.data.color, tmp_path / "features"), dm, module


def test_key_follows_weights_images_and_preprocessing(spft_cache, tmp_path):
    cache, dm, module = _cache_and_dataset(tmp_path)
    ds = dm.datasets["val"]
    key = cache.key(ds, "fp32")
    assert cache.key(ds, "fp32") == key and cache.key(ds, "bf16") != key
    path = ds.table.paths[int(ds.index[0])]
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the image changed on disk
    assert cache.key(ds, "fp32") != key
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cache.key(ds, "fp32") == key
    with torch.no_grad():
        next(module.model.encoder.parameters()).add_(1e-3)  # other weights
    cache._weights = None
    assert cache.key(ds, "fp32") != key


def test_features_match_the_model_and_are_read_back(spft_cache, tmp_path):
    cache, dm, module = _cache_and_dataset(tmp_path)
    ds = dm.datasets["val"]
    feats = cache.get("val", ds, torch.device("cpu"), 16, {"num_workers": 0})
    module.model.eval()
    with torch.no_grad():
        expected = module.model.features(torch.stack([ds[i]["image"] for i in range(len(ds))]))
    assert torch.allclose(feats, expected, atol=1e-5)
    again = type(cache)(module.model, dm.transform, "grey", cache.folder).get("val", ds, torch.device("cpu"), 16, {})
    assert torch.equal(again, feats)
    # a damaged entry is computed again (with a warning), not fatal: the cache holds derived data only
    entry = next(cache.folder.glob("*/val.npy"))
    entry.write_bytes(entry.read_bytes()[:100])
    healed = type(cache)(module.model, dm.transform, "grey", cache.folder).get("val", ds, torch.device("cpu"), 16, {})
    assert torch.equal(healed, feats) and len(entry.read_bytes()) > 100


@pytest.mark.parametrize("override, reason", [
    ("data.augment.enabled=true", "random augmentation"),
    ("trainer.feature_cache=false", "trainer.feature_cache is false"),
    ("model.config.hidden_dropout_prob=0.1", "dropout"),
])
def test_blockers(spft_cache, tmp_path, override, reason):
    from spft.config import load_config
    from spft.models.classifier import build_classifier
    from spft.tasks.classification.feature_cache import cache_blocker

    cfg = load_config(Path("configs/phantom_cxr.yaml"), [*TINY_MODEL, override])
    model, _ = build_classifier(cfg.model, 3, 32)
    assert reason in cache_blocker(cfg, model)
    plain = load_config(Path("configs/phantom_cxr.yaml"), TINY_MODEL)
    assert cache_blocker(plain, build_classifier(plain.model, 3, 32)[0]) is None


def test_files_digest_reads_npy_cache_rows(tmp_path):
    import numpy as np

    from spft.tasks.classification.feature_cache import files_digest

    array = tmp_path / "part-0000.npy"
    np.save(array, np.zeros((4, 8, 8), dtype=np.uint8))
    refs = [f"{array}::{i}" for i in range(4)]
    digest = files_digest(refs)
    assert files_digest(refs) == digest and files_digest(refs[:3]) != digest
    st = os.stat(array)
    os.utime(array, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # the array was rewritten
    assert files_digest(refs) != digest


@pytest.mark.slow
def test_kill_in_stage1_and_resume_on_cached_features_equals_uninterrupted(spft_cache, tmp_path):
    extra = ("recipe.stage1_epochs=2",)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    run_cli("train", "configs/phantom_cxr.yaml", *tiny_overrides(straight, epochs=3, extra=extra))
    proc = run_cli("train", "configs/phantom_cxr.yaml", *tiny_overrides(killed, epochs=3, extra=extra),
                   env=crash_after_epoch(0), check=False)
    assert proc.returncode == 17, proc.stderr
    assert len(_history(killed)) == 1  # killed after the first stage-1 epoch
    proc = run_cli("train", "--resume", str(killed))
    assert "stage-1 feature cache" in proc.stderr  # the resumed stage-1 epoch trained on cached features again
    assert (killed / "history.csv").read_text() == (straight / "history.csv").read_text()
    a = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    b = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
