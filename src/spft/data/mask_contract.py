"""The segmentation data contract: :class:`MaskTable` (one row per image: path, id, group, split, one mask entry per
structure) and :class:`RleMask` with the CheXmask RLE codec (1-indexed starts into the row-major ``Height x Width``
array, docs/decisions.md#chexmask).

Kept apart from the readers (:mod:`spft.data.masks`, :mod:`spft.data.chexmask`) so that they can all build tables
without importing one another.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from spft.data.contract import SPLITS, SplitRows
from spft.errors import DataError, MissingFileError


def decode_chexmask_rle(rle, height: int, width: int) -> np.ndarray:
    """Decode one CheXmask RLE string into a ``(height, width)`` uint8 mask (1 = foreground).

    ``"start length start length ..."``, starts 1-indexed into the row-major flattened array; a blank or
    missing RLE is an empty mask.

    >>> decode_chexmask_rle("2 3", 2, 3).tolist()
    [[0, 1, 1], [1, 0, 0]]
    """
    mask = np.zeros(int(height) * int(width), np.uint8)
    if not isinstance(rle, str) or not rle.strip():
        return mask.reshape(int(height), int(width))
    values = np.asarray(rle.split(), dtype=np.int64)
    if len(values) % 2:
        raise DataError(f"RLE has an odd number of values ({len(values)}): expected 'start length' pairs")
    for start, length in zip(values[0::2], values[1::2]):
        if start < 1 or start - 1 + length > mask.size:
            raise DataError(f"RLE run (start {start}, length {length}) outside a {height}x{width} mask "
                             "(starts are 1-indexed)")
        mask[start - 1:start - 1 + length] = 1
    return mask.reshape(int(height), int(width))


def encode_chexmask_rle(mask: np.ndarray) -> str:
    """Inverse of :func:`decode_chexmask_rle` (for tests and for writing masks in the same format)."""
    flat = np.concatenate([[0], np.asarray(mask, bool).reshape(-1).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(flat))
    starts, ends = edges[0::2], edges[1::2]
    return " ".join(f"{s + 1} {e - s}" for s, e in zip(starts, ends))


@dataclass(frozen=True)
class RleMask:
    """A run-length encoded mask (CheXmask convention: 1-indexed starts, row-major ``height x width``)."""

    rle: str
    height: int
    width: int

    def decode(self) -> np.ndarray:
        return decode_chexmask_rle(self.rle, self.height, self.width).astype(bool)

    def fraction(self) -> float:
        """Foreground fraction, from the run lengths alone (no decoding)."""
        lengths = np.asarray(self.rle.split()[1::2], dtype=np.int64) if isinstance(self.rle, str) else []
        return float(np.sum(lengths)) / max(self.height * self.width, 1)


@dataclass
class MaskTable(SplitRows):
    """One row per image: path, id, group, split and one mask entry (PNG path, RleMask or None) per structure."""

    structures: list[str]
    paths: list[str]
    ids: list[str]
    groups: list[str]
    splits: list[str]
    masks: list[list]
    source: str = ""
    split_policy: str = ""
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.paths)
        if not (len(self.ids) == len(self.groups) == len(self.splits) == len(self.masks) == n):
            raise DataError("MaskTable columns have different lengths")
        bad = [i for i, m in enumerate(self.masks) if len(m) != len(self.structures)]
        if bad:
            raise DataError(f"row {bad[0]}: {len(self.masks[bad[0]])} masks for {len(self.structures)} structures")

    def check(self, files: bool = True) -> None:
        """Refuse empty splits, leaked groups and (``files``) missing image or mask files of any row (the error
        names the first offender). What training needs; evaluation checks only its rows (:meth:`check_files`)."""
        for split in SPLITS:
            if not len(self.indices(split)):
                raise DataError(f"{self.source}: the {split} split is empty")
        leaks = self.leaks()
        if leaks:
            group, first, other = leaks[0]
            raise DataError(f"{self.source}: group {group!r} is in both {first} and {other}")
        if files:
            self.check_files()

    def check_files(self, rows=None) -> None:
        """Refuse missing image files, and missing mask PNGs, of ``rows`` (positions; every row when ``None``):
        one line naming how many and the first. Only the rows that are read are checked, so a missing training image
        does not block ``spft evaluate RUN --split test``."""
        rows = range(len(self.paths)) if rows is None else [int(r) for r in rows]
        missing = [self.paths[r] for r in rows if not Path(self.paths[r]).is_file()]
        if missing:
            raise MissingFileError(f"{self.source}: {len(missing)} image(s) missing, e.g. {missing[0]}")
        masks = [e for r in rows for e in self.masks[r] if isinstance(e, str) and not Path(e).is_file()]
        if masks:
            raise MissingFileError(f"{self.source}: {len(masks)} mask file(s) missing, e.g. {masks[0]}")
