"""Detection on your own data: an Ultralytics folder (``data.name: yolo``), COCO JSON (``coco``) or a table of boxes
(``csv``), read into one :class:`BoxSet` (images, their split, group and boxes, and the box-level problems found).

* ``yolo``: ``data.root/data.yaml`` (``names``; ``train``/``val``/``test`` entries: folders of images, ``.txt``
  lists or lists of either, relative to its ``path``, which is itself relative to the YAML's folder) is used where it
  lies: only the resolved image lists and a ``dataset.yaml`` pointing at them are written under
  ``$SPFT_CACHE/detect/yolo-<hash of the YAML's path>`` (or ``detection.dataset_dir``); Ultralytics reads the user's
  images and ``labels/`` files.
* ``coco``: one COCO file per split (``data.train_json``, ``data.val_json``, ``data.test_json``), ``file_name``
  relative to ``data.images`` (default ``data.root``, else the JSON's folder); classes are the categories in
  sorted-id order; every split must have the same categories.
* ``csv``: one row per box (``data.image_column``, ``data.class_column``, ``data.box_columns`` in pixels); a row whose
  class and box are blank is an image without findings; splits from ``data.split_column`` or a grouped seeded split
  (``data.patient_column``, ``data.split_fractions``).

``coco`` and ``csv`` are converted into the Ultralytics layout (:mod:`spft.data.yolo_layout`) under
``$SPFT_CACHE/detect/<name>-<hash>`` — the hash covers the annotation files' bytes and the keys that change the
result — so a second run reuses it. PNG/JPEG (any format Ultralytics reads) are linked; DICOM and other files are
decoded by :func:`spft.data.io.load_image` and written as PNG at their own size (boxes unchanged). A split without
a test part evaluates on val (a warning; ``dataset.yaml`` records ``test_is_val``); training needs train and val.

Problems (:data:`spft.data.check.BOX_PROBLEMS`: unknown class, zero-size box, box outside the image, malformed label
line; and missing images, a patient in two splits) are collected by the readers: ``spft data check`` lists them all,
training refuses the first one in one line. A box partly outside the image is clipped to it, with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from spft.data.contract import SPLITS
from spft.data.yolo_layout import Box, label_path, link_or_copy, read_dataset, write_dataset, write_labels
from spft.errors import BadImageError, DataError, MissingFileError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1  # part of the conversion hash: bump when the converted layout changes
# the suffixes Ultralytics reads (ultralytics.data.utils.IMG_FORMATS); other files are decoded and written as PNG
IMAGE_SUFFIXES = frozenset({".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp", ".pfm",
                            ".heic"})
EDGE_TOLERANCE = 1.0  # pixels a box may pass the image edge before it is reported as clipped


@dataclass
class BoxImage:
    """One image of a detection source."""

    path: str  # the image file as the source names it
    split: str
    group: str  # patient (csv), else the image file
    name: str  # its path below images/<split>/ in a converted layout
    where: str  # where the source names it, for messages ("boxes.csv row 4")
    width: int = 0  # 0: unknown (yolo boxes are normalised)
    height: int = 0
    boxes: list[Box] = field(default_factory=list)


@dataclass
class BoxSet:
    """A detection source read into images, boxes and the problems found on the way."""

    dataset: str
    source: str
    classes: list[str]
    images: list[BoxImage]
    group_kind: str
    split_policy: str
    label_policy: str
    problems: dict[str, list[str]] = field(default_factory=dict)  # kind (check.BOX_PROBLEMS) -> offenders
    warnings: list[str] = field(default_factory=list)
    clipped: list[str] = field(default_factory=list)  # boxes partly outside the image
    test_is_val: bool = False

    def problem(self, kind: str, line: str) -> None:
        self.problems.setdefault(kind, []).append(line)

    def split_images(self, split: str) -> list[BoxImage]:
        return [im for im in self.images if im.split == split]

    def finish(self) -> BoxSet:
        """Add the warnings that summarise the collected notes (test on val, clipped boxes)."""
        if self.test_is_val:
            self.warnings.append(f"{self.source}: no test split: test metrics are computed on val")
        if self.clipped:
            self.warnings.append(f"{len(self.clipped)} box(es) extend past the image edge and are clipped to it, "
                                 f"e.g. {self.clipped[0]}")
        return self

    def refuse(self, training: bool = True) -> None:
        """Raise the first problem (one line, with how many there are): what training and evaluation do."""
        from spft.data.check import BOX_PROBLEMS

        for kind in BOX_PROBLEMS:
            lines = self.problems.get(kind)
            if lines:
                more = f" ({len(lines)} {BOX_PROBLEMS[kind]} in all)" if len(lines) > 1 else ""
                raise DataError(f"{lines[0]}{more}; `spft data check CONFIG` lists every problem")
        missing = [im for im in self.images if not Path(im.path).is_file()]
        if missing:
            more = f" ({len(missing)} missing images in all)" if len(missing) > 1 else ""
            raise MissingFileError(f"{missing[0].where}: image file {missing[0].path} not found{more}")
        where: dict[str, set[str]] = {}
        for im in self.images:
            where.setdefault(im.group, set()).add(im.split)
        leaked = sorted(g for g, s in where.items() if len(s) > 1)
        if leaked:
            raise DataError(f"{self.source}: {self.group_kind} {leaked[0]!r} is in the "
                            f"{' and '.join(s for s in SPLITS if s in where[leaked[0]])} splits ({len(leaked)} "
                            f"{self.group_kind}(s) in more than one split: leakage)")
        needed = ("train", "val") if training else ()
        for split in needed:
            if not self.split_images(split):
                raise DataError(f"{self.source}: the {split} split is empty; training needs images in train and val")
        if not self.images:
            raise DataError(f"{self.source}: no images")


def check_box(bs: BoxSet, where: str, box: tuple[float, float, float, float], width: float, height: float,
              unit: str = "px") -> bool:
    """Whether a box is usable; records a zero-size box or one outside the image as a problem, and a box partly
    outside as clipped. ``width``/``height`` 0: the image size is unknown (no edge checks)."""
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        axis = ("x", x0, x1) if x1 <= x0 else ("y", y0, y1)
        bs.problem("empty_box", f"{where}: {axis[0]}_max {axis[2]:g} <= {axis[0]}_min {axis[1]:g} (expected "
                                f"{axis[0]}_min < {axis[0]}_max)")
        return False
    if width and height:
        size = f"{width:g}x{height:g}" if unit == "px" else "normalised [0, 1]"
        if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
            bs.problem("outside_image", f"{where}: box [{x0:g}, {y0:g}, {x1:g}, {y1:g}] lies outside the {size} "
                                        "image")
            return False
        tol = EDGE_TOLERANCE if unit == "px" else 1e-3
        if x0 < -tol or y0 < -tol or x1 > width + tol or y1 > height + tol:
            bs.clipped.append(f"{where}: box [{x0:g}, {y0:g}, {x1:g}, {y1:g}] in the {size} image")
    return True


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the file's header (DICOM: Rows/Columns), without decoding the pixels."""
    from spft.data.io import is_dicom

    path = Path(path)
    if is_dicom(path):
        import pydicom

        try:
            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
            return int(ds.Columns), int(ds.Rows)
        except Exception as exc:  # pydicom raises many types for broken files
            raise BadImageError(f"cannot read the DICOM header of {path}: {exc}") from None
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise BadImageError(f"cannot read the image header of {path}: {exc}") from None


def _sized(bs: BoxSet, im: BoxImage, collect: bool) -> None:
    if im.width and im.height or not Path(im.path).is_file():
        return  # a missing file is reported by the data check / refused by BoxSet.refuse
    try:
        im.width, im.height = image_size(im.path)
    except BadImageError as exc:
        if not collect:
            raise BadImageError(f"{im.where}: {exc}") from None


def _layout_name(path: Path, root: Path) -> str:
    """The image's path below images/<split>/: its path below ``root``, else a name made unique by a hash."""
    try:
        rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    except ValueError:  # another drive (Windows)
        rel = ".."
    if rel.startswith(".."):
        return f"outside/{hashlib.sha1(str(path).encode()).hexdigest()[:8]}_{path.name}"
    return Path(rel).as_posix()


# --- data.name: csv ------------------------------------------------------------------------------------------------


def read_csv_boxes(cfg, collect: bool = False) -> BoxSet:
    """The table of boxes ``data.csv`` (one row per box); ``collect``: record problems instead of refusing them
    (malformed input — a missing column, a non-numeric corner, an unknown split — is always one line)."""
    from spft.data.csv_dataset import _require_columns, _splits_from_column
    from spft.data.files import read_table
    from spft.data.splits import grouped_split

    d = cfg.data
    csv = Path(d.csv).expanduser()
    root = Path(d.root).expanduser() if d.root else csv.parent
    if not csv.is_file():
        raise MissingFileError(f"data.csv: file not found: {csv}")
    df = read_table(csv)
    needed = {"data.image_column": d.image_column, "data.class_column": d.class_column}
    needed.update({f"data.box_columns[{i}]": c for i, c in enumerate(d.box_columns)})
    for key in ("split_column", "patient_column"):
        if getattr(d, key):
            needed[f"data.{key}"] = getattr(d, key)
    _require_columns(df, csv, needed)
    if len(df) == 0:
        raise DataError(f"{csv}: no rows")
    text = df.astype(str).apply(lambda col: col.str.strip())
    splits = _splits_from_column(df, csv, d.split_column) if d.split_column else None
    found = sorted({c for c in text[d.class_column] if c})
    classes = list(d.classes) or found
    index = {c: i for i, c in enumerate(classes)}
    images: dict[str, BoxImage] = {}
    bs = BoxSet(dataset="csv", source=str(csv), classes=classes, images=[],
                group_kind="patient" if d.patient_column else "image", split_policy="",
                label_policy=f"one row per box ('{d.class_column}', {', '.join(d.box_columns)} in pixels); blank "
                             "class and box: an image without findings")
    pending: list[tuple[BoxImage, str, int, tuple[float, float, float, float]]] = []
    for i in range(len(df)):
        row, line = text.iloc[i], f"{csv} row {i + 2}"
        image = row[d.image_column]
        if not image:
            raise DataError(f"{line} column '{d.image_column}': no image path")
        cls, raw = row[d.class_column], [row[c] for c in d.box_columns]
        split = splits[i] if splits is not None else ""
        group = row[d.patient_column] if d.patient_column else image
        path = Path(image).expanduser()
        path = path if path.is_absolute() else root / path
        im = images.get(image)
        if im is None:
            im = images[image] = BoxImage(path=str(path), split=split, group=group, name=_layout_name(path, root),
                                          where=line)
        else:
            for what, mine, first in (("split", split, im.split), ("patient", group, im.group)):
                if mine != first:
                    raise DataError(f"{line}: image {image!r} has {what} {mine!r} here but {first!r} in "
                                    f"{im.where} (every row of one image must agree)")
        if not cls and not any(raw):
            continue  # an image without findings
        if not cls or not all(raw):
            blank = [c for c, v in zip(d.box_columns, raw) if not v]
            raise DataError(f"{line}: a box needs a class ('{d.class_column}') and all of {', '.join(d.box_columns)}"
                            f" (blank: {', '.join(([d.class_column] if not cls else []) + blank)}); leave them all "
                            "blank for an image without findings")
        coords = []
        for column, value in zip(d.box_columns, raw):
            try:
                number = float(value)
            except ValueError:
                number = math.nan
            if not math.isfinite(number):
                raise DataError(f"{line} column '{column}': {value!r} is not a number (box corners are pixels)")
            coords.append(number)
        if cls not in index:
            bs.problem("unknown_class", f"{line}: class {cls!r} is not in the class list "
                                        f"(data.classes: {', '.join(classes)})")
            continue
        pending.append((im, line, index[cls], tuple(coords)))
    bs.images = list(images.values())
    if splits is None:
        seed = cfg.seed if d.split_seed is None else d.split_seed
        assigned = grouped_split([im.group for im in bs.images], list(d.split_fractions), seed)
        for im, split in zip(bs.images, assigned):
            im.split = split
        unit = f"'{d.patient_column}'" if d.patient_column else "image"
        bs.split_policy = (f"seeded split (seed {seed}) grouped by {unit}, fractions {list(d.split_fractions)}, "
                           "method grouped")
        if not d.patient_column:
            bs.warnings.append(f"{csv}: neither data.split_column nor data.patient_column is set: split by image; "
                               "set data.patient_column when patients have several images")
    else:
        bs.split_policy = f"split from column '{d.split_column}'"
    for im in bs.images:
        _sized(bs, im, collect)
    for im, line, cls_index, box in pending:
        if check_box(bs, line, box, im.width, im.height):
            im.boxes.append((cls_index, *box))
    bs.test_is_val = not bs.split_images("test")
    return bs.finish()


# --- data.name: coco -----------------------------------------------------------------------------------------------

COCO_KEYS = (("train", "train_json"), ("val", "val_json"), ("test", "test_json"))


def coco_files(data_cfg) -> dict[str, Path]:
    return {split: Path(getattr(data_cfg, key)).expanduser() for split, key in COCO_KEYS
            if getattr(data_cfg, key)}


def coco_images_dir(data_cfg) -> Path:
    folder = data_cfg.images or data_cfg.root
    return Path(folder).expanduser() if folder else next(iter(coco_files(data_cfg).values())).parent


def read_coco_boxes(cfg, collect: bool = False) -> BoxSet:
    """The COCO files of ``data.train_json`` / ``val_json`` / ``test_json`` and the images they name."""
    from spft.data.coco import category_classes, coco_box, entry, load_coco

    d = cfg.data
    files = coco_files(d)
    images_dir = coco_images_dir(d)
    if not images_dir.is_dir():
        key = "data.images" if d.images else "data.root"
        raise MissingFileError(f"{key}: image folder {images_dir} not found")
    first = None
    bs = BoxSet(dataset="coco", source=", ".join(str(p) for p in files.values()), classes=[], images=[],
                group_kind="image file", split_policy="one COCO file per split ("
                + ", ".join(f"{s}: {p.name}" for s, p in files.items()) + ")",
                label_policy="COCO bbox [x, y, width, height] in pixels; categories in sorted-id order; crowd "
                             "annotations skipped")
    for split, path in files.items():
        spec = load_coco(path)
        ids, names = category_classes(path, spec)
        if first is None:
            first, bs.classes, cat_to_class = (path, ids, names), names, {c: i for i, c in enumerate(ids)}
        elif (ids, names) != first[1:]:
            raise DataError(f"{path}: categories {dict(zip(ids, names))} differ from those of {first[0]} "
                            f"({dict(zip(*first[1:]))}); every split needs the same categories")
        by_id: dict = {}
        for i, item in enumerate(spec["images"]):
            item = entry(path, "images", i, item, ("id", "file_name"))
            src = images_dir / str(item["file_name"])
            im = BoxImage(path=str(src), split=split, group=os.path.abspath(src),
                          name=_layout_name(src, images_dir), where=f"{path} image id {item['id']}",
                          width=int(item.get("width") or 0), height=int(item.get("height") or 0))
            by_id[item["id"]] = im
            bs.images.append(im)
            _sized(bs, im, collect)
        for i, ann in enumerate(spec["annotations"]):
            ann = entry(path, "annotations", i, ann, ("image_id", "category_id", "bbox"))
            where = f"{path} annotation id {ann.get('id', f'#{i}')}"
            im = by_id.get(ann["image_id"])
            if im is None:
                raise DataError(f"{where}: image_id {ann['image_id']!r} is not in the file's images")
            if ann.get("iscrowd"):
                continue
            if ann["category_id"] not in cat_to_class:
                bs.problem("unknown_class", f"{where}: category_id {ann['category_id']!r} is not in categories "
                                            f"({', '.join(map(str, ids))})")
                continue
            box = coco_box(path, ann)
            if check_box(bs, where, box, im.width, im.height):
                im.boxes.append((cat_to_class[ann["category_id"]], *box))
    bs.test_is_val = "test" not in files
    return bs.finish()


# --- data.name: yolo (and every prepared layout) -------------------------------------------------------------------


def yolo_yaml(data_cfg) -> Path:
    path = Path(data_cfg.yaml).expanduser()
    return path if path.is_absolute() else Path(data_cfg.root).expanduser() / path


def _class_names(spec: dict, path: Path) -> list[str]:
    names = spec.get("names")
    if names is None and isinstance(spec.get("nc"), int):
        return [f"class_{i}" for i in range(spec["nc"])]
    if isinstance(names, list):
        return [str(n) for n in names]
    if isinstance(names, dict) and all(isinstance(k, int) for k in names) \
            and sorted(names) == list(range(len(names))):
        return [str(names[i]) for i in range(len(names))]
    raise DataError(f"{path}: 'names' must list the class names (a list, or a map 0: name, 1: name, ...), got "
                    f"{names!r}")


def _list_entry(path: Path, split: str, base: Path, value) -> list[Path]:
    """The images of one ``train``/``val``/``test`` entry: folders (searched recursively), ``.txt`` lists (relative
    lines are relative to the list's folder), single image files, or a list of those."""
    out: list[Path] = []
    for item in value if isinstance(value, list) else [value]:
        p = Path(str(item)).expanduser()
        p = p if p.is_absolute() else base / p
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
        elif p.is_file() and p.suffix.lower() == ".txt":
            for line in p.read_text().splitlines():
                line = line.strip()
                if line:
                    q = Path(line.removeprefix("./")).expanduser()
                    out.append(q if q.is_absolute() else p.parent / q)
        elif p.suffix.lower() in IMAGE_SUFFIXES:
            out.append(p)
        else:
            raise MissingFileError(f"{path}: {split}: {p} not found (expected a folder of images or a .txt list "
                                   "of image paths)")
    return [Path(os.path.abspath(q)) for q in out]


def read_yolo(dataset_yaml: str | Path, dataset: str = "yolo", group_by: str = "file") -> tuple[BoxSet, dict]:
    """The Ultralytics dataset ``dataset_yaml`` with its label files read; returns the set and the images listed
    per split (``test`` absent when it is val). ``group_by``: ``file`` (the image's real path) or ``stem``."""
    path = Path(dataset_yaml)
    if not path.is_file():
        raise MissingFileError(f"{path} not found (data.root + data.yaml name the dataset YAML)")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(spec, dict):
        raise DataError(f"{path}: expected a mapping with names and train/val/test entries")
    classes = _class_names(spec, path)
    base = Path(str(spec.get("path") or ".")).expanduser()
    base = base if base.is_absolute() else path.parent / base
    lists: dict[str, list[Path]] = {}
    for split in SPLITS:
        if spec.get(split):
            lists[split] = _list_entry(path, split, base, spec[split])
    if spec.get("test_is_val") or "test" in lists and "val" in lists and lists["test"] == lists["val"]:
        lists.pop("test")
    bs = BoxSet(dataset=dataset, source=str(path), classes=classes, images=[],
                group_kind="image file" if group_by == "file" else "file name",
                split_policy=f"the dataset's lists ({', '.join(lists) or 'none'})",
                label_policy="YOLO label files, one 'class cx cy w h' line per box (none or empty: no finding)",
                test_is_val="test" not in lists)
    for split, paths in lists.items():
        for image in paths:
            if "images" not in image.parts:
                raise DataError(f"{path}: {split} image {image} is not inside an images/ folder (Ultralytics finds "
                                "its labels by replacing /images/ with /labels/)")
            group = os.path.realpath(image) if group_by == "file" else image.stem
            im = BoxImage(path=str(image), split=split, group=group, name=image.name, where=str(image), width=1,
                          height=1)
            bs.images.append(im)
            _read_label_file(bs, im, len(classes))
    return bs.finish(), lists


def _read_label_file(bs: BoxSet, im: BoxImage, n_classes: int) -> None:
    labels = label_path(Path(im.path))
    if not labels.is_file():
        return
    for k, line in enumerate(labels.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        where = f"{labels} line {k}"
        try:
            values = [float(v) for v in parts]
        except ValueError:
            values = []
        if len(values) < 5 or (len(values) > 5 and (len(values) - 1) % 2) or not all(map(math.isfinite, values)):
            bs.problem("bad_label", f"{where}: {line.strip()!r} is not 'class cx cy w h' (numbers, normalised to "
                                    "[0, 1]) or 'class x1 y1 x2 y2 ...' (a polygon)")
            continue
        cls = values[0]
        if cls != int(cls) or not 0 <= cls < n_classes:
            bs.problem("unknown_class", f"{where}: class id {parts[0]} is not one of 0..{n_classes - 1} (the "
                                        f"{n_classes} names of {bs.source})")
            continue
        if len(values) == 5:
            cx, cy, w, h = values[1:]
            box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        else:
            xs, ys = values[1::2], values[2::2]
            box = (min(xs), min(ys), max(xs), max(ys))
        if check_box(bs, where, box, 1.0, 1.0, unit="normalised"):
            im.boxes.append((int(cls), *box))


# --- the prepared copy ---------------------------------------------------------------------------------------------


def _digest(parts: list) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def source_hash(cfg) -> str:
    """What a converted copy depends on: the annotation files' bytes and the keys that change the result."""
    d = cfg.data
    if d.name == "csv":
        csv = Path(d.csv).expanduser()
        if not csv.is_file():
            raise MissingFileError(f"data.csv: file not found: {csv}")
        seed = cfg.seed if d.split_seed is None else d.split_seed
        keys = {k: getattr(d, k) for k in ("image_column", "class_column", "box_columns", "classes", "split_column",
                                           "patient_column", "split_fractions")}
        keys["root"] = os.path.abspath(Path(d.root).expanduser() if d.root else csv.parent)
        keys["seed"] = None if d.split_column else seed
        return _digest([FORMAT_VERSION, "csv", keys, csv.read_bytes()])
    parts: list = [FORMAT_VERSION, "coco", os.path.abspath(coco_images_dir(d))]
    for split, path in coco_files(d).items():
        if not path.is_file():
            raise MissingFileError(f"data.{split}_json: COCO file not found: {path}")
        parts += [split, path.read_bytes()]
    return _digest(parts)


def _out_dir(cfg, key: str) -> Path:
    from spft.data.registry import cache_root

    det = cfg.detection
    return Path(det.dataset_dir).expanduser() if det.dataset_dir else cache_root() / "detect" / f"{cfg.data.name}-{key}"


def _reuse(target: Path, key: str, explicit: bool) -> bool:
    if not target.is_file():
        return False
    if (read_dataset(target) or {}).get("source_hash") == key:
        return True
    if explicit:
        raise DataError(f"detection.dataset_dir: {target.parent} holds a copy of other data (source_hash differs); "
                        "remove it or choose another folder")
    return False


def prepare_own(cfg, training: bool = True) -> Path:
    """``dataset.yaml`` of ``data.name`` yolo, coco or csv, converted (or listed, for yolo) once; problems refused
    in one line."""
    from spft.filelock import exclusive

    name = cfg.data.name
    if name == "yolo":
        source = yolo_yaml(cfg.data)
        key = _digest([FORMAT_VERSION, "yolo", os.path.abspath(source)])
    else:
        key = source_hash(cfg)
    out = _out_dir(cfg, key)
    explicit = bool(cfg.detection.dataset_dir)
    target = out / "dataset.yaml"
    if name != "yolo" and _reuse(target, key, explicit):
        _refuse_splits(read_dataset(target), target, training)
        return target
    out.mkdir(parents=True, exist_ok=True)
    with exclusive(out.parent / f"{out.name}.lock", f"writing the detection layout {out}"):
        if name == "yolo":
            return _list_yolo(cfg, source, out, key, training)
        if _reuse(target, key, explicit):
            _refuse_splits(read_dataset(target), target, training)
            return target
        bs = read_csv_boxes(cfg) if name == "csv" else read_coco_boxes(cfg)
        bs.refuse(training)
        return _convert(bs, out, key)


def _refuse_splits(spec: dict, target: Path, training: bool) -> None:
    missing = [s for s in spec.get("empty_splits", []) if s in ("train", "val")]
    if training and missing:
        raise DataError(f"{target}: the {missing[0]} split is empty; training needs images in train and val")


def _list_yolo(cfg, source: Path, out: Path, key: str, training: bool) -> Path:
    bs, lists = read_yolo(source)
    bs.refuse(training)
    for warning in bs.warnings:
        log.warning("warning: %s", warning)
    return _write_lists(out, bs.classes, lists, {"source": "yolo", "origin": str(source), "source_hash": key})


def _write_lists(out: Path, classes: list[str], lists: dict[str, list[Path]], extra: dict) -> Path:
    """``write_dataset`` for the splits present: an empty train or val points at another list (Ultralytics needs
    both keys; training refuses such data before), a missing test at val."""
    present = {s: v for s, v in lists.items() if v}
    if not present:
        raise DataError(f"{extra.get('origin') or out}: no images in any split")
    empty = [s for s in SPLITS if s not in present]
    fallback = present.get("val") or present.get("test") or present["train"]
    for split in ("train", "val"):
        present.setdefault(split, fallback)
    extra = {**extra, "test_is_val": "test" not in present, "empty_splits": empty}
    return write_dataset(out, classes, present, extra)


def _convert(bs: BoxSet, out: Path, key: str) -> Path:
    """Link (or decode to PNG) every image under ``out/images/<split>/`` and write its labels."""
    from spft.atomic import atomic_write_image
    from spft.data.io import is_dicom, load_image

    for warning in bs.warnings:
        log.warning("warning: %s", warning)
    lists: dict[str, list[Path]] = {s: [] for s in SPLITS}
    n_decoded = 0
    for im in bs.images:
        src = Path(im.path)
        target = out / "images" / im.split / im.name
        if is_dicom(src) or src.suffix.lower() not in IMAGE_SUFFIXES:
            target = target.with_suffix(".png")
            if not target.is_file():
                pixels = load_image(src, "grey" if is_dicom(src) else "rgb", max_pixels=None)
                atomic_write_image(target, pixels)
                n_decoded += 1
        else:
            link_or_copy(src, target)
        write_labels(target, im.boxes, im.width, im.height)
        lists[im.split].append(target)
    if n_decoded:
        log.info("%d image(s) (DICOM or formats Ultralytics cannot read) decoded to PNG in %s", n_decoded, out)
    return _write_lists(out, bs.classes, lists, {"source": bs.dataset, "origin": bs.source, "source_hash": key})


def read_own(cfg) -> BoxSet:
    """The data check's reading of ``data.name`` yolo, coco or csv: every problem collected, nothing written."""
    name = cfg.data.name
    if name == "yolo":
        return read_yolo(yolo_yaml(cfg.data))[0]
    return read_csv_boxes(cfg, collect=True) if name == "csv" else read_coco_boxes(cfg, collect=True)
