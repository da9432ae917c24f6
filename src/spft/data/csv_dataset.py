"""The generic CSV dataset (``data.name: csv``): a folder of images and a CSV with one row per image.

Columns are selected by name, never by position (docs/decisions.md, rule 7). Labels are 0/1 with blank = unknown
(NaN, masked in loss and metrics). The split comes from ``data.split_column`` (train/val/test) or, when unset,
from a seeded split grouped by ``data.patient_column`` so that no patient is in two splits and, with more than one
label column, stratified on the labels (:func:`spft.data.splits.multilabel_grouped_split`) so that rare findings
reach every split. Image paths must stay below ``data.root`` (no ``../``, no absolute path elsewhere) unless
``data.allow_outside_root`` is true. Every problem is reported with the file, row and column and what was
expected.

Instead of one 0/1 column per class, ``data.label_column`` may name one column of class *names*
(:func:`labels_from_names`): one name per row (multi-class, ``loss: ce``), or several joined by
``data.label_separator`` (multi-label; blank, or ``data.none_label``, = no finding). The classes are the sorted names
found, or ``data.label_columns`` when given (then a name outside it is an error naming the row). Either way the
result is the same 0/1 matrix, so the split and the table are built by the one path below.
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
    and column. The accepted spellings are the ones the message and docs/data.md list (LABEL_SPELLINGS)."""
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


def labels_from_names(df: pd.DataFrame, csv: Path, column: str, classes: list[str] | None, separator: str | None,
                      none_label: str | None = None) -> tuple[list[str], np.ndarray, str]:
    """The classes, the [N, C] 0/1 matrix and the label policy from a column of class names.

    ``separator`` null: one class per row (multi-class), a blank cell is an error naming the row. Set: any number of
    classes per row (multi-label), blank (or ``none_label``) = no finding = all zeros. ``classes`` (from
    ``data.label_columns``) fixes the class list and order, and a name outside it is an error naming the row; else
    the classes are the sorted names found.
    """
    import difflib

    raw = df[column]
    cells = ["" if pd.isna(v) else str(v).strip() for v in raw]
    if separator is None:
        blank = [i for i, c in enumerate(cells) if not c]
        if blank:
            raise DataError(f"{csv}: row {blank[0] + 2} column '{column}': no class name (blank); with one class per "
                            f"row (data.label_separator: null) every row needs one — fill it in or leave the row out "
                            f"({len(blank)} blank row(s)); for several or no classes per row set "
                            f"data.label_separator (e.g. \"|\")")
        names = [[c] for c in cells]
        joined = next((c for c in cells if any(ch in c for ch in "|;,")), None)
        if joined is not None:
            log.warning("%s: column '%s' has values such as %r: read as one class name each; set "
                        "data.label_separator if a row may name several classes", csv, column, joined)
    else:
        names = [[n for n in (p.strip() for p in c.split(separator)) if n and n != none_label] for c in cells]
    if classes:
        if len(set(classes)) != len(classes):
            dup = next(c for c in classes if classes.count(c) > 1)
            raise DataError(f"'data.label_columns': class {dup!r} is listed twice")
        known = set(classes)
        outside = [(i, n) for i, row in enumerate(names) for n in row if n not in known]
        if outside:
            i, name = outside[0]
            close = difflib.get_close_matches(name, classes, n=1)
            hint = f" — did you mean '{close[0]}'?" if close else ""
            raise DataError(f"{csv}: row {i + 2} column '{column}': class {name!r} is not in data.label_columns "
                            f"({', '.join(classes)}){hint}; {len({r for r, _ in outside})} such row(s). With "
                            f"data.label_column set, data.label_columns is the list of classes: add it there, or "
                            f"leave data.label_columns empty to use every name found")
    else:
        classes = sorted({n for row in names for n in row})
        if not classes:
            raise DataError(f"{csv}: column '{column}' (data.label_column) holds no class name")
    where = {c: j for j, c in enumerate(classes)}
    labels = np.zeros((len(df), len(classes)), dtype=np.float32)
    for i, row in enumerate(names):
        labels[i, [where[n] for n in row]] = 1.0
    if separator is None:
        policy = f"one class name per row from column '{column}' (multi-class)"
    else:
        none = f" or {none_label!r}" if none_label is not None else ""
        policy = (f"class names from column '{column}' separated by {separator!r} (multi-label); blank{none} = no "
                  f"finding (all 0)")
    return list(classes), labels, policy


def check_train_classes(classes: list[str], labels: np.ndarray, splits: list[str], where) -> None:
    """Refuse a class with images in val or test but none in train: it cannot be learned, and a name seen only
    there is most often a misspelling. ``where(row, name)`` describes the first such image (file, row)."""
    import difflib

    is_train = np.asarray(splits) == "train"
    positive = np.nan_to_num(labels, nan=0.0) > 0.5
    for j, name in enumerate(classes):
        if positive[:, j].any() and not positive[is_train, j].any():
            rows = np.flatnonzero(positive[:, j])
            found = sorted({splits[i] for i in rows})
            close = difflib.get_close_matches(name, [c for c in classes if c != name], n=1)
            hint = f" (a misspelling of '{close[0]}'?)" if close else ""
            raise DataError(f"{where(int(rows[0]), name)}: class {name!r}{hint} appears only in the "
                            f"{'/'.join(found)} split ({len(rows)} image(s)), never in train, so it cannot be "
                            f"learned: correct the name, or move some of its images to train")


def seeded_split(groups: list[str], labels: np.ndarray, fractions, seed: int, unit: str) -> tuple[list[str], str]:
    """The split spft makes (grouped by ``groups``, stratified on ``labels``) and its policy text for data.json."""
    splits, method = multilabel_grouped_split(groups, labels, fractions, seed)
    return splits, (f"seeded split (seed {seed}) grouped by {unit}, fractions {list(fractions)}, method {method}")


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
    by_name = getattr(data_cfg, "label_column", None)
    if not data_cfg.label_columns and not by_name:
        raise DataError(f"data.label_columns is empty: name the label columns of {csv} "
                         f"(it has: {', '.join(df.columns)}), or set data.label_column to a column of class names")
    needed = {"data.image_column": data_cfg.image_column}
    if not by_name:
        needed.update({f"data.label_columns[{i}]": c for i, c in enumerate(data_cfg.label_columns)})
    for key in ("label_column", "split_column", "patient_column", "id_column"):
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
    if by_name:
        classes, labels, label_policy = labels_from_names(df, csv, by_name, list(data_cfg.label_columns),
                                                          data_cfg.label_separator, data_cfg.none_label)
    else:
        classes, labels = list(data_cfg.label_columns), _parse_labels(df, csv, data_cfg.label_columns)
        label_policy = "0/1 from the label columns; blank = unknown (masked)"

    if data_cfg.split_column:
        splits = _splits_from_column(df, csv, data_cfg.split_column)
        policy = f"split from column '{data_cfg.split_column}'"
    else:
        split_seed = seed if data_cfg.split_seed is None else data_cfg.split_seed
        if not data_cfg.patient_column:
            log.warning("%s: neither data.split_column nor data.patient_column is set: splitting by image. If "
                        "patients have several images, set data.patient_column to avoid leakage.", csv)
        unit = f"'{data_cfg.patient_column}'" if data_cfg.patient_column else "image"
        splits, policy = seeded_split(groups, labels, data_cfg.split_fractions, split_seed, unit)
    if by_name:
        check_train_classes(classes, labels, splits, lambda i, _: f"{csv}: row {i + 2} column '{by_name}'")
    table = LabelTable(classes=classes, paths=paths, ids=ids, groups=groups, splits=splits,
                       labels=labels, split_policy=policy, label_policy=label_policy, source=str(csv),
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
