"""The torch Dataset over a :class:`~spft.data.contract.LabelTable` split, and the epoch-seeded shuffle sampler."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from spft.data.contract import LabelTable
from spft.data.io import load_image


class ImageDataset(Dataset):
    """Samples of one split: ``{"image", "labels", "id", "group"}`` (see :mod:`spft.data.contract`)."""

    def __init__(self, table: LabelTable, split: str, transform, color: str = "grey"):
        self.table = table
        self.split = split
        self.index = table.indices(split)
        self.transform = transform
        self.color = color

    def __len__(self) -> int:
        return len(self.index)

    def labels(self) -> np.ndarray:
        return self.table.labels[self.index]

    def __getitem__(self, i: int) -> dict:
        row = int(self.index[i])
        image = load_image(self.table.paths[row], color=self.color)
        return {
            "image": self.transform(image),
            "labels": torch.from_numpy(self.table.labels[row].copy()),
            "id": self.table.ids[row],
            "group": self.table.groups[row],
        }


class EpochSeededSampler(Sampler[int]):
    """Shuffles with a generator seeded by (seed, epoch).

    Lightning calls ``set_epoch`` before every training epoch, so the order of epoch e is the same whether the run
    went straight through or was resumed at e — one of the pieces that make resume equal an uninterrupted run.
    """

    def __init__(self, n: int, seed: int):
        self.n = n
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=gen).tolist())
