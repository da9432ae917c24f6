"""The DataModule every Lightning task shares: three split datasets, loader settings, and the DDP sharding.

Training shuffles with :class:`~spft.data.dataset.EpochSeededSampler` (sharded per rank, padded so every rank runs
the same number of steps); evaluation reads rank-strided shards without padding (:class:`ShardSampler`) and the
module gathers the predictions with their indices. Lightning's own distributed-sampler injection is switched off
(``use_distributed_sampler=False`` in :func:`spft.tasks.lightning_recipe.build_trainer`) because it pads evaluation
sets, which would count some images twice in the metrics.
"""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader, Dataset

from spft.data.dataset import EpochSeededSampler, ShardSampler
from spft.data.loading import loader_options


def init_from_launcher() -> tuple[int, int]:
    """(rank, world) for code that runs outside a Lightning Trainer (``spft evaluate``): when torchrun or SLURM
    launched several processes, join their process group (NCCL on GPUs, gloo on CPUs) once; else (0, 1)."""
    import os

    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE") or 1)
    if world <= 1:
        return 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK") or 0))
        dist.init_process_group(backend=backend)
    return dist.get_rank(), dist.get_world_size()


def rank_and_world(trainer) -> tuple[int, int]:
    """(global rank, world size) of ``trainer``, (0, 1) when there is none."""
    if trainer is None:
        return 0, 1
    return int(trainer.global_rank), int(trainer.world_size)


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
        self.options = loader_options(data_cfg, on_gpu)
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
                self.options = loader_options(self.data_cfg, self.on_gpu, self.trainer.num_devices)
            ds = self.datasets[split]
            keyed = getattr(ds, "augment", None) is not None  # augmentation seeded per (epoch, index)
            sampler = (EpochSeededSampler(len(ds), self.seed, rank, world, keyed=keyed) if train
                       else ShardSampler(len(ds), rank, world))
            self._loaders[key] = DataLoader(ds, batch_size=self.batch_size if train else self.eval_batch_size,
                                            sampler=sampler, drop_last=False, **self.options)
        return self._loaders[key]

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")
