"""The typed configuration schema: every section of an spft config, its keys, their types, defaults and one-line docs.

Sections are chosen per run: the keys every task reads (``run``, ``recipe``, ``optim``, ``tracking``, the top-level
keys) have one class here; the sections that depend on the engine have a base class with the keys every engine reads
and one subclass per engine (``model``: :class:`ModelConfig` → :class:`EncoderModelConfig` for transformers
encoders → :class:`ClassifierModelConfig` with the head; ``trainer``: :class:`TrainerConfig` →
:class:`LightningTrainerConfig`); a task's own section (``detection``, ``segmentation``, ``evaluation``) exists only
for that task; ``data`` has one class per dataset (:mod:`spft.config.datasets`, chosen by ``data.name``). A task
declares which class each section takes (:attr:`spft.tasks.base.Task.sections`), so a key its engine never reads is
simply not in its schema: :mod:`spft.config.loader` builds the run's :class:`SpftConfig` from those classes and
refuses any other key, naming the tasks or datasets that have it. This module imports no task.

Defaults are the paper's recipe (docs/design.md#defaults) where the paper fixes a value and the project's choice
where it is silent (docs/deviations.md). The trailing ``#`` comment of each field is its documentation (``spft
config --keys``, docs/config-keys.md), read from the source by :func:`field_docs`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Optional


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

    def check(self) -> None:
        """Refuse values no augmentation can draw from (the loader runs it; :class:`spft.data.augment.Augment` again
        for a config built in code); a :class:`~spft.errors.ConfigError` naming the key."""
        from spft.errors import ConfigError

        lo, hi = (list(self.scale) + [1.0, 1.0])[:2]
        if not 0 < lo <= hi <= 1:
            raise ConfigError(f"data.augment.scale: expected [min, max] with 0 < min <= max <= 1, got {self.scale}")
        for key in ("rotate", "brightness", "contrast", "hflip"):
            if getattr(self, key) < 0:
                raise ConfigError(f"data.augment.{key} must be >= 0, got {getattr(self, key)}")
        if self.hflip > 1 or self.brightness >= 1 or self.contrast >= 1:
            raise ConfigError("data.augment: hflip is a probability (<= 1); brightness and contrast must be < 1")


@dataclass
class ModelConfig:
    """The model every engine loads by name (detection: an Ultralytics model YAML or weights)."""

    # hub id (microsoft/rad-dino), local directory, a built-in spft: encoder (spft:phantom-dinov2, pretrained on first
    # use), or (detection) a model YAML / .pt
    name: Optional[str] = None


@dataclass
class EncoderModelConfig(ModelConfig):
    """A transformers model (the Dinov2 encoder, SAM2): loaded by name or built from a config mapping."""

    config: Optional[dict[str, Any]] = None  # transformers config mapping -> random weights (offline)
    attn_implementation: Optional[str] = "sdpa"  # transformers attention: sdpa | eager | flash_attention_2
    gradient_checkpointing: bool = False  # recompute encoder activations in backward: less memory, ~25% slower
    channels_last: Optional[bool] = None  # null: on for CNN encoders on a GPU, off for ViTs (no gain)


@dataclass
class ClassifierModelConfig(EncoderModelConfig):
    """The encoder and the classification head."""

    pooling: Literal["mean", "cls"] = "mean"  # encoder output -> one vector: mean of the patch tokens, or CLS
    head_hidden: int = 512  # hidden width H of the MLP head Linear(D, H) -> GELU -> Dropout -> Linear(H, C)
    head_dropout: float = 0.2  # dropout of the MLP head


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

    lr_encoder: float = 3e-6  # learning rate of the encoder blocks (detection: the backbone)
    lr_head: float = 5e-5  # learning rate of the head (detection: neck and head; segmentation: the mask decoder)
    weight_decay: float = 0.05  # AdamW weight decay (not on biases and norms)
    # cosine over the run (the paper), or constant learning rates (a plain fine-tune); every task
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = 0  # linear warm-up after each unfreeze step (and at the start for the head)
    min_lr_factor: float = 0.0  # floor of the cosine schedule, as a fraction of each group's learning rate


@dataclass
class TrainerConfig:
    """The training loop, the keys every engine reads (Lightning for classification and segmentation, Ultralytics for
    detection)."""

    max_epochs: int = 20  # epochs in all (stage 1 + stage 2)
    batch_size: int = 32  # training batch size (per device)
    eval_batch_size: Optional[int] = None  # default: 2 x batch_size
    accelerator: str = "auto"  # auto | cpu | gpu | cuda | mps
    patience: int = 5  # early stopping, in validations
    deterministic: bool = False  # deterministic kernels (slower; same numbers on the same machine)


@dataclass
class LightningTrainerConfig(TrainerConfig):
    """The training loop on Lightning (classification, segmentation): devices, precision, logging, smoke runs."""

    devices: Any = 1  # an int, a list of GPU ids, or "auto"; >1 trains with DDP
    num_nodes: int = 1  # multi-node DDP (torchrun / SLURM set the ranks)
    strategy: str = "auto"  # Lightning strategy: auto | ddp | ddp_find_unused_parameters_true | ...
    compile: bool = False  # torch.compile the encoder (recompiles once per unfreeze step)
    precision: Optional[str] = None  # default: bf16-mixed where supported, else 32-true
    log_every_n_steps: int = 10  # Lightning logging interval, in optimizer steps
    progress_bar: bool = True  # show Lightning's progress bar
    # Quick smoke runs (e.g. a big model on a small GPU budget): an int = that many batches, a float = that fraction
    # of the batches, null = all.
    limit_train_batches: Optional[int | float] = None  # per epoch: an int = that many batches, a float = a fraction
    limit_val_batches: Optional[int | float] = None  # per validation: an int = that many batches, a float = a fraction
    limit_test_batches: Optional[int | float] = None  # test scoring: an int = that many batches, a float = a fraction


@dataclass
class ClassifierTrainerConfig(LightningTrainerConfig):
    """The classification training loop: Lightning's keys and the stage-1 feature cache."""

    feature_cache: bool = True  # stage 1: train the head on cached pooled features of the frozen encoder


@dataclass
class DetectionConfig:
    """Detection on Ultralytics (task: detection); model.name is a model YAML (yolov8n.yaml) or weights (yolov8s.pt)."""

    imgsz: int = 640  # Ultralytics input size (square, letterboxed)
    weights: Optional[str] = None  # .pt whose matching tensors load into the model built from model.name
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
    """An experiment: the common keys and the sections; the loader fills each section with the class the run's task
    and dataset take (``None``: a task section this task does not have)."""

    name: Optional[str] = None  # experiment name; default: the config file's stem
    task: str = "classification"  # picks the engine
    seed: int = 0  # seed of everything random in the run (splits default to it too)
    loss: Literal["bce", "ce"] = "bce"  # bce: multi-label (sigmoid per class); ce: one class per image (softmax)
    run: RunConfig = field(default_factory=RunConfig)
    data: Any = None  # a spft.config.datasets class, chosen by data.name
    model: ModelConfig = field(default_factory=ClassifierModelConfig)
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=ClassifierTrainerConfig)
    detection: Optional[DetectionConfig] = None
    segmentation: Optional[SegmentationConfig] = None
    evaluation: Optional[EvaluationConfig] = None
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


# Sections whose class depends on the run (the task's Task.sections, or data.name); the others are fixed above.
VARIABLE_SECTIONS = ("data", "model", "trainer", "detection", "segmentation", "evaluation")


def value_at(cfg: Any, dotted: str) -> Any:
    """The value of a dotted config key."""
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node


# ---- documentation of every key, from this file's trailing comments ----------------------------------------------

def _docs_from_source(module: str) -> dict[str, dict[str, str]]:
    """{class name: {field: doc}} of ``module`` from the trailing ``#`` comment of each field (or the comment block
    above it)."""
    import ast
    import inspect
    import io
    import sys
    import tokenize

    source = inspect.getsource(sys.modules[module])
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


_DOCS: dict[str, dict[str, dict[str, str]]] = {}  # module -> class -> field -> doc


def field_docs(cls: type) -> dict[str, str]:
    """The one-line doc of each field of the schema dataclass ``cls`` (inherited fields from their own class)."""
    import typing

    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            if klass.__module__ not in _DOCS:
                _DOCS[klass.__module__] = _docs_from_source(klass.__module__)
            docs.update(_DOCS[klass.__module__].get(klass.__name__, {}))
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):  # a section's doc is its class docstring
        if f.name not in docs and dataclasses.is_dataclass(hints[f.name]):
            docs[f.name] = (hints[f.name].__doc__ or "").strip().splitlines()[0]
    return docs
