"""The classification DataModule: one LabelTable, three ImageDatasets on the shared :class:`SplitDataModule`,
and — for stage-1 epochs when the module allows it — loaders of cached encoder features instead of images."""

from __future__ import annotations

import numpy as np
from torch.utils.data import DataLoader

from spft.data.contract import LabelTable
from spft.data.dataset import EpochSeededSampler, ImageDataset, ShardSampler
from spft.data.transforms import ImageTransform
from spft.tasks.classification.feature_cache import BatchesOf, FeatureBatches, FeatureCache, whole_batch
from spft.tasks.common.limits import batches_under
from spft.tasks.lightning.data import SplitDataModule


class ClassificationDataModule(SplitDataModule):
    def __init__(self, table: LabelTable, transform: ImageTransform, color: str, data_cfg, batch_size: int,
                 eval_batch_size: int | None = None, seed: int = 0, on_gpu: bool = False,
                 feature_cache: FeatureCache | None = None, augment=None):
        self.table = table
        self.transform = transform
        self.color = color
        self.feature_cache = feature_cache
        datasets = {s: ImageDataset(table, s, transform, color, augment if s == "train" else None)
                    for s in ("train", "val", "test")}
        super().__init__(datasets, data_cfg, batch_size, eval_batch_size, seed, on_gpu)

    @property
    def reload_every_epoch(self) -> bool:
        """Loaders asked for every epoch: stage 1 reads cached features, stage 2 images (the same loader objects
        are handed back otherwise)."""
        return self.feature_cache is not None

    def _features_now(self) -> bool:
        """Whether the epoch the trainer is at trains on cached features (asked of the module's stage plan)."""
        if self.feature_cache is None or not self._trainer_attached():
            return False
        module = self.trainer.lightning_module
        # on resume Lightning asks for the loaders while current_epoch is still the checkpoint's own (finished) epoch
        epoch = max(self.trainer.current_epoch, module.resumed_epoch or 0)
        return module.uses_feature_cache(epoch)

    def feature_loader(self, split: str, train: bool = False) -> DataLoader:
        """Batches of cached features in the order the image loader would give (same sampler, same batch size).
        Computing the features takes one pass over the train and validation images, the first time only — over
        the rows the limited epochs read, under ``trainer.limit_train_batches`` / ``limit_val_batches``."""
        rank, world = self._rank_world()
        key = f"features:{split}:{int(train)}:{rank}/{world}"
        if key not in self._loaders:
            device = self.trainer.strategy.root_device
            rows = {s: self.feature_rows(s, world) for s in ("train", "val")}
            for s in ("train", "val"):  # both at once: the extraction pass is one progress bar per split
                self.feature_cache.get(s, self.datasets[s], device, self.eval_batch_size, self.options, rank, world,
                                       rows=rows[s][0])
            ds = self.datasets[split]
            sampler = EpochSeededSampler(len(ds), self.seed, rank, world) if train else ShardSampler(len(ds), rank,
                                                                                                    world)
            batches = FeatureBatches(self.feature_cache.get(split, ds, device, 0, {}, rank, world, rows[split][0]), ds,
                                     rows[split][0])
            size = self.batch_size if train else self.eval_batch_size
            stop = rows[split][1][rank] if rows[split][0] is not None else None
            self._loaders[key] = DataLoader(batches, sampler=BatchesOf(sampler, size, stop_after=stop),
                                            batch_size=None, collate_fn=whole_batch,
                                            pin_memory=self.options["pin_memory"])
        return self._loaders[key]

    def feature_rows(self, split: str, world: int) -> tuple[np.ndarray | None, list[int]]:
        """``(rows, batches)``: the sorted dataset indices the stage-1 epochs read under the trainer's
        ``limit_train_batches`` / ``limit_val_batches`` (of every rank: they are extracted together), and how many
        batches each rank reads per epoch; ``(None, ...)`` when they read every row."""
        trainer = self.trainer
        n = len(self.datasets[split])
        train = split == "train"
        size = self.batch_size if train else self.eval_batch_size
        limit = trainer.limit_train_batches if train else trainer.limit_val_batches
        shards = [-(-n // world)] * world if train else [len(ShardSampler(n, r, world)) for r in range(world)]
        batches = [batches_under(limit, -(-m // size)) for m in shards]
        if all(k * size >= m for k, m in zip(batches, shards)):
            return None, batches
        if not train:  # evaluation reads the first rows of each rank's strided shard, the same every epoch
            picked = {i for r in range(world) for i in list(ShardSampler(n, r, world))[:batches[r] * size]}
            return np.array(sorted(picked), dtype=np.int64), batches
        module = trainer.lightning_module
        last = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs >= 0 else 10**6
        picked, epoch = set(), 0
        while epoch < last and module.uses_feature_cache(epoch):  # stage-1 epochs come first, one after another
            for r in range(world):
                sampler = EpochSeededSampler(n, self.seed, r, world)
                sampler.set_epoch(epoch)
                picked.update(list(sampler)[:batches[r] * size])
            epoch += 1
        return np.array(sorted(picked), dtype=np.int64), batches

    def train_dataloader(self) -> DataLoader:
        return self.feature_loader("train", train=True) if self._features_now() else super().train_dataloader()

    def val_dataloader(self) -> DataLoader:
        return self.feature_loader("val") if self._features_now() else super().val_dataloader()
