"""The classification DataModule: one LabelTable, three ImageDatasets, an epoch-seeded shuffle for training."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader

from spft.data.contract import LabelTable
from spft.data.dataset import EpochSeededSampler, ImageDataset
from spft.data.transforms import ImageTransform


class ClassificationDataModule(L.LightningDataModule):
    def __init__(self, table: LabelTable, transform: ImageTransform, color: str, batch_size: int,
                 eval_batch_size: int | None = None, num_workers: int = 2, seed: int = 0):
        super().__init__()
        self.table = table
        self.transform = transform
        self.color = color
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or 2 * batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.datasets = {s: ImageDataset(table, s, transform, color) for s in ("train", "val", "test")}

    def _loader(self, split: str, train: bool = False) -> DataLoader:
        ds = self.datasets[split]
        return DataLoader(
            ds,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=EpochSeededSampler(len(ds), self.seed) if train else None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
