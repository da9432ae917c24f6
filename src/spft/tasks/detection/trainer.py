"""SPFT inside Ultralytics: trainer subclasses for YOLOv8 and RT-DETR that take every recipe decision from
:mod:`spft.recipe` (stage plan, optimizer groups, cosine, EMA decay, class weights) instead of Ultralytics' own.

Ultralytics resets ``requires_grad`` in ``_setup_train`` and builds its own optimizer, scheduler and EMA
(docs/decisions.md#ultralytics), so the hooks sit in overridden methods: ``build_optimizer`` (recipe groups, created
once), ``_setup_scheduler`` (recipe cosine per group), ``_model_train`` (the epoch's trainable state, applied after
setup and at every epoch start), ``set_class_weights`` / ``validate`` (instance-count weights refined from AP@50).

Frozen backbone modules keep their batch-norm layers in eval mode (Ultralytics' ``freeze`` rule), so a pretrained
backbone keeps its statistics, except in a randomly initialised model (``model.name`` a model YAML, no
``detection.weights``): there the running statistics were never estimated (mean 0, variance 1), eval mode makes every
batch norm the identity, and the signal vanishes through the frozen modules (YOLOv8n's SPPF output: std 6.5e-9 in
eval mode, 0.55 in train mode, measured on random images). Such frozen batch norms run in train mode, estimating
their statistics; the frozen weights still do not move (benchmarks/RESULTS.md, "Detection: why the recipe did not
learn").
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from torch import nn
from ultralytics.models.rtdetr.train import RTDETRTrainer
from ultralytics.models.yolo.detect import DetectionTrainer
from ultralytics.utils.torch_utils import unwrap_model

from spft.compat import batch_norm_base
from spft.errors import ConfigError
from spft.experiments.checkpoints import install, record_epoch
from spft.recipe import (
    LayerGroups,
    apply_trainable,
    build_optimizer,
    build_scheduler,
    ema_decay_at,
    stage_at,
    stage_plan,
    trainable_at,
)
from spft.tasks.detection import restore_pil_open
from spft.tasks.detection.dataset import randomly_initialised
from spft.tasks.detection.records import DetectionClassWeights, RunRecorder
from spft.tasks.hooks import injected_callbacks

restore_pil_open()

log = logging.getLogger(__name__)


class RecipeEmaDecay:
    """Replaces ``ModelEMA.decay``: the recipe's ``ema_decay_at(updates)``, or 0 (EMA = raw weights) when disabled."""

    def __init__(self, decay: float, warmup: bool, enabled: bool) -> None:
        self.decay, self.warmup, self.enabled = decay, warmup, enabled

    def __call__(self, updates: int) -> float:
        return ema_decay_at(int(updates), self.decay, self.warmup) if self.enabled else 0.0


def layer_groups(model: nn.Module, n_backbone: int | None) -> LayerGroups:
    """Backbone modules ``model.0 .. model.{n-1}`` are the blocks (bottom -> top); neck and head are the head."""
    seq = unwrap_model(model).model
    n = n_backbone if n_backbone is not None else len(unwrap_model(model).yaml.get("backbone", []))
    if not 0 < n < len(seq):
        raise ConfigError(f"detection.backbone_modules: {n} is not between 1 and {len(seq) - 1} for this model")
    return LayerGroups(blocks=list(seq[:n]), head=nn.ModuleList(list(seq[n:])))


_INTEGRATIONS = ("ultralytics.utils.callbacks.", "ultralytics.utils.events")  # services, and usage analytics


def drop_integration_callbacks(trainer) -> list[str]:
    """Remove the callbacks Ultralytics adds for third-party services (MLflow, W&B, ClearML, Comet, DVC, Ray Tune,
    TensorBoard, its platform) and its usage analytics (``ultralytics.utils.events``) from ``trainer``; returns the
    modules removed.

    Ultralytics switches each on when its package is installed and its setting is true (the defaults): with the
    ``track`` extra, its MLflow callback called ``mlflow.autolog()`` and wrote ``mlflow.db`` / ``mlruns/`` into the
    current directory whatever ``tracking.mlflow`` said. spft decides what is tracked and where
    (:mod:`spft.tracking`); nothing is written outside the run directory and the cache."""
    removed = set()
    for event, functions in trainer.callbacks.items():
        kept = []
        for function in functions:
            module = getattr(function, "__module__", "") or ""
            if module.startswith(_INTEGRATIONS) and module != "ultralytics.utils.callbacks.base":
                removed.add(module.rsplit(".", 1)[-1])
            else:
                kept.append(function)
        trainer.callbacks[event] = kept
    return sorted(removed)


class SpftTrainerMixin:
    """The SPFT hooks shared by the YOLOv8 and RT-DETR trainers (mixed in before the Ultralytics class)."""

    def __init__(self, *args, spft_cfg=None, run_dir=None, **kwargs) -> None:
        self.spft_cfg = spft_cfg
        self.run_dir = Path(run_dir)
        self.plan = stage_plan(spft_cfg)
        self.groups: LayerGroups | None = None
        self.class_weights: DetectionClassWeights | None = None
        self.recorder = RunRecorder(self.run_dir)
        super().__init__(*args, **kwargs)
        drop_integration_callbacks(self)
        for hook in injected_callbacks():  # SPFT_TEST_CALLBACK: a test's or a fault harness's code
            for event, function in hook.ultralytics_callbacks().items():
                self.add_callback(event, function)
        self.wdir = self.run_dir / "checkpoints"
        self.last, self.best = self.wdir / "last.pt", self.wdir / "best.pt"

    # ---- optimizer and schedule -------------------------------------------------------------------------------
    def _lrs(self) -> tuple[float, float]:
        opt = self.spft_cfg.optim
        return opt.lr_encoder, opt.lr_head

    def build_optimizer(self, model, name="auto", lr=0.001, momentum=0.9, decay=1e-5, iterations=1e5):
        """AdamW over the recipe's groups (backbone LR, neck/head LR, no decay on norms/biases), created once."""
        self.groups = layer_groups(model, self.spft_cfg.detection.backbone_modules)
        lr_backbone, lr_head = self._lrs()
        optimizer = build_optimizer(self.groups, lr_backbone, lr_head, self.spft_cfg.optim.weight_decay)
        for group in optimizer.param_groups:  # Ultralytics' OOM rebuild rescales the "weight" groups' decay
            group["param_group"] = "weight" if group["name"].endswith("/decay") else "bn"
        log.info("optimizer: AdamW, %d groups, backbone LR %.3g, neck/head LR %.3g", len(optimizer.param_groups),
                 lr_backbone, lr_head)
        return optimizer

    def _setup_scheduler(self):  # Ultralytics private: spft.compat.PRIVATE_OVERRIDES
        """Recipe schedule per group (``optim.schedule``: cosine or constant, after the warm-up), evaluated per epoch
        (Ultralytics steps its scheduler at each epoch start)."""
        steps_per_epoch = max(1, len(self.train_loader) // max(1, self.accumulate))
        warmup = math.ceil(self.spft_cfg.optim.warmup_steps / steps_per_epoch)
        self.scheduler = build_scheduler(self.optimizer, self.plan, self.groups.n_blocks, steps_per_epoch=1,
                                         total_steps=self.epochs, warmup_steps=warmup,
                                         min_factor=self.spft_cfg.optim.min_lr_factor,
                                         schedule=self.spft_cfg.optim.schedule)
        self.lf = self.scheduler.lr_lambdas[-1]  # the head's factor, for Ultralytics code that reads self.lf

    # ---- stages -------------------------------------------------------------------------------------------------
    def _setup_train(self):  # Ultralytics private: spft.compat.PRIVATE_OVERRIDES
        super()._setup_train()
        n = self.groups.n_blocks
        if randomly_initialised(self.spft_cfg) and len(trainable_at(self.plan, 0, n).open_blocks) < n:
            log.warning("%s has random weights, and the recipe freezes backbone modules at first: they compute random "
                        "features until opened (the recipe is meant for pretrained backbones; for training from "
                        "scratch see configs/phantom_detect_yolov8.yaml)", self.spft_cfg.model.name)
        self._set_ema_decay()
        self.recorder.restore(self.start_epoch, self.class_weights)
        if self.class_weights is not None:
            self._push_class_weights()

    def _set_ema_decay(self) -> None:
        ema_cfg = self.spft_cfg.recipe.ema
        if self.ema is not None:
            self.ema.decay = RecipeEmaDecay(ema_cfg.decay, ema_cfg.warmup, ema_cfg.enabled)

    def _model_train(self):  # Ultralytics private: spft.compat.PRIVATE_OVERRIDES
        """Apply the epoch's trainable state, keep frozen blocks' BN in eval mode (train mode when their statistics
        were never estimated, see the module docstring), snapshot the backbone."""
        state = trainable_at(self.plan, self.epoch, self.groups.n_blocks)
        apply_trainable(self.groups, state)
        model = unwrap_model(self.model)
        for name, p in model.named_parameters():
            if ".dfl" in name:  # Ultralytics keeps the DFL projection frozen always
                p.requires_grad_(False)
        open_set = set(state.open_blocks)
        frozen = [i for i in range(self.groups.n_blocks) if i not in open_set]
        self.freeze_layer_names = [f"model.{i}." for i in frozen] + [".dfl"]
        self.trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        self.open_blocks = len(state.open_blocks)
        log.info("epoch %d: stage %d, top %d/%d backbone modules open, %d trainable parameters", self.epoch,
                 state.stage, len(state.open_blocks), self.groups.n_blocks, self.trainable_params)
        self._set_ema_decay()  # NaN recovery rebuilds the EMA with Ultralytics' decay
        self.recorder.snapshot(self.groups)
        super()._model_train()  # train mode, except the batch norms of frozen modules (Ultralytics' freeze rule)
        if frozen and randomly_initialised(self.spft_cfg):
            for i in frozen:  # statistics never estimated: eval mode would make them the identity (module docstring)
                for m in self.groups.blocks[i].modules():
                    if isinstance(m, batch_norm_base()):
                        m.train()

    # ---- class weights --------------------------------------------------------------------------------------------
    def set_class_weights(self):
        """Instance-count weights (docs/design.md#detection) on the model, where the YOLO loss reads them; RT-DETR
        gets a loss that uses them. Runs before Ultralytics copies the model into its EMA."""
        cwc = self.spft_cfg.recipe.class_weights
        counts = [int(c) for c in self.get_class_counts()]
        names = [self.data["names"][i] for i in range(self.data["nc"])]
        self.class_weights = DetectionClassWeights(names, counts, heuristic=cwc.heuristic, enabled=cwc.enabled,
                                                   eta=cwc.eta, w_min=cwc.w_min, w_max=cwc.w_max)
        self._install_loss(unwrap_model(self.model))
        self._push_class_weights()

    def _install_loss(self, model: nn.Module) -> None:
        """Nothing for YOLOv8: ``v8DetectionLoss`` reads ``model.class_weights`` when it is built."""

    def _push_class_weights(self) -> None:
        w = self.class_weights.current.float()
        models = [unwrap_model(self.model)] + ([self.ema.ema] if self.ema is not None else [])
        for model in models:
            model.class_weights = w.to(self.device)
            criterion = getattr(model, "criterion", None)
            if criterion is not None and getattr(criterion, "class_weights", None) is not None:
                old = criterion.class_weights
                criterion.class_weights = w.to(old.device).reshape(old.shape)

    def loss_class_weights(self) -> list[float] | None:
        """The weights the training loss holds right now (None before the first batch built it)."""
        criterion = getattr(unwrap_model(self.model), "criterion", None)
        cw = getattr(criterion, "class_weights", None)
        return None if cw is None else [float(v) for v in cw.flatten().tolist()]

    def validate(self):
        """Ultralytics validation (EMA weights), then refine the class weights from per-class AP@50 in stage 2."""
        metrics, fitness = super().validate()
        box = self.validator.metrics.box
        ap50 = {int(c): float(v) for c, v in zip(box.ap_class_index, box.ap50)}
        self.per_class_ap50 = [ap50.get(i) for i in range(self.data["nc"])]
        cwc = self.spft_cfg.recipe.class_weights
        if cwc.refine and stage_at(self.plan, self.epoch) == 2:
            self.class_weights.refine(self.epoch, self.per_class_ap50)
            self._push_class_weights()
        self.recorder.write_class_weights(self.class_weights, self.loss_class_weights())
        return metrics, fitness

    # ---- records ------------------------------------------------------------------------------------------------
    def save_metrics(self, metrics):
        super().save_metrics(metrics)
        lrs = self.recorder.group_lrs(self.optimizer, self.groups.n_blocks)
        self.recorder.add_epoch(self.epoch, stage_at(self.plan, self.epoch), self.trainable_params, self.open_blocks,
                                lrs, metrics, self.groups)

    def save_model(self):
        """Ultralytics' checkpoint, written to temp files first and moved into place (never a truncated file), with
        its digest and epoch recorded beside it (so spft never has to unpickle the file to learn its epoch)."""
        final_last, final_best = self.last, self.best
        self.last, self.best = self.wdir / ".last.pt.tmp", self.wdir / ".best.pt.tmp"
        try:
            saved = super().save_model()
        finally:
            tmp_last, tmp_best = self.last, self.best
            self.last, self.best = final_last, final_best
        for tmp, final in ((tmp_best, final_best), (tmp_last, final_last)):
            if tmp.is_file():
                install(tmp, final)  # digest recorded first: --resume and evaluate verify it
                record_epoch(final, self.epoch)
        return saved


class SpftYoloTrainer(SpftTrainerMixin, DetectionTrainer):
    """YOLOv8 (any Ultralytics ``DetectionModel``) under the SPFT recipe."""


class SpftRtdetrTrainer(SpftTrainerMixin, RTDETRTrainer):
    """RT-DETR under the SPFT recipe; its loss is swapped for one that applies the class weights."""

    def _install_loss(self, model: nn.Module) -> None:
        from spft.tasks.detection.losses import WeightedRTDETRLoss

        model.criterion = WeightedRTDETRLoss(nc=model.nc, class_weights=self.class_weights.current, use_vfl=True)
