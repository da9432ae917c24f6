"""The SPFT classification LightningModule: task-specific parts only (forward, loss, AUC validation).

The recipe itself — stage plan, freezing, reseeding, EMA, optimizer groups, schedule, class weights in
checkpoints and the history rows — lives in :class:`spft.tasks.lightning_recipe.RecipeModule`, shared with
segmentation. Per validation: AUC over the whole split for the raw and the EMA weights, then the class-weight
refinement from the monitored (EMA) AUC in stage 2.
"""

from __future__ import annotations

import logging

import torch

from spft.metrics import multilabel_auc
from spft.recipe import weighted_bce, weighted_ce
from spft.tasks.lightning_recipe import (  # noqa: F401  (re-exported for callers of the old location)
    RecipeModule,
    seed_everything_for_epoch,
    stage_plan,
)

log = logging.getLogger(__name__)


class ClassificationModule(RecipeModule):
    """Trains an :class:`~spft.models.classifier.SpftClassifier` with the SPFT recipe."""

    def loss_fn(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        weights = self.cw.current.to(logits.device, torch.float32)
        if self.cfg.loss == "ce":
            return weighted_ce(logits.float(), labels, weights)
        return weighted_bce(logits.float(), labels, weights)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self.model(batch["image"])
        loss = self.loss_fn(logits, batch["labels"])
        self.track_train_loss(loss, len(logits))
        return loss

    # ---- validation ---------------------------------------------------------------------------------------------
    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float(), -1) if self.cfg.loss == "ce" else torch.sigmoid(logits.float())

    def on_validation_epoch_start(self) -> None:
        self._val = {"raw": [], "ema": [], "labels": [], "loss": []}

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self.model(batch["image"])
        self._val["raw"].append(self.probabilities(logits).cpu())
        self._val["loss"].append(float(self.loss_fn(logits, batch["labels"])) * len(logits))
        if self.ema is not None:
            self._val["ema"].append(self.probabilities(self.ema.module(batch["image"])).cpu())
        self._val["labels"].append(batch["labels"].cpu())

    def on_validation_epoch_end(self) -> None:
        labels = torch.cat(self._val["labels"]).numpy()
        raw = multilabel_auc(torch.cat(self._val["raw"]).numpy(), labels, self.classes)
        ema = multilabel_auc(torch.cat(self._val["ema"]).numpy(), labels, self.classes) if self.ema else None
        monitored = ema if ema is not None else raw
        val_loss = sum(self._val["loss"]) / max(1, len(labels))
        nan = float("nan")
        self.log("val/auc_raw", raw.macro if raw.macro is not None else nan)
        if ema is not None:
            self.log("val/auc_ema", ema.macro if ema.macro is not None else nan)
        self.log("val/auc", monitored.macro if monitored.macro is not None else nan, prog_bar=True)
        self.log("val/loss", val_loss)
        if self.trainer.sanity_checking:
            return
        state, refined = self.refine_weights(monitored.as_list())
        self.record_epoch(state, refined, val_loss, {"val_auc_raw": raw.macro,
                                                     "val_auc_ema": ema.macro if ema is not None else None},
                          weight_log="class_weight")
        ema_text = f"{ema.macro:.4f} (EMA), " if ema is not None and ema.macro is not None else ""
        log.info("epoch %d: val macro AUC %s%s (raw)", self.current_epoch, ema_text,
                 f"{raw.macro:.4f}" if raw.macro is not None else "undefined")
