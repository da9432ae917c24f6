"""The torch Dataset over a :class:`~spft.data.contract.LabelTable` split, and the epoch-seeded shuffle sampler."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from spft.data.contract import LabelTable
from spft.data.io import BadImageError, load_image, pixel_limit
from spft.errors import DataError, SpftError


class ImageDataset(Dataset):
    """Samples of one split: ``{"image", "labels", "id", "group"}`` (see :mod:`spft.data.contract`)."""

    def __init__(self, table: LabelTable, split: str, transform, color: str = "grey", augment=None):
        self.table = table
        self.augment = augment  # spft.data.augment.Augment: then keys are (index, epoch) from a keyed sampler
        self.split = split
        self.index = table.indices(split)
        self.transform = transform
        self.color = color
        self.max_pixels = pixel_limit()  # data.max_image_pixels of the building process (also in spawned workers)

    def __len__(self) -> int:
        return len(self.index)

    def labels(self) -> np.ndarray:
        return self.table.labels[self.index]

    def __getitem__(self, key) -> dict:
        i, epoch = key if isinstance(key, tuple) else (key, None)
        row = int(self.index[i])
        try:
            image = load_image(self.table.paths[row], color=self.color, max_pixels=self.max_pixels)
        except SpftError as exc:  # one line naming the file, also when raised in a DataLoader worker
            raise BadImageError(str(exc).replace("\n", " ")) from exc
        if self.augment is not None and epoch is not None:
            pixels = self.transform(image, self.augment, self.augment.rng(epoch, i))
        else:
            pixels = self.transform(image)
        return {
            "image": pixels,
            "labels": torch.from_numpy(self.table.labels[row].copy()),
            "id": self.table.ids[row],
            "group": self.table.groups[row],
            "index": i,  # position in the split: gathered DDP predictions are put back in this order
        }


class EpochSeededSampler(Sampler[int]):
    """Shuffles with a generator seeded by (seed, epoch); under DDP each rank takes every ``world``-th index.

    Lightning calls ``set_epoch`` before every training epoch, so the order of epoch e is the same whether the run
    went straight through or was resumed at e — one of the pieces that make resume equal an uninterrupted run.
    Lightning may create the loader's iterator *before* that call (on resume it does so while estimating the number
    of steps, before the checkpoint's epoch is restored), and DataLoader workers fetch ahead from the order drawn
    then; ``iterated_epoch`` (the epoch the last order was drawn for) lets
    :class:`spft.tasks.lightning.data.FreshEpochOrder` find and restart such a stale iterator.
    With ``world > 1`` the permutation is padded (by repeating its start) to a multiple of ``world`` so every rank
    runs the same number of steps — DDP's gradient all-reduce needs that; evaluation never pads (ShardSampler).
    """

    def __init__(self, n: int, seed: int, rank: int = 0, world: int = 1, keyed: bool = False):
        if not 0 <= rank < world:
            raise DataError(f"rank {rank} out of range for world size {world}")
        self.keyed = keyed  # yield (index, epoch): the dataset seeds its augmentation from them
        self.n = n
        self.seed = seed
        self.rank = rank
        self.world = world
        self.epoch = 0
        self.iterated_epoch: int | None = None  # the epoch of the order last drawn (None: never iterated)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.n // self.world)

    def __iter__(self):
        self.iterated_epoch = self.epoch
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.n, generator=gen).tolist()
        if self.world > 1:
            total = len(self) * self.world
            order = (order * (1 + total // max(1, self.n)))[:total]
        mine = order[self.rank::self.world]
        return iter([(i, self.epoch) for i in mine] if self.keyed else mine)


class ShardSampler(Sampler[int]):
    """Evaluation order under DDP: rank r reads indices r, r + world, ... — no padding, so no duplicates to drop.

    Predictions carry their dataset index, are gathered from every rank and put back in dataset order, so the
    metrics equal a single-process evaluation exactly.
    """

    def __init__(self, n: int, rank: int = 0, world: int = 1):
        if not 0 <= rank < world:
            raise DataError(f"rank {rank} out of range for world size {world}")
        self.n, self.rank, self.world = n, rank, world

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world))

    def __iter__(self):
        return iter(range(self.rank, self.n, self.world))
