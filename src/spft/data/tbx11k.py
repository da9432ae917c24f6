"""TBX-11K (COCO json) -> Ultralytics detection dataset, for ``spft prepare tbx11k``.

Reads ``annotations/json/TBX11K_{train,val}.json`` (the official splits; healthy and sick images appear without
boxes and become background images) and links the images from ``imgs/`` under ``images/<split>/``. Classes are the
two the official detectors train on, in this order: ActiveTuberculosis, ObsoletePulmonaryTuberculosis
(PulmonaryTuberculosis has no boxes in train/val; any such box is skipped and counted). Test labels are
withheld, so the dataset's ``test`` entry points at val.
"""

from __future__ import annotations

import logging
from pathlib import Path

from spft.data import coco
from spft.data.yolo_layout import Box, link_or_copy, write_dataset, write_labels
from spft.errors import MissingFileError

log = logging.getLogger(__name__)

CLASSES: tuple[str, ...] = ("ActiveTuberculosis", "ObsoletePulmonaryTuberculosis")
SPLIT_FILES = {"train": "TBX11K_train.json", "val": "TBX11K_val.json"}


def _find_json(root: Path, name: str) -> Path:
    for candidate in (root / "annotations" / "json" / name, root / name):
        if candidate.is_file():
            return candidate
    found = sorted(root.rglob(name))
    if not found:
        raise MissingFileError(f"{root}: {name} not found (expected annotations/json/{name})")
    return found[0]


def _images_root(root: Path) -> Path:
    for candidate in (root / "imgs", root / "images"):
        if candidate.is_dir():
            return candidate
    raise MissingFileError(f"{root}: no imgs/ folder (TBX11K/imgs/{{health,sick,tb}}/...)")


def read_coco(path: Path) -> tuple[list[dict], dict[int, list[Box]], int]:
    """(images, {image id: boxes in pixels}, skipped boxes) from one TBX-11K COCO file, classes by name."""
    images, boxes, skipped = coco.read_coco(path, CLASSES)
    return images, boxes, len(skipped)


def prepare_tbx11k(cfg) -> Path:
    """Build the Ultralytics copy of TBX-11K described by ``cfg``; returns its ``dataset.yaml``."""
    from spft.data.vindr_cxr import default_dataset_dir

    root = Path(cfg.data.root or "")
    if not cfg.data.root or not root.is_dir():
        raise MissingFileError(f"data.root: TBX-11K folder {cfg.data.root!r} not found")
    out = Path(cfg.detection.dataset_dir) if cfg.detection.dataset_dir else default_dataset_dir(cfg)
    imgs = _images_root(root)
    split_images: dict[str, list[Path]] = {}
    for split, name in SPLIT_FILES.items():
        source = _find_json(root, name)
        images, boxes, skipped = read_coco(source)
        if skipped:
            log.warning("%s: %d boxes of classes outside %s skipped", source, skipped, ", ".join(CLASSES))
        split_images[split] = []
        for image in images:
            src = imgs / image["file_name"]
            if not src.is_file():
                raise MissingFileError(f"{source}: image id {image['id']}: {src} not found")
            target = out / "images" / split / Path(image["file_name"]).name
            link_or_copy(src, target)
            write_labels(target, boxes.get(image["id"], []), int(image["width"]), int(image["height"]))
            split_images[split].append(target)
    return write_dataset(out, CLASSES, split_images, {"source": "tbx11k", "test_is_val": True})
