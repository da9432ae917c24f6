"""Dataset selection by ``data.name``: each adapter turns the ``data`` config into a LabelTable.

``csv`` is the generic CSV dataset; ``phantom`` generates the synthetic phantoms once into a cache and then reads
them through the very same CSV path, so the demo exercises what users' own data goes through. ``chestxray14``,
``chexpert`` and ``ham10000`` are the real-dataset adapters (one module each). ``build_table`` refuses a bad copy;
``load_table`` returns it as is for ``spft data check``.
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
    from spft.data import phantoms

    folder = ensure_phantoms(data_cfg.phantom, data_cfg.root)
    view = copy.deepcopy(data_cfg)
    view.csv = str(folder / "labels.csv")
    view.root = str(folder)
    view.split_column = view.split_column or "split"
    view.patient_column = view.patient_column or ("patient_id" if data_cfg.phantom.kind == "cxr" else "lesion_id")
    if not view.label_columns:
        view.label_columns = list(phantoms.CXR_FINDINGS if data_cfg.phantom.kind == "cxr" else phantoms.LESION_CLASSES)
    return view


DATASETS = ("csv", "phantom", "chestxray14", "chexpert", "ham10000")


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
    """The LabelTable for ``data.name``; refuses missing images, leaked patients/lesions and empty splits."""
    table = load_table(data_cfg, seed)
    check_table(table, table.source or data_cfg.csv or data_cfg.name)
    return table
