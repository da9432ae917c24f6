"""The classification DataModule: one LabelTable, three ImageDatasets on the shared :class:`SplitDataModule`."""

from __future__ import annotations

from spft.data.contract import LabelTable
from spft.data.dataset import ImageDataset
from spft.data.transforms import ImageTransform
from spft.tasks.lightning_data import SplitDataModule


class ClassificationDataModule(SplitDataModule):
    def __init__(self, table: LabelTable, transform: ImageTransform, color: str, data_cfg, batch_size: int,
                 eval_batch_size: int | None = None, seed: int = 0, on_gpu: bool = False):
        self.table = table
        self.transform = transform
        self.color = color
        datasets = {s: ImageDataset(table, s, transform, color) for s in ("train", "val", "test")}
        super().__init__(datasets, data_cfg, batch_size, eval_batch_size, seed, on_gpu)
