"""Training augmentation: reproducible per (seed, epoch, image), independent of workers, validated config."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import run_cli, tiny_overrides
from torch.utils.data import DataLoader


def _train_set(tmp_path, *extra):
    from spft.config import load_config
    from spft.tasks.classification.train import build_run

    cfg = load_config(Path("configs/phantom_cxr.yaml"),
                      [*tiny_overrides(tmp_path, n_images=60), "data.augment.enabled=true", *extra])
    return build_run(cfg, None)[3]


def test_augmentation_is_a_function_of_seed_epoch_and_index(spft_cache, tmp_path):
    dm = _train_set(tmp_path, "data.augment.rotate=10", "data.augment.hflip=0.5")
    ds = dm.datasets["train"]
    a = ds[(3, 0)]["image"]
    assert torch.equal(a, ds[(3, 0)]["image"])  # same key, same pixels
    assert not torch.equal(a, ds[(3, 1)]["image"])  # next epoch, other augmentation
    assert not torch.equal(a, ds[3]["image"])  # evaluation-style access is never augmented
    assert dm.datasets["val"].augment is None
    # the loader's keyed sampler gives the same batches with 0 or 2 workers
    dm.options = {"num_workers": 0}
    first = next(iter(DataLoader(ds, batch_size=8, sampler=dm.loader("train", True, 0, 1).sampler)))
    dm._loaders.clear()
    dm.options = {"num_workers": 2}
    second = next(iter(DataLoader(ds, batch_size=8, sampler=dm.loader("train", True, 0, 1).sampler,
                                  num_workers=2)))
    assert torch.equal(first["image"], second["image"])


@pytest.mark.parametrize("override, message", [
    ("data.augment.scale=[0.5, 1.5]", "data.augment.scale"),
    ("data.augment.rotate=-1", "data.augment.rotate"),
    ("data.augment.hflip=2", "hflip"),
])
def test_bad_augmentation_settings_are_named(spft_cache, tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        _train_set(tmp_path, override)


@pytest.mark.slow
def test_training_with_augmentation_bypasses_the_feature_cache(spft_cache, tmp_path):
    run = tmp_path / "aug"
    proc = run_cli("train", "configs/phantom_cxr.yaml",
                   *tiny_overrides(run, epochs=2, extra=("data.augment.enabled=true",)))
    log = proc.stdout + proc.stderr
    assert "stage-1 feature cache bypassed: random augmentation is on" in log
    assert (run / "DONE").is_file()
