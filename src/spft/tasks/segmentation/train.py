"""Training entry point for segmentation: config -> run directory -> Lightning fit -> test Dice -> DONE.

``train(cfg)`` starts a run, ``resume(run_dir)`` continues a killed one from ``checkpoints/last.ckpt``; both end
by scoring the best (EMA) weights on the test split through :mod:`spft.tasks.segmentation.evaluate`. Checkpoint IO,
precision, the crash hook and the per-epoch reseeding are the classification engine's, imported, not copied.

    spft train configs/phantom_segment_sam2.yaml
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from spft.config import SpftConfig, dump_yaml
from spft.data.masks import build_mask_table, pixel_prevalence
from spft.experiments.rundir import (
    atomic_write_json,
    atomic_write_text,
    config_to_resume,
    create_run_dir,
    environment,
    mark_done,
)
from spft.models.sam2 import build_sam2
from spft.recipe import ClassWeights
from spft.tasks.lightning_recipe import AtomicCheckpointIO, CrashAfterEpoch, resolve_precision
from spft.tasks.segmentation.datamodule import SegmentationDataModule
from spft.tasks.segmentation.evaluate import evaluate_module, write_evaluation
from spft.tasks.segmentation.module import SegmentationModule

log = logging.getLogger(__name__)

MONITOR = "val/dice"


def structure_weights(cfg: SpftConfig, table) -> ClassWeights:
    """Per-structure weights from pixel prevalence: w0 = N_neg / N_pos over training pixels, mean 1 (SPEC §3).

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


def build_run(cfg: SpftConfig, run_dir: Path | None):
    """Mask table, preprocessing, module and datamodule for ``cfg`` (shared by train, resume and evaluate)."""
    structures = list(cfg.segmentation.structures)
    table = build_mask_table(cfg.data, structures, cfg.seed)
    model, prep = build_sam2(cfg.model)
    module = SegmentationModule(cfg, model, structures, structure_weights(cfg, table), run_dir)
    dm = SegmentationDataModule(table, prep, cfg.data.color, cfg.trainer.batch_size, cfg.trainer.eval_batch_size,
                                cfg.data.num_workers, cfg.seed)
    return table, prep, module, dm


def _write_run_files(cfg: SpftConfig, run_dir: Path, table, prep, device: str) -> None:
    atomic_write_text(run_dir / "config.yaml", dump_yaml(cfg))
    atomic_write_json(run_dir / "env.json", environment(device))
    counts = {s: len(table.indices(s)) for s in ("train", "val", "test")}
    atomic_write_json(run_dir / "data.json", {
        "task": "segmentation", "structures": table.structures, "classes": table.structures,
        "source": table.source, "split_policy": table.split_policy, "n_images": counts,
        "n_groups": {s: len({table.groups[i] for i in table.indices(s)}) for s in counts},
        "preprocessing": {"size": prep.size, "mean": prep.mean, "std": prep.std, "source": prep.source},
    })


def _trainer(cfg: SpftConfig, run_dir: Path) -> L.Trainer:
    callbacks = [
        ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor=MONITOR, mode="max", save_last=True,
                        save_top_k=1, enable_version_counter=False),
        EarlyStopping(monitor=MONITOR, mode="max", patience=cfg.trainer.patience, check_finite=False),
    ]
    if cfg.trainer.progress_bar:
        callbacks.append(TQDMProgressBar(refresh_rate=max(1, cfg.trainer.log_every_n_steps // 2)))
    if os.environ.get("SPFT_CRASH_AFTER_EPOCH"):
        callbacks.append(CrashAfterEpoch(int(os.environ["SPFT_CRASH_AFTER_EPOCH"])))
    loggers = [CSVLogger(run_dir, name="logs", version=""), TensorBoardLogger(run_dir, name="logs", version="tb")]
    return L.Trainer(default_root_dir=run_dir, max_epochs=cfg.trainer.max_epochs, accelerator=cfg.trainer.accelerator,
                     devices=cfg.trainer.devices, precision=resolve_precision(cfg), callbacks=callbacks, logger=loggers,
                     plugins=[AtomicCheckpointIO()], log_every_n_steps=cfg.trainer.log_every_n_steps,
                     num_sanity_val_steps=0, enable_progress_bar=cfg.trainer.progress_bar, enable_model_summary=False,
                     deterministic=cfg.trainer.deterministic)


def _fit_and_finish(cfg: SpftConfig, run_dir: Path, ckpt_path: str | None) -> Path:
    table, prep, module, dm = build_run(cfg, run_dir)
    trainer = _trainer(cfg, run_dir)
    if ckpt_path is None:
        _write_run_files(cfg, run_dir, table, prep, str(trainer.strategy.root_device))
    log.info("run directory: %s", run_dir)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    if trainer.global_rank != 0:
        return run_dir
    best = run_dir / "checkpoints" / "best.ckpt"
    state = torch.load(best if best.is_file() else run_dir / "checkpoints" / "last.ckpt", map_location="cpu",
                       weights_only=False)
    module.load_state_dict(state["state_dict"])
    ev = evaluate_module(module, dm.datasets["test"], "test", trainer.strategy.root_device, dm.eval_batch_size,
                         out_dir=run_dir / "predictions_test", n_overlays=cfg.segmentation.n_overlays)
    write_evaluation(run_dir, ev, best_epoch=state.get("epoch"))
    mark_done(run_dir)
    return run_dir


def train(cfg: SpftConfig) -> Path:
    """Run the two-stage SPFT recipe on SAM2 for ``cfg`` and return the run directory."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    run_dir = create_run_dir(cfg)
    return _fit_and_finish(cfg, run_dir, None)


def resume(run_dir: str | Path) -> Path:
    """Continue a killed run from ``checkpoints/last.ckpt`` (or start it again if no epoch finished)."""
    run_dir = Path(run_dir)
    cfg = config_to_resume(run_dir)
    if cfg is None:
        return run_dir
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        log.warning("%s has no last.ckpt (killed before the first epoch ended): starting it again", run_dir)
    return _fit_and_finish(cfg, run_dir, str(last) if last.is_file() else None)
