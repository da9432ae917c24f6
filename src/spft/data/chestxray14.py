"""NIH ChestX-ray14 (``data.name: chestxray14``): 14 findings from ``Data_Entry_2017[_v2020].csv``.

Split policy: the official ``test_list.txt`` is the test split; validation is carved out of ``train_val_list.txt``
grouped by ``Patient ID`` and stratified on the findings (:func:`spft.data.splits.multilabel_grouped_split` on the
trained classes; ``data.val_fraction``, seeded by ``data.split_seed`` or the run's seed), so no patient is in two
splits and a rare finding such as Hernia reaches validation; ``split_method`` in data.json records the method. Label
policy: ``Finding Labels`` split on ``|`` and matched exactly to the 14 names; ``No Finding`` = all 14 negative; there
are no unknown labels.

Images are found by file name anywhere below ``data.root`` (NIH Box ``images/`` or Kaggle ``images_0XX/images/``).
One lookup rule (:func:`image_path`): the name in ``Image Index`` (``00000001_000.png``) if a file of that name exists,
else ``<stem>.dcm``, else ``<stem>.dicom`` (a copy of the dataset stored as DICOM), all read through
:func:`spft.data.io.load_image` (RGBA PNGs as grey; DICOM through :func:`spft.data.dicom.read_dicom`).
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
from spft.data.io import DICOM_SUFFIXES
from spft.data.splits import multilabel_grouped_split, stratification_labels
from spft.errors import DataError, MissingFileError

log = logging.getLogger(__name__)

FINDINGS = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia", "Pneumothorax",
            "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia"]
NO_FINDING = "No Finding"
METADATA_NAMES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
PUBLISHED = {"images": 112_120, "train_val_list.txt": 86_524, "test_list.txt": 25_596}

SPLIT_POLICY = ("official test_list.txt = test; validation carved from train_val_list.txt grouped by Patient ID "
                "(data.val_fraction = {val}, seed {seed}, method {method}); no patient in two splits")
LABEL_POLICY = ("14 findings from 'Finding Labels' split on '|' (exact names); 'No Finding' = all negative; "
                "no unknown labels")


def parse_findings(values: pd.Series, source: str, column: str) -> np.ndarray:
    """``Cardiomegaly|Effusion`` → a 0/1 row over :data:`FINDINGS`; an unknown name is an error naming the row."""
    labels = np.zeros((len(values), len(FINDINGS)), dtype=np.float32)
    position = {name: j for j, name in enumerate(FINDINGS)}
    for i, text in enumerate(values):
        names = {n.strip() for n in str(text).split("|") if n.strip()}
        for name in names - {NO_FINDING}:
            if name not in position:
                raise DataError(f"{source}: row {i + 2} column '{column}': unknown finding {name!r} (expected "
                                 f"'{NO_FINDING}' or |-separated names from: {', '.join(FINDINGS)})")
            labels[i, position[name]] = 1.0
    return labels


def _read_list(index: FileIndex, name: str) -> list[str]:
    path = index.find(name)
    if path is None:
        raise MissingFileError(f"chestxray14: {name} not found below data.root={index.root} (it ships with the "
                                "NIH download next to Data_Entry_2017_v2020.csv; it defines the official split)")
    return [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]


def _official_splits(names: list[str], index: FileIndex, warnings: list[str]) -> list[str | None]:
    """'trainval' / 'test' per row from the official lists; ``None`` for rows in neither list (dropped)."""
    trainval = _read_list(index, "train_val_list.txt")
    test = _read_list(index, "test_list.txt")
    for name, listed in (("train_val_list.txt", trainval), ("test_list.txt", test)):
        add_warning(warnings, count_warning(f"chestxray14: {name} entries", len(listed), PUBLISHED[name]))
    membership = {n: "trainval" for n in trainval}
    membership.update({n: "test" for n in test if n not in membership})
    both = len(set(trainval) & set(test))
    if both:
        add_warning(warnings, f"chestxray14: {both} image(s) are in both train_val_list.txt and test_list.txt; "
                              "they are kept in train/val")
    unlisted = sum(n not in membership for n in names)
    if unlisted:
        add_warning(warnings, f"chestxray14: {unlisted} Data_Entry row(s) are in neither official list and are left "
                              "out")
    not_in_csv = len(set(membership) - set(names))
    if not_in_csv:
        add_warning(warnings, f"chestxray14: {not_in_csv} listed image(s) have no Data_Entry row and are left out")
    return [membership.get(n) for n in names]


def image_path(index: FileIndex, name: str) -> str | None:
    """The file of ``Image Index`` ``name`` below the root: ``name`` itself, else the same stem with a DICOM suffix
    (``.dcm``, then ``.dicom``); ``None`` when none exists."""
    stem = Path(name).stem
    return index.find(name, *(stem + suffix for suffix in DICOM_SUFFIXES))


def read_chestxray14(data_cfg, seed: int) -> LabelTable:
    """The ChestX-ray14 LabelTable (unchecked: missing files and leakage are reported by the caller).

    Raises:
        FileNotFoundError: data.root, the Data_Entry file or an official list is missing.
        KeyError: a required column is absent (the file's columns are listed).
        ValueError: an unknown finding name (file, row and column named) or a duplicated image.
    """
    index = FileIndex(data_cfg.root, data_cfg.follow_links)
    metadata = metadata_path(data_cfg, index, METADATA_NAMES, "chestxray14", "the Data_Entry file")
    df = read_metadata(metadata)
    image_col = find_column(df, metadata, "Image Index")
    labels_col = find_column(df, metadata, "Finding Labels")
    patient_col = find_column(df, metadata, "Patient ID")
    warnings: list[str] = []
    add_warning(warnings, count_warning(f"chestxray14: {Path(metadata).name} rows", len(df), PUBLISHED["images"]))
    names = df[image_col].str.strip().tolist()
    duplicated = pd.Series(names)[pd.Series(names).duplicated()]
    if len(duplicated):
        raise DataError(f"{metadata}: image {duplicated.iloc[0]!r} appears in more than one row of '{image_col}'")
    official = _official_splits(names, index, warnings)
    keep = np.array([s is not None for s in official])
    df = df.loc[keep].reset_index(drop=True)
    names = [n for n, k in zip(names, keep) if k]
    official = [s for s in official if s is not None]
    labels = parse_findings(df[labels_col], metadata, labels_col)
    # Patient IDs are integers in the CSV ("1") and zero-padded in the file names: compare them as integers.
    groups = [str(int(p)) if p.strip().isdigit() else p.strip() for p in df[patient_col]]
    seed = split_seed(data_cfg, seed)
    trainval = [i for i, s in enumerate(official) if s == "trainval"]
    carved, method = multilabel_grouped_split([groups[i] for i in trainval],
                                              stratification_labels(labels[trainval], FINDINGS, data_cfg),
                                              [1.0 - data_cfg.val_fraction, data_cfg.val_fraction, 0.0], seed)
    splits = ["test"] * len(names)
    for i, split in zip(trainval, carved):
        splits[i] = split
    # a name not found gets the path "<root>/**/<name>": searched for anywhere below the root, reported as missing
    paths = [image_path(index, n) or str(index.root / "**" / n) for n in names]
    return LabelTable(classes=list(FINDINGS), paths=paths, ids=names, groups=groups, splits=splits, labels=labels,
                      split_policy=SPLIT_POLICY.format(val=data_cfg.val_fraction, seed=seed, method=method),
                      label_policy=LABEL_POLICY, group_kind="patient", warnings=warnings,
                      source=f"chestxray14 at {index.root} ({Path(metadata).name}; images found by name below it)")
