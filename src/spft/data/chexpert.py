"""CheXpert (``data.name: chexpert``): 14 observations from ``train.csv`` / ``valid.csv``, small or full release.

Split policy: the official ``valid.csv`` (234 radiologist-labelled images) is the test split; validation is carved out
of ``train.csv`` grouped by patient (``patientNNNNN`` from ``Path``; ``data.val_fraction``, seeded), so no patient is
in two splits, and stratified on the labels after the uncertainty/blank policies (positives of the trained classes,
:func:`spft.data.splits.multilabel_grouped_split`), so a rare observation reaches validation; ``split_method`` in
data.json records the method. ``data.views`` keeps frontal, lateral or both images, decided by the
``Frontal/Lateral`` column.
Label policy: 1 positive, 0 negative; uncertain (-1) per ``data.uncertain`` — ``ignore`` (U-Ignore: masked, the
image is kept), ``zeros`` or ``ones``, globally or per class; blank (not mentioned) per ``data.blank`` — ``zero``
(negative, the default) or ``ignore`` (masked).
"""

from __future__ import annotations

import difflib
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from spft.data.contract import LabelTable
from spft.data.files import add_warning, count_warning, find_column, read_metadata, split_seed
from spft.data.splits import multilabel_grouped_split, stratification_labels
from spft.errors import DataError, MissingFileError

log = logging.getLogger(__name__)

OBSERVATIONS = ["No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
                "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
                "Fracture", "Support Devices"]
PUBLISHED = {"train.csv": 223_414, "valid.csv": 234}
RELEASE_PREFIX = re.compile(r"^CheXpert-v1\.0[^/]*/")
_PATIENT = re.compile(r"(patient\d+)")
_VALUES = {"1": 1.0, "1.0": 1.0, "0": 0.0, "0.0": 0.0, "-1": -1.0, "-1.0": -1.0, "": np.nan}
_UNCERTAIN_VALUE = {"ignore": np.nan, "zeros": 0.0, "ones": 1.0}


def uncertain_policies(setting, classes: list[str]) -> dict[str, str]:
    """``data.uncertain`` (one policy, or ``{class: policy, default: policy}``) → the policy of every class.

    >>> uncertain_policies({"Edema": "ones"}, ["Edema", "Fracture"])
    {'Edema': 'ones', 'Fracture': 'ignore'}
    """
    if not isinstance(setting, dict):
        return {c: str(setting) for c in classes}
    for name in setting:
        if name != "default" and name not in classes:
            close = difflib.get_close_matches(name, classes, n=1)
            hint = f" — did you mean '{close[0]}'?" if close else f" (classes: {', '.join(classes)})"
            raise DataError(f"'data.uncertain.{name}': not a CheXpert observation{hint}")
    default = setting.get("default", "ignore")
    return {c: str(setting.get(c, default)) for c in classes}


def describe_policies(policies: dict[str, str]) -> str:
    """``{"Edema": "ones", others: "zeros"}`` → ``"zeros (Edema: ones)"``: the common policy, then the exceptions."""
    values = list(policies.values())
    common = max(set(values), key=values.count)
    exceptions = [f"{c}: {p}" for c, p in policies.items() if p != common]
    return common + (f" ({', '.join(exceptions)})" if exceptions else "")


def _find_csvs(root: Path) -> tuple[Path, Path]:
    """train.csv / valid.csv in data.root or in a release folder directly below it."""
    for folder in [root, *sorted(p for p in root.iterdir() if p.is_dir())]:
        if (folder / "train.csv").is_file():
            if not (folder / "valid.csv").is_file():
                raise MissingFileError(f"chexpert: {folder / 'valid.csv'} not found next to train.csv (it is the "
                                        "official validation set, used as the test split)")
            return folder / "train.csv", folder / "valid.csv"
    raise MissingFileError(f"chexpert: train.csv not found in data.root={root} or a folder directly below it "
                            "(expected CheXpert-v1.0-small/ or CheXpert-v1.0/ holding train.csv, valid.csv, train/, "
                            "valid/)")


def _path_resolver(rel_paths: list[str], csv_dir: Path, root: Path):
    """A function Path-column value → file, the base chosen by where the first rows' files actually are.

    ``Path`` carries the release folder (``CheXpert-v1.0-small/train/...`` or ``CheXpert-v1.0/train/...``): it is
    joined with the release folder's parent, or stripped and joined with the CSV's folder (re-uploads).
    """
    candidates = [lambda p: csv_dir.parent / p, lambda p: csv_dir / RELEASE_PREFIX.sub("", p),
                  lambda p: root / p, lambda p: root / RELEASE_PREFIX.sub("", p)]
    sample = rel_paths[:: max(1, len(rel_paths) // 20)][:20]
    hits = [sum(resolve(p).is_file() for p in sample) for resolve in candidates]
    best = candidates[int(np.argmax(hits))] if max(hits, default=0) > 0 else candidates[1]
    return lambda p: str(best(p))


def _parse_labels(df: pd.DataFrame, source: Path) -> np.ndarray:
    """The 14 observation columns as floats: 1, 0, -1 (uncertain) or NaN (blank); anything else names row/column."""
    out = np.empty((len(df), len(OBSERVATIONS)), dtype=np.float32)
    for j, name in enumerate(OBSERVATIONS):
        column = find_column(df, source, name)
        text = df[column].str.strip()
        values = text.map(_VALUES)
        bad = values.isna() & (text != "")
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])  # the index is the file's row (views filter rows out)
            raise DataError(f"{source}: row {df.index[row] + 2} column '{column}': value {text.iloc[row]!r} is not "
                             "1, 0, -1 or blank")
        out[:, j] = values.to_numpy(dtype=np.float32)
    return out


def _read_split_file(csv: Path, views: str, warnings: list[str]) -> pd.DataFrame:
    df = read_metadata(csv)
    add_warning(warnings, count_warning(f"chexpert: {csv.name} rows", len(df), PUBLISHED[csv.name]))
    view_col = find_column(df, csv, "Frontal/Lateral")
    view = df[view_col].str.strip().str.lower()
    if views != "both":
        df = df.loc[view == views]
    return df


def apply_policies(raw: np.ndarray, policies: dict[str, str], blank: str) -> np.ndarray:
    """Map uncertain (-1) per class policy and blank (NaN) per ``blank``; returns the label matrix (NaN = unknown)."""
    labels = raw.copy()
    for j, name in enumerate(OBSERVATIONS):
        column = labels[:, j]
        column[raw[:, j] == -1.0] = _UNCERTAIN_VALUE[policies[name]]
        if blank == "zero":
            column[np.isnan(raw[:, j])] = 0.0
    return labels


def read_chexpert(data_cfg, seed: int) -> LabelTable:
    """The CheXpert LabelTable (unchecked: missing files and leakage are reported by the caller).

    Raises:
        FileNotFoundError: data.root, train.csv or valid.csv is missing.
        KeyError: a required column is absent (the file's columns are listed).
        ValueError: a label value other than 1, 0, -1 or blank (file, row and column named), a bad data.uncertain.
    """
    if getattr(data_cfg, "csv", None):  # a config built in code; the loader refuses the key
        raise DataError("data.csv is not used by chexpert: set data.root to the folder holding train.csv and "
                         "valid.csv")
    root = Path(data_cfg.root).expanduser()
    if not root.is_dir():
        raise MissingFileError(f"data.root: folder not found: {root}")
    policies = uncertain_policies(data_cfg.uncertain, OBSERVATIONS)
    train_csv, valid_csv = _find_csvs(root)
    warnings: list[str] = []
    frames = {"train": _read_split_file(train_csv, data_cfg.views, warnings),
              "test": _read_split_file(valid_csv, data_cfg.views, warnings)}
    rel, raw, groups, official = [], [], [], []
    for split, df in frames.items():
        csv = train_csv if split == "train" else valid_csv
        path_col = find_column(df, csv, "Path")
        rel += df[path_col].str.strip().tolist()
        raw.append(_parse_labels(df, csv))
        official += [split] * len(df)
    for i, p in enumerate(rel):
        match = _PATIENT.search(p)
        groups.append(match.group(1) if match else p)
        if not match:
            log.debug("chexpert: no patientNNNNN in Path %r (row %d): grouped by image", p, i)
    raw_labels = np.concatenate(raw) if raw else np.zeros((0, len(OBSERVATIONS)), np.float32)
    labels = apply_policies(raw_labels, policies, data_cfg.blank)
    seed = split_seed(data_cfg, seed)
    train_rows = [i for i, s in enumerate(official) if s == "train"]
    carved, method = multilabel_grouped_split([groups[i] for i in train_rows],
                                              stratification_labels(labels[train_rows], OBSERVATIONS, data_cfg),
                                              [1.0 - data_cfg.val_fraction, data_cfg.val_fraction, 0.0], seed)
    for i, split in zip(train_rows, carved):
        official[i] = split
    resolve = _path_resolver(rel, train_csv.parent, root)
    policy_text = describe_policies(policies)
    return LabelTable(
        classes=list(OBSERVATIONS), paths=[resolve(p) for p in rel], ids=[RELEASE_PREFIX.sub("", p) for p in rel],
        groups=groups, splits=official, labels=labels,
        uncertain=raw_labels == -1.0, group_kind="patient", warnings=warnings, source=f"chexpert at {train_csv.parent}",
        split_policy=(f"official valid.csv = test; validation carved from train.csv grouped by patient "
                      f"(data.val_fraction = {data_cfg.val_fraction}, seed {seed}, method {method}); "
                      f"views: {data_cfg.views}"),
        label_policy=(f"1 positive, 0 negative; uncertain (-1) -> {policy_text} (ignore = masked, image kept); "
                      f"blank -> {'0 (negative)' if data_cfg.blank == 'zero' else 'unknown (masked)'}"))
