"""Training entry point for classification: config → run directory → Lightning fit → test metrics → DONE.

``train(cfg)`` starts a run; ``resume(run_dir)`` continues a killed one from ``checkpoints/last.ckpt`` to its
configured end. Both go through the shared run lifecycle (:mod:`spft.tasks.lifecycle`, on Lightning through
:class:`spft.tasks.lightning.run.LightningEngine`) and finish by evaluating the best (EMA) weights on the test split
through :mod:`spft.tasks.classification.evaluate` (plus the operating points and calibration of
:mod:`spft.tasks.classification.operating`), so a resumed run and an uninterrupted one produce the same files.
"""

from __future__ import annotations

from pathlib import Path

from spft.config import SpftConfig
from spft.tasks.classification.build import MONITOR, build_run, describe_data
from spft.tasks.classification.evaluate import evaluate_module, write_evaluation
from spft.tasks.lifecycle import resume_run, start_run
from spft.tasks.lightning.run import LightningEngine

__all__ = ["MONITOR", "build_run", "resume", "train"]


def _test(module, dm, device, run_dir: Path, best_epoch) -> None:
    # rank 0 alone, on the test split; the validation split too, for the temperature and the thresholds (a smoke
    # run's trainer.limit_test_batches / limit_val_batches: their first batches only, spft.tasks.common.limits)
    from spft.tasks.classification.operating import fit_and_apply
    from spft.tasks.common.limits import limits_of

    trainer_cfg = module.cfg.trainer
    result = evaluate_module(module, dm.loader("test", rank=0, world=1), "test", device,
                             limit=trainer_cfg.limit_test_batches)
    val = (evaluate_module(module, dm.loader("val", rank=0, world=1), "val", device,
                           limit=trainer_cfg.limit_val_batches)
           if len(dm.datasets["val"]) else None)
    fit_and_apply(run_dir, module.cfg, val, result)  # thresholds.json, calibration.json; calibrates `result`
    if limits_of(module.cfg):
        result.extra["limited"] = limits_of(module.cfg)
    write_evaluation(run_dir, result, best_epoch=best_epoch)


ENGINE = LightningEngine(build_run=build_run, describe_data=describe_data, test=_test, monitor=MONITOR)


def train(cfg: SpftConfig) -> Path:
    """Run the full two-stage SPFT recipe for ``cfg`` and return the run directory."""
    return start_run(cfg, ENGINE)


def resume(run_dir: str | Path) -> Path:
    """Continue a killed run from ``checkpoints/last.ckpt`` (or start it again if no epoch finished)."""
    return resume_run(run_dir, ENGINE)
