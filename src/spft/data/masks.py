"""Segmentation data: the mask table (image + one mask per structure), its torch Dataset and two readers.

``mask_folder`` is users' own data: ``images/<stem>.png`` + ``masks/<stem>_<structure>.png`` under ``data.root``,
or a CSV (``data.csv``) with an image column and one ``mask_<structure>`` column per structure. ``phantom_segment``
generates the phantom chest X-rays and reads their heart / lung masks through the same path. Masks are either PNG
files (non-zero = foreground) or :class:`RleMask` entries (CheXmask, :mod:`spft.data.chexmask`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import Dataset

from spft.data.io import load_image
from spft.data.mask_contract import MaskTable, RleMask
from spft.data.splits import grouped_split
from spft.errors import DataError, MissingFileError, MissingKeyError

log = logging.getLogger(__name__)

DEFAULT_STRUCTURES = ("heart", "left_lung", "right_lung")


def load_mask(entry, shape: tuple[int, int]) -> np.ndarray:
    """Boolean ``(H, W)`` mask of one entry at the image's ``shape``; None = structure absent (all False).

    A decoded mask of transposed shape is transposed (a known CheXmask header swap, docs/decisions.md#chexmask); any
    other size is resized (nearest) with the image.
    """
    if entry is None:
        return np.zeros(shape, bool)
    if isinstance(entry, RleMask):
        mask = entry.decode()
    else:
        with Image.open(entry) as img:
            mask = np.asarray(img.convert("L")) > 0
    if mask.shape != shape:
        if mask.shape[::-1] == shape:
            mask = mask.T
        else:
            resized = Image.fromarray(mask.astype(np.uint8) * 255).resize((shape[1], shape[0]), Image.NEAREST)
            mask = np.asarray(resized) > 0
    return mask


def box_of(mask: np.ndarray) -> list[float]:
    """``[x_min, y_min, x_max, y_max]`` of a boolean mask, inclusive pixel indices; zeros for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return [0.0, 0.0, 0.0, 0.0]
    return [float(cols[0]), float(rows[0]), float(cols[-1]), float(rows[-1])]


class MaskDataset(Dataset):
    """Samples ``{"image" [3,S,S], "masks" [P,S,S], "boxes" [P,4], "valid" [P], "id", "group", "index"}``.

    Image and masks are resized together to the model's ``size`` (no crop, so boxes and masks stay aligned);
    boxes are exact, in model-input pixels; ``valid`` is False for a structure absent from the image.
    """

    def __init__(self, table: MaskTable, split: str, prep, color: str = "grey"):
        self.table = table
        self.split = split
        self.index = table.indices(split)
        self.size = int(prep.size)
        self.resample = Image.Resampling(getattr(prep, "interpolation", Image.BILINEAR))  # the processor's filter
        self.rescale = getattr(prep, "rescale", 1 / 255) or 1.0
        self.mean = torch.tensor(prep.mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(prep.std, dtype=torch.float32).view(3, 1, 1)
        self.color = color

    def __len__(self) -> int:
        return len(self.index)

    def original(self, i: int) -> tuple[Image.Image, np.ndarray]:
        """The image at its own size and its masks ``[P, H, W]`` (bool) — for evaluation at the image's size."""
        row = int(self.index[i])
        image = load_image(self.table.paths[row], color=self.color)
        shape = (image.size[1], image.size[0])
        return image, np.stack([load_mask(e, shape) for e in self.table.masks[row]])

    def model_input(self, image: Image.Image) -> torch.Tensor:
        """``[3, S, S]`` model input of a PIL image (``grey`` / ``rgb`` as read): resized to the model's square size
        with the processor's filter (no crop), rescaled, normalised. ``spft predict`` uses it too."""
        s = self.size
        arr = (np.asarray(image.resize((s, s), self.resample)).astype(np.float64) * self.rescale).astype(np.float32)
        x = torch.from_numpy(arr)
        x = x.unsqueeze(0).expand(3, -1, -1) if x.ndim == 2 else x.permute(2, 0, 1)
        return (x - self.mean) / self.std

    def __getitem__(self, i: int) -> dict:
        row = int(self.index[i])
        image, masks = self.original(i)
        s = self.size
        small = np.stack([np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((s, s), Image.NEAREST)) > 0
                          for m in masks])
        return {
            "image": self.model_input(image),
            "masks": torch.from_numpy(small.astype(np.float32)),
            "boxes": torch.tensor([box_of(m) for m in small], dtype=torch.float32),
            "valid": torch.from_numpy(small.reshape(len(small), -1).any(1)),
            "id": self.table.ids[row],
            "group": self.table.groups[row],
            "index": i,
        }


def pixel_prevalence(table: MaskTable, size: int = 64, max_images: int = 1000) -> np.ndarray:
    """Foreground fraction per structure over the training split (at most ``max_images``, evenly spaced).

    Counted on masks resized to ``size`` so a large dataset costs seconds; prevalence is scale-free.
    """
    rows = table.indices("train")
    if len(rows) > max_images:
        rows = rows[np.linspace(0, len(rows) - 1, max_images).round().astype(int)]
    pos = np.zeros(len(table.structures))
    total = 0
    for row in rows:
        for j, entry in enumerate(table.masks[row]):
            if entry is None or (isinstance(entry, str) and not Path(entry).is_file()):
                continue  # a missing file is refused before training; evaluation needs no prevalence
            pos[j] += entry.fraction() if isinstance(entry, RleMask) else load_mask(entry, (size, size)).mean()
        total += 1
    return pos / max(total, 1)


def _split_or_grouped(df: pd.DataFrame, csv: str, data_cfg, groups: list[str], seed: int) -> tuple[list[str], str]:
    from spft.data.csv_dataset import _splits_from_column
    from spft.data.files import split_seed

    if data_cfg.split_column:
        return _splits_from_column(df, Path(csv), data_cfg.split_column), f"column {data_cfg.split_column}"
    s = split_seed(data_cfg, seed)
    return grouped_split(groups, list(data_cfg.split_fractions), s), f"grouped seeded split (seed {s})"


def read_mask_csv(data_cfg, structures: list[str], seed: int) -> MaskTable:
    """``data.csv`` with ``data.image_column`` and a ``mask_<structure>`` column per structure (blank = absent)."""
    from spft.data.csv_dataset import _require_columns

    csv = Path(data_cfg.csv)
    root = Path(data_cfg.root) if data_cfg.root else csv.parent
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    cols = {"data.image_column": data_cfg.image_column}
    cols.update({f"structure {s}": f"mask_{s}" for s in structures})
    if data_cfg.patient_column:
        cols["data.patient_column"] = data_cfg.patient_column
    _require_columns(df, csv, cols)
    images = df[data_cfg.image_column].str.strip().tolist()
    ids = df[data_cfg.id_column].tolist() if data_cfg.id_column else images
    groups = df[data_cfg.patient_column].tolist() if data_cfg.patient_column else list(ids)
    masks = [[str(root / v) if v.strip() else None for v in (df[f"mask_{s}"].iloc[i] for s in structures)]
             for i in range(len(df))]
    splits, policy = _split_or_grouped(df, str(csv), data_cfg, groups, seed)
    return MaskTable(list(structures), [str(root / p) for p in images], ids, groups, splits, masks, source=str(csv),
                     split_policy=policy)


def read_mask_folder(data_cfg, structures: list[str], seed: int) -> MaskTable:
    """``data.root/images/<stem>.*`` with ``data.root/masks/<stem>_<structure>.png``, or ``data.csv`` if given."""
    if data_cfg.csv:
        return read_mask_csv(data_cfg, structures, seed)
    if not data_cfg.root:
        raise DataError("data.root: required for data.name=mask_folder (a folder with images/ and masks/)")
    root = Path(data_cfg.root)
    images = sorted(p for p in (root / "images").glob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not images:
        raise MissingFileError(f"{root / 'images'}: no PNG/JPEG images found")
    masks = []
    for p in images:
        entries = [root / "masks" / f"{p.stem}_{s}.png" for s in structures]
        masks.append([str(e) if e.is_file() else None for e in entries])
    ids = [p.stem for p in images]
    splits, policy = _split_or_grouped(pd.DataFrame(), str(root), data_cfg, ids, seed)
    return MaskTable(list(structures), [str(p) for p in images], ids, list(ids), splits, masks, source=str(root),
                     split_policy=policy)


def read_phantom_masks(data_cfg, structures: list[str], seed: int) -> MaskTable:
    """The phantom CXR set (generated once into the cache): labels.csv splits/patients + masks/ folder."""
    from spft.data.phantoms import MASK_NAMES
    from spft.data.registry import ensure_phantoms

    unknown = [s for s in structures if s not in MASK_NAMES]
    if unknown:
        raise MissingKeyError(f"segmentation.structures: {unknown} are not phantom structures "
                              f"({', '.join(MASK_NAMES)})")
    folder = ensure_phantoms(data_cfg.phantom, data_cfg.root)
    df = pd.read_csv(folder / "labels.csv", dtype=str)
    images = df["image"].tolist()
    ids = [Path(p).stem for p in images]
    masks = [[str(folder / "masks" / f"{i}_{s}.png") for s in structures] for i in ids]
    return MaskTable(list(structures), [str(folder / p) for p in images], ids, df["patient_id"].tolist(),
                     df["split"].tolist(), masks, source=str(folder / "labels.csv"), split_policy="column split")


def load_mask_table(data_cfg, structures: list[str], seed: int) -> MaskTable:
    """The MaskTable for ``data.name`` (phantom_segment | mask_folder | chexmask), *unchecked*: evaluation checks the
    rows it scores (:meth:`MaskTable.check_files`), training everything (:func:`build_mask_table`)."""
    name = data_cfg.name
    if name == "phantom_segment":
        table = read_phantom_masks(data_cfg, structures, seed)
    elif name == "mask_folder":
        table = read_mask_folder(data_cfg, structures, seed)
    elif name == "chexmask":
        from spft.data.chexmask import read_chexmask

        table = read_chexmask(data_cfg, structures, seed)
    else:
        raise DataError(f"data.name: {name!r} is not a segmentation dataset (phantom_segment, mask_folder, chexmask)")
    for warning in table.warnings:
        log.warning("%s", warning)
    return table


def build_mask_table(data_cfg, structures: list[str], seed: int) -> MaskTable:
    """The MaskTable for ``data.name``, checked for training: no empty split, no leaked group, every image and mask
    file of every row present."""
    table = load_mask_table(data_cfg, structures, seed)
    table.check()
    return table
