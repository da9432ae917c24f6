"""The typed configuration schema: every key spft understands, its type, its default and its one-line doc.

One dataclass per section. Defaults are the paper's recipe (docs/design.md#defaults) where the paper fixes a value
and the project's choice where it is silent (docs/deviations.md). `spft.config.loader` turns YAML + `KEY=VALUE`
overrides into these objects and rejects anything that is not declared here.

The trailing ``#`` comment of each field is its documentation (``spft config --keys``, docs/config-keys.md), read
from this file by :func:`field_docs`. One :class:`SpftConfig` serves every engine; each registered task
(:mod:`spft.tasks.registry`) declares which keys it cannot honour and which are its own, with why
(:func:`not_applicable_table`), and :func:`validate` — every cross-field check, run once by the loader, the task's
own ones included — refuses such a key when it is not at its default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from spft.errors import ConfigError
from spft.tasks.registry import TASKS, get_task


@dataclass
class RunConfig:
    """Where the run directory goes."""

    dir: Optional[str] = None  # run directory; default: runs/<config name>/<timestamp>


@dataclass
class PhantomConfig:
    """Synthetic phantom images (data.name phantom, phantom_detect, phantom_segment)."""

    kind: Literal["cxr", "lesion"] = "cxr"  # chest X-ray phantoms (14 findings) or skin-lesion phantoms (7 classes)
    n_images: int = 3000  # number of phantom images generated
    image_size: int = 128  # side of the generated square images, in pixels
    seed: int = 0  # seed of the phantom generator (the same seed gives the same images)
    cache_dir: Optional[str] = None  # where phantoms are written; default: $SPFT_CACHE or ~/.cache/spft


@dataclass
class AugmentConfig:
    """Random training augmentation (classification). Off by default; when on, the stage-1 feature cache is bypassed."""

    enabled: bool = False  # apply random augmentation to training images
    scale: list[float] = field(default_factory=lambda: [0.85, 1.0])  # random resized crop: area fraction range
    rotate: float = 5.0  # degrees, uniform in [-rotate, rotate]
    brightness: float = 0.1  # multiplicative, uniform in [1 - b, 1 + b]
    contrast: float = 0.1  # around the image mean, uniform in [1 - c, 1 + c]
    hflip: float = 0.0  # probability; 0 by default because chest X-ray laterality matters


@dataclass
class DataConfig:
    """The dataset, its splits and how images are read."""

    name: Literal["csv", "phantom", "chestxray14", "chexpert", "ham10000", "phantom_detect", "vindr_cxr",
                  "tbx11k", "phantom_segment", "mask_folder", "chexmask"] = "csv"  # dataset adapter
    root: Optional[str] = None  # csv: image paths are relative to this (default: the CSV's folder); adapters: download
    csv: Optional[str] = None  # csv / mask_folder: the table; chestxray14 / ham10000: metadata not found below root
    image_column: str = "image"  # CSV column holding the image path (relative to data.root)
    id_column: Optional[str] = None  # default: the image column
    label_columns: list[str] = field(default_factory=list)  # CSV columns holding the 0/1/blank labels (the classes)
    split_column: Optional[str] = None  # values train/val/test; when unset a grouped seeded split is made
    patient_column: Optional[str] = None  # groups for the seeded split (patients or lesions)
    split_fractions: list[float] = field(default_factory=lambda: [0.7, 0.15, 0.15])  # train/val/test, summing to 1
    split_seed: Optional[int] = None  # default: the run's seed
    train_subset: Optional[int] = None  # N images of the train split (seeded, stratified per class); val/test whole
    image_size: Optional[int] = None  # default: the model's own input size
    color: Literal["grey", "rgb"] = "grey"  # how images are decoded (grey is repeated to the model's channels)
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
    masks_csv: Optional[str] = None  # chexmask: the CheXmask CSV of data.source
    images_root: Optional[str] = None  # chexmask: the folder holding the images; default: data.root
    source: Literal["vindr-cxr", "chestxray14", "chexpert"] = "vindr-cxr"  # chexmask: the dataset the masks are of
    min_rca: float = 0.7  # CheXmask quality filter: keep rows with Dice RCA (Mean) >= min_rca
    # Bad inputs (spft.data.io / spft.data.check): every image is checked before training starts
    check_images: Literal["header", "decode", "off"] = "header"  # header: cheap (size, end marker); decode: full
    on_bad_image: Literal["error", "skip"] = "error"  # skip: excluded from its split, listed in skipped_images.csv
    max_image_pixels: Optional[int] = 89_478_485  # Pillow's decompression-bomb limit; null = no limit
    allow_outside_root: bool = False  # csv: image paths may leave data.root (../, absolute paths elsewhere)
    follow_links: bool = False  # symbolic links under data.root may lead outside it (a linked image folder)


@dataclass
class ModelConfig:
    """The encoder (or detector / SAM2 model) and the classification head."""

    name: Optional[str] = None  # hub id (microsoft/rad-dino) or local directory
    config: Optional[dict[str, Any]] = None  # transformers config mapping -> random weights (offline)
    pooling: Literal["mean", "cls"] = "mean"  # encoder output -> one vector: mean of the patch tokens, or CLS
    head_hidden: int = 512  # hidden width H of the MLP head Linear(D, H) -> GELU -> Dropout -> Linear(H, C)
    head_dropout: float = 0.2  # dropout of the MLP head
    attn_implementation: Optional[str] = "sdpa"  # transformers attention: sdpa | eager | flash_attention_2
    gradient_checkpointing: bool = False  # recompute encoder activations in backward: less memory, ~25% slower
    channels_last: Optional[bool] = None  # null: on for CNN encoders on a GPU, off for ViTs (no gain)


@dataclass
class UnfreezeConfig:
    """Stage 2: progressive unfreezing of the top encoder blocks."""

    enabled: bool = True  # false: the encoder stays frozen the whole run (an MLP probe)
    top_k: Optional[int] = 10  # blocks opened at most, from the top; null = all blocks
    blocks_per_epoch: int = 2  # blocks opened per stage-2 epoch
    embeddings: bool = False  # open the patch embeddings too once every block is open (from-scratch encoders)


@dataclass
class ClassWeightsConfig:
    """Class-aware loss weights, refined from validation after each stage-2 epoch."""

    enabled: bool = True  # false: every class weight is 1
    # both: the weight multiplies both BCE terms (the paper); positive: only the positive term, as BCE's pos_weight
    # (classification with loss bce; segmentation and detection refuse it)
    apply: Literal["both", "positive"] = "both"
    heuristic: dict[str, float] = field(default_factory=dict)  # {class: multiplier} applied to the initial weights
    refine: bool = True  # refine after each stage-2 validation: w <- w * exp(eta * (mean score - class score))
    eta: float = 1.0  # step size of the refinement
    w_min: float = 0.1  # lower clip of a refined weight, relative to its initial weight
    w_max: float = 10.0  # upper clip of a refined weight, relative to its initial weight


@dataclass
class EmaConfig:
    """Exponential moving average of the weights (evaluated, checkpointed as best)."""

    enabled: bool = True  # keep an EMA of the weights and evaluate it
    decay: float = 0.999  # EMA decay in [0, 1)
    warmup: bool = True  # ramp the decay up over the first updates: min(decay, (1 + n) / (10 + n))


@dataclass
class RecipeConfig:
    """The two-stage SPFT recipe."""

    stage1_epochs: int = 2  # stage 1: epochs training the head only (encoder frozen)
    unfreeze: UnfreezeConfig = field(default_factory=UnfreezeConfig)
    class_weights: ClassWeightsConfig = field(default_factory=ClassWeightsConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)


@dataclass
class OptimConfig:
    """AdamW with per-group learning rates and a cosine schedule."""

    lr_encoder: float = 3e-6  # learning rate of the encoder blocks
    lr_head: float = 5e-5  # learning rate of the head (detection: neck and head)
    weight_decay: float = 0.05  # AdamW weight decay (not on biases and norms)
    # cosine over the run (the paper), or constant learning rates (a plain fine-tune); every task
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = 0  # linear warm-up after each unfreeze step (and at the start for the head)
    min_lr_factor: float = 0.0  # floor of the cosine schedule, as a fraction of each group's learning rate


@dataclass
class TrainerConfig:
    """The training loop (Lightning for classification and segmentation, Ultralytics for detection)."""

    max_epochs: int = 20  # epochs in all (stage 1 + stage 2)
    batch_size: int = 32  # training batch size (per device)
    eval_batch_size: Optional[int] = None  # default: 2 x batch_size
    accelerator: str = "auto"  # auto | cpu | gpu | cuda | mps
    devices: Any = 1  # an int, a list of GPU ids, or "auto"; >1 trains with DDP
    num_nodes: int = 1  # multi-node DDP (torchrun / SLURM set the ranks)
    strategy: str = "auto"  # Lightning strategy: auto | ddp | ddp_find_unused_parameters_true | ...
    compile: bool = False  # torch.compile the encoder (recompiles once per unfreeze step)
    feature_cache: bool = True  # stage 1: train the head on cached pooled features of the frozen encoder
    precision: Optional[str] = None  # default: bf16-mixed where supported, else 32-true
    patience: int = 5  # early stopping, in validations
    log_every_n_steps: int = 10  # Lightning logging interval, in optimizer steps
    progress_bar: bool = True  # show Lightning's progress bar
    deterministic: bool = False  # deterministic kernels (slower; same numbers on the same machine)
    # Quick smoke runs (e.g. a big model on a small GPU budget): per epoch, an int = that many batches, a float =
    # that fraction of the batches, null = all. Not for detection (Ultralytics has no such switch).
    limit_train_batches: Optional[int | float] = None  # per epoch: an int = that many batches, a float = a fraction
    limit_val_batches: Optional[int | float] = None  # per validation: an int = that many batches, a float = a fraction
    limit_test_batches: Optional[int | float] = None  # test scoring: an int = that many batches, a float = a fraction


@dataclass
class DetectionConfig:
    """Detection on Ultralytics (task: detection); model.name is a model YAML (yolov8n.yaml) or weights (yolov8s.pt)."""

    imgsz: int = 640  # Ultralytics input size (square, letterboxed)
    weights: Optional[str] = None  # .pt whose matching tensors load into the model built from model.name
    backbone_lr_ratio: Optional[float] = None  # backbone LR = ratio x optim.lr_head; null: optim.lr_encoder
    backbone_modules: Optional[int] = None  # default: the length of the model YAML's `backbone` list
    mosaic: float = 1.0  # Ultralytics mosaic augmentation probability
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

    structures: list[str] = field(default_factory=lambda: ["heart", "left_lung", "right_lung"])  # masks to segment
    box_jitter: float = 0.05  # training boxes: each edge moves by up to this fraction of the box side
    dice_weight: float = 1.0  # weight of the Dice term of the loss
    bce_weight: float = 1.0  # weight of the BCE term of the loss
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


@dataclass
class MlflowConfig:
    """MLflow tracking (the `track` extra): params, per-epoch metrics, tags and artifacts; off while uri is null.

    A tracking server that fails never stops training: what could not be sent goes to tracking_unsent.jsonl."""

    uri: Optional[str] = None  # tracking URI (http://host:5000, file:./mlruns, sqlite:///mlflow.db); null: no tracking
    experiment: Optional[str] = None  # MLflow experiment; null: the config's name
    run_name: Optional[str] = None  # MLflow run name; null: the run directory's name (in a sweep: <overlay>/seed<k>)
    tags: dict[str, str] = field(default_factory=dict)  # extra tags of the MLflow run, {name: value}
    parent_run_id: Optional[str] = None  # set by spft repeat / ablate: the sweep's parent run (mlflow.parentRunId)


@dataclass
class TrackingConfig:
    """Experiment tracking besides the run directory (which stays the record); valid for every task."""

    mlflow: MlflowConfig = field(default_factory=MlflowConfig)


@dataclass
class SpftConfig:
    """An experiment: the common keys and every section (which apply depends on ``task``)."""

    name: Optional[str] = None  # experiment name; default: the config file's stem
    task: str = "classification"  # picks the engine
    seed: int = 0  # seed of everything random in the run (splits default to it too)
    loss: Literal["bce", "ce"] = "bce"  # bce: multi-label (sigmoid per class); ce: one class per image (softmax)
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


# ---- which keys each task (engine) honours -----------------------------------------------------------------------
# Declared by the tasks themselves (spft.tasks.base.Task: own_keys, not_applicable, datasets, check_config) and read
# through the registry, so that adding a task does not touch this file (unless it brings a config section).

def task_names() -> tuple[str, ...]:
    """The registered tasks (:data:`spft.tasks.registry.TASKS`): the values ``task`` accepts."""
    return tuple(TASKS)


def not_applicable_table(task: str) -> dict[str, str]:
    """``{dotted key or section: why}`` for every key ``task``'s engine cannot honour: what the task declares
    (``Task.not_applicable``), then the keys other tasks declare as their own (``Task.own_keys``). A key set
    explicitly (config file or KEY=VALUE) under one of these is a ConfigError; one read back from a run's
    config.yaml only when not at its default."""
    mine = get_task(task)
    table = dict(mine.not_applicable)
    for other in task_names():
        if other != task:
            for key, why in get_task(other).own_keys.items():
                if key not in mine.own_keys:
                    table.setdefault(key, why)
    return table


def not_applicable(task: str, key: str) -> str | None:
    """Why ``key`` (dotted) does not apply to ``task`` — the reason of it or of a section above it — else None."""
    table = not_applicable_table(task)
    parts = key.split(".")
    for i in range(len(parts), 0, -1):
        reason = table.get(".".join(parts[:i]))
        if reason is not None:
            return reason
    return None


# ---- documentation of every key, from this file's trailing comments ----------------------------------------------

def _docs_from_source() -> dict[str, dict[str, str]]:
    """{class name: {field: doc}} from the trailing ``#`` comment of each field (or the comment block above it)."""
    import ast
    import inspect
    import io
    import sys
    import tokenize

    source = inspect.getsource(sys.modules[__name__])
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    lines = source.splitlines()
    docs: dict[str, dict[str, str]] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        out = docs.setdefault(node.name, {})
        for stmt in node.body:
            if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
                continue
            trailing = [comments[n] for n in range(stmt.lineno, (stmt.end_lineno or stmt.lineno) + 1) if n in comments
                        and lines[n - 1].strip() and not lines[n - 1].lstrip().startswith("#")]
            if trailing:
                out[stmt.target.id] = trailing[-1]
                continue
            above, n = [], stmt.lineno - 1
            while n >= 1 and lines[n - 1].lstrip().startswith("#"):
                above.insert(0, comments.get(n, ""))
                n -= 1
            if above:
                out[stmt.target.id] = " ".join(above)
    return docs


_DOCS: dict[str, dict[str, str]] | None = None


def field_docs(cls: type) -> dict[str, str]:
    """The one-line doc of each field of the schema dataclass ``cls``."""
    global _DOCS
    if _DOCS is None:
        _DOCS = _docs_from_source()
    import typing

    docs = dict(_DOCS.get(cls.__name__, {}))
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):  # a section's doc is its class docstring
        if f.name not in docs and dataclasses.is_dataclass(hints[f.name]):
            docs[f.name] = (hints[f.name].__doc__ or "").strip().splitlines()[0]
    return docs


# ---- every cross-field check, run once by the loader ----------------------------------------------------------------

UNCERTAIN_POLICIES = ("ignore", "zeros", "ones")


def _default(key: str) -> Any:
    node: Any = SpftConfig()
    for part in key.split("."):
        node = getattr(node, part)
    return dataclasses.asdict(node) if dataclasses.is_dataclass(node) else node


def value_at(cfg: Any, dotted: str) -> Any:
    """The value of a dotted config key."""
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


def check_applicable(cfg: SpftConfig, explicit: set[str] | frozenset[str] = frozenset()) -> None:
    """Refuse a key that ``cfg.task`` cannot honour: any of ``explicit`` (dotted keys the user set) under
    :func:`not_applicable_table`, and any such key whose value is not its default (e.g. in an old run's
    config.yaml)."""
    table = not_applicable_table(cfg.task)
    for key in sorted(explicit):
        reason = not_applicable(cfg.task, key)
        if reason is not None:
            raise ConfigError(f"'{key}': not available for {cfg.task}: {reason} — remove it from the config")
    for key in table:
        value = value_at(cfg, key)
        value = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
        default = _default(key)
        if value != default:
            where = key
            if isinstance(value, dict):
                where = next(f"{key}.{k}" for k in value if value[k] != default.get(k))
            raise ConfigError(f"'{where}': not available for {cfg.task}: {table[key]} — got "
                              f"{value_at(cfg, where)!r}; leave it at its default {_default(where)!r}")


def validate(cfg: SpftConfig, explicit: set[str] | frozenset[str] = frozenset()) -> None:
    """Every check that types alone cannot express (one place, run once when a config is loaded).

    ``explicit``: the dotted keys set by the config file or overrides (a non-applicable one is refused even at its
    default). Raises :class:`ConfigError` naming the key.
    """
    task = get_task(cfg.task)  # an unknown task: one line naming the registered ones
    check_applicable(cfg, explicit)
    task.check_config(cfg)
    _check_data(cfg.data)
    _check_model(cfg)
    _check_recipe(cfg)
    _check_trainer(cfg.trainer)
    _check_evaluation(cfg.evaluation)
    _check_tracking(cfg.tracking)


def _check_data(data: DataConfig) -> None:
    fr = data.split_fractions
    if len(fr) != 3 or any(f < 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise ConfigError(f"'data.split_fractions': expected three non-negative fractions summing to 1, got {fr}")
    if data.train_subset is not None and (isinstance(data.train_subset, bool) or not isinstance(data.train_subset, int)
                                          or data.train_subset < 1):
        raise ConfigError(f"'data.train_subset': expected a positive number of training images (or null for the "
                          f"whole train split), got {data.train_subset!r}")
    if data.image_size is not None and data.image_size < 1:
        raise ConfigError(f"'data.image_size': expected a positive number of pixels (or null for the model's "
                          f"own input size), got {data.image_size}")
    if data.max_image_pixels is not None and data.max_image_pixels < 1:
        raise ConfigError(f"'data.max_image_pixels': expected a positive pixel count (or null for no limit), "
                          f"got {data.max_image_pixels}")
    if data.num_workers is not None and data.num_workers < 0:
        raise ConfigError(f"data.num_workers must be >= 0 (or null to choose from the cores), got {data.num_workers}")
    if data.prefetch_factor is not None and data.prefetch_factor < 1:
        raise ConfigError(f"data.prefetch_factor must be >= 1 (or null to choose with the workers), "
                          f"got {data.prefetch_factor}")
    if data.name in ("chestxray14", "chexpert", "ham10000") and not data.root:
        raise ConfigError(f"'data.root' must be set when data.name is {data.name} (the folder of the download)")
    if not 0.0 < data.val_fraction < 1.0:
        raise ConfigError(f"'data.val_fraction': expected a fraction between 0 and 1, got {data.val_fraction}")
    policies = data.uncertain if isinstance(data.uncertain, dict) else {"": data.uncertain}
    for name, policy in policies.items():
        if policy not in UNCERTAIN_POLICIES:
            key = f"data.uncertain.{name}" if name else "data.uncertain"
            raise ConfigError(f"'{key}': expected one of {', '.join(UNCERTAIN_POLICIES)} (or a map "
                              f"{{class: policy, default: policy}}), got {policy!r}")
    aug = data.augment
    lo, hi = (list(aug.scale) + [1.0, 1.0])[:2]
    if not 0 < lo <= hi <= 1:
        raise ConfigError(f"data.augment.scale: expected [min, max] with 0 < min <= max <= 1, got {aug.scale}")
    for key in ("rotate", "brightness", "contrast", "hflip"):
        if getattr(aug, key) < 0:
            raise ConfigError(f"data.augment.{key} must be >= 0, got {getattr(aug, key)}")
    if aug.hflip > 1 or aug.brightness >= 1 or aug.contrast >= 1:
        raise ConfigError("data.augment: hflip is a probability (<= 1); brightness and contrast must be < 1")


def _check_model(cfg: SpftConfig) -> None:
    if cfg.model.name is None and cfg.model.config is None:
        raise ConfigError("'model.name' or 'model.config' must be set (a hub id / local directory, "
                          "or a transformers config mapping such as {model_type: dinov2, hidden_size: 64})")
    if cfg.model.config is not None and "model_type" not in cfg.model.config and cfg.model.name is None:
        raise ConfigError("'model.config.model_type' is required when building a model from a config (e.g. dinov2)")


def _check_recipe(cfg: SpftConfig) -> None:
    positive = {"trainer.max_epochs": cfg.trainer.max_epochs, "trainer.batch_size": cfg.trainer.batch_size,
                "recipe.unfreeze.blocks_per_epoch": cfg.recipe.unfreeze.blocks_per_epoch}
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"'{key}': expected a positive integer, got {value}")
    if cfg.recipe.stage1_epochs < 0:
        raise ConfigError(f"'recipe.stage1_epochs': expected >= 0, got {cfg.recipe.stage1_epochs}")
    if cfg.recipe.unfreeze.top_k is not None and cfg.recipe.unfreeze.top_k < 1:
        raise ConfigError("'recipe.unfreeze.top_k': expected >= 1 or null (all blocks), "
                          f"got {cfg.recipe.unfreeze.top_k}")
    if not 0.0 <= cfg.recipe.ema.decay < 1.0:
        raise ConfigError(f"'recipe.ema.decay': expected a value in [0, 1), got {cfg.recipe.ema.decay}")
    if cfg.recipe.class_weights.apply != "both" and cfg.loss == "ce":
        raise ConfigError(f"'recipe.class_weights.apply': {cfg.recipe.class_weights.apply!r} needs loss: bce "
                          "(softmax cross-entropy has only the positive term; leave it at 'both')")
    for name, mult in cfg.recipe.class_weights.heuristic.items():
        if mult <= 0:
            raise ConfigError(f"'recipe.class_weights.heuristic.{name}': expected a positive multiplier, got {mult}")


def _check_trainer(trainer: TrainerConfig) -> None:
    for key in ("limit_train_batches", "limit_val_batches", "limit_test_batches"):
        value = getattr(trainer, key)
        ok = value is None or (value >= 1 if isinstance(value, int) else 0.0 < value <= 1.0)
        if not ok:
            raise ConfigError(f"'trainer.{key}': expected a number of batches >= 1, a fraction in (0, 1] or "
                              f"null (all batches), got {value!r}")


def _check_evaluation(ev: EvaluationConfig) -> None:
    if ev.threshold in ("sensitivity", "specificity") and ev.target is None:
        raise ConfigError(f"'evaluation.target': evaluation.threshold={ev.threshold} needs a target "
                          f"{ev.threshold} in (0, 1), e.g. evaluation.target=0.9")
    if ev.target is not None and not 0.0 < ev.target < 1.0:
        raise ConfigError(f"'evaluation.target': expected a value in (0, 1), got {ev.target}")


def _check_tracking(tracking: TrackingConfig) -> None:
    ml = tracking.mlflow
    for key in ("uri", "experiment", "run_name", "parent_run_id"):
        value = getattr(ml, key)
        if value is not None and not str(value).strip():
            raise ConfigError(f"'tracking.mlflow.{key}': expected a non-empty string or null, got {value!r}")
    if ml.uri is None and ml.parent_run_id is not None:
        raise ConfigError("'tracking.mlflow.parent_run_id' needs tracking.mlflow.uri (the server of the parent run)")
