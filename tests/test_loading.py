"""Tests for spft.data.loading: DataLoader workers, pinned memory and prefetch chosen from the cores or the config."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DataLoader

from spft.data import loading
from spft.data.loading import cpu_count, loader_options, resolve_workers


def _data(num_workers=None, pin_memory=None, prefetch_factor=None):
    return SimpleNamespace(num_workers=num_workers, pin_memory=pin_memory, prefetch_factor=prefetch_factor)


def _cores(monkeypatch, n: int) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(n)), raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 256)  # the machine's total must not be used


def test_explicit_values_are_used_as_given(monkeypatch):
    _cores(monkeypatch, 64)
    assert resolve_workers(_data(num_workers=3)) == 3
    assert resolve_workers(_data(num_workers=0)) == 0
    assert resolve_workers(_data(num_workers=40)) == 40  # above the automatic cap: still honoured
    options = loader_options(_data(num_workers=2, pin_memory=False, prefetch_factor=1), on_gpu=True)
    assert options == {"num_workers": 2, "pin_memory": False, "persistent_workers": True, "prefetch_factor": 1}
    assert loader_options(_data(num_workers=0, pin_memory=True), on_gpu=False)["pin_memory"] is True


@pytest.mark.parametrize("cores, workers", [(1, 0), (2, 1), (8, 7), (17, 16), (64, 16)])
def test_null_workers_come_from_the_affinity_mask(monkeypatch, cores, workers):
    _cores(monkeypatch, cores)
    assert cpu_count() == cores
    assert resolve_workers(_data()) == workers


def test_cpu_count_without_affinity_uses_the_machine_count(monkeypatch):
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert cpu_count() == 6
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert cpu_count() == 1


def test_negative_workers_and_zero_prefetch_are_refused_naming_the_key():
    with pytest.raises(ValueError, match=r"data\.num_workers must be >= 0.*got -1"):
        resolve_workers(_data(num_workers=-1))
    with pytest.raises(ValueError, match=r"data\.num_workers"):
        loader_options(_data(num_workers=-2), on_gpu=False)
    with pytest.raises(ValueError, match=r"data\.prefetch_factor must be >= 1.*got 0"):
        loader_options(_data(num_workers=2, prefetch_factor=0), on_gpu=False)


def test_pin_memory_follows_the_gpu_when_null():
    assert loader_options(_data(num_workers=0), on_gpu=True)["pin_memory"] is True
    assert loader_options(_data(num_workers=0), on_gpu=False)["pin_memory"] is False


def test_prefetch_only_with_workers_and_torch_accepts_the_options(monkeypatch):
    _cores(monkeypatch, 4)
    none = loader_options(_data(num_workers=0, prefetch_factor=8), on_gpu=False)
    assert none == {"num_workers": 0, "pin_memory": False, "persistent_workers": False}
    some = loader_options(_data(), on_gpu=False)
    assert some["num_workers"] == 3 and some["prefetch_factor"] == loading.DEFAULT_PREFETCH
    assert some["persistent_workers"] is True
    assert loader_options(_data(prefetch_factor=8), on_gpu=False)["prefetch_factor"] == 8
    data = torch.arange(4)
    for options in (none, some):
        DataLoader(data, batch_size=2, **options)  # torch raises on prefetch_factor without workers
