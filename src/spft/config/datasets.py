"""The ``data`` section: one dataclass per dataset, chosen by ``data.name`` among the task's datasets.

A dataset's class holds exactly the keys its reader honours, so ``data.views`` exists for CheXpert and nowhere else,
and a key of another dataset is refused by the loader naming the datasets that have it. The classes share keys by
inheritance, one level per reader family:

* :class:`DataConfig` — every dataset: ``name``, ``root``, the split seed, loader workers, links;
* :class:`ImageDataConfig` — datasets whose images spft decodes itself (classification, segmentation): colour,
  the pixel limit, pinned memory, prefetching (Ultralytics decodes detection images itself);
* :class:`ClassificationDataConfig` — classification datasets: input size, label selection, the training subset,
  augmentation, the pre-resized image cache and the pre-training image check;
* :class:`DetectionDataConfig` / :class:`SegmentationDataConfig` — the other tasks' datasets.

Each class checks its own values (:meth:`DataConfig.check`, extended by subclasses), so a check lives with its key.
A task maps the ``data.name`` values it trains on to these classes (:attr:`spft.tasks.base.Task.datasets`), so one
name may mean a different reader for another task (a table of boxes for detection). The trailing ``#``
comment of each field is its documentation (``spft config --keys``), as in :mod:`spft.config.schema`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from spft.config.schema import AugmentConfig, PhantomConfig
from spft.errors import ConfigError

UNCERTAIN_POLICIES = ("ignore", "zeros", "ones")


def _fractions(key: str, fr: list[float]) -> None:
    if len(fr) != 3 or any(f < 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise ConfigError(f"'{key}': expected three non-negative fractions summing to 1, got {fr}")


def _val_fraction(value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ConfigError(f"'data.val_fraction': expected a fraction between 0 and 1, got {value}")


@dataclass
class DataConfig:
    """Keys of every dataset."""

    name: str = "csv"  # the dataset (picks the keys below): see the data.name tables
    root: Optional[str] = None  # the dataset's folder (csv: image paths are relative to it; default the CSV's folder)
    split_seed: Optional[int] = None  # seed of the seeded splits; default: the run's seed
    num_workers: Optional[int] = None  # DataLoader workers; null: chosen from the core count (spft.data.loading)
    follow_links: bool = False  # symbolic links under data.root may lead outside it (a linked image folder)

    def check(self) -> None:
        """Cross-field checks of this dataset's keys; raise :class:`ConfigError` naming the key."""
        if self.num_workers is not None and self.num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0 (or null to choose from the cores), "
                              f"got {self.num_workers}")


@dataclass
class ImageDataConfig(DataConfig):
    """Keys of datasets whose images spft decodes itself (classification and segmentation)."""

    color: Literal["grey", "rgb"] = "grey"  # how images are decoded (grey is repeated to the model's channels)
    pin_memory: Optional[bool] = None  # null: on when training on a GPU
    prefetch_factor: Optional[int] = None  # batches prefetched per worker; null: chosen with the workers
    max_image_pixels: Optional[int] = 89_478_485  # Pillow's decompression-bomb limit; null = no limit

    def check(self) -> None:
        super().check()
        if self.max_image_pixels is not None and self.max_image_pixels < 1:
            raise ConfigError(f"'data.max_image_pixels': expected a positive pixel count (or null for no limit), "
                              f"got {self.max_image_pixels}")
        if self.prefetch_factor is not None and self.prefetch_factor < 1:
            raise ConfigError(f"data.prefetch_factor must be >= 1 (or null to choose with the workers), "
                              f"got {self.prefetch_factor}")


@dataclass
class ClassificationDataConfig(ImageDataConfig):
    """Keys of every classification dataset."""

    image_size: Optional[int] = None  # default: the model's own input size
    # csv: the columns holding the 0/1/blank labels (the classes); other datasets: keep only these classes, in order
    label_columns: list[str] = field(default_factory=list)
    train_subset: Optional[int] = None  # N images of the train split (seeded, stratified per class); val/test whole
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    image_cache: Optional[str] = None  # folder of pre-resized images written by `spft prepare cache`
    image_cache_format: Literal["png", "npy"] = "png"  # png files, or one uint8 memory-mapped array per split
    # Bad inputs (spft.data.io / spft.data.check): every image is checked before training starts
    check_images: Literal["header", "decode", "off"] = "header"  # header: cheap (size, end marker); decode: full
    on_bad_image: Literal["error", "skip"] = "error"  # skip: excluded from its split, listed in skipped_images.csv

    def check(self) -> None:
        super().check()
        n = self.train_subset
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ConfigError(f"'data.train_subset': expected a positive number of training images (or null for the "
                              f"whole train split), got {n!r}")
        if self.image_size is not None and self.image_size < 1:
            raise ConfigError(f"'data.image_size': expected a positive number of pixels (or null for the model's "
                              f"own input size), got {self.image_size}")
        self.augment.check()


@dataclass
class _CsvColumns:
    """Keys of a user's table (one row per image)."""

    csv: Optional[str] = None  # the table (CSV, or TSV/Excel/Parquet by suffix)
    image_column: str = "image"  # column holding the image path (relative to data.root)
    id_column: Optional[str] = None  # default: the image column
    split_column: Optional[str] = None  # values train/val/test; when unset a grouped seeded split is made
    patient_column: Optional[str] = None  # groups for the seeded split (patients or lesions)
    split_fractions: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])  # train/val/test, summing to 1


@dataclass
class CsvData(_CsvColumns, ClassificationDataConfig):
    """data.name csv: your own images and a table of 0/1/blank labels (one column per class)."""

    val_fraction: float = 0.1  # with split_column values train/test only: validation carved from train by patient
    allow_outside_root: bool = False  # image paths may leave data.root (../, absolute paths elsewhere)
    # one column of class names instead of 0/1 columns; data.label_columns then lists the classes (default: all found)
    label_column: Optional[str] = None
    # with label_column: null = one class per row (multi-class, loss: ce); e.g. "|" = several per row (multi-label)
    label_separator: Optional[str] = None
    none_label: Optional[str] = None  # with label_separator: the value meaning no finding (blank always does)

    def check(self) -> None:
        super().check()
        _fractions("data.split_fractions", self.split_fractions)
        _val_fraction(self.val_fraction)
        if self.csv is None:
            raise ConfigError("'data.csv' must be set when data.name is csv (a CSV with one row per image)")
        if self.label_column is None:
            for key in ("label_separator", "none_label"):
                if getattr(self, key) is not None:
                    raise ConfigError(f"'data.{key}' needs data.label_column (the column of class names)")
        if self.label_separator is not None and not str(self.label_separator).strip():
            raise ConfigError("'data.label_separator': expected a separator such as \"|\" or \";\" "
                              "(or null for one class per row)")
        if self.none_label is not None and self.label_separator is None:
            raise ConfigError("'data.none_label' needs data.label_separator (multi-label); with one class per row "
                              "every row names its class")


@dataclass
class FolderData(ClassificationDataConfig):
    """data.name folder: one sub-folder of images per class (<root>/<class>/*.png), or <root>/<split>/<class>/."""

    split_fractions: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])  # without split folders
    val_fraction: float = 0.1  # split folders train/ and test/ without val/: validation carved from train

    def check(self) -> None:
        super().check()
        _fractions("data.split_fractions", self.split_fractions)
        _val_fraction(self.val_fraction)
        if not self.root:
            raise ConfigError("'data.root' must be set when data.name is folder (the folder holding one "
                              "sub-folder per class)")


@dataclass
class PhantomData(ClassificationDataConfig):
    """data.name phantom: synthetic multi-label chest X-ray (or skin-lesion) phantoms, generated into the cache."""

    phantom: PhantomConfig = field(default_factory=PhantomConfig)


@dataclass
class _OfficialDownload:
    def check(self) -> None:
        super().check()  # type: ignore[misc]
        if not self.root:  # type: ignore[attr-defined]
            raise ConfigError(f"'data.root' must be set when data.name is {self.name} "  # type: ignore[attr-defined]
                              "(the folder of the download)")
        _val_fraction(self.val_fraction)  # type: ignore[attr-defined]


@dataclass
class ChestXray14Data(_OfficialDownload, ClassificationDataConfig):
    """data.name chestxray14: the NIH ChestX-ray14 download (Data_Entry_2017_v2020.csv, official test list)."""

    csv: Optional[str] = None  # Data_Entry_2017*.csv when it is not found below data.root
    val_fraction: float = 0.1  # validation carved from the official train pool, grouped by patient


@dataclass
class ChexpertData(_OfficialDownload, ClassificationDataConfig):
    """data.name chexpert: CheXpert (train.csv / valid.csv); uncertain and blank labels by policy."""

    val_fraction: float = 0.1  # validation carved from train.csv, grouped by patient (valid.csv is the test split)
    views: Literal["frontal", "lateral", "both"] = "frontal"  # from the Frontal/Lateral column
    uncertain: Any = "ignore"  # -1 labels: ignore (masked) | zeros | ones, or a map {class: policy, default: ...}
    blank: Literal["zero", "ignore"] = "zero"  # blank cells: negative, or unknown (masked)

    def check(self) -> None:
        super().check()
        policies = self.uncertain if isinstance(self.uncertain, dict) else {"": self.uncertain}
        for name, policy in policies.items():
            if policy not in UNCERTAIN_POLICIES:
                key = f"data.uncertain.{name}" if name else "data.uncertain"
                raise ConfigError(f"'{key}': expected one of {', '.join(UNCERTAIN_POLICIES)} (or a map "
                                  f"{{class: policy, default: policy}}), got {policy!r}")


@dataclass
class Ham10000Data(_OfficialDownload, ClassificationDataConfig):
    """data.name ham10000: HAM10000 (7 diagnoses, one per image); the ISIC 2018 test set when present."""

    csv: Optional[str] = None  # HAM10000_metadata.csv when it is not found below data.root
    val_fraction: float = 0.1  # validation carved from the train pool, grouped by lesion
    split_fractions: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])  # without the official test set
    official_test: bool = True  # the ISIC 2018 Task 3 test set is the test split when its files are present

    def check(self) -> None:
        super().check()
        _fractions("data.split_fractions", self.split_fractions)


@dataclass
class DetectionDataConfig(DataConfig):
    """Keys of every detection dataset (Ultralytics reads and augments the images itself)."""


@dataclass
class PhantomDetectData(DetectionDataConfig):
    """data.name phantom_detect: synthetic chest X-ray phantoms with finding boxes."""

    phantom: PhantomConfig = field(default_factory=PhantomConfig)


@dataclass
class VindrCxrData(DetectionDataConfig):
    """data.name vindr_cxr: VinDr-CXR DICOMs and the radiologists' boxes, prepared into an Ultralytics dataset."""

    val_fraction: float = 0.1  # validation carved from the training images
    split_fractions: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])  # without a test annotation file

    def check(self) -> None:
        super().check()
        _fractions("data.split_fractions", self.split_fractions)
        _val_fraction(self.val_fraction)


@dataclass
class Tbx11kData(DetectionDataConfig):
    """data.name tbx11k: TBX-11K (its own train/val lists; tuberculosis boxes)."""


@dataclass
class YoloData(DetectionDataConfig):
    """data.name yolo: your own Ultralytics dataset (dataset.yaml, images/, labels/), used where it lies."""

    yaml: str = "dataset.yaml"  # the dataset YAML (names; train/val/test entries), relative to data.root

    def check(self) -> None:
        super().check()
        if not self.root:
            raise ConfigError("'data.root' must be set when data.name is yolo (the folder holding dataset.yaml)")


@dataclass
class CocoData(DetectionDataConfig):
    """data.name coco: COCO JSON boxes (one file per split) and an image folder, converted into the cache."""

    train_json: Optional[str] = None  # COCO file of the train split (needed for training)
    val_json: Optional[str] = None  # COCO file of the val split (needed for training)
    test_json: Optional[str] = None  # COCO file of the test split; without it test metrics are on val (a warning)
    images: Optional[str] = None  # folder the images' file_name is relative to; default: data.root

    def check(self) -> None:
        super().check()
        if not (self.train_json or self.val_json or self.test_json):
            raise ConfigError("'data.train_json' must be set when data.name is coco (a COCO JSON per split: "
                              "data.train_json, data.val_json, data.test_json)")


@dataclass
class DetectionCsvData(DetectionDataConfig):
    """data.name csv (detection): your own images and a table of boxes, one row per box, converted into the cache."""

    csv: Optional[str] = None  # the table of boxes (CSV with a header row), one row per box
    image_column: str = "image"  # column holding the image path (relative to data.root; PNG, JPEG or DICOM)
    class_column: str = "class"  # column holding the box's class; blank class and box = an image without findings
    # the columns of the box corners x_min, y_min, x_max, y_max (in this order), in pixels of the image
    box_columns: list[str] = field(default_factory=lambda: ["x_min", "y_min", "x_max", "y_max"])
    classes: list[str] = field(default_factory=list)  # the classes in order; empty: the values found, sorted
    split_column: Optional[str] = None  # values train/val/test; when unset a grouped seeded split is made
    patient_column: Optional[str] = None  # groups for the seeded split (default: the image)
    split_fractions: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])  # train/val/test, summing to 1

    def check(self) -> None:
        super().check()
        _fractions("data.split_fractions", self.split_fractions)
        if self.csv is None:
            raise ConfigError("'data.csv' must be set when data.name is csv (a table with one row per box)")
        if len(self.box_columns) != 4:
            raise ConfigError(f"'data.box_columns': expected four column names [x_min, y_min, x_max, y_max], got "
                              f"{self.box_columns}")


@dataclass
class SegmentationDataConfig(ImageDataConfig):
    """Keys of every segmentation dataset (SAM2's prompt encoder fixes the input size)."""


@dataclass
class PhantomSegmentData(SegmentationDataConfig):
    """data.name phantom_segment: chest X-ray phantoms with heart and lung masks."""

    phantom: PhantomConfig = field(default_factory=PhantomConfig)


@dataclass
class MaskFolderData(_CsvColumns, SegmentationDataConfig):
    """data.name mask_folder: your own images/ + masks/<stem>_<structure>.png, or a table with mask_<structure>
    columns (data.csv)."""

    def check(self) -> None:
        super().check()
        _fractions("data.split_fractions", self.split_fractions)


@dataclass
class ChexmaskData(SegmentationDataConfig):
    """data.name chexmask: CheXmask masks (one source's CSV) joined to that dataset's images."""

    masks_csv: Optional[str] = None  # the CheXmask CSV of data.source
    images_root: Optional[str] = None  # the folder holding the images; default: data.root
    source: Literal["vindr-cxr", "chestxray14", "chexpert"] = "vindr-cxr"  # the dataset the masks are of
    min_rca: float = 0.7  # quality filter: keep rows with Dice RCA (Mean) >= min_rca
    split_fractions: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])  # grouped by patient

    def check(self) -> None:
        super().check()
        _fractions("data.split_fractions", self.split_fractions)
