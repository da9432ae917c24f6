"""Training entry point for segmentation: config -> run directory -> Lightning fit -> test Dice -> DONE.

``train(cfg)`` starts a run, ``resume(run_dir)`` continues a killed one from ``checkpoints/last.ckpt``; both end
by scoring the best (EMA) weights on the test split through :mod:`spft.tasks.segmentation.evaluate`. The flow (run
files, fit, best weights, test, DONE), checkpoints, precision and reseeding are spft.tasks.lightning_recipe's.

    spft train configs/phantom_segment_sam2.yaml
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from spft.config import SpftConfig
from spft.data.masks import build_mask_table, pixel_prevalence
from spft.models.sam2 import build_sam2
from spft.recipe import ClassWeights
from spft.tasks.lightning_recipe import (
    fit_and_finish,
    preprocessing_record,
    resume_run,
    split_counts,
    start_run,
    trains_on_gpu,
)
from spft.tasks.segmentation.datamodule import SegmentationDataModule
from spft.tasks.segmentation.evaluate import evaluate_module, write_evaluation
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


def _describe_data(table, prep) -> dict:
    return {"task": "segmentation", "structures": table.structures, "classes": table.structures,
            "source": table.source, "split_policy": table.split_policy, **split_counts(table),
            "preprocessing": preprocessing_record(prep)}


def _test_with(cfg):
    def test(module, dm, device, run_dir: Path, best_epoch) -> None:
        ev = evaluate_module(module, dm.datasets["test"], "test", device, dm.eval_batch_size,
                             out_dir=run_dir / "predictions_test", n_overlays=cfg.segmentation.n_overlays)
        write_evaluation(run_dir, ev, best_epoch=best_epoch)

    return test


def _fit_and_finish(cfg: SpftConfig, run_dir: Path, ckpt_path: str | None) -> Path:
    return fit_and_finish(cfg, run_dir, ckpt_path, build_run=build_run, describe_data=_describe_data,
                          test=_test_with(cfg), monitor=MONITOR)


def train(cfg: SpftConfig) -> Path:
    """Run the two-stage SPFT recipe on SAM2 for ``cfg`` and return the run directory."""
    return start_run(cfg, _fit_and_finish)


def resume(run_dir: str | Path) -> Path:
    """Continue a killed run from ``checkpoints/last.ckpt`` (or start it again if no epoch finished)."""
    return resume_run(run_dir, _fit_and_finish)
