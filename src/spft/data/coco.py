"""COCO detection JSON (``images``, ``annotations``, ``categories``): the one reader behind ``spft prepare tbx11k``
and ``data.name: coco``. Boxes come out in pixels as ``(class, x_min, y_min, x_max, y_max)``; a malformed file,
image entry or ``bbox`` is one line naming the file and the entry."""

from __future__ import annotations

import json
import math
from pathlib import Path

from spft.data.yolo_layout import Box
from spft.errors import DataError, MissingFileError, MissingKeyError


def load_coco(path: str | Path) -> dict:
    """The parsed file, with its three lists checked to be there."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: COCO file not found")
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON ({exc}); expected a COCO detection file") from None
    if not isinstance(spec, dict):
        raise DataError(f"{path}: expected a JSON object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(spec.get(key), list):
            raise MissingKeyError(f"{path}: no {key!r} list (expected a COCO json)")
    return spec


def entry(path: Path, kind: str, index: int, item, keys: tuple[str, ...]) -> dict:
    """One ``images``/``annotations``/``categories`` element, with ``keys`` required."""
    if not isinstance(item, dict):
        raise DataError(f"{path}: {kind}[{index}] is not an object")
    missing = [k for k in keys if k not in item]
    if missing:
        raise MissingKeyError(f"{path}: {kind}[{index}] has no {', '.join(repr(k) for k in missing)}")
    return item


def coco_box(path: Path, ann: dict) -> tuple[float, float, float, float]:
    """``bbox [x, y, w, h]`` of one annotation as pixel corners ``(x_min, y_min, x_max, y_max)``."""
    bbox = ann.get("bbox")
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise DataError(f"{path}: annotation id {ann.get('id')}: bbox {bbox!r} is not four numbers [x, y, width, "
                        "height] in pixels") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise DataError(f"{path}: annotation id {ann.get('id')}: bbox {bbox!r} is not finite")
    return x, y, x + w, y + h


def read_coco(path: str | Path, classes: tuple[str, ...] | list[str] | None = None
              ) -> tuple[list[dict], dict[int, list[Box]], list[dict]]:
    """(images, {image id: boxes in pixels}, skipped annotations) of one COCO file.

    ``classes``: the category names kept, class index = position in ``classes`` (annotations of other categories
    are skipped); ``None``: every category, class index = rank of its id (:func:`category_classes`). Crowd
    annotations (``iscrowd: 1``) are skipped, as Ultralytics' own COCO converter does.
    """
    path = Path(path)
    spec = load_coco(path)
    cats = [entry(path, "categories", i, c, ("id", "name")) for i, c in enumerate(spec["categories"])]
    if classes is None:
        cat_to_class = {c["id"]: i for i, c in enumerate(sorted(cats, key=lambda c: c["id"]))}
    else:
        cat_to_class = {c["id"]: list(classes).index(c["name"]) for c in cats if c["name"] in classes}
    boxes: dict[int, list[Box]] = {}
    skipped = []
    for i, ann in enumerate(spec["annotations"]):
        ann = entry(path, "annotations", i, ann, ("image_id", "category_id", "bbox"))
        if ann["category_id"] not in cat_to_class or ann.get("iscrowd"):
            skipped.append(ann)
            continue
        boxes.setdefault(ann["image_id"], []).append((cat_to_class[ann["category_id"]], *coco_box(path, ann)))
    images = [entry(path, "images", i, im, ("id", "file_name")) for i, im in enumerate(spec["images"])]
    return images, boxes, skipped


def category_classes(path: str | Path, spec: dict | None = None) -> tuple[list[int], list[str]]:
    """(category ids, names) sorted by id: class ``i`` is the ``i``-th smallest category id."""
    path = Path(path)
    spec = load_coco(path) if spec is None else spec
    cats = sorted((entry(path, "categories", i, c, ("id", "name")) for i, c in enumerate(spec["categories"])),
                  key=lambda c: c["id"])
    return [c["id"] for c in cats], [str(c["name"]) for c in cats]
