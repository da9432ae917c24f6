"""What a segmentation run is made of: the mask table, SAM2 and its preprocessing, the structure weights, module and
datamodule (:func:`build_run`, shared by training, resume and ``spft evaluate``) and its ``data.json``
(:func:`describe_data`)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from spft.config import SpftConfig
from spft.data.masks import build_mask_table, pixel_prevalence
from spft.devices import trains_on_gpu
from spft.models.sam2 import build_sam2
from spft.recipe import ClassWeights
from spft.tasks.segmentation.datamodule import SegmentationDataModule
from spft.tasks.segmentation.module import SegmentationModule

log = logging.getLogger(__name__)

MONITOR = "val/dice"


def structure_weights(cfg: SpftConfig, table) -> ClassWeights:
    """Per-structure weights from pixel prevalence: w0 = N_neg / N_pos over training pixels, mean 1
    (docs/design.md#segmentation).

    The recipe's ``ClassWeights`` counts soft labels fractionally, so one row holding each structure's foreground
    fraction f gives exactly w0 = (1 - f) / f.
    """
    cwc = cfg.recipe.class_weights
    fractions = pixel_prevalence(table, max_images=cfg.segmentation.prevalence_images)
    weights = ClassWeights(table.structures, torch.tensor(fractions[None], dtype=torch.float64),
                           heuristic=cwc.heuristic, enabled=cwc.enabled, eta=cwc.eta, w_min=cwc.w_min, w_max=cwc.w_max)
    log.info("pixel prevalence %s -> structure weights %s",
             {s: round(float(f), 4) for s, f in zip(table.structures, fractions)},
             {s: round(float(w), 3) for s, w in zip(table.structures, weights.current)})
    for name in weights.undefined_classes:
        log.warning("structure %r has no foreground pixels in the training split: it gets the mean weight", name)
    return weights


def build_run(cfg: SpftConfig, run_dir: Path | None, table=None):
    """Mask table, preprocessing, module and datamodule for ``cfg`` (shared by train, resume and evaluate).

    ``table``: an already read MaskTable (evaluation passes its own, whose evaluated rows it has checked); by default
    the table is read and checked in full (:func:`spft.data.masks.build_mask_table`)."""
    structures = list(cfg.segmentation.structures)
    table = build_mask_table(cfg.data, structures, cfg.seed) if table is None else table
    model, prep = build_sam2(cfg.model)
    module = SegmentationModule(cfg, model, structures, structure_weights(cfg, table), run_dir)
    module.apply_speed_options()
    dm = SegmentationDataModule(table, prep, cfg.data.color, cfg.data, cfg.trainer.batch_size,
                                cfg.trainer.eval_batch_size, cfg.seed, on_gpu=trains_on_gpu(cfg))
    return table, prep, module, dm


def describe_data(table, prep) -> dict:
    return {"task": "segmentation", "structures": table.structures, "classes": table.structures,
            "source": table.source, "split_policy": table.split_policy, **table.split_sizes(),
            "preprocessing": prep.record()}
