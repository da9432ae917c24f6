"""The Ultralytics detection dataset layout that every detection adapter writes, and the phantom detection set.

Layout: ``images/<split>/<id>.png`` (or links to the originals), ``labels/<split>/<id>.txt`` (one
``class cx cy w h`` line per box, normalised; empty = background image), ``<split>.txt`` image lists and
``dataset.yaml`` (written last: its presence marks a complete copy). Ultralytics finds a label by replacing the
last ``/images/`` of the image path with ``/labels/``, which is why images always sit under an ``images`` folder.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import yaml

from spft.atomic import atomic_write_text
from spft.errors import DataError, MissingFileError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
Box = tuple[int, float, float, float, float]  # class id, x_min, y_min, x_max, y_max in pixels


def yolo_lines(boxes: Sequence[Box], width: int, height: int) -> list[str]:
    """``class cx cy w h`` lines (normalised to [0, 1], 6 decimals) for pixel ``(cls, x0, y0, x1, y1)`` boxes.

    >>> yolo_lines([(1, 0, 0, 50, 20)], 100, 40)
    ['1 0.250000 0.250000 0.500000 0.500000']
    """
    lines = []
    for cls, x0, y0, x1, y1 in boxes:
        x0, x1 = max(0.0, min(float(x0), width)), max(0.0, min(float(x1), width))
        y0, y1 = max(0.0, min(float(y0), height)), max(0.0, min(float(y1), height))
        if x1 <= x0 or y1 <= y0:
            continue
        cx, cy = (x0 + x1) / 2 / width, (y0 + y1) / 2 / height
        lines.append(f"{int(cls)} {cx:.6f} {cy:.6f} {(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}")
    return lines


def label_path(image_path: Path) -> Path:
    """The label file Ultralytics reads for ``image_path`` (``.../images/...`` -> ``.../labels/....txt``)."""
    parts = list(image_path.parts)
    idx = len(parts) - 1 - parts[::-1].index("images")
    parts[idx] = "labels"
    return Path(*parts).with_suffix(".txt")


def write_labels(image_path: Path, boxes: Sequence[Box], width: int, height: int) -> None:
    """Write the label file of one image (empty for a background image)."""
    lines = yolo_lines(boxes, width, height)
    atomic_write_text(label_path(image_path), "".join(line + "\n" for line in lines))


def link_or_copy(src: Path, dst: Path) -> None:
    """Symlink ``dst`` -> ``src`` (copy where links are not allowed); an existing ``dst`` is kept."""
    if dst.exists():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(src.resolve(), dst)
    except OSError:
        import shutil

        shutil.copyfile(src, dst)


def write_dataset(out: Path, classes: Sequence[str], split_images: dict[str, list[Path]],
                  extra: dict | None = None) -> Path:
    """Write the split lists and, last, ``dataset.yaml``; returns its path.

    Args:
        out: Dataset folder.
        classes: Class names in class-id order.
        split_images: Image paths per split (``test`` may be missing: then it points at ``val``).
        extra: Additional keys recorded in ``dataset.yaml`` (e.g. how boxes were fused).
    """
    out = Path(out)
    lists = {}
    for split in SPLITS:
        if split not in split_images:
            continue
        # absolute but not resolved: a linked image must keep its path under images/ to find its label
        paths = sorted(os.path.abspath(p) for p in split_images[split])
        atomic_write_text(out / f"{split}.txt", "".join(f"{p}\n" for p in paths))
        lists[split] = f"{split}.txt"
    lists.setdefault("test", lists["val"])
    spec = {"path": os.path.abspath(out), **lists, "names": dict(enumerate(classes)), **(extra or {})}
    target = out / "dataset.yaml"
    atomic_write_text(target, yaml.safe_dump(spec, sort_keys=False))
    log.info("wrote %s (%s)", target, ", ".join(f"{s}: {len(v)}" for s, v in split_images.items()))
    return target


def build_phantom_detection(phantom_cfg, root: str | None = None) -> Path:
    """Phantom CXRs (generated once into the cache) as an Ultralytics dataset; returns ``dataset.yaml``.

    Classes are :data:`spft.data.phantoms.CXR_FINDINGS` in order; the boxes come from ``boxes.csv`` and the splits
    from ``labels.csv`` (patient-grouped by the generator). Labels and lists go into ``<phantom folder>/yolo``.
    """
    from spft.data.registry import ensure_phantoms

    if phantom_cfg.kind != "cxr":
        raise DataError("data.phantom.kind: the phantom detection set needs cxr phantoms (they have boxes)")
    folder = ensure_phantoms(phantom_cfg, root)
    out = folder / "yolo"
    if (out / "dataset.yaml").is_file():
        return out / "dataset.yaml"
    from spft.filelock import exclusive

    with exclusive(folder / "yolo.lock", f"writing the detection layout {out}"):  # concurrent runs: one writes
        if (out / "dataset.yaml").is_file():  # written last: complete
            return out / "dataset.yaml"
        return _write_phantom_detection(phantom_cfg, folder, out)


def _write_phantom_detection(phantom_cfg, folder: Path, out: Path) -> Path:
    from spft.data import phantoms

    class_id = {f: i for i, f in enumerate(phantoms.CXR_FINDINGS)}
    boxes: dict[str, list[Box]] = {}
    with open(folder / "boxes.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            boxes.setdefault(row["image"], []).append(
                (class_id[row["finding"]], *(float(row[k]) for k in ("x_min", "y_min", "x_max", "y_max"))))
    split_images: dict[str, list[Path]] = {s: [] for s in SPLITS}
    size = int(phantom_cfg.image_size)
    with open(folder / "labels.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            image = out / "images" / row["split"] / Path(row["image"]).name
            link_or_copy(folder / row["image"], image)
            write_labels(image, boxes.get(row["image"], []), size, size)
            split_images[row["split"]].append(image)
    return write_dataset(out, phantoms.CXR_FINDINGS, split_images, {"source": "spft phantoms"})


def read_dataset(dataset_yaml: str | Path) -> dict:
    """``dataset.yaml`` as a dict; a clear error names the file when it is missing."""
    path = Path(dataset_yaml)
    if not path.is_file():
        raise MissingFileError(f"{path} not found: prepare the dataset first (spft prepare ...)")
    return yaml.safe_load(path.read_text())


def split_image_list(dataset_yaml: str | Path, split: str) -> list[Path]:
    """Image paths of ``split`` as listed in the dataset."""
    spec = read_dataset(dataset_yaml)
    base = Path(spec["path"])
    return [Path(line) for line in (base / spec[split]).read_text().splitlines() if line.strip()]


def instance_counts(dataset_yaml: str | Path, split: str = "train") -> list[int]:
    """Boxes per class in ``split`` (read from the label files)."""
    spec = read_dataset(dataset_yaml)
    counts = [0] * len(spec["names"])
    for image in split_image_list(dataset_yaml, split):
        lbl = label_path(image)
        if lbl.is_file():
            for line in lbl.read_text().splitlines():
                if line.strip():
                    counts[int(line.split()[0])] += 1
    return counts
