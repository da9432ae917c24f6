"""The DataModule every Lightning task shares: three split datasets, loader settings, and the DDP sharding.

Training shuffles with :class:`~spft.data.dataset.EpochSeededSampler` (sharded per rank, padded so every rank runs
the same number of steps); evaluation reads rank-strided shards without padding (:class:`ShardSampler`) and the
module gathers the predictions with their indices. Lightning's own distributed-sampler injection is switched off
(``use_distributed_sampler=False`` in :func:`spft.tasks.lightning.trainer.build_trainer`) because it pads evaluation
sets, which would count some images twice in the metrics.

Every training epoch reads its own sample order whatever the worker count (:class:`FreshEpochOrder`), and DataLoader
workers ignore SIGINT (:func:`worker_init`): a Ctrl+C reaches the whole process group, and the main process, which
stops the run cleanly, must not lose its workers under it first.
"""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from spft.data.dataset import EpochSeededSampler, ShardSampler
from spft.data.loading import loader_options
from spft.distributed import rank_and_world


def worker_init(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: workers ignore SIGINT — a Ctrl+C reaches the whole foreground process group,
    and the main process stops the run cleanly and shuts them down — then Lightning's per-worker seeding as usual.
    SIGTERM keeps its default: torch and multiprocessing stop workers with it."""
    import os
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if int(os.environ.get("PL_SEED_WORKERS", 0)):
        from lightning.fabric.utilities.seed import pl_worker_init_function

        pl_worker_init_function(worker_id)


def with_worker_init(options: dict) -> dict:
    """``options`` for a DataLoader plus :func:`worker_init` when it has workers."""
    return {**options, "worker_init_fn": worker_init} if options.get("num_workers") else dict(options)


def epoch_samplers(loader) -> list[EpochSeededSampler]:
    """The :class:`EpochSeededSampler` objects behind ``loader`` (its sampler, its batch sampler's, or one wrapped
    by a batching sampler such as the feature cache's ``BatchesOf``)."""
    found: list[EpochSeededSampler] = []
    for obj in (getattr(loader, "sampler", None), getattr(getattr(loader, "batch_sampler", None), "sampler", None)):
        for _ in range(4):  # unwrap a few levels of .sampler
            if obj is None or isinstance(obj, EpochSeededSampler):
                break
            obj = getattr(obj, "sampler", None)
        if isinstance(obj, EpochSeededSampler) and all(obj is not f for f in found):
            found.append(obj)
    return found


def _loaders_of(obj) -> list:
    if isinstance(obj, DataLoader):
        return [obj]
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in _loaders_of(v)]
    if isinstance(obj, (list, tuple)):
        return [x for v in obj for x in _loaders_of(v)]
    return []


class FreshEpochOrder(L.Callback):
    """Makes each training epoch read the order of its own epoch, for any number of DataLoader workers.

    Lightning calls the sampler's ``set_epoch`` at the start of each epoch, but may have created the loader's
    iterator before that: on ``--resume`` it does so while estimating the number of steps, before the checkpoint's
    epoch is restored, and keeps that iterator for the first resumed epoch. Without workers the order is only drawn
    at the first batch (after ``set_epoch``), but DataLoader workers prefetch as soon as the iterator exists — so the
    resumed epoch trained on epoch 0's order (and augmentation draws). At every epoch start this callback looks for
    a sampler whose last drawn order is for another epoch than the one it is set to, and that this process has not
    trained on yet (after an epoch that trained on it, Lightning creates the next iterator after ``set_epoch``
    itself), and restarts that iterator: with persistent workers ``iter(loader)`` resets the very iterator Lightning
    holds (prefetched batches are dropped). This happens on resume and when a new loader object is handed out
    (the switch from cached features to images), once each.
    """

    def __init__(self):
        self._trained: dict[int, int | None] = {}  # id(sampler) -> epoch of the order this process trained on

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        for loader in _loaders_of(trainer.train_dataloader):
            if loader.num_workers == 0:
                continue  # in-process loading draws the order at the first batch, after set_epoch
            samplers = epoch_samplers(loader)
            if not any(s.iterated_epoch not in (None, s.epoch) and self._trained.get(id(s)) != s.iterated_epoch
                       for s in samplers):
                continue
            if not loader.persistent_workers:
                raise RuntimeError("a training DataLoader with workers must use persistent_workers=True (its "
                                   "iterator was created before set_epoch and cannot be restarted in place)")
            iter(loader)
            stale = [(s.iterated_epoch, s.epoch) for s in samplers if s.iterated_epoch != s.epoch]
            if stale:
                raise RuntimeError(f"the training order is still stale after restarting the loader: {stale}")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx == 0:
            for loader in _loaders_of(trainer.train_dataloader):
                for s in epoch_samplers(loader):
                    self._trained[id(s)] = s.iterated_epoch


class SplitDataModule(L.LightningDataModule):
    """``datasets`` maps train/val/test to torch Datasets; loaders follow ``data_cfg`` (workers, pinning)."""

    def __init__(self, datasets: dict[str, Dataset], data_cfg, batch_size: int, eval_batch_size: int | None,
                 seed: int, on_gpu: bool = False):
        super().__init__()
        self.datasets = datasets
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or 2 * batch_size
        self.seed = seed
        self.data_cfg = data_cfg
        self.on_gpu = on_gpu
        self.options = with_worker_init(loader_options(data_cfg, on_gpu))
        self._loaders: dict[str, DataLoader] = {}

    def _rank_world(self) -> tuple[int, int]:
        return rank_and_world(self.trainer if self._trainer_attached() else None)

    def _trainer_attached(self) -> bool:
        return self.trainer is not None  # a LightningDataModule's trainer is None until fit/validate attaches it

    def loader(self, split: str, train: bool = False, rank: int | None = None, world: int | None = None
               ) -> DataLoader:
        """The split's DataLoader, built once per (split, rank) and reused (persistent workers stay alive); rank and
        world default to the attached trainer's."""
        if rank is None or world is None:
            rank, world = self._rank_world()
        key = f"{split}:{int(train)}:{rank}/{world}"
        if key not in self._loaders:
            if world > 1 and self._trainer_attached():  # DDP: the node's cores are shared by its processes
                self.options = with_worker_init(loader_options(self.data_cfg, self.on_gpu, self.trainer.num_devices))
            ds = self.datasets[split]
            keyed = getattr(ds, "augment", None) is not None  # augmentation seeded per (epoch, index)
            sampler = (EpochSeededSampler(len(ds), self.seed, rank, world, keyed=keyed) if train
                       else ShardSampler(len(ds), rank, world))
            # An evaluation loader draws its workers' base seed (at each iterator it creates) from a generator of its
            # own, not the global RNG: with persistent workers an uninterrupted run creates the validation iterator
            # once, a resumed run again in its first epoch, and that extra draw left the resumed epoch's checkpoint
            # with another recorded RNG state than the uninterrupted run's (the fault harness found it).
            extra = {} if train else {"generator": torch.Generator().manual_seed(self.seed)}
            self._loaders[key] = DataLoader(ds, batch_size=self.batch_size if train else self.eval_batch_size,
                                            sampler=sampler, drop_last=False, **self.options, **extra)
        return self._loaders[key]

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")
