"""Dataset selection by ``data.name``: each adapter turns the ``data`` config into a LabelTable.

``csv`` is the generic CSV dataset; ``phantom`` generates the synthetic phantoms once into a cache and then reads
them through the very same CSV path, so the demo exercises what users' own data goes through.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path

from spft.data.contract import LabelTable
from spft.data.csv_dataset import read_csv_table

log = logging.getLogger(__name__)


def cache_root(explicit: str | None = None) -> Path:
    """Where generated data lives: ``explicit``, else ``$SPFT_CACHE``, else ``~/.cache/spft``."""
    return Path(explicit or os.environ.get("SPFT_CACHE") or Path.home() / ".cache" / "spft").expanduser()


def ensure_phantoms(phantom_cfg, root: str | None = None) -> Path:
    """Generate the phantom set described by ``phantom_cfg`` unless a complete copy is cached; return its folder."""
    from spft.data import phantoms

    p = phantom_cfg
    folder = Path(root).expanduser() if root else (
        cache_root(p.cache_dir) / "phantoms" / f"{p.kind}-n{p.n_images}-s{p.image_size}-seed{p.seed}")
    if (folder / "labels.csv").is_file():
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


def build_table(data_cfg, seed: int) -> LabelTable:
    """The LabelTable for ``data.name`` (csv or phantom)."""
    if data_cfg.name == "csv":
        return read_csv_table(data_cfg, seed)
    if data_cfg.name == "phantom":
        return read_csv_table(phantom_data_config(data_cfg), seed)
    raise ValueError(f"data.name: unknown dataset {data_cfg.name!r} (available: csv, phantom)")
