"""The Lightning engine of the run lifecycle (:mod:`spft.tasks.lifecycle`), shared by classification and
segmentation: the trainer with its checkpoints, signal handling (SIGTERM / Ctrl+C -> one
:class:`~spft.errors.RunInterrupted`, ``DONE`` not written), the best (EMA) weights loaded back, and the task's own
test step.

A task gives ``build_run(cfg, run_dir) -> (table, prep, module, datamodule)``, ``describe_data(table, prep) -> dict``
(the run's ``data.json``), ``test(module, datamodule, device, run_dir, best_epoch)`` (scores the best weights on the
test split and writes the metrics) and the metric to monitor. A datamodule whose ``reload_every_epoch`` is true gets
asked for its loaders every epoch (classification's stage-1 feature cache switches from features to images).
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LightningEngine:
    """A Lightning task's steps; :func:`spft.tasks.lifecycle.start_run` / ``resume_run`` drive them."""

    build_run: Callable
    describe_data: Callable
    test: Callable
    monitor: str
    checkpoint_names: tuple[str, str] = ("best.ckpt", "last.ckpt")
    loadable: bool = True

    def seed(self, cfg) -> None:
        import lightning as L

        L.seed_everything(cfg.seed, workers=True, verbose=False)

    @contextlib.contextmanager
    def guarded(self, run_dir: Path, fresh: bool):
        """Signals stop the run at the end of the current step; any exception they cause becomes one
        :class:`~spft.errors.RunInterrupted` naming the epoch."""
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        from spft.tasks.lightning.trainer import quiet_lightning
        from spft.tasks.signals import SignalGuard, SignalStop

        guard = SignalGuard()
        try:
            with guard, quiet_lightning():
                yield guard
        except BaseException as exc:
            if guard.signum is None:
                raise
            if not isinstance(exc, (SignalStop, SIGTERMException, SystemExit, KeyboardInterrupt)):
                # e.g. DataLoader workers the same SIGTERM killed (SLURM signals every process of the job step)
                log.debug("after %s: %r", signal.Signals(guard.signum).name, exc)
            raise guard.interrupted(run_dir, _epoch_now(run_dir, guard.trainer), fresh=fresh) from None

    def setup(self, cfg, run_dir: Path, resume_from: Path | None, guard) -> LightningAttempt:
        from spft.tasks.common.limits import warn_if_limited
        from spft.tasks.lightning.trainer import build_trainer

        warn_if_limited(cfg)  # a smoke run: one line before anything is read
        table, prep, module, dm = self.build_run(cfg, run_dir)
        listeners: list[Callable[[], None]] = []  # the lifecycle adds to it (tracking)
        trainer = build_trainer(cfg, run_dir, self.monitor, reload_dataloaders=bool(getattr(dm, "reload_every_epoch",
                                                                                            False)),
                                extra_callbacks=(guard, EpochEnd(listeners)))
        guard.trainer = trainer
        return LightningAttempt(self, cfg, run_dir, resume_from, guard, table, prep, module, dm, trainer, listeners)


@dataclass
class LightningAttempt:
    engine: LightningEngine
    cfg: object
    run_dir: Path
    resume_from: Path | None
    guard: object
    table: object
    prep: object
    module: object
    dm: object
    trainer: object
    epoch_listeners: list = field(default_factory=list)  # called after each epoch (spft.tasks.lifecycle)

    @property
    def primary(self) -> bool:
        return self.trainer.global_rank == 0

    def records(self) -> dict[str, Callable[[], dict]]:
        from spft.experiments.rundir import environment

        return {"env.json": lambda: environment(str(self.trainer.strategy.root_device), speed=self.module.speed),
                "data.json": lambda: self.engine.describe_data(self.table, self.prep)}

    def fit(self) -> None:
        from spft.tasks.signals import SignalStop

        ckpt_path = None if self.resume_from is None else str(self.resume_from)
        self.trainer.fit(self.module, datamodule=self.dm, ckpt_path=ckpt_path)
        if self.guard.signum is not None:  # a signal the loop saw at its very end, or before Lightning's handler
            raise SignalStop()

    def load_best(self) -> int | None:
        from spft.tasks.lightning.trainer import load_best_weights

        return load_best_weights(self.module, self.run_dir)

    def test(self, best_epoch: int | None) -> None:
        self.engine.test(self.module, self.dm, self.trainer.strategy.root_device, self.run_dir, best_epoch)


class EpochEnd(L.Callback):
    """Calls each of ``listeners`` once the epoch's ``history.csv`` row is written: after validation (not the sanity
    check) and again at the training epoch's end, so listeners must be idempotent (tracking sends new rows only)."""

    def __init__(self, listeners: list[Callable[[], None]]) -> None:
        self.listeners = listeners

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._call()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._call()

    def _call(self) -> None:
        for listener in self.listeners:
            listener()


def _epoch_now(run_dir: Path, trainer) -> int:
    """The epoch an interruption cut short: the trainer's, else the first without a history row."""
    if trainer is not None:
        return int(trainer.current_epoch)
    history = run_dir / "history.csv"
    return max(0, len(history.read_text().splitlines()) - 1) if history.is_file() else 0
