"""The sample contract every dataset returns and every task consumes.

A sample is a dict: ``image`` FloatTensor[3, H, W] (normalised), ``labels`` FloatTensor[C] with NaN for an
unknown label, ``id`` str (unique per image), ``group`` str (patient or lesion; the image id when unknown).
A :class:`LabelTable` is the in-memory index of one dataset before images are read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPLITS = ("train", "val", "test")


@dataclass
class LabelTable:
    """One row per image: absolute path, id, group, split and a [N, C] float label matrix (NaN = unknown)."""

    classes: list[str]
    paths: list[str]
    ids: list[str]
    groups: list[str]
    splits: list[str]
    labels: np.ndarray
    split_policy: str = ""
    label_policy: str = ""

    def __post_init__(self) -> None:
        n = len(self.paths)
        if not (len(self.ids) == len(self.groups) == len(self.splits) == self.labels.shape[0] == n):
            raise ValueError("LabelTable columns have different lengths")
        if self.labels.ndim != 2 or self.labels.shape[1] != len(self.classes):
            raise ValueError(f"labels must be [N, {len(self.classes)}], got {self.labels.shape}")

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(np.asarray(self.splits) == split)

    def leaked_groups(self) -> list[str]:
        """Groups (patients/lesions) that appear in more than one split — must be empty."""
        seen: dict[str, str] = {}
        leaked = set()
        for group, split in zip(self.groups, self.splits):
            if seen.setdefault(group, split) != split:
                leaked.add(group)
        return sorted(leaked)
