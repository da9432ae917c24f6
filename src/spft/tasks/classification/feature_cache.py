"""The stage-1 feature cache: the frozen encoder's pooled features, computed once, on which the head trains.

In stage 1 the encoder is frozen and deterministic, so ``head(pool(encoder(x)))`` only needs ``pool(encoder(x))``
once per image. :class:`FeatureCache` computes it for the train and validation splits (inference mode, bf16 autocast
on a GPU, each DDP rank a strided shard, then gathered), stores it under ``$SPFT_CACHE/features/<key>/`` and serves
it as batches in the very order the image loader would have used (same :class:`EpochSeededSampler`), so the head sees
the same features in the same order and the run equals the uncached one within float tolerance. Stage 2 switches
back to images and continues from the same head.

The key hashes everything the features depend on — the encoder's weights (every tensor), pooling, preprocessing
(size, mean, std, colour), the extraction precision, and each image's path, size and modification time — so a
cache entry is never stale. :func:`cache_blocker` says why the cache cannot be used for a run (random augmentation,
a stochastic encoder, switched off), and the run's log says so.

A smoke run (``trainer.limit_train_batches`` / ``limit_val_batches``) extracts only the rows its limited epochs read
(``rows``: :meth:`FeatureCache.get`; the key then covers those rows' images only), and its loaders stop after the
limited number of batches (:class:`BatchesOf` ``stop_after``), so they never ask for a row without features.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from spft.atomic import atomic_write_with
from spft.data.dataset import ShardSampler
from spft.data.registry import cache_root
from spft.distributed import all_ranks_agree, gather_objects
from spft.errors import SpftError
from spft.filelock import exclusive
from spft.models.digest import weights_digest
from spft.models.encoders import hidden_size
from spft.tasks.classification import feature_store

log = logging.getLogger(__name__)

FEATURE_CACHE_VERSION = 1


def cache_blocker(cfg, model: nn.Module) -> str | None:
    """Why the stage-1 feature cache cannot be used with ``cfg`` and ``model``; None when it can."""
    if not cfg.trainer.feature_cache:
        return "trainer.feature_cache is false"
    if cfg.data.augment.enabled:
        return "random augmentation is on (data.augment.enabled): every epoch sees different pixels"
    for name, module in model.encoder.named_modules():
        if isinstance(module, nn.Dropout) and module.p > 0:
            return f"the encoder has dropout in training mode ({name or 'encoder'}, p={module.p})"
        if float(getattr(module, "drop_prob", 0.0) or 0.0) > 0:
            return f"the encoder has stochastic depth ({name}, drop_prob={module.drop_prob})"
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            return f"the encoder has batch norm ({name}), whose statistics move in training mode"
    return None


def files_digest(paths: list[str]) -> str:
    """SHA-256 over each image's path, size and modification time (a changed file changes the key).

    Rows of the npy image cache (``<array>.npy::<row>``) count by their array file and row."""
    from spft.data.io import parse_row_ref

    h = hashlib.sha256()
    stats: dict[str, os.stat_result] = {}
    for path in paths:
        ref = parse_row_ref(path)
        target = str(ref[0]) if ref else path
        if target not in stats:
            stats[target] = os.stat(target)
        st = stats[target]
        h.update(f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


class FeatureBatches(Dataset):
    """Whole batches of cached features: ``self[indices]`` is the batch dict the image loader would have given,
    with ``features`` in place of ``image``."""

    def __init__(self, features: torch.Tensor, dataset, rows=None):
        self.features = features
        self.position = None  # dataset index -> row of ``features`` (-1: not extracted), when only ``rows`` were
        if rows is not None:
            self.position = torch.full((len(dataset),), -1, dtype=torch.long)
            self.position[torch.as_tensor(rows, dtype=torch.long)] = torch.arange(len(rows))
        self.labels = torch.from_numpy(np.ascontiguousarray(dataset.labels()))
        table, index = dataset.table, dataset.index
        self.ids = np.array([table.ids[int(r)] for r in index], dtype=object)
        self.groups = np.array([table.groups[int(r)] for r in index], dtype=object)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, indices: list[int]) -> dict:
        idx = torch.as_tensor(indices, dtype=torch.long)
        at = idx
        if self.position is not None:
            at = self.position[idx]
            if bool((at < 0).any()):
                raise RuntimeError(f"stage-1 feature batch asks for {int((at < 0).sum())} row(s) whose features were "
                                   "not extracted (beyond the trainer.limit_* batches)")
        return {"features": self.features[at], "labels": self.labels[idx], "index": idx,
                "id": self.ids[indices].tolist(), "group": self.groups[indices].tolist()}


def whole_batch(batch: dict) -> dict:
    """``collate_fn`` for :class:`FeatureBatches`: the batch is already built (torch's default would walk every
    id string of it, a measurable cost per step)."""
    return batch


class BatchesOf(Sampler[list[int]]):
    """Groups an index sampler into lists of ``batch_size`` (last one shorter) and forwards ``set_epoch``.

    ``stop_after``: yield at most that many batches (a limited run's features exist for those only). The length
    stays the whole epoch's, so that Lightning's own limit (a fraction of the length) counts the same batches."""

    def __init__(self, sampler, batch_size: int, stop_after: int | None = None):
        self.sampler = sampler
        self.batch_size = batch_size
        self.stop_after = stop_after

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return -(-len(self.sampler) // self.batch_size)

    def __iter__(self):
        batch, given = [], 0
        if self.stop_after is not None and self.stop_after <= 0:
            return
        for i in self.sampler:
            batch.append(i)
            if len(batch) == self.batch_size:
                yield batch
                batch, given = [], given + 1
                if self.stop_after is not None and given >= self.stop_after:
                    return
        if batch:
            yield batch


class FeatureCache:
    """Pooled features of ``model``'s frozen encoder for the datasets of a split, in memory and on disk."""

    def __init__(self, model: nn.Module, transform, color: str, folder: str | Path | None = None):
        self.model = model
        self.transform = transform
        self.color = color
        self.folder = Path(folder) if folder else cache_root() / "features"
        self._features: dict[str, torch.Tensor] = {}
        self._weights: str | None = None

    def key(self, dataset, precision: str, rows=None) -> str:
        if self._weights is None:
            self._weights = weights_digest(self.model.encoder)
        t = self.transform
        meta = {"version": FEATURE_CACHE_VERSION, "encoder": self._weights, "pooling": self.model.pooling,
                "prefix_tokens": self.model.n_prefix, "size": t.size, "mean": t.mean.flatten().tolist(),
                "std": t.std.flatten().tolist(), "color": self.color, "precision": precision,
                "preprocessing": t.describe() if hasattr(t, "describe") else None,  # resize, crop, filter, rescale
                "images": files_digest([dataset.table.paths[int(dataset.index[int(i)])]
                                        for i in (range(len(dataset)) if rows is None else rows)])}
        return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:32]

    def get(self, split: str, dataset, device: torch.device, batch_size: int, loader_options: dict,
            rank: int = 0, world: int = 1, rows=None) -> torch.Tensor:
        """The ``[N, D]`` float32 features of ``dataset`` (computed on first use, then from memory or disk).

        ``rows``: only these dataset indices (sorted; a limited run's), giving ``[len(rows), D]`` in their order."""
        if split in self._features:
            return self._features[split]
        precision = "bf16" if device.type == "cuda" else "fp32"
        path = self.folder / self.key(dataset, precision, rows) / f"{split}.npy"
        n = len(dataset) if rows is None else len(rows)
        features = _read(path, n)
        if all_ranks_agree(features is not None, world):
            log.info("stage-1 feature cache: %s features read from %s", split, path)
            feature_store.touch(path.parent)
        else:
            features = self._compute_once(split, path, dataset, device, batch_size, loader_options, rank, world,
                                          precision, rows)
        self._features[split] = features
        return features

    def _compute_once(self, split: str, path: Path, dataset, device, batch_size, loader_options, rank, world,
                      precision, rows=None) -> torch.Tensor:
        """Extract and persist one split's features while holding the entry's ``<key>.lock``, so that concurrent
        runs of the same encoder and data (``spft repeat --jobs N``) compute them once: the others wait for the
        lock, then read the finished file. Under DDP rank 0 holds the lock for its job and the other ranks wait
        for it in a collective (bounded by the process group's timeout, 30 min by default)."""
        lock = path.parent.with_name(path.parent.name + ".lock")
        with exclusive(lock, "computing the same stage-1 features") if rank == 0 else contextlib.nullcontext():
            all_ranks_agree(True, world)  # every rank waits here until rank 0 holds the lock
            n = len(dataset) if rows is None else len(rows)
            features = _read(path, n)
            if all_ranks_agree(features is not None, world):  # another process wrote them while we waited
                log.info("stage-1 feature cache: %s features read from %s (computed meanwhile by another process)",
                         split, path)
                feature_store.touch(path.parent)
                return features
            parts = self._extract(split, dataset, device, batch_size, loader_options, rank, world, precision, rows)
            features = torch.zeros(n, hidden_size(self.model.encoder))
            position = None
            if rows is not None:
                position = torch.full((len(dataset),), -1, dtype=torch.long)
                position[torch.as_tensor(rows, dtype=torch.long)] = torch.arange(n)
            for index, values in parts:  # outside inference mode: the head will train on these
                features[index if position is None else position[index]] = values.clone()
            if rank == 0 and self._persist(path, features, dataset):
                log.info("stage-1 feature cache: %d %s features written to %s", len(features), split, path)
        return features

    def _persist(self, path: Path, features: torch.Tensor, dataset) -> bool:
        """Write one split's features, its entry's ``meta.json`` and keep the store under its cap. A cache that
        cannot be written (read-only, full, not a folder) is a warning: the run trains on from memory."""
        try:
            atomic_write_with(path, lambda fh: np.save(fh, features.numpy()))
            if not (path.parent / "meta.json").is_file():
                feature_store.write_meta(path.parent, {"describe": f"{type(self.model.encoder).__name__}, "
                                                       f"{len(features)} {path.stem} images, {self.color}",
                                                       "images": len(features), "dim": int(features.shape[1])})
        except (SpftError, OSError) as exc:
            log.warning("stage-1 feature cache: cannot write %s (%s); training on without persisting the features "
                        "(set $SPFT_CACHE to a writable folder to keep them)", path, exc)
            return False
        feature_store.evict(feature_store.max_bytes(), keep=(path.parent.name,), root=self.folder)
        return True

    @torch.inference_mode()
    def _extract(self, split, dataset, device, batch_size, loader_options, rank, world, precision, rows=None
                 ) -> list:
        """Every rank's ``(indices, features)`` for its strided shard of ``dataset`` (of ``rows``, when given)."""
        from tqdm import tqdm

        from spft.console import is_terminal

        sampler = ShardSampler(len(dataset), rank, world) if rows is None else [int(r) for r in rows[rank::world]]
        loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, **loader_options)
        was_training = self.model.training
        self.model.eval()
        rows, idx = [], []
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16")
        try:
            with autocast, tqdm(total=len(sampler), desc=f"features {split}", unit="img",
                                disable=rank != 0 or not is_terminal(sys.stderr)) as bar:  # no \r frames in a log
                for batch in loader:
                    rows.append(self.model.features(batch["image"].to(device, non_blocking=True)).float().cpu())
                    idx.append(batch["index"])
                    bar.update(len(batch["image"]))
        finally:
            self.model.train(was_training)
        mine = (torch.cat(idx) if idx else torch.zeros(0, dtype=torch.long),
                torch.cat(rows) if rows else torch.zeros(0, hidden_size(self.model.encoder)))
        return gather_objects(mine, world)


def _read(path: Path, n_rows: int) -> torch.Tensor | None:
    """The cached features at ``path``, or None when absent or unusable (then they are computed again: the cache
    holds derived data only, so a damaged entry is replaced, with a warning, not fatal)."""
    if not path.is_file():
        return None
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        log.warning("feature cache %s is unreadable (%s): computing the features again", path, exc)
        return None
    if array.ndim != 2 or len(array) != n_rows:
        log.warning("feature cache %s holds %s for %d images: computing the features again", path,
                    tuple(array.shape), n_rows)
        return None
    return torch.from_numpy(array)
