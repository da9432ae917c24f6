"""Training entry point for segmentation: config -> run directory -> Lightning fit -> test Dice -> DONE.

``train(cfg)`` starts a run, ``resume(run_dir)`` continues a killed one from ``checkpoints/last.ckpt``; both end
by scoring the best (EMA) weights on the test split through :mod:`spft.tasks.segmentation.evaluate`. The flow (run
files, fit, best weights, test, DONE) is :mod:`spft.tasks.lifecycle`'s, on Lightning through
:class:`spft.tasks.lightning.run.LightningEngine`; checkpoints, precision and reseeding are
spft.tasks.lightning.recipe's.

    spft train configs/phantom_segment_sam2.yaml
"""

from __future__ import annotations

from pathlib import Path

from spft.config import SpftConfig
from spft.tasks.lifecycle import resume_run, start_run
from spft.tasks.lightning.run import LightningEngine
from spft.tasks.segmentation.build import MONITOR, build_run, describe_data, structure_weights
from spft.tasks.segmentation.evaluate import eval_loader, evaluate_module, write_evaluation

__all__ = ["MONITOR", "build_run", "resume", "structure_weights", "train"]


def _test(module, dm, device, run_dir: Path, best_epoch) -> None:
    from spft.tasks.common.limits import limits_of

    ev = evaluate_module(module, eval_loader(dm.datasets["test"], dm.eval_batch_size), "test", device,
                         limit=module.cfg.trainer.limit_test_batches, out_dir=run_dir / "predictions_test",
                         n_overlays=module.cfg.segmentation.n_overlays)
    if limits_of(module.cfg):
        ev.extra["limited"] = limits_of(module.cfg)
    write_evaluation(run_dir, ev, best_epoch=best_epoch)


ENGINE = LightningEngine(build_run=build_run, describe_data=describe_data, test=_test, monitor=MONITOR)


def train(cfg: SpftConfig) -> Path:
    """Run the two-stage SPFT recipe on SAM2 for ``cfg`` and return the run directory."""
    return start_run(cfg, ENGINE)


def resume(run_dir: str | Path) -> Path:
    """Continue a killed run from ``checkpoints/last.ckpt`` (or start it again if no epoch finished)."""
    return resume_run(run_dir, ENGINE)
