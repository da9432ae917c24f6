"""The sample contract every dataset returns and every task consumes.

A sample is a dict: ``image`` FloatTensor[3, H, W] (normalised), ``labels`` FloatTensor[C] with NaN for an
unknown label, ``id`` str (unique per image), ``group`` str (patient or lesion; the image id when unknown).
A :class:`LabelTable` is the in-memory index of one dataset before images are read; :class:`SplitRows` is the
split and group machinery it shares with segmentation's :class:`~spft.data.mask_contract.MaskTable`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from spft.errors import DataError

SPLITS = ("train", "val", "test")


class SplitRows:
    """Rows of images with a ``groups`` column (patient / lesion) and a ``splits`` column: what every table of
    spft (:class:`LabelTable`, :class:`~spft.data.mask_contract.MaskTable`) needs to select a split, find groups
    that leak across splits and count them for ``data.json``."""

    groups: list[str]
    splits: list[str]

    def indices(self, split: str) -> np.ndarray:
        return np.flatnonzero(np.asarray(self.splits) == split)

    def leaks(self) -> list[tuple[str, str, str]]:
        """``(group, its first split, another split)`` for each row whose group was first seen in another split."""
        seen: dict[str, str] = {}
        return [(g, seen[g], s) for g, s in zip(self.groups, self.splits) if seen.setdefault(g, s) != s]

    def leaked_groups(self) -> list[str]:
        """Groups (patients/lesions) that appear in more than one split — must be empty."""
        return sorted({group for group, _, _ in self.leaks()})

    def split_sizes(self) -> dict:
        """``n_images`` and ``n_groups`` (patients / lesions) per split, for ``data.json``."""
        rows = {s: self.indices(s) for s in SPLITS}
        return {"n_images": {s: int(len(r)) for s, r in rows.items()},
                "n_groups": {s: len({self.groups[i] for i in r}) for s, r in rows.items()}}


@dataclass
class LabelTable(SplitRows):
    """One row per image: absolute path, id, group, split and a [N, C] float label matrix (NaN = unknown)."""

    classes: list[str]
    paths: list[str]
    ids: list[str]
    groups: list[str]
    splits: list[str]
    labels: np.ndarray
    split_policy: str = ""
    label_policy: str = ""
    # Optional, filled by the dataset adapters: [N, C] bool of labels that were *uncertain* in the source (before the
    # uncertainty policy mapped them), the kind of group ("patient", "lesion", "image"), where the rows came from,
    # and load-time warnings such as counts that differ from the published ones.
    uncertain: np.ndarray | None = None
    group_kind: str = "patient"
    source: str = ""
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.paths)
        if not (len(self.ids) == len(self.groups) == len(self.splits) == self.labels.shape[0] == n):
            raise DataError("LabelTable columns have different lengths")
        if self.labels.ndim != 2 or self.labels.shape[1] != len(self.classes):
            raise DataError(f"labels must be [N, {len(self.classes)}], got {self.labels.shape}")
        if self.uncertain is not None and self.uncertain.shape != self.labels.shape:
            raise DataError(f"uncertain must have the labels' shape {self.labels.shape}, got {self.uncertain.shape}")

