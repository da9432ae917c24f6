"""The segmentation DataModule: one MaskTable, three MaskDatasets on the shared :class:`SplitDataModule`."""

from __future__ import annotations

from spft.data.masks import MaskDataset, MaskTable
from spft.tasks.lightning.data import SplitDataModule


class SegmentationDataModule(SplitDataModule):
    def __init__(self, table: MaskTable, prep, color: str, data_cfg, batch_size: int,
                 eval_batch_size: int | None = None, seed: int = 0, on_gpu: bool = False):
        self.table = table
        datasets = {s: MaskDataset(table, s, prep, color) for s in ("train", "val", "test")}
        super().__init__(datasets, data_cfg, batch_size, eval_batch_size, seed, on_gpu)
