"""The typed configuration schema: every key spft understands, its type and its default.

One dataclass per section. Defaults are the paper's recipe (SPEC.md §1) where the paper fixes a value and the
project's choice where it is silent. `spft.config.loader` turns YAML + `KEY=VALUE` overrides into these objects
and rejects anything that is not declared here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional


@dataclass
class RunConfig:
    dir: Optional[str] = None  # default: runs/<config name>/<timestamp>


@dataclass
class PhantomConfig:
    kind: Literal["cxr", "lesion"] = "cxr"
    n_images: int = 3000
    image_size: int = 128
    seed: int = 0
    cache_dir: Optional[str] = None  # default: $SPFT_CACHE or ~/.cache/spft


@dataclass
class AugmentConfig:
    """Random training augmentation (classification). Off by default; when on, the stage-1 feature cache is bypassed."""

    enabled: bool = False
    scale: list[float] = field(default_factory=lambda: [0.85, 1.0])  # random resized crop: area fraction range
    rotate: float = 5.0  # degrees, uniform in [-rotate, rotate]
    brightness: float = 0.1  # multiplicative, uniform in [1 - b, 1 + b]
    contrast: float = 0.1  # around the image mean, uniform in [1 - c, 1 + c]
    hflip: float = 0.0  # probability; 0 by default because chest X-ray laterality matters


@dataclass
class DataConfig:
    name: Literal["csv", "phantom", "chestxray14", "chexpert", "ham10000", "phantom_detect", "vindr_cxr",
                  "tbx11k", "phantom_segment", "mask_folder", "chexmask"] = "csv"
    root: Optional[str] = None  # csv: image paths are relative to this (default: the CSV's folder); adapters: download
    csv: Optional[str] = None  # chestxray14 / ham10000: the metadata file, when not found below data.root
    image_column: str = "image"
    id_column: Optional[str] = None  # default: the image column
    label_columns: list[str] = field(default_factory=list)
    split_column: Optional[str] = None  # values train/val/test; when unset a grouped seeded split is made
    patient_column: Optional[str] = None  # groups for the seeded split (patients or lesions)
    split_fractions: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])
    split_seed: Optional[int] = None  # default: the run's seed
    image_size: Optional[int] = None  # default: the model's own input size
    color: Literal["grey", "rgb"] = "grey"
    num_workers: Optional[int] = None  # DataLoader workers; null: chosen from the core count (spft.data.loading)
    pin_memory: Optional[bool] = None  # null: on when training on a GPU
    prefetch_factor: Optional[int] = None  # batches prefetched per worker; null: chosen with the workers
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    phantom: PhantomConfig = field(default_factory=PhantomConfig)
    # Real-dataset adapters (spft.data.chestxray14 / chexpert / ham10000):
    val_fraction: float = 0.1  # validation carved from the official train pool, grouped by patient / lesion
    views: Literal["frontal", "lateral", "both"] = "frontal"  # chexpert, from the Frontal/Lateral column
    uncertain: Any = "ignore"  # chexpert -1: ignore (masked) | zeros | ones, or a map {class: policy, default: ...}
    blank: Literal["zero", "ignore"] = "zero"  # chexpert blank cells: negative, or unknown (masked)
    official_test: bool = True  # ham10000: the ISIC 2018 Task 3 test set is the test split when its files are present
    image_cache: Optional[str] = None  # folder of pre-resized images written by `spft prepare cache`
    image_cache_format: Literal["png", "npy"] = "png"  # png files, or one uint8 memory-mapped array per split
    # Segmentation (spft.data.chexmask): the CheXmask CSV of one source, joined to the images below images_root
    masks_csv: Optional[str] = None
    images_root: Optional[str] = None  # default: data.root
    source: Literal["vindr-cxr", "chestxray14", "chexpert"] = "vindr-cxr"
    min_rca: float = 0.7  # CheXmask quality filter: keep rows with Dice RCA (Mean) >= min_rca
    # Bad inputs (spft.data.io / spft.data.check): every image is checked before training starts
    check_images: Literal["header", "decode", "off"] = "header"  # header: cheap (size, end marker); decode: full
    on_bad_image: Literal["error", "skip"] = "error"  # skip: excluded from its split, listed in skipped_images.csv
    max_image_pixels: Optional[int] = 89_478_485  # Pillow's decompression-bomb limit; null = no limit
    allow_outside_root: bool = False  # csv: image paths may leave data.root (../, absolute paths elsewhere)

    def __post_init__(self) -> None:  # raised as one line naming the key by spft.config.loader
        from spft.errors import ConfigError

        if self.image_size is not None and self.image_size < 1:
            raise ConfigError(f"'data.image_size': expected a positive number of pixels (or null for the model's "
                              f"own input size), got {self.image_size}")
        if self.max_image_pixels is not None and self.max_image_pixels < 1:
            raise ConfigError(f"'data.max_image_pixels': expected a positive pixel count (or null for no limit), "
                              f"got {self.max_image_pixels}")



@dataclass
class ModelConfig:
    name: Optional[str] = None  # hub id (microsoft/rad-dino) or local directory
    config: Optional[dict[str, Any]] = None  # transformers config mapping -> random weights (offline)
    pooling: Literal["mean", "cls"] = "mean"
    head_hidden: int = 512
    head_dropout: float = 0.2
    attn_implementation: Optional[str] = "sdpa"  # transformers attention: sdpa | eager | flash_attention_2
    gradient_checkpointing: bool = False  # recompute encoder activations in backward: less memory, ~25% slower
    channels_last: Optional[bool] = None  # null: on for CNN encoders on a GPU, off for ViTs (no gain)


@dataclass
class UnfreezeConfig:
    enabled: bool = True
    top_k: Optional[int] = 10  # null = all blocks
    blocks_per_epoch: int = 2
    embeddings: bool = False  # open the patch embeddings too once every block is open (from-scratch encoders)


@dataclass
class ClassWeightsConfig:
    enabled: bool = True
    heuristic: dict[str, float] = field(default_factory=dict)
    refine: bool = True
    eta: float = 1.0
    w_min: float = 0.1
    w_max: float = 10.0


@dataclass
class EmaConfig:
    enabled: bool = True
    decay: float = 0.999
    warmup: bool = True


@dataclass
class RecipeConfig:
    stage1_epochs: int = 2
    unfreeze: UnfreezeConfig = field(default_factory=UnfreezeConfig)
    class_weights: ClassWeightsConfig = field(default_factory=ClassWeightsConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)


@dataclass
class OptimConfig:
    lr_encoder: float = 3e-6
    lr_head: float = 5e-5
    weight_decay: float = 0.05
    warmup_steps: int = 0  # linear warm-up after each unfreeze step (and at the start for the head)
    min_lr_factor: float = 0.0


@dataclass
class TrainerConfig:
    max_epochs: int = 20
    batch_size: int = 32
    eval_batch_size: Optional[int] = None  # default: 2 x batch_size
    accelerator: str = "auto"  # auto | cpu | gpu | cuda | mps
    devices: Any = 1  # an int, a list of GPU ids, or "auto"; >1 trains with DDP
    num_nodes: int = 1  # multi-node DDP (torchrun / SLURM set the ranks)
    strategy: str = "auto"  # Lightning strategy: auto | ddp | ddp_find_unused_parameters_true | ...
    compile: bool = False  # torch.compile the encoder (recompiles once per unfreeze step)
    feature_cache: bool = True  # stage 1: train the head on cached pooled features of the frozen encoder
    precision: Optional[str] = None  # default: bf16-mixed where supported, else 32-true
    patience: int = 5  # early stopping, in validations
    log_every_n_steps: int = 10
    progress_bar: bool = True
    deterministic: bool = False
    # Quick smoke runs (e.g. a big model on a small GPU budget): per epoch, an int = that many batches, a float =
    # that fraction of the batches, null = all. Not for detection (Ultralytics has no such switch).
    limit_train_batches: Optional[int | float] = None
    limit_val_batches: Optional[int | float] = None

    def __post_init__(self) -> None:  # raised as one line naming the key by spft.config.loader
        from spft.errors import ConfigError

        for key in ("limit_train_batches", "limit_val_batches"):
            value = getattr(self, key)
            ok = value is None or (value >= 1 if isinstance(value, int) else 0.0 < value <= 1.0)
            if not ok:
                raise ConfigError(f"'trainer.{key}': expected a number of batches >= 1, a fraction in (0, 1] or "
                                  f"null (all batches), got {value!r}")


@dataclass
class DetectionConfig:
    """Detection on Ultralytics (task: detection); model.name is a model YAML (yolov8n.yaml) or weights (yolov8s.pt)."""

    imgsz: int = 640
    weights: Optional[str] = None  # .pt whose matching tensors load into the model built from model.name
    backbone_lr_ratio: Optional[float] = None  # backbone LR = ratio x optim.lr_head; null: optim.lr_encoder
    backbone_modules: Optional[int] = None  # default: the length of the model YAML's `backbone` list
    mosaic: float = 1.0
    fliplr: float = 0.0  # no horizontal flips by default: chest X-ray laterality matters
    conf: float = 0.001  # confidence threshold for validation / evaluation
    figures: int = 4  # validation images drawn with predicted vs ground-truth boxes (0: none)
    dataset_dir: Optional[str] = None  # the prepared Ultralytics dataset (default: under $SPFT_CACHE/detect)
    long_side: int = 1024  # vindr_cxr preparation: long side of the written PNGs (boxes scaled alike)
    fusion: Literal["wbf", "union", "majority"] = "wbf"  # vindr_cxr: how the 3 radiologists' boxes merge
    iou_thr: float = 0.55  # vindr_cxr: IoU threshold of the box fusion
    no_finding_share: float = 1.0  # vindr_cxr: share of "No finding" training images kept as background


@dataclass
class SegmentationConfig:
    """Segmentation with SAM2 (task: segmentation): one box prompt per structure, Dice + BCE per structure."""

    structures: list[str] = field(default_factory=lambda: ["heart", "left_lung", "right_lung"])
    box_jitter: float = 0.05  # training boxes: each edge moves by up to this fraction of the box side
    dice_weight: float = 1.0
    bce_weight: float = 1.0
    lr_decoder: Optional[float] = None  # mask decoder LR; null: optim.lr_head
    n_overlays: int = 8  # test images written to predictions_test/ (masks + prediction-vs-truth overlay)
    prevalence_images: int = 1000  # training images sampled for the pixel-prevalence structure weights


@dataclass
class EvaluationConfig:
    """Operating points and calibration of a classification run, fitted on the validation split at the end of
    training (spft.metrics.operating_points, spft.metrics.calibration); ``spft evaluate`` reuses what the run fitted."""

    threshold: Literal["youden", "sensitivity", "specificity", "f1"] = "youden"  # per-class threshold rule
    target: Optional[float] = None  # sensitivity / specificity to reach, in (0, 1); required by those two rules
    calibration: Literal["none", "temperature"] = "none"  # temperature: one scalar T fitted on validation logits

    def __post_init__(self) -> None:  # raised as one line naming the key by spft.config.loader
        from spft.errors import ConfigError

        if self.threshold in ("sensitivity", "specificity") and self.target is None:
            raise ConfigError(f"'evaluation.target': evaluation.threshold={self.threshold} needs a target "
                              f"{self.threshold} in (0, 1), e.g. evaluation.target=0.9")
        if self.target is not None and not 0.0 < self.target < 1.0:
            raise ConfigError(f"'evaluation.target': expected a value in (0, 1), got {self.target}")


@dataclass
class SpftConfig:
    name: Optional[str] = None  # experiment name; default: the config file's stem
    task: Literal["classification", "detection", "segmentation"] = "classification"
    seed: int = 0
    loss: Literal["bce", "ce"] = "bce"
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
