"""The SPFT classification LightningModule: task-specific parts only (forward, loss, AUC validation).

The recipe itself — optimizer groups, schedule, EMA weights and checkpoint extras in
:class:`spft.tasks.lightning.recipe.RecipeModule`; freezing, reseeding, the EMA update, class-weight refinement and
the history rows in :mod:`spft.tasks.lightning.callbacks` — is shared with segmentation. Per validation: AUC over
the whole split for the raw and the EMA weights, handed to the recipe
(:class:`~spft.tasks.lightning.callbacks.EpochScores`), which refines the class weights from the monitored (EMA)
AUC in stage 2.
"""

from __future__ import annotations

import logging

import torch

from spft.distributed import gather_by_index
from spft.metrics import multilabel_auc
from spft.recipe import trainable_at, weighted_bce, weighted_ce
from spft.tasks.lightning.callbacks import EpochScores
from spft.tasks.lightning.recipe import RecipeModule

log = logging.getLogger(__name__)


class ClassificationModule(RecipeModule):
    """Trains an :class:`~spft.models.classifier.SpftClassifier` with the SPFT recipe."""

    def loss_fn(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        weights = self.cw.current.to(logits.device, torch.float32)
        if self.cfg.loss == "ce":
            return weighted_ce(logits.float(), labels, weights)
        return weighted_bce(logits.float(), labels, weights, self.cfg.recipe.class_weights.apply)

    feature_cache_blocker: str | None = "not set up"  # set by build_run: why stage 1 cannot use cached features

    def uses_feature_cache(self, epoch: int) -> bool:
        """Stage-1 epochs train the head on cached encoder features unless :attr:`feature_cache_blocker` says no."""
        return self.feature_cache_blocker is None and trainable_at(self.plan, epoch, self.n_blocks).stage == 1

    def encoder_frozen_now(self) -> bool:
        return trainable_at(self.plan, self.current_epoch, self.n_blocks).stage == 1

    def forward_batch(self, batch: dict, model=None) -> torch.Tensor:
        """Logits of ``model`` (default: the raw model) for an image batch or a batch of cached features."""
        model = self.model if model is None else model
        if "features" in batch:
            return model.head(batch["features"])
        return model(batch["image"])

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self.forward_batch(batch)
        loss = self.loss_fn(logits, batch["labels"])
        self.track_train_loss(loss, len(logits))
        return loss

    # ---- validation ---------------------------------------------------------------------------------------------
    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float(), -1) if self.cfg.loss == "ce" else torch.sigmoid(logits.float())

    def on_validation_epoch_start(self) -> None:
        self._val = {"raw": [], "ema": [], "labels": [], "loss": [], "index": []}

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        if "features" not in batch and self.ema is not None and self.encoder_frozen_now():
            # stage 1: the EMA encoder is bit-identical to the frozen one (frozen parameters are never averaged),
            # so one encoder pass serves both heads
            batch = {**batch, "features": self.model.features(batch["image"])}
        logits = self.forward_batch(batch)
        self._val["raw"].append(self.probabilities(logits).cpu())
        self._val["loss"].append(self.loss_fn(logits, batch["labels"]).detach().cpu().reshape(1) * len(logits))
        if self.ema is not None:
            self._val["ema"].append(self.probabilities(self.forward_batch(batch, self.ema.module)).cpu())
        self._val["labels"].append(batch["labels"].cpu())
        self._val["index"].append(batch["index"].cpu())

    def on_validation_epoch_end(self) -> None:
        val = gather_by_index(self._val, self.trainer.world_size)  # every rank: the whole split, in order
        labels = val["labels"].numpy()
        raw = multilabel_auc(val["raw"].numpy(), labels, self.classes)
        ema = multilabel_auc(val["ema"].numpy(), labels, self.classes) if self.ema else None
        monitored = ema if ema is not None else raw
        val_loss = float(val["loss"].sum()) / max(1, len(labels))
        nan = float("nan")
        self.log("val/auc_raw", raw.macro if raw.macro is not None else nan)
        if ema is not None:
            self.log("val/auc_ema", ema.macro if ema.macro is not None else nan)
        self.log("val/auc", monitored.macro if monitored.macro is not None else nan, prog_bar=True)
        self.log("val/loss", val_loss)
        if self.trainer.sanity_checking:
            return
        self.validation_scored(EpochScores(monitored.as_list(), val_loss, {
            "val_auc_raw": raw.macro, "val_auc_ema": ema.macro if ema is not None else None}, "class_weight"))
        ema_text = f"{ema.macro:.4f} (EMA), " if ema is not None and ema.macro is not None else ""
        log.info("epoch %d: val macro AUC %s%s (raw)", self.current_epoch, ema_text,
                 f"{raw.macro:.4f}" if raw.macro is not None else "undefined")
