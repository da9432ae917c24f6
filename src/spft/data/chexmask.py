"""CheXmask adapter (``data.name: chexmask``): heart and lung masks of VinDr-CXR, ChestX-ray14 and CheXpert.

Owns the CheXmask conventions (docs/decisions.md#chexmask): RLE with 1-indexed starts into the row-major
``Height x Width`` array; columns selected by name (their order differs between files); the official quality
filter ``Dice RCA (Mean) >= 0.7`` with swapped Mean/Max columns detected; ``Left Lung`` is the patient's left,
i.e. on the image's right. Rows are joined to images below ``data.images_root`` and split by patient.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from spft.data.files import FileIndex, find_column, read_metadata, split_seed
from spft.data.mask_contract import MaskTable, RleMask, decode_chexmask_rle, encode_chexmask_rle  # noqa: F401
from spft.data.splits import grouped_split
from spft.errors import DataError, MissingFileError, MissingKeyError

log = logging.getLogger(__name__)

# structure name in spft -> CheXmask column
STRUCTURE_COLUMNS = {"heart": "Heart", "left_lung": "Left Lung", "right_lung": "Right Lung"}
# source -> the image-id column of its CheXmask file
ID_COLUMNS = {"vindr-cxr": "image_id", "chestxray14": "Image Index", "chexpert": "Path"}
RCA_MEAN, RCA_MAX = "Dice RCA (Mean)", "Dice RCA (Max)"


def quality_filter(df: pd.DataFrame, source: str, min_rca: float) -> pd.DataFrame:
    """Rows with ``Dice RCA (Mean) >= min_rca``; Mean/Max swapped (Max < Mean in most rows) is fixed with a warning."""
    mean_col = find_column(df, source, RCA_MEAN)
    max_col = find_column(df, source, RCA_MAX, required=False)
    mean = pd.to_numeric(df[mean_col], errors="coerce")
    if max_col is not None:
        mx = pd.to_numeric(df[max_col], errors="coerce")
        both = mean.notna() & mx.notna()
        if both.any() and (mx[both] < mean[both]).mean() > 0.5:
            log.warning("%s: '%s' < '%s' in most rows: the two columns are swapped, using '%s' as the mean",
                        source, max_col, mean_col, max_col)
            mean = mx
    keep = mean >= min_rca
    log.info("%s: %d of %d rows pass Dice RCA (Mean) >= %.2f", source, int(keep.sum()), len(df), min_rca)
    return df.loc[keep.to_numpy()].reset_index(drop=True)


def _patient(source: str, image_id: str) -> str:
    """Patient of a row: ChestX-ray14 ``00028162_002.png`` -> ``00028162``; CheXpert ``patient18591``; VinDr: image."""
    if source == "chestxray14":
        return image_id.split("_")[0]
    if source == "chexpert":
        found = re.search(r"patient\d+", image_id)
        return found.group(0) if found else image_id
    return image_id


def _image_path(source: str, image_id: str, index: FileIndex, stems: dict[str, str]) -> str | None:
    if source == "chexpert":
        rel = re.sub(r"^CheXpert-v1\.0[^/]*/", "", image_id)
        path = index.root / rel
        return str(path) if path.is_file() else None
    if source == "chestxray14":
        return index.find(image_id) or stems.get(Path(image_id).stem)
    return stems.get(image_id)  # vindr-cxr: <image_id>.png in a prepared folder


def _read_rows(data_cfg, source: str) -> tuple[pd.DataFrame, str]:
    if not data_cfg.masks_csv:
        raise DataError("data.masks_csv: required for data.name=chexmask (the CheXmask CSV of this source)")
    csv = Path(data_cfg.masks_csv)
    if not csv.is_file():
        raise MissingFileError(f"data.masks_csv: file not found: {csv}")
    df = read_metadata(csv)
    id_col = find_column(df, csv, ID_COLUMNS[source])
    df = df.rename(columns={id_col: "_id"})
    return quality_filter(df, str(csv), data_cfg.min_rca), str(csv)


def read_chexmask(data_cfg, structures: list[str], seed: int) -> MaskTable:
    """The :class:`MaskTable` of one CheXmask file joined to its images (rows without an image are dropped)."""
    source = data_cfg.source
    if source not in ID_COLUMNS:
        raise DataError(f"data.source: {source!r} is not one of {', '.join(ID_COLUMNS)}")
    unknown = [s for s in structures if s not in STRUCTURE_COLUMNS]
    if unknown:
        raise MissingKeyError(f"segmentation.structures: {unknown} are not CheXmask structures "
                       f"({', '.join(STRUCTURE_COLUMNS)})")
    df, csv = _read_rows(data_cfg, source)
    cols = [find_column(df, csv, STRUCTURE_COLUMNS[s]) for s in structures]
    h_col, w_col = find_column(df, csv, "Height"), find_column(df, csv, "Width")
    root = data_cfg.images_root or data_cfg.root
    if not root:
        raise DataError("data.images_root: required for data.name=chexmask (the folder holding the images)")
    index = FileIndex(root, data_cfg.follow_links)
    stems = index.images_by_stem()
    paths, ids, masks, skipped = [], [], [], {"no image": 0, "no size": 0}
    for _, row in df.iterrows():
        path = _image_path(source, row["_id"], index, stems)
        h, w = pd.to_numeric(row[h_col], errors="coerce"), pd.to_numeric(row[w_col], errors="coerce")
        if path is None:
            skipped["no image"] += 1
            continue
        if not (np.isfinite(h) and np.isfinite(w)):
            skipped["no size"] += 1
            continue
        paths.append(path)
        ids.append(row["_id"])
        masks.append([RleMask(row[c], int(h), int(w)) if str(row[c]).strip() else None for c in cols])
    warnings = [f"{csv}: {n} row(s) skipped ({why})" for why, n in skipped.items() if n]
    if not paths:
        raise MissingFileError(f"{csv}: no row matched an image below {root} (source {source})")
    groups = [_patient(source, i) for i in ids]
    s = split_seed(data_cfg, seed)
    splits = grouped_split(groups, list(data_cfg.split_fractions), s)
    return MaskTable(list(structures), paths, ids, groups, splits, masks, source=csv,
                     split_policy=f"split grouped by patient (seed {s})", warnings=warnings)
