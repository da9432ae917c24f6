"""The generic CSV dataset (``data.name: csv``): a folder of images and a CSV with one row per image.

Columns are selected by name, never by position (docs/decisions.md, rule 7). Labels are 0/1 with blank = unknown
(NaN, masked in loss and metrics). The split comes from ``data.split_column`` (train/val/test) or, when unset,
from a seeded split grouped by ``data.patient_column`` so that no patient is in two splits and, with more than one
label column, stratified on the labels (:func:`spft.data.splits.multilabel_grouped_split`) so that rare findings
reach every split. Image paths must stay below ``data.root`` (no ``../``, no absolute path elsewhere) unless
``data.allow_outside_root`` is true. Every problem is reported with the file, row and column and what was
expected.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from spft.data.contract import SPLITS, LabelTable
from spft.data.files import read_table
from spft.data.splits import multilabel_grouped_split
from spft.errors import DataError, MissingFileError, MissingKeyError

log = logging.getLogger(__name__)

_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                  "dev": "val", "test": "test", "testing": "test"}


def _require_columns(df: pd.DataFrame, csv: Path, columns: dict[str, str]) -> None:
    available = list(df.columns)
    for key, column in columns.items():
        if column not in df.columns:
            import difflib

            close = difflib.get_close_matches(column, available, n=1)
            hint = f" — did you mean '{close[0]}'?" if close else ""
            raise MissingKeyError(f"{csv}: column '{column}' (from {key}) not found{hint}; "
                           f"the CSV has: {', '.join(available)}")


LABEL_SPELLINGS = "1/0 (or 1.0/0.0, true/false, yes/no)"


def _parse_labels(df: pd.DataFrame, csv: Path, label_columns: list[str]) -> np.ndarray:
    """1/0 (also 1.0/0.0, true/false, yes/no, any case) → float; blank → NaN; anything else is an error naming row
    and column. The accepted spellings are the ones the message and README list (LABEL_SPELLINGS)."""
    out = np.full((len(df), len(label_columns)), np.nan, dtype=np.float32)
    for j, column in enumerate(label_columns):
        raw = df[column]
        text = raw.astype(str).str.strip().str.lower()
        blank = raw.isna() | text.isin(["", "nan"])
        pos = text.isin(["1", "1.0", "true", "yes"])
        neg = text.isin(["0", "0.0", "false", "no"])
        bad = ~(blank | pos | neg)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{csv}: row {row + 2} column '{column}': label {raw.iloc[row]!r} is not {LABEL_SPELLINGS} "
                             f"or blank (blank = unknown); {int(bad.sum())} such value(s) in that column")
        out[pos.to_numpy(), j] = 1.0
        out[neg.to_numpy(), j] = 0.0
    return out


def _splits_from_column(df: pd.DataFrame, csv: Path, column: str) -> list[str]:
    values = df[column].astype(str).str.strip().str.lower()
    mapped = values.map(_SPLIT_ALIASES)
    if mapped.isna().any():
        row = int(np.flatnonzero(mapped.isna().to_numpy())[0])
        raise DataError(f"{csv}: row {row + 2} column '{column}': split {df[column].iloc[row]!r} is not one of "
                         f"train, val, test")
    return mapped.tolist()


def read_csv_table(data_cfg, seed: int, check: bool = True) -> LabelTable:
    """Read ``data.csv`` into a :class:`LabelTable`, resolving image paths against ``data.root``.

    ``check=False`` returns the table without refusing missing files or leakage (``spft data check`` reports them).

    Raises:
        FileNotFoundError: the CSV, or images it lists, do not exist (the first few are named).
        KeyError: a configured column is not in the CSV (the CSV's columns are listed).
        ValueError: a label or split value is not understood (file, row and column named).
    """
    csv = Path(data_cfg.csv).expanduser()
    root = Path(data_cfg.root).expanduser() if data_cfg.root else csv.parent
    if not csv.is_file():
        raise MissingFileError(f"data.csv: file not found: {csv}")
    df = read_table(csv)
    if not data_cfg.label_columns:
        raise DataError(f"data.label_columns is empty: name the label columns of {csv} "
                         f"(it has: {', '.join(df.columns)})")
    needed = {"data.image_column": data_cfg.image_column}
    needed.update({f"data.label_columns[{i}]": c for i, c in enumerate(data_cfg.label_columns)})
    for key in ("split_column", "patient_column", "id_column"):
        if getattr(data_cfg, key):
            needed[f"data.{key}"] = getattr(data_cfg, key)
    _require_columns(df, csv, needed)
    if len(df) == 0:
        raise DataError(f"{csv}: no rows")

    rel = df[data_cfg.image_column].astype(str).str.strip()
    paths = [str(p if p.is_absolute() else root / p) for p in map(Path, rel)]
    if not getattr(data_cfg, "allow_outside_root", False):
        _refuse_outside_root(csv, root, data_cfg.image_column, rel.tolist(), paths,
                             resolve=not getattr(data_cfg, "follow_links", False))
    ids = df[data_cfg.id_column or data_cfg.image_column].astype(str).tolist()
    if len(set(ids)) != len(ids):
        dup = pd.Series(ids)[pd.Series(ids).duplicated()].iloc[0]
        raise DataError(f"{csv}: id {dup!r} appears more than once in column "
                         f"'{data_cfg.id_column or data_cfg.image_column}' (one row per image expected)")
    groups = df[data_cfg.patient_column].astype(str).tolist() if data_cfg.patient_column else list(ids)
    labels = _parse_labels(df, csv, data_cfg.label_columns)

    if data_cfg.split_column:
        splits = _splits_from_column(df, csv, data_cfg.split_column)
        policy = f"split from column '{data_cfg.split_column}'"
    else:
        split_seed = seed if data_cfg.split_seed is None else data_cfg.split_seed
        if not data_cfg.patient_column:
            log.warning("%s: neither data.split_column nor data.patient_column is set: splitting by image. If "
                        "patients have several images, set data.patient_column to avoid leakage.", csv)
        splits, method = multilabel_grouped_split(groups, labels, data_cfg.split_fractions, split_seed)
        unit = f"'{data_cfg.patient_column}'" if data_cfg.patient_column else "image"
        policy = (f"seeded split (seed {split_seed}) grouped by {unit}, fractions {list(data_cfg.split_fractions)}, "
                  f"method {method}")
    table = LabelTable(classes=list(data_cfg.label_columns), paths=paths, ids=ids, groups=groups, splits=splits,
                       labels=labels, split_policy=policy,
                       label_policy="0/1 from the label columns; blank = unknown (masked)", source=str(csv),
                       group_kind="patient" if data_cfg.patient_column else "image")
    if check:
        check_table(table, csv)
    return table


def _refuse_outside_root(csv: Path, root: Path, column: str, rel: list[str], paths: list[str],
                         resolve: bool = True) -> None:
    """Image paths that leave ``root`` (``../``, an absolute path elsewhere): refused, naming the first row.

    With ``resolve`` (the default, ``data.follow_links: false``) the rule holds after symbolic links are followed:
    an image, or a folder of images, linked under the root to somewhere else (``img.png -> /etc/passwd``) leaves
    it too. A dataset that links its image folder on purpose sets ``data.follow_links: true``."""
    import os

    def where(p: str) -> str:
        return os.path.realpath(p) if resolve else os.path.normpath(os.path.abspath(p))

    base = where(str(root))
    literal = os.path.normpath(os.path.abspath(root))
    outside = [i for i, p in enumerate(paths)
               if os.path.commonpath([base, where(p)]) != base
               or os.path.commonpath([literal, os.path.normpath(os.path.abspath(p))]) != literal]
    if outside:
        i = outside[0]
        linked = resolve and os.path.commonpath([literal, os.path.normpath(os.path.abspath(paths[i]))]) == literal
        how = (f"is a link leading outside data.root={root} (to {where(paths[i])})" if linked
               else f"leaves data.root={root}")
        fix = ("set data.follow_links=true if the dataset links its images on purpose" if linked
               else "keep images below the root, or set data.allow_outside_root=true")
        raise DataError(f"{csv}: row {i + 2} column '{column}': image path {rel[i]!r} {how} "
                        f"({len(outside)} such row(s)); {fix}")


_SEE_ALL = "Run `spft data check CONFIG [KEY=VALUE ...]` with the same config and overrides to list them all."


def subset_table(table: LabelTable, rows, splits: list[str] | None = None) -> LabelTable:
    """The table restricted to ``rows`` (positions, in order), optionally with new split names for them."""
    import dataclasses

    rows = [int(i) for i in rows]
    return dataclasses.replace(
        table, paths=[table.paths[i] for i in rows], ids=[table.ids[i] for i in rows],
        groups=[table.groups[i] for i in rows],
        splits=list(splits) if splits is not None else [table.splits[i] for i in rows],
        labels=table.labels[rows], uncertain=None if table.uncertain is None else table.uncertain[rows],
        warnings=list(table.warnings))


def check_missing(table: LabelTable, source: Path | str) -> None:
    """Refuse a table with listed images that do not exist (the first few named)."""
    missing = [p for p in table.paths if not Path(p).is_file()]
    if missing:
        shown = "\n  ".join(missing[:5])
        raise MissingFileError(f"{source}: {len(missing)} listed image(s) not found, first:\n  {shown}\n"
                                f"{_SEE_ALL}")


def check_table(table: LabelTable, source: Path | str, missing: bool = True) -> None:
    """Refuse a table whose images are missing, whose groups leak across splits or with an empty split."""
    if missing:
        check_missing(table, source)
    leaked = table.leaked_groups()
    if leaked:
        raise DataError(f"{source}: {len(leaked)} patient/lesion group(s) appear in more than one split "
                         f"(leakage), first: {', '.join(leaked[:5])}\n{_SEE_ALL}")
    for split in SPLITS:
        if len(table.indices(split)) == 0:
            raise DataError(f"{source}: the {split} split is empty (check data.split_column, data.split_fractions "
                             "or data.val_fraction)")
