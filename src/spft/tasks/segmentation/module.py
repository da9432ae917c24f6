"""The SPFT segmentation LightningModule: SAM2 with box prompts, trained by the recipe in :mod:`spft.recipe`.

The recipe (optimizer groups, schedule, EMA weights, checkpoint extras:
:class:`spft.tasks.lightning.recipe.RecipeModule`; freezing, reseeding, the EMA update, weight refinement, history
rows: :mod:`spft.tasks.lightning.callbacks`) is shared with classification: per epoch the stage plan opens Hiera
blocks (stage 1: mask decoder only), per step a structure-weighted Dice + BCE and an EMA update, per validation the
mean Dice over the whole split for raw and EMA weights, structure-weight refinement from per-structure Dice in
stage 2 (``ClassWeights.refine`` takes any "higher is better" score) and one history row.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from spft.distributed import gather_by_index
from spft.metrics import dice_score, mean_dice
from spft.recipe import ClassWeights
from spft.tasks.lightning.callbacks import EpochScores
from spft.tasks.lightning.recipe import RecipeModule
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


def batch_dice(logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """``[B, P]`` Dice of thresholded logits (> 0) against masks per image and structure; NaN where the target is
    empty (a tensor, so DDP ranks can gather it)."""
    pred = (logits > 0).cpu().numpy()
    target = masks.cpu().numpy() > 0.5
    rows = [[dice_score(pred[b, p], target[b, p]) for p in range(pred.shape[1])] for b in range(pred.shape[0])]
    return torch.tensor([[float("nan") if v is None else v for v in row] for row in rows], dtype=torch.float64)


def dice_rows(table: torch.Tensor) -> list[list[float | None]]:
    """``[N, P]`` Dice tensor (NaN = empty target) as the ``[image][structure]`` lists ``mean_dice`` takes."""
    return [[None if v != v else float(v) for v in row] for row in table.tolist()]


class SegmentationModule(RecipeModule):
    """Trains :class:`~spft.models.sam2.SpftSam2` with the SPFT recipe; writes history and structure weights."""

    def __init__(self, cfg, model, structures: list[str], weights: ClassWeights, run_dir: str | Path | None = None):
        super().__init__(cfg, model, structures, weights, run_dir, head_name="mask decoder")
        self.structures = list(structures)
        self._val: dict[str, list] = {}

    def loss_fn(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        s = self.cfg.segmentation
        return weighted_dice_bce(logits, batch["masks"], batch["valid"], self.cw.current, s.dice_weight, s.bce_weight)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        boxes = jitter_boxes(batch["boxes"], batch["valid"], self.cfg.segmentation.box_jitter, self.model.size)
        logits = self.model(batch["image"], boxes)
        loss = self.loss_fn(logits, batch)
        self.track_train_loss(loss, len(logits))
        return loss

    # ---- validation ---------------------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val = {"raw": [], "ema": [], "loss": [], "index": []}

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self.model(batch["image"], batch["boxes"])
        self._val["raw"].append(batch_dice(logits, batch["masks"]))
        self._val["loss"].append(self.loss_fn(logits, batch).detach().cpu().reshape(1) * len(logits))
        self._val["index"].append(batch["index"].cpu())
        if self.ema is not None:
            self._val["ema"].append(batch_dice(self.ema.module(batch["image"], batch["boxes"]), batch["masks"]))

    def on_validation_epoch_end(self) -> None:
        val = gather_by_index(self._val, self.trainer.world_size)  # every rank: the whole split, in order
        raw = mean_dice(dice_rows(val["raw"]), self.structures)
        ema = mean_dice(dice_rows(val["ema"]), self.structures) if self.ema is not None else None
        monitored = ema if ema is not None else raw
        val_loss = float(val["loss"].sum()) / max(1, len(val["index"]))
        nan = float("nan")
        self.log("val/dice_raw", raw[0] if raw[0] is not None else nan)
        if ema is not None:
            self.log("val/dice_ema", ema[0] if ema[0] is not None else nan)
        self.log("val/dice", monitored[0] if monitored[0] is not None else nan, prog_bar=True)
        self.log("val/loss", val_loss)
        if self.trainer.sanity_checking:
            return
        metrics = {"val_dice_raw": raw[0], "val_dice_ema": ema[0] if ema is not None else None}
        metrics.update({f"val_dice_{s}": monitored[1][s] for s in self.structures})
        self.validation_scored(EpochScores([monitored[1][s] for s in self.structures], val_loss, metrics,
                                           "structure_weight"))
        shown = f"{monitored[0]:.4f}" if monitored[0] is not None else "undefined"
        log.info("epoch %d: val mean Dice %s (%s); weights %s", self.current_epoch, shown,
                 "EMA" if ema is not None else "raw",
                 ", ".join(f"{s} {float(w):.3f}" for s, w in zip(self.structures, self.cw.current)))
