"""The segmentation DataModule: one MaskTable, three MaskDatasets, the epoch-seeded shuffle for training."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader

from spft.data.dataset import EpochSeededSampler
from spft.data.masks import MaskDataset, MaskTable


class SegmentationDataModule(L.LightningDataModule):
    def __init__(self, table: MaskTable, prep, color: str, batch_size: int, eval_batch_size: int | None = None,
                 num_workers: int = 2, seed: int = 0):
        super().__init__()
        self.table = table
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or 2 * batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.datasets = {s: MaskDataset(table, s, prep, color) for s in ("train", "val", "test")}

    def loader(self, split: str, train: bool = False) -> DataLoader:
        ds = self.datasets[split]
        return DataLoader(ds, batch_size=self.batch_size if train else self.eval_batch_size,
                          sampler=EpochSeededSampler(len(ds), self.seed) if train else None,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0, drop_last=False)

    def train_dataloader(self) -> DataLoader:
        return self.loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")
