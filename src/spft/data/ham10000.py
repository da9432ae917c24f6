"""HAM10000 (``data.name: ham10000``): 7 dermoscopic diagnoses, RGB, from ``HAM10000_metadata`` (CSV or Dataverse TSV).

Split policy: stratified on ``dx`` and grouped by ``lesion_id`` (several images of one lesion never straddle splits):
:func:`spft.data.splits.multilabel_grouped_split` on the one-hot diagnoses (the rarest diagnosis is placed first, so a
rare diagnosis reaches every split whenever it has enough lesions; ``split_method`` in data.json records the method).
When ``ISIC2018_Task3_Test_GroundTruth.csv`` is present (one-hot ISIC format or HAM metadata format) and
``data.official_test`` is true, its images found below ``data.root`` are the test split and HAM10000 is split into
train/val by ``data.val_fraction``; otherwise HAM10000 is split train/val/test by ``data.split_fractions``. Seeded by
``data.split_seed`` or the run's seed. Label policy: one-hot over :data:`CLASSES` (fixed alphabetical order akiec, bcc,
bkl, df, mel, nv, vasc); no unknown labels. ``image_id`` with or without ``.jpg``; images found by name below the root.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from spft.data.contract import LabelTable
from spft.data.files import (
    FileIndex,
    add_warning,
    count_warning,
    find_column,
    metadata_path,
    read_metadata,
    split_seed,
)
from spft.data.splits import multilabel_grouped_split, stratification_labels
from spft.errors import DataError

log = logging.getLogger(__name__)

CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
ISIC_COLUMNS = ["MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]  # ISIC's one-hot order differs from CLASSES
METADATA_NAMES = ("HAM10000_metadata.csv", "HAM10000_metadata", "HAM10000_metadata.tab", "HAM10000_metadata.txt")
TEST_GROUND_TRUTH = "ISIC2018_Task3_Test_GroundTruth.csv"
PUBLISHED = {"images": 10_015, "lesions": 7_470, "test": (1_512, 1_511)}
LABEL_POLICY = "one-hot over [akiec, bcc, bkl, df, mel, nv, vasc] from dx (ISIC one-hot columns mapped); no unknowns"


def _image_id(value: str) -> str:
    value = value.strip()
    return value[:-4] if value.lower().endswith(".jpg") else value


def _one_hot(codes: list[str], source: str, column: str) -> np.ndarray:
    labels = np.zeros((len(codes), len(CLASSES)), dtype=np.float32)
    for i, code in enumerate(codes):
        if code not in CLASSES:
            raise DataError(f"{source}: row {i + 2} column '{column}': diagnosis {code!r} is not one of "
                             f"{', '.join(CLASSES)}")
        labels[i, CLASSES.index(code)] = 1.0
    return labels


def _read_metadata_format(df: pd.DataFrame, source: str) -> tuple[list[str], list[str], np.ndarray]:
    """(image ids, lesion ids, labels) of a HAM-format table (``lesion_id,image_id,dx,...``)."""
    image_col = find_column(df, source, "image_id")
    dx_col = find_column(df, source, "dx")
    lesion_col = find_column(df, source, "lesion_id", required=False)
    ids = [_image_id(v) for v in df[image_col]]
    lesions = [v.strip() or i for v, i in zip(df[lesion_col], ids)] if lesion_col else list(ids)
    return ids, lesions, _one_hot([v.strip().lower() for v in df[dx_col]], source, dx_col)


def _read_isic_format(df: pd.DataFrame, source: str) -> tuple[list[str], list[str], np.ndarray]:
    """(image ids, image ids as groups, labels) of an ISIC one-hot table (``image,MEL,NV,...``)."""
    image_col = find_column(df, source, "image")
    onehot = np.zeros((len(df), len(CLASSES)), dtype=np.float32)
    for name in ISIC_COLUMNS:
        column = find_column(df, source, name)
        values = pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=np.float32)
        onehot[:, CLASSES.index(name.lower())] = values
    bad = ~np.isclose(onehot.sum(1), 1.0) | np.isnan(onehot).any(1) | ~np.isin(onehot, (0.0, 1.0)).all(1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{source}: row {row + 2}: columns {', '.join(ISIC_COLUMNS)} must be one-hot (a single 1.0)")
    ids = [_image_id(v) for v in df[image_col]]
    return ids, list(ids), onehot


def _read_test(index: FileIndex, images: dict[str, str], warnings: list[str]):
    """The ISIC 2018 Task 3 test rows whose images are present, or ``None`` when the ground truth is absent."""
    path = index.find(TEST_GROUND_TRUTH)
    if path is None:
        return None
    df = read_metadata(path)
    reader = _read_metadata_format if find_column(df, path, "dx", required=False) else _read_isic_format
    ids, groups, labels = reader(df, path)
    add_warning(warnings, count_warning(f"ham10000: {TEST_GROUND_TRUTH} rows", len(ids), PUBLISHED["test"]))
    present = np.array([i in images for i in ids], dtype=bool)
    if not present.all():
        add_warning(warnings, f"ham10000: {int((~present).sum())} of {len(ids)} test ground-truth image(s) not found "
                              f"below data.root; the test split uses the {int(present.sum())} present")
    if not present.any():
        return None
    keep = np.flatnonzero(present)
    return [ids[i] for i in keep], [groups[i] for i in keep], labels[keep]


def read_ham10000(data_cfg, seed: int) -> LabelTable:
    """The HAM10000 LabelTable (unchecked: missing files and leakage are reported by the caller).

    Raises:
        FileNotFoundError: data.root or the metadata file is missing.
        KeyError: a required column is absent (the file's columns are listed).
        ValueError: an unknown diagnosis or a non-one-hot ISIC row (file and row named), a duplicated image id.
    """
    index = FileIndex(data_cfg.root, data_cfg.follow_links)
    metadata = metadata_path(data_cfg, index, METADATA_NAMES, "ham10000", "the metadata file")
    images = index.images_by_stem()
    warnings: list[str] = []
    ids, groups, labels = _read_metadata_format(read_metadata(metadata), metadata)
    add_warning(warnings, count_warning("ham10000: metadata rows", len(ids), PUBLISHED["images"]))
    add_warning(warnings, count_warning("ham10000: lesions", len(set(groups)), PUBLISHED["lesions"]))
    seed = split_seed(data_cfg, seed)
    strata = stratification_labels(labels, CLASSES, data_cfg)
    test = _read_test(index, images, warnings) if data_cfg.official_test else None
    if test is None:
        log.info("ham10000: no ISIC 2018 test set used (data.official_test=%s): test carved from HAM10000 by "
                 "data.split_fractions", data_cfg.official_test)
        splits, method = multilabel_grouped_split(groups, strata, list(data_cfg.split_fractions), seed)
        policy = f"data.split_fractions {list(data_cfg.split_fractions)}"
    else:
        fractions = [1.0 - data_cfg.val_fraction, data_cfg.val_fraction, 0.0]
        splits, method = multilabel_grouped_split(groups, strata, fractions, seed)
        splits += ["test"] * len(test[0])
        ids, groups, labels = ids + test[0], groups + test[1], np.concatenate([labels, test[2]])
        policy = f"ISIC 2018 Task 3 test set = test; train/val by data.val_fraction = {data_cfg.val_fraction}"
    duplicated = pd.Series(ids)[pd.Series(ids).duplicated()]
    if len(duplicated):
        raise DataError(f"ham10000: image id {duplicated.iloc[0]!r} appears more than once (metadata and test ground "
                         "truth together must list each image once)")
    # an image not found gets the path "<root>/**/<id>.jpg": searched for anywhere below the root, reported missing
    paths = [images.get(i) or str(index.root / "**" / f"{i}.jpg") for i in ids]
    return LabelTable(classes=list(CLASSES), paths=paths, ids=ids, groups=groups, splits=splits, labels=labels,
                      split_policy=f"stratified on dx, grouped by lesion_id (seed {seed}, method {method}); {policy}",
                      label_policy=LABEL_POLICY, group_kind="lesion", warnings=warnings,
                      source=f"ham10000 at {index.root} ({Path(metadata).name}; images found by name below it)")
