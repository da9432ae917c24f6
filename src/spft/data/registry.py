"""Dataset selection by ``data.name``: each adapter turns the ``data`` config into a LabelTable.

``csv`` is the generic CSV dataset, ``folder`` a folder per class (:mod:`spft.data.folder_dataset`); ``phantom``
generates the synthetic phantoms once into a cache and then reads them through the very same CSV path, so the demo
exercises what users' own data goes through. ``chestxray14``, ``chexpert`` and ``ham10000`` are the real-dataset
adapters (one module each). ``build_table`` refuses a bad copy; ``load_table`` returns it as is for
``spft data check``.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
from pathlib import Path

from spft.data.contract import LabelTable
from spft.data.csv_dataset import check_table, read_csv_table
from spft.errors import DataError, MissingKeyError

log = logging.getLogger(__name__)


def cache_root(explicit: str | None = None) -> Path:
    """Where generated data lives: ``explicit``, else ``$SPFT_CACHE``, else ``~/.cache/spft``."""
    return Path(explicit or os.environ.get("SPFT_CACHE") or Path.home() / ".cache" / "spft").expanduser()


def ensure_phantoms(phantom_cfg, root: str | None = None) -> Path:
    """Generate the phantom set described by ``phantom_cfg`` unless a complete copy is cached; return its folder."""
    from spft.data import phantoms

    p = phantom_cfg
    folder = Path(root).expanduser() if root else (
        cache_root(p.cache_dir) / "phantoms"
        / f"{p.kind}-v{phantoms.GENERATOR_VERSION}-n{p.n_images}-s{p.image_size}-seed{p.seed}")
    if (folder / "labels.csv").is_file():
        return folder
    from spft.filelock import exclusive

    # concurrent runs (spft repeat --jobs N) generate a set once: the others wait, then read it
    with exclusive(folder.with_name(folder.name + ".lock"), f"generating the phantoms in {folder}"):
        if (folder / "labels.csv").is_file():  # written last: complete
            return folder
        log.info("generating %d %s phantoms into %s", p.n_images, p.kind, folder)
        generate = phantoms.generate_cxr if p.kind == "cxr" else phantoms.generate_lesions
        generate(folder, n_images=p.n_images, image_size=p.image_size, seed=p.seed)
    return folder


def phantom_data_config(data_cfg):
    """The ``csv`` view of a phantom config: same keys, pointing at the generated labels.csv."""
    from spft.config.datasets import ClassificationDataConfig, CsvData
    from spft.data import phantoms

    folder = ensure_phantoms(data_cfg.phantom, data_cfg.root)
    shared = {f.name: copy.deepcopy(getattr(data_cfg, f.name)) for f in dataclasses.fields(ClassificationDataConfig)}
    kind = data_cfg.phantom.kind
    shared.update(root=str(folder), label_columns=shared["label_columns"] or list(
        phantoms.CXR_FINDINGS if kind == "cxr" else phantoms.LESION_CLASSES))
    return CsvData(**shared, csv=str(folder / "labels.csv"), split_column="split",
                   patient_column="patient_id" if kind == "cxr" else "lesion_id")


DATASETS = ("csv", "folder", "phantom", "chestxray14", "chexpert", "ham10000")


def load_table(data_cfg, seed: int) -> LabelTable:
    """The LabelTable for ``data.name``, *without* refusing missing files or leakage (``spft data check`` reports).

    For the real datasets a non-empty ``data.label_columns`` keeps only those classes (e.g. CheXpert's 5
    competition tasks), in the order given.
    """
    name = data_cfg.name
    if name == "csv":
        return read_csv_table(data_cfg, seed, check=False)
    if name == "phantom":
        return read_csv_table(phantom_data_config(data_cfg), seed, check=False)
    if name == "folder":  # data.label_columns picks class folders (their images), not label columns
        from spft.data.folder_dataset import read_folder_table

        return read_folder_table(data_cfg, seed)
    if name == "chestxray14":
        from spft.data.chestxray14 import read_chestxray14 as read
    elif name == "chexpert":
        from spft.data.chexpert import read_chexpert as read
    elif name == "ham10000":
        from spft.data.ham10000 import read_ham10000 as read
    else:
        raise DataError(f"data.name: unknown dataset {name!r} (available: {', '.join(DATASETS)})")
    table = read(data_cfg, seed)
    return select_classes(table, data_cfg.label_columns) if data_cfg.label_columns else table


def select_classes(table: LabelTable, names: list[str]) -> LabelTable:
    """The table restricted to the classes ``names`` (``data.label_columns``); an unknown name is a KeyError."""
    import difflib

    for i, name in enumerate(names):
        if name not in table.classes:
            close = difflib.get_close_matches(name, table.classes, n=1)
            hint = f" — did you mean '{close[0]}'?" if close else f" (classes: {', '.join(table.classes)})"
            raise MissingKeyError(f"'data.label_columns[{i}]': {name!r} is not a class of this dataset{hint}")
    cols = [table.classes.index(n) for n in names]
    return dataclasses.replace(table, classes=list(names), labels=table.labels[:, cols],
                               uncertain=None if table.uncertain is None else table.uncertain[:, cols])


def build_table(data_cfg, seed: int) -> LabelTable:
    """The LabelTable for ``data.name``; refuses missing images, leaked patients/lesions and empty splits.

    ``data.train_subset: N`` then keeps N images of the train split (:func:`train_subset`); val and test stay whole.
    """
    table = load_table(data_cfg, seed)
    check_table(table, table.source or getattr(data_cfg, "csv", None) or data_cfg.name)
    n = getattr(data_cfg, "train_subset", None)
    if n is not None:
        from spft.data.files import split_seed

        table = train_subset(table, int(n), split_seed(data_cfg, seed))
    return table


def subset_rows(labels, n: int, seed: int):
    """Indices (sorted) of ``n`` of the rows of ``labels`` ([N, C], NaN unknown): seeded, stratified per class.

    Rarest class first, each class gets ``max(1, round(n * prevalence))`` positive rows (fewer when the pool has
    fewer), counting positives already drawn for rarer classes and preferring rows negative for them; the rest is
    filled from rows with no positive label (then from any row), all draws from ``np.random.default_rng(seed)``. A
    class with a positive in the pool therefore keeps at least one positive; when the quotas overlap beyond ``n`` a
    seeded draw trims them. The seed is ``data.split_seed`` when set, else the run's seed.
    """
    import numpy as np

    y = np.nan_to_num(np.asarray(labels, dtype=np.float64), nan=0.0) > 0.5
    rng = np.random.default_rng(seed)
    total = len(y)
    if n >= total:
        return np.arange(total)
    chosen = np.zeros(total, dtype=bool)
    pos = y.sum(0)
    done = np.zeros(y.shape[1], dtype=bool)
    for c in np.argsort(pos, kind="stable"):
        if pos[c] == 0:
            continue
        want = max(1, int(round(n * pos[c] / total))) - int((chosen & y[:, c]).sum())
        clean = ~y[:, done].any(1)  # rows adding no positive to a class whose quota is already drawn come first
        for free in (np.flatnonzero(y[:, c] & ~chosen & clean), np.flatnonzero(y[:, c] & ~chosen & ~clean)):
            if want > 0 and free.size:
                take = rng.choice(free, size=min(want, free.size), replace=False)
                chosen[take] = True
                want -= take.size
        done[c] = True
    picked = np.flatnonzero(chosen)
    if picked.size > n:
        picked = rng.choice(picked, size=n, replace=False)
    else:
        for pool in (np.flatnonzero(~chosen & ~y.any(1)), np.flatnonzero(~chosen & y.any(1))):
            need = n - picked.size
            if need <= 0:
                break
            picked = np.concatenate([picked, rng.choice(pool, size=min(need, pool.size), replace=False)])
    return np.sort(picked)


def train_subset(table: LabelTable, n: int, seed: int) -> LabelTable:
    """``table`` with only ``n`` images of its train split (:func:`subset_rows`); val and test rows unchanged.

    Raises:
        DataError: the train split has fewer than ``n`` images.
    """
    import numpy as np

    train = table.indices("train")
    if n > len(train):
        raise DataError(f"'data.train_subset': {n} training images asked for, the train split has {len(train)}")
    from spft.data.csv_dataset import subset_table

    keep_train = train[subset_rows(table.labels[train], n, seed)]
    keep = np.sort(np.concatenate([keep_train, np.flatnonzero(np.asarray(table.splits) != "train")]))
    policy = (f"{table.split_policy}; " if table.split_policy else "") + (
        f"train subset: {n} of {len(train)} images (seed {seed}, stratified per class)")
    return dataclasses.replace(subset_table(table, keep), split_policy=policy)
