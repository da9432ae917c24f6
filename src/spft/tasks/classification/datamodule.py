"""The classification DataModule: one LabelTable, three ImageDatasets on the shared :class:`SplitDataModule`,
and — for stage-1 epochs when the module allows it — loaders of cached encoder features instead of images."""

from __future__ import annotations

from torch.utils.data import DataLoader

from spft.data.contract import LabelTable
from spft.data.dataset import EpochSeededSampler, ImageDataset, ShardSampler
from spft.data.transforms import ImageTransform
from spft.tasks.classification.feature_cache import BatchesOf, FeatureBatches, FeatureCache, whole_batch
from spft.tasks.lightning_data import SplitDataModule


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
        Computing the features takes one pass over the train and validation images, the first time only."""
        rank, world = self._rank_world()
        key = f"features:{split}:{int(train)}:{rank}/{world}"
        if key not in self._loaders:
            device = self.trainer.strategy.root_device
            for s in ("train", "val"):  # both at once: the extraction pass is one progress bar per split
                self.feature_cache.get(s, self.datasets[s], device, self.eval_batch_size, self.options, rank, world)
            ds = self.datasets[split]
            sampler = EpochSeededSampler(len(ds), self.seed, rank, world) if train else ShardSampler(len(ds), rank,
                                                                                                    world)
            batches = FeatureBatches(self.feature_cache.get(split, ds, device, 0, {}, rank, world), ds)
            size = self.batch_size if train else self.eval_batch_size
            self._loaders[key] = DataLoader(batches, sampler=BatchesOf(sampler, size), batch_size=None,
                                            collate_fn=whole_batch, pin_memory=self.options["pin_memory"])
        return self._loaders[key]

    def train_dataloader(self) -> DataLoader:
        return self.feature_loader("train", train=True) if self._features_now() else super().train_dataloader()

    def val_dataloader(self) -> DataLoader:
        return self.feature_loader("val") if self._features_now() else super().val_dataloader()
