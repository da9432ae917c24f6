"""The SPFT segmentation LightningModule: SAM2 with box prompts, trained by the recipe in :mod:`spft.recipe`.

Same skeleton as :class:`spft.tasks.classification.module.ClassificationModule`: per epoch the stage plan opens
Hiera blocks (stage 1: mask decoder only), per step a structure-weighted Dice + BCE and an EMA update, per
validation the mean Dice over the whole split for raw and EMA weights, structure-weight refinement from per-structure
Dice in stage 2 (``ClassWeights.refine`` takes any "higher is better" score) and one history row.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import lightning as L
import torch

from spft.experiments.rundir import atomic_write_csv, atomic_write_json
from spft.metrics import dice_score, mean_dice
from spft.recipe import (
    ClassWeights,
    apply_trainable,
    build_ema,
    build_optimizer,
    build_scheduler,
    describe,
    trainable_at,
)
from spft.tasks.classification.module import _clean, _rng_state, seed_everything_for_epoch, stage_plan
from spft.tasks.segmentation.loss import weighted_dice_bce

log = logging.getLogger(__name__)


def jitter_boxes(boxes: torch.Tensor, valid: torch.Tensor, fraction: float, size: int) -> torch.Tensor:
    """Move each box edge by up to ``fraction`` of the box's width/height (uniform, global torch RNG)."""
    if fraction <= 0:
        return boxes
    wh = (boxes[..., 2:] - boxes[..., :2]).clamp_min(1.0).repeat(1, 1, 2)
    moved = boxes + (torch.rand_like(boxes) * 2 - 1) * fraction * wh
    moved = moved.clamp(0, size - 1)
    lo, hi = torch.minimum(moved[..., :2], moved[..., 2:]), torch.maximum(moved[..., :2], moved[..., 2:])
    return torch.where(valid[..., None], torch.cat([lo, hi], -1), boxes)


def batch_dice(logits: torch.Tensor, masks: torch.Tensor) -> list[list[float | None]]:
    """Per-image, per-structure Dice of thresholded logits (> 0) against masks; None where the target is empty."""
    pred = (logits > 0).cpu().numpy()
    target = masks.cpu().numpy() > 0.5
    return [[dice_score(pred[b, p], target[b, p]) for p in range(pred.shape[1])] for b in range(pred.shape[0])]


class SegmentationModule(L.LightningModule):
    """Trains :class:`~spft.models.sam2.SpftSam2` with the SPFT recipe; writes history and structure weights."""

    def __init__(self, cfg, model, structures: list[str], weights: ClassWeights, run_dir: str | Path | None = None):
        super().__init__()
        self.cfg = cfg
        self.model = model
        self.structures = list(structures)
        self.classes = self.structures  # the name reporting and evaluation share with classification
        self.cw = weights
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
        state = trainable_at(self.plan, self.current_epoch, self.n_blocks)
        self._n_trainable = apply_trainable(self.groups, state)
        if state != self._state:
            log.info("epoch %d: %s (%s trainable parameters)", self.current_epoch,
                     describe(state, self.n_blocks).replace("head", "mask decoder"), f"{self._n_trainable:,}")
        self._state = state
        self._train_loss = (0.0, 0)

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        if batch_idx == 0:  # reseed at the first batch: box jitter of epoch e is the same on resume
            seed_everything_for_epoch(self.cfg.seed, self.current_epoch)
            self._epoch_lrs = {}
            for group in self.trainer.optimizers[0].param_groups:
                self._epoch_lrs.setdefault(f"lr_{group['part']}", group["lr"])

    def loss_fn(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        s = self.cfg.segmentation
        return weighted_dice_bce(logits, batch["masks"], batch["valid"], self.cw.current, s.dice_weight, s.bce_weight)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        boxes = jitter_boxes(batch["boxes"], batch["valid"], self.cfg.segmentation.box_jitter, self.model.size)
        logits = self.model(batch["image"], boxes)
        loss = self.loss_fn(logits, batch)
        total, n = self._train_loss
        self._train_loss = (total + float(loss.detach()) * len(logits), n + len(logits))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(logits))
        return loss

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    # ---- validation ---------------------------------------------------------------------------------------------
    def eval_model(self) -> torch.nn.Module:
        """The weights used for evaluation and export: EMA when enabled, raw otherwise."""
        return self.ema.module if self.ema is not None else self.model

    def on_validation_epoch_start(self) -> None:
        self._val = {"raw": [], "ema": [], "loss": []}

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self.model(batch["image"], batch["boxes"])
        self._val["raw"].extend(batch_dice(logits, batch["masks"]))
        self._val["loss"].append(float(self.loss_fn(logits, batch)) * len(logits))
        if self.ema is not None:
            self._val["ema"].extend(batch_dice(self.ema.module(batch["image"], batch["boxes"]), batch["masks"]))

    def on_validation_epoch_end(self) -> None:
        raw = mean_dice(self._val["raw"], self.structures)
        ema = mean_dice(self._val["ema"], self.structures) if self.ema is not None else None
        monitored = ema if ema is not None else raw
        val_loss = sum(self._val["loss"]) / max(1, len(self._val["raw"]))
        nan = float("nan")
        self.log("val/dice_raw", raw[0] if raw[0] is not None else nan)
        if ema is not None:
            self.log("val/dice_ema", ema[0] if ema[0] is not None else nan)
        self.log("val/dice", monitored[0] if monitored[0] is not None else nan, prog_bar=True)
        self.log("val/loss", val_loss)
        if self.trainer.sanity_checking:
            return
        state = trainable_at(self.plan, self.current_epoch, self.n_blocks)
        refined = state.stage == 2 and self.cfg.recipe.class_weights.refine and self.cw.enabled
        if refined:
            self.cw.refine(self.current_epoch, [monitored[1][s] for s in self.structures])
        self._record_epoch(raw, ema, monitored, val_loss, state, refined)

    def _record_epoch(self, raw, ema, monitored, val_loss: float, state, refined: bool) -> None:
        train_total, train_n = self._train_loss
        row = {"epoch": self.current_epoch, "stage": state.stage, "open_blocks": len(state.open_blocks),
               "trainable_params": getattr(self, "_n_trainable", 0), "step": self.global_step,
               "train_loss": train_total / train_n if train_n else None, "val_loss": val_loss,
               "val_dice_raw": raw[0], "val_dice_ema": ema[0] if ema is not None else None}
        row.update({f"val_dice_{s}": monitored[1][s] for s in self.structures})
        row.update(getattr(self, "_epoch_lrs", {}))
        row.update({f"w_{s}": float(w) for s, w in zip(self.structures, self.cw.current)})
        self.history.append(row)
        self.log("stage", float(state.stage))
        for s, w in zip(self.structures, self.cw.current):
            self.log(f"structure_weight/{s}", float(w))
        if self.run_dir is not None and self.trainer.is_global_zero:
            atomic_write_csv(self.run_dir / "history.csv", [_clean(r) for r in self.history])
            if refined or not (self.run_dir / "class_weights.json").exists():
                atomic_write_json(self.run_dir / "class_weights.json", self.cw.as_dict())
        shown = f"{monitored[0]:.4f}" if monitored[0] is not None else "undefined"
        log.info("epoch %d: val mean Dice %s (%s); weights %s", self.current_epoch, shown,
                 "EMA" if ema is not None else "raw",
                 ", ".join(f"{s} {float(w):.3f}" for s, w in zip(self.structures, self.cw.current)))

    # ---- optimizer ----------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        o, s = self.cfg.optim, self.cfg.segmentation
        lr_decoder = s.lr_decoder if s.lr_decoder is not None else o.lr_head
        optimizer = build_optimizer(self.groups, o.lr_encoder, lr_decoder, o.weight_decay)
        total = int(self.trainer.estimated_stepping_batches)
        steps_per_epoch = max(1, math.ceil(total / max(1, self.trainer.max_epochs)))
        scheduler = build_scheduler(optimizer, self.plan, self.n_blocks, steps_per_epoch, total,
                                    warmup_steps=o.warmup_steps, min_factor=o.min_lr_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ---- checkpoint extras --------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["spft"] = {"class_weights": self.cw.state_dict(), "history": self.history,
                              "classes": self.structures, "rng": _rng_state()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        extra = checkpoint.get("spft", {})
        if "class_weights" in extra:
            self.cw.load_state_dict(extra["class_weights"])
        self.history = list(extra.get("history", []))
