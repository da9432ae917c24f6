"""The folder-per-class dataset (``data.name: folder``): ``<root>/<class>/*.png``, as torchvision's ImageFolder.

One class per image (multi-class: pairs with ``loss: ce``); the classes are the sub-folder names, sorted (or
``data.label_columns``: only those classes' folders, in that order). Images are found by suffix (PNG, JPEG, BMP,
TIFF, DICOM ``.dcm``/``.dicom``) anywhere below a class folder; hidden files and folders (``.DS_Store``,
``.ipynb_checkpoints``) are skipped. The split:

* ``<root>/<split>/<class>/...`` when every first-level folder is a split name (train, val, test; also training,
  valid, validation, dev, testing): the splits are the folders. Without ``val/`` validation is ``data.val_fraction``
  of ``train/``, seeded and stratified on the class;
* otherwise a seeded split of all images by ``data.split_fractions``, stratified on the class
  (:func:`spft.data.csv_dataset.seeded_split`, the CSV dataset's split).

Files are independent: each image is its own group (no patient is known), so two images of one patient may land in
different splits — use split folders, or the CSV dataset with ``data.patient_column``, when that matters. Listing goes
through :class:`spft.data.files.FileIndex`, which refuses links leading outside the root unless
``data.follow_links``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from spft.data.contract import LabelTable
from spft.data.csv_dataset import _SPLIT_ALIASES, check_train_classes, seeded_split
from spft.data.files import FileIndex, split_seed
from spft.data.io import IMAGE_SUFFIXES
from spft.errors import DataError, MissingKeyError

log = logging.getLogger(__name__)

LAYOUT = "<root>/<class>/<image> or <root>/<split>/<class>/<image> (split: train, val, test)"


def _first_level_folders(root: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))


def read_folder_table(data_cfg, seed: int) -> LabelTable:
    """The :class:`LabelTable` of a folder-per-class tree below ``data.root`` (one-hot rows, one class each).

    Raises:
        FileNotFoundError: ``data.root`` is not a folder.
        ValueError: no class folder with images, a class folder without images, split and class folders mixed, a
            class only in val/test, a ``data.label_columns`` name without a folder.
    """
    index = FileIndex(data_cfg.root, follow_links=getattr(data_cfg, "follow_links", False))
    root = index.root
    first = _first_level_folders(root)
    split_layout = bool(first) and all(f.lower() in _SPLIT_ALIASES for f in first)
    mixed = [f for f in first if f.lower() in _SPLIT_ALIASES]
    if mixed and not split_layout:
        others = [f for f in first if f.lower() not in _SPLIT_ALIASES]
        raise DataError(f"data.root {root}: split folders ({', '.join(mixed)}) next to class folders "
                        f"({', '.join(others[:5])}); expected {LAYOUT}")
    depth = 2 if split_layout else 1  # path parts before the class folder's contents
    classes_seen: dict[tuple[str, str], int] = {}  # (split or "", class) -> images
    rows: list[tuple[str, str, str]] = []  # (path, class, split)
    loose = 0
    for path in index.paths:
        parts = Path(os.path.relpath(path, root)).parts
        if any(p.startswith(".") for p in parts) or Path(path).suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if len(parts) <= depth:
            loose += 1
            continue
        split = _SPLIT_ALIASES[parts[0].lower()] if split_layout else ""
        cls = parts[depth - 1]
        rows.append((path, cls, split))
        classes_seen[(split, cls)] = classes_seen.get((split, cls), 0) + 1
    if loose:
        log.warning("data.root %s: %d image(s) outside any class folder are left out (expected %s)", root, loose,
                    LAYOUT)
    # every class folder must hold images (an empty one is a mistake: a class with no example)
    tops = [(_SPLIT_ALIASES[s.lower()], root / s) for s in first] if split_layout else [("", root)]
    for split, top in tops:
        for cls in _first_level_folders(top):
            if (split, cls) not in classes_seen:
                raise DataError(f"data.root {root}: class folder {top / cls} holds no image "
                                f"({', '.join(s.lstrip('.') for s in IMAGE_SUFFIXES)}); remove it or add its images")
    if not rows:
        raise DataError(f"data.root {root}: no class folder with images found; expected {LAYOUT}")

    found = sorted({cls for _, cls in classes_seen})
    wanted = list(data_cfg.label_columns)
    if wanted:
        import difflib

        for i, name in enumerate(wanted):
            if name not in found:
                close = difflib.get_close_matches(name, found, n=1)
                hint = f" — did you mean '{close[0]}'?" if close else f" (class folders: {', '.join(found)})"
                raise MissingKeyError(f"'data.label_columns[{i}]': {name!r} is not a class folder of "
                                      f"data.root {root}{hint}")
        if len(set(wanted)) != len(wanted):
            raise DataError(f"'data.label_columns': a class is listed twice: {wanted}")
        dropped = [c for c in found if c not in wanted]
        if dropped:
            log.info("data.label_columns: the images of %d other class folder(s) are left out: %s", len(dropped),
                     ", ".join(dropped))
        rows = [r for r in rows if r[1] in set(wanted)]
    classes = wanted or found

    paths = [p for p, _, _ in rows]
    ids = [Path(os.path.relpath(p, root)).as_posix() for p in paths]
    groups = list(ids)  # files are independent: no patient is known
    where = {c: j for j, c in enumerate(classes)}
    labels = np.zeros((len(rows), len(classes)), dtype=np.float32)
    labels[np.arange(len(rows)), [where[c] for _, c, _ in rows]] = 1.0
    seed = split_seed(data_cfg, seed)
    if split_layout:
        splits = [s for _, _, s in rows]
        policy = f"split from the folders {', '.join(first)}"
        if "val" not in splits:
            train = np.flatnonzero(np.asarray(splits) == "train")
            carved, _ = seeded_split([groups[i] for i in train], labels[train],
                                     [1.0 - data_cfg.val_fraction, data_cfg.val_fraction, 0.0], seed, "image")
            for i, s in zip(train, carved):
                splits[i] = s
            policy += (f"; no val folder: validation is data.val_fraction = {data_cfg.val_fraction} of train "
                       f"(seed {seed}, stratified on the class, method iterative-stratified-grouped)")
    else:
        splits, policy = seeded_split(groups, labels, data_cfg.split_fractions, seed, "image")
    check_train_classes(classes, labels, splits, lambda i, name: f"data.root {root}: {paths[i]}")
    counts = ", ".join(f"{c} {int(labels[:, j].sum())}" for j, c in enumerate(classes))
    log.info("data.root %s: %d images in %d classes (%s)%s", root, len(rows), len(classes), counts,
             "; splits from the folders" if split_layout else "")
    return LabelTable(classes=list(classes), paths=paths, ids=ids, groups=groups, splits=splits, labels=labels,
                      split_policy=policy, label_policy="one class per image from its folder (multi-class); "
                      "files are independent (no patient grouping)", source=str(root), group_kind="image")
