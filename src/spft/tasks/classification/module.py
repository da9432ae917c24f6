"""The SPFT classification LightningModule: it runs the recipe from :mod:`spft.recipe`, it does not re-implement it.

Per epoch: the stage plan decides which blocks train (idempotent freezing, reseeded RNG so a resumed epoch equals
an uninterrupted one). Per step: weighted BCE (or CE) with unknown labels masked, then an EMA update. Per
validation: AUC over the whole split for the raw and the EMA weights, class-weight refinement in stage 2, one
history row. EMA is torch's ``AveragedModel`` held as a submodule rather than Lightning's ``EMAWeightAveraging``:
we need both raw and EMA AUC each epoch, a warm-up, and both weight sets in every checkpoint regardless of
``save_weights_only`` (specs/engines.md C1).
"""

from __future__ import annotations

import logging
import math
import random
from pathlib import Path

import lightning as L
import numpy as np
import torch

from spft.experiments.rundir import atomic_write_csv, atomic_write_json
from spft.metrics import multilabel_auc
from spft.models.classifier import SpftClassifier
from spft.recipe import (
    ClassWeights,
    StagePlan,
    apply_trainable,
    build_ema,
    build_optimizer,
    build_scheduler,
    describe,
    trainable_at,
    weighted_bce,
    weighted_ce,
)

log = logging.getLogger(__name__)


def stage_plan(recipe_cfg) -> StagePlan:
    u = recipe_cfg.unfreeze
    return StagePlan(stage1_epochs=recipe_cfg.stage1_epochs, unfreeze=u.enabled, top_k=u.top_k,
                     blocks_per_epoch=u.blocks_per_epoch, embeddings=u.embeddings)


def seed_everything_for_epoch(seed: int, epoch: int) -> None:
    """Reseed python, numpy and torch from (seed, epoch): training randomness becomes a function of the epoch."""
    s = (seed * 1_000_003 + epoch) % (2**31)
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


class ClassificationModule(L.LightningModule):
    """Trains an :class:`SpftClassifier` with the SPFT recipe; writes history and class weights to ``run_dir``."""

    def __init__(self, cfg, model: SpftClassifier, classes: list[str], class_weights: ClassWeights,
                 run_dir: str | Path | None = None):
        super().__init__()
        self.cfg = cfg
        self.model = model
        self.classes = list(classes)
        self.cw = class_weights
        self.run_dir = Path(run_dir) if run_dir else None
        self.plan = stage_plan(cfg.recipe)
        self.groups = model.layer_groups()
        self.n_blocks = len(self.groups.blocks)
        self.ema = build_ema(model, cfg.recipe.ema.decay, cfg.recipe.ema.warmup) if cfg.recipe.ema.enabled else None
        self.history: list[dict] = []
        self._state = None
        self._val: dict[str, list] = {}
        self._train_loss = (0.0, 0)
        apply_trainable(self.groups, trainable_at(self.plan, 0, self.n_blocks))

    # ---- recipe hooks -------------------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        epoch = self.current_epoch
        state = trainable_at(self.plan, epoch, self.n_blocks)
        n_trainable = apply_trainable(self.groups, state)
        if state != self._state:
            log.info("epoch %d: %s (%s trainable parameters)", epoch, describe(state, self.n_blocks),
                     f"{n_trainable:,}")
        self._state = state
        self._n_trainable = n_trainable
        self._train_loss = (0.0, 0)

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # Reseed at the first batch, not at epoch start: on resume Lightning creates the DataLoader iterator (which
        # draws from the global RNG) at a different moment than in an uninterrupted run.
        if batch_idx == 0:
            seed_everything_for_epoch(self.cfg.seed, self.current_epoch)
            # the learning rates of the epoch's first step, one per recipe part, for history.csv
            self._epoch_lrs = {}
            for group in self.trainer.optimizers[0].param_groups:
                self._epoch_lrs.setdefault(f"lr_{group['part']}", group["lr"])

    def loss_fn(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        weights = self.cw.current.to(logits.device, torch.float32)
        if self.cfg.loss == "ce":
            return weighted_ce(logits.float(), labels, weights)
        return weighted_bce(logits.float(), labels, weights)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self.model(batch["image"])
        loss = self.loss_fn(logits, batch["labels"])
        total, n = self._train_loss
        self._train_loss = (total + float(loss.detach()) * len(logits), n + len(logits))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(logits))
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    # ---- validation ---------------------------------------------------------------------------------------------
    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float(), -1) if self.cfg.loss == "ce" else torch.sigmoid(logits.float())

    def eval_model(self) -> torch.nn.Module:
        """The weights used for evaluation and export: EMA when enabled, raw otherwise."""
        return self.ema.module if self.ema is not None else self.model

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
        refined = False
        state = trainable_at(self.plan, self.current_epoch, self.n_blocks)
        if state.stage == 2 and self.cfg.recipe.class_weights.refine and self.cw.enabled:
            self.cw.refine(self.current_epoch, monitored.as_list())
            refined = True
        self._record_epoch(raw, ema, val_loss, state, refined)

    def _record_epoch(self, raw, ema, val_loss: float, state, refined: bool) -> None:
        train_total, train_n = self._train_loss
        row = {
            "epoch": self.current_epoch,
            "stage": state.stage,
            "open_blocks": len(state.open_blocks),
            "trainable_params": getattr(self, "_n_trainable", 0),
            "step": self.global_step,
            "train_loss": train_total / train_n if train_n else None,
            "val_loss": val_loss,
            "val_auc_raw": raw.macro,
            "val_auc_ema": ema.macro if ema is not None else None,
        }
        row.update(getattr(self, "_epoch_lrs", {}))
        row.update({f"w_{c}": float(w) for c, w in zip(self.classes, self.cw.current)})
        self.history.append(row)
        self.log("stage", float(state.stage))
        self.log("trainable_params", float(row["trainable_params"]))
        for c, w in zip(self.classes, self.cw.current):
            self.log(f"class_weight/{c}", float(w))
        if self.run_dir is not None and self.trainer.is_global_zero:
            atomic_write_csv(self.run_dir / "history.csv", [_clean(r) for r in self.history])
            if refined or not (self.run_dir / "class_weights.json").exists():
                atomic_write_json(self.run_dir / "class_weights.json", self.cw.as_dict())
        auc_text = f"{row['val_auc_ema']:.4f} (EMA), " if row["val_auc_ema"] is not None else ""
        log.info("epoch %d: val macro AUC %s%s (raw)", self.current_epoch, auc_text,
                 f"{raw.macro:.4f}" if raw.macro is not None else "undefined")

    # ---- optimizer ----------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        o = self.cfg.optim
        optimizer = build_optimizer(self.groups, o.lr_encoder, o.lr_head, o.weight_decay)
        total = int(self.trainer.estimated_stepping_batches)
        steps_per_epoch = max(1, math.ceil(total / max(1, self.trainer.max_epochs)))
        scheduler = build_scheduler(optimizer, self.plan, self.n_blocks, steps_per_epoch, total,
                                    warmup_steps=o.warmup_steps, min_factor=o.min_lr_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- checkpoint extras --------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["spft"] = {"class_weights": self.cw.state_dict(), "history": self.history,
                              "classes": self.classes, "rng": _rng_state()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        extra = checkpoint.get("spft", {})
        if "class_weights" in extra:
            self.cw.load_state_dict(extra["class_weights"])
        self.history = list(extra.get("history", []))


def _rng_state() -> dict:
    """Recorded for provenance; resume does not need it because every epoch reseeds from (seed, epoch)."""
    # plain types only: Lightning loads checkpoints with torch.load(weights_only=True), which refuses numpy objects
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            "python": random.getstate()}


def _clean(row: dict) -> dict:
    return {k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v) for k, v in row.items()}
