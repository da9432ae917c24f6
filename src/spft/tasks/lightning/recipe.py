"""The SPFT recipe on Lightning: :class:`RecipeModule`, the task-agnostic LightningModule glue shared by every
Lightning task (classification, segmentation).

The module holds what the task and the checkpoint need — the model and its layer groups, the stage plan (for the
optimizer's groups and schedule), the EMA weights as the ``ema`` submodule, the class/structure weights ``cw``
(which the task's loss reads), the per-epoch ``history`` rows — and does the glue: AdamW groups and the cosine
schedule from :mod:`spft.recipe`, batches to the device, the train-loss log, the checkpoint extras
(``checkpoint["spft"]``: class weights, history, classes, RNG state) and handing each validation's scores to the
recipe's callbacks. Each concern of the recipe — progressive unfreezing (and its DDP gradient sync), per-epoch
reseeding, the EMA update, class-weight refinement, the history writer, the divergence check — is a callback in
:mod:`spft.tasks.lightning.callbacks`, added by :func:`spft.tasks.lightning.trainer.build_trainer`. Tasks add their
forward, loss and validation metric, and end each validation with :meth:`RecipeModule.validation_scored`.

EMA is torch's ``AveragedModel`` held as a submodule rather than Lightning's ``EMAWeightAveraging``: we need raw
and EMA metrics each epoch, a warm-up, and both weight sets in every checkpoint regardless of
``save_weights_only`` (docs/decisions.md#lightning).
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch

from spft.devices import resolve_precision, trains_on_gpu
from spft.recipe import (
    ClassWeights,
    apply_trainable,
    build_ema,
    build_optimizer,
    build_scheduler,
    stage_plan,
    trainable_at,
)
from spft.tasks.lightning.callbacks import EpochScores, RecipeCallback, rng_state


class RecipeModule(L.LightningModule):
    """Base LightningModule running the SPFT recipe around ``self.model`` (which must offer ``layer_groups()``).

    Args:
        cfg: the resolved :class:`~spft.config.SpftConfig`.
        model: the task model; ``model.layer_groups()`` names embeddings, blocks, final norm and head.
        classes: label names (classes or structures), in the order of the weights.
        weights: the run's :class:`~spft.recipe.ClassWeights`.
        run_dir: the run directory (None in evaluation).
        head_name: how stage messages call the head (``mask decoder`` for SAM2).
    """

    def __init__(self, cfg, model, classes: list[str], weights: ClassWeights, run_dir: str | Path | None = None,
                 head_name: str = "head"):
        super().__init__()
        self.cfg = cfg
        self.model = model
        self.classes = list(classes)
        self.cw = weights
        self.run_dir = Path(run_dir) if run_dir else None
        self.head_name = head_name
        self.plan = stage_plan(cfg)
        self.groups = model.layer_groups()
        self.n_blocks = len(self.groups.blocks)
        self.ema = build_ema(model, cfg.recipe.ema.decay, cfg.recipe.ema.warmup) if cfg.recipe.ema.enabled else None
        self.history: list[dict] = []  # one row per epoch (callbacks.HistoryWriter), kept in checkpoints
        # the epoch a resumed run continues at (set when the checkpoint loads). Lightning reports the checkpoint's
        # own epoch as current_epoch until its loop restarts, i.e. while it builds the first loaders.
        self.resumed_epoch: int | None = None
        self._train_loss = (0.0, 0)
        # the model starts in its epoch-0 trainable state (what DDP registers when it wraps the model);
        # callbacks.ProgressiveUnfreezing applies each epoch's state from then on
        apply_trainable(self.groups, trainable_at(self.plan, 0, self.n_blocks))

    def apply_speed_options(self) -> dict:
        """``model.*`` / ``trainer.compile`` speed options on the raw model, after the EMA copy exists (the EMA only
        evaluates: it needs neither compile nor gradient checkpointing; the attention kernel was chosen when the
        encoder was built, so both copies share it). The EMA copy gets channels-last too. Returns what is in
        effect, with the precision, for ``env.json``."""
        from spft.models.speed import apply_speed_options

        speed = apply_speed_options(self.model, self.cfg, on_gpu=trains_on_gpu(self.cfg))
        if speed.get("channels_last") and self.ema is not None:
            self.ema.module.to(memory_format=torch.channels_last)
        self.speed = {**speed, "precision": resolve_precision(self.cfg)}
        return self.speed

    def eval_model(self) -> torch.nn.Module:
        """The weights used for evaluation and export: EMA when enabled, raw otherwise."""
        return self.ema.module if self.ema is not None else self.model

    def transfer_batch_to_device(self, batch, device, dataloader_idx: int = 0):
        """Tensors of the batch dict to ``device``; ids and groups (lists of strings) stay as they are. Lightning's
        generic version walks every string of those lists, a measurable cost per step on small models."""
        if isinstance(batch, dict):
            return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    # ---- what a task reports ------------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self._train_loss = (0.0, 0)

    def track_train_loss(self, loss: torch.Tensor, n: int) -> None:
        """A training step's loss over ``n`` samples: logged, and summed for the epoch's mean."""
        # a device tensor, read once per epoch: float(loss) every step would wait for the GPU every step
        total, count = self._train_loss
        self._train_loss = (total + loss.detach() * n, count + n)
        # loggers only record every log_every_n_steps anyway; self.log costs ~1 ms per call on small models
        if self.global_step % max(1, self.trainer.log_every_n_steps) == 0:
            self.log("train/loss", loss, prog_bar=True, batch_size=n)

    def epoch_train_loss(self) -> float | None:
        """The mean training loss of the epoch so far (None before its first step)."""
        total, count = self._train_loss
        return float(total) / count if count else None

    def validation_scored(self, scores: EpochScores) -> None:
        """The end of a task's validation: the recipe's callbacks refine the weights and write the history row."""
        for callback in self.trainer.callbacks:
            if isinstance(callback, RecipeCallback):
                callback.on_validation_scores(self.trainer, self, scores)

    # ---- optimizer ----------------------------------------------------------------------------------------------
    def head_lr(self) -> float:
        return self.cfg.optim.lr_head

    def configure_optimizers(self):
        o = self.cfg.optim
        optimizer = build_optimizer(self.groups, o.lr_encoder, self.head_lr(), o.weight_decay)
        total = self._estimated_steps()
        steps_per_epoch = max(1, math.ceil(total / max(1, self.trainer.max_epochs)))
        scheduler = build_scheduler(optimizer, self.plan, self.n_blocks, steps_per_epoch, total,
                                    warmup_steps=o.warmup_steps, min_factor=o.min_lr_factor, schedule=o.schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _estimated_steps(self) -> int:
        """Lightning's ``estimated_stepping_batches``. It builds the train loader before a resumed run's loop state
        is restored, i.e. as if at epoch 0: for a run resumed in stage 2 that would extract stage-1 features with the
        stage-2 encoder (a pass over every image, for nothing). Features and images give the same number of
        batches, so the estimate is made with the feature cache set aside when the resumed epoch does not use it."""
        dm = self.trainer.datamodule
        cache = getattr(dm, "feature_cache", None)
        resumed = self.resumed_epoch
        aside = (cache is not None and resumed is not None and hasattr(self, "uses_feature_cache")
                 and not self.uses_feature_cache(resumed))
        if aside:
            dm.feature_cache = None
        try:
            return int(self.trainer.estimated_stepping_batches)
        finally:
            if aside:
                dm.feature_cache = cache

    # ---- checkpoint extras --------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["spft"] = {"class_weights": self.cw.state_dict(), "history": self.history,
                              "classes": self.classes, "rng": rng_state()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if checkpoint.get("epoch") is not None:  # spft saves at the end of an epoch: training goes on at the next
            self.resumed_epoch = int(checkpoint["epoch"]) + 1
        extra = checkpoint.get("spft", {})
        if "class_weights" in extra:
            self.cw.load_state_dict(extra["class_weights"])
        self.history = list(extra.get("history", []))


