"""VinDr-CXR (Kaggle ``train.csv`` or PhysioNet ``annotations_*.csv``) -> Ultralytics detection dataset.

Owns ``spft prepare vindr-cxr``: DICOM -> 8-bit PNG (long side ``detection.long_side``, boxes scaled alike), the
three radiologists' boxes fused per image and class (``detection.fusion``: ``wbf`` = Weighted Boxes Fusion from
``ensemble-boxes``, ``union``, ``majority``), "No finding" images kept as background (a seeded share of them in
train), a seeded train/val split and the PhysioNet test annotations (already consensus, not fused) as test when
present. Columns are read by name. Resumable: PNGs already written are kept; ``dataset.yaml`` is written last.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from spft.atomic import atomic_write_image
from spft.data.yolo_layout import Box, write_dataset, write_labels
from spft.errors import DataError, MissingFileError, MissingKeyError

log = logging.getLogger(__name__)

# The 14 box classes of the Kaggle release, in its class_id order (docs/decisions.md#vindr-cxr).
CLASSES: tuple[str, ...] = (
    "Aortic enlargement", "Atelectasis", "Calcification", "Cardiomegaly", "Consolidation", "ILD", "Infiltration",
    "Lung Opacity", "Nodule/Mass", "Other lesion", "Pleural effusion", "Pleural thickening", "Pneumothorax",
    "Pulmonary fibrosis",
)
NO_FINDING = "No finding"
REQUIRED = ("image_id", "class_name", "x_min", "y_min", "x_max", "y_max")
DICOM_SUFFIXES = (".dicom", ".dcm")


def read_annotations(path: Path) -> pd.DataFrame:
    """Read a VinDr box CSV by column names; ``rad_id`` defaults to one reader when absent (test consensus)."""
    df = pd.read_csv(path)
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise MissingKeyError(f"{path}: missing column(s) {missing}; found {list(df.columns)}")
    if "rad_id" not in df.columns:
        df["rad_id"] = "consensus"
    return df[["image_id", "rad_id", "class_name", "x_min", "y_min", "x_max", "y_max"]]


def _find_annotation_files(root: Path) -> tuple[Path, Path | None]:
    """(train annotations, test annotations or None) under ``root``: Kaggle train.csv or PhysioNet files."""
    found = {p.name: p for p in root.rglob("*.csv")}
    train = found.get("annotations_train.csv") or found.get("train.csv")
    if train is None:
        raise MissingFileError(f"{root}: neither train.csv (Kaggle) nor annotations/annotations_train.csv "
                                "(PhysioNet) found")
    return train, found.get("annotations_test.csv")


def fuse_boxes(per_reader: dict[str, list[Box]], width: int, height: int, method: str = "wbf",
               iou_thr: float = 0.55) -> list[Box]:
    """Fuse the boxes of several readers of one image, per class.

    Args:
        per_reader: ``{rad_id: [(class, x0, y0, x1, y1), ...]}`` in pixels.
        width: Image width (boxes are normalised for WBF).
        height: Image height.
        method: ``wbf`` (Weighted Boxes Fusion, every box score 1), ``union`` (all boxes as they are) or
            ``majority`` (WBF, then keep only fused boxes marked by more than half of the readers).
        iou_thr: IoU above which boxes of the same class are fused.

    Returns:
        Fused boxes in pixels, sorted by class then position.
    """
    readers = [r for r, b in per_reader.items() if b]
    if not readers:
        return []
    if method == "union":
        return sorted(b for r in readers for b in per_reader[r])
    if method not in ("wbf", "majority"):
        raise DataError(f"detection.fusion: expected wbf, union or majority, got {method!r}")
    from ensemble_boxes import weighted_boxes_fusion

    scale = np.array([width, height, width, height], dtype=np.float64)
    boxes = [np.array([b[1:] for b in per_reader[r]], dtype=np.float64) / scale for r in readers]
    labels = [[b[0] for b in per_reader[r]] for r in readers]
    scores = [[1.0] * len(per_reader[r]) for r in readers]
    fused, fused_scores, fused_labels = weighted_boxes_fusion(boxes, scores, labels, iou_thr=iou_thr,
                                                              skip_box_thr=0.0)
    # With every score 1, a fused box's score is (boxes in its cluster) / (readers): > 0.5 = a majority marked it.
    keep = fused_scores > 0.5 + 1e-9 if method == "majority" else np.ones(len(fused), dtype=bool)
    out = [(int(lab), *(float(v) for v in box * scale)) for box, lab, k in zip(fused, fused_labels, keep) if k]
    return sorted(out)


def _image_boxes(df: pd.DataFrame, source: Path) -> tuple[dict[str, dict[str, list[Box]]], set[str]]:
    """``{image_id: {rad_id: boxes}}`` for the 14 classes, and the set of every image id in the file."""
    class_id = {c: i for i, c in enumerate(CLASSES)}
    images = set(df["image_id"].astype(str))
    out: dict[str, dict[str, list[Box]]] = defaultdict(lambda: defaultdict(list))
    skipped = 0
    for row in df.itertuples(index=False):
        if row.class_name == NO_FINDING:
            continue
        if row.class_name not in class_id:
            skipped += 1  # PhysioNet's 8 rare local labels are not among the 14 classes
            continue
        coords = [row.x_min, row.y_min, row.x_max, row.y_max]
        if any(pd.isna(c) for c in coords):
            raise DataError(f"{source}: image {row.image_id}, class {row.class_name!r}: box without coordinates")
        out[str(row.image_id)][str(row.rad_id)].append((class_id[row.class_name], *(float(c) for c in coords)))
    if skipped:
        log.info("%s: %d box rows of classes outside the 14 were skipped", source, skipped)
    return out, images


def _dicom_index(index) -> dict[str, Path]:
    """DICOM files below the root keyed by image id (file name without suffix)."""
    out: dict[str, Path] = {}
    for name, path in index.by_name.items():
        stem, suffix = os.path.splitext(name)
        if suffix.lower() in DICOM_SUFFIXES:
            out.setdefault(stem, Path(path))
    return out


def prepared_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    """The size a ``width x height`` image is written at: long side at most ``long_side``, aspect kept (never up).

    >>> prepared_size(3000, 2400, 1024)
    (1024, 819)
    """
    scale = min(1.0, long_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _write_png(dicom: Path, target: Path, long_side: int) -> tuple[int, int, int, int]:
    """Decode, resize and write one image unless it exists; returns (orig W, orig H, new W, new H)."""
    import pydicom

    ds = pydicom.dcmread(str(dicom), stop_before_pixels=True)
    width, height = int(ds.Columns), int(ds.Rows)
    new_w, new_h = prepared_size(width, height, long_side)
    if not target.is_file():
        from spft.data.dicom import read_dicom

        img = Image.fromarray(read_dicom(dicom))
        if (new_w, new_h) != (width, height):
            img = img.resize((new_w, new_h), Image.BILINEAR)
        atomic_write_image(target, img)
    return width, height, new_w, new_h


def _assign_splits(train_ids: list[str], normal: set[str], test_ids: list[str], det_cfg, data_cfg,
                   seed: int) -> dict[str, list[str]]:
    """Seeded split of the training pool (val by data.val_fraction, or data.split_fractions without a test file)."""
    rng = np.random.default_rng(seed)
    ids = sorted(train_ids)
    order = [ids[i] for i in rng.permutation(len(ids))]
    if test_ids:
        n_val = max(1, round(data_cfg.val_fraction * len(order)))
        splits = {"val": order[:n_val], "train": order[n_val:], "test": sorted(test_ids)}
    else:
        n_val = max(1, round(data_cfg.split_fractions[1] * len(order)))
        n_test = max(1, round(data_cfg.split_fractions[2] * len(order)))
        splits = {"val": order[:n_val], "test": order[n_val:n_val + n_test], "train": order[n_val + n_test:]}
    train_normal = [i for i in splits["train"] if i in normal]
    n_keep = round(det_cfg.no_finding_share * len(train_normal))
    dropped = set(train_normal) - set(train_normal[:n_keep])  # train_normal is already in random order
    splits["train"] = sorted(i for i in splits["train"] if i not in dropped)
    return splits


def prepare_vindr_cxr(cfg) -> Path:
    """Build the Ultralytics copy of VinDr-CXR described by ``cfg``; returns its ``dataset.yaml``."""
    from spft.data.files import FileIndex

    det, root = cfg.detection, Path(cfg.data.root or "")
    if not cfg.data.root or not root.is_dir():
        raise MissingFileError(f"data.root: VinDr-CXR folder {cfg.data.root!r} not found")
    out = Path(det.dataset_dir) if det.dataset_dir else default_dataset_dir(cfg)
    train_csv, test_csv = _find_annotation_files(root)
    train_boxes, train_ids = _image_boxes(read_annotations(train_csv), train_csv)
    test_boxes, test_ids = _image_boxes(read_annotations(test_csv), test_csv) if test_csv else ({}, set())
    dicoms = _dicom_index(FileIndex(root, cfg.data.follow_links))
    seed = cfg.data.split_seed if cfg.data.split_seed is not None else cfg.seed
    splits = _assign_splits(list(train_ids), train_ids - set(train_boxes), list(test_ids), det, cfg.data, seed)
    split_images: dict[str, list[Path]] = {}
    for split, ids in splits.items():
        boxes_of = test_boxes if split == "test" and test_csv else train_boxes
        method = "union" if split == "test" and test_csv else det.fusion  # test ground truth is consensus already
        split_images[split] = []
        for image_id in ids:
            if image_id not in dicoms:
                raise MissingFileError(f"{root}: no DICOM for image_id {image_id} (looked for "
                                        f"{image_id}{{{','.join(DICOM_SUFFIXES)}}} under data.root)")
            target = out / "images" / split / f"{image_id}.png"
            w, h, new_w, new_h = _write_png(dicoms[image_id], target, det.long_side)
            fused = fuse_boxes(boxes_of.get(image_id, {}), w, h, method, det.iou_thr)
            sx, sy = new_w / w, new_h / h
            write_labels(target, [(c, x0 * sx, y0 * sy, x1 * sx, y1 * sy) for c, x0, y0, x1, y1 in fused], new_w,
                         new_h)
            split_images[split].append(target)
    extra = {"source": "vindr_cxr", "fusion": det.fusion, "iou_thr": det.iou_thr, "long_side": det.long_side,
             "no_finding_share": det.no_finding_share, "official_test": bool(test_csv)}
    return write_dataset(out, CLASSES, split_images, extra)


def default_dataset_dir(cfg) -> Path:
    """``$SPFT_CACHE/detect/vindr_cxr-<long side>`` or ``.../tbx11k`` (used when ``detection.dataset_dir`` is unset)."""
    from spft.data.registry import cache_root

    name = f"vindr_cxr-{cfg.detection.long_side}" if cfg.data.name == "vindr_cxr" else cfg.data.name
    return cache_root() / "detect" / name
