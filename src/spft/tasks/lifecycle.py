"""The one run lifecycle every engine goes through: create (or resume) the run directory and take its lock, write the
record files, fit, load the best weights, test, write ``DONE``.

An engine (Lightning for classification and segmentation: :class:`spft.tasks.lightning.run.LightningEngine`;
Ultralytics for detection: :class:`spft.tasks.detection.train.DetectionEngine`) supplies the steps; the order, the
lock, which record files a resumed run rewrites, the clean-up of a failed start and ``DONE`` are decided here once.

    engine.seed(cfg)
    create_run_dir(cfg)  /  config_to_resume(run_dir) + resume_point(run_dir, engine)      (both take the lock)
    with engine.guarded(run_dir, fresh) as guard:         signals -> RunInterrupted (Lightning); nothing (detection)
        attempt = engine.setup(cfg, run_dir, resume_from, guard)
        config.yaml (a new run) and attempt.records() (a new run, or files a kill at the start left out)
        with track_run(...):                              MLflow (tracking.mlflow.uri): params, epochs, end, status
            attempt.fit()                                 attempt.epoch_listeners: called after each epoch
            attempt.test(attempt.load_best())             primary process only
            curves.png                                    history.csv drawn (spft.reporting.figures.run_curves)
            DONE
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Attempt(Protocol):
    """One process's go at a run, built by :meth:`Engine.setup` (data, model and trainer ready)."""

    primary: bool  # the process that writes records and tests (DDP rank 0; always True for detection)
    epoch_listeners: list[Callable[[], None]]  # optional: called after each epoch's history row is written (tracking)

    def records(self) -> dict[str, Callable[[], dict]]:
        """The run's record files besides ``config.yaml`` (``env.json``, ``data.json`` ...): name -> JSON content."""

    def fit(self) -> None:
        """Train to the configured end (from ``resume_from`` when resuming); a no-op when training is over."""

    def load_best(self) -> Any:
        """Load (or find) the best weights; the result is handed to :meth:`test`."""

    def test(self, best: Any) -> None:
        """Score the best weights on the test split and write ``metrics.json`` (and the task's other files)."""


class Engine(Protocol):
    """What an engine plugs into the lifecycle."""

    checkpoint_names: tuple[str, str]  # (best, last) under checkpoints/
    loadable: bool  # whether spft itself may load its checkpoints when checking them (False: Ultralytics .pt)

    def seed(self, cfg) -> None: ...

    def guarded(self, run_dir: Path, fresh: bool) -> contextlib.AbstractContextManager: ...

    def setup(self, cfg, run_dir: Path, resume_from: Path | None, guard) -> Attempt: ...


class Unguarded:
    """Engine defaults for the steps an engine need not customise: no global seeding, no signal handling."""

    loadable = True

    def seed(self, cfg) -> None:
        return None

    @contextlib.contextmanager
    def guarded(self, run_dir: Path, fresh: bool) -> Iterator[None]:
        yield None


def write_records(cfg, run_dir: Path, records: dict[str, Callable[[], dict]], fresh: bool) -> None:
    """``config.yaml`` for a new run; each record file for a new run, or when a kill at the start left it out."""
    from spft.atomic import atomic_write_json, atomic_write_text
    from spft.config import dump_yaml

    if fresh:
        atomic_write_text(run_dir / "config.yaml", dump_yaml(cfg))
    for name, content in records.items():
        if fresh or not (run_dir / name).is_file():
            atomic_write_json(run_dir / name, content())


def run_to_done(engine: Engine, cfg, run_dir: Path, resume_from: Path | None) -> Path:
    """Records, fit, best weights, test, ``DONE``: the part shared by a new run and a resumed one."""
    from spft.experiments.rundir import mark_done
    from spft.tracking import track_run

    fresh = resume_from is None
    with engine.guarded(run_dir, fresh) as guard:
        attempt = engine.setup(cfg, run_dir, resume_from, guard)
        if attempt.primary:  # a resumed run writes only what a kill at its start left out
            write_records(cfg, run_dir, attempt.records(), fresh)
        log.info("run directory: %s", run_dir)
        with track_run(cfg, run_dir, attempt, guard, resumed=not fresh):  # MLflow, when tracking.mlflow.uri is set
            attempt.fit()
            if not attempt.primary:  # under DDP only rank 0 tests and finishes
                return run_dir
            attempt.test(attempt.load_best())
            write_curves(run_dir)
            mark_done(run_dir)
    return run_dir


def write_curves(run_dir: Path) -> Path | None:
    """``curves.png``: the run's training curves from its ``history.csv`` (:func:`spft.reporting.figures.run_curves`).
    A figure that cannot be drawn is a warning, never a failed run."""
    try:
        from spft.reporting.figures import run_curves

        return run_curves(run_dir)
    except Exception as exc:  # noqa: BLE001 - a figure must not fail a finished run
        log.warning("curves.png not written: %s: %s", type(exc).__name__, exc)
        return None


def start_run(cfg, engine: Engine) -> Path:
    """A new run: seed, create (and lock) the run directory, run it to ``DONE``. A start that fails before the first
    checkpoint removes the directory it created, so the same ``run.dir`` can be used again."""
    from spft.experiments.rundir import create_run_dir, discard_failed_start
    from spft.tracking import require

    require(cfg)  # tracking.mlflow.uri without the track extra: one line, before anything is created
    engine.seed(cfg)
    run_dir = create_run_dir(cfg)
    try:
        return run_to_done(engine, cfg, run_dir, None)
    except BaseException:
        if discard_failed_start(run_dir, engine.checkpoint_names):
            log.info("removed %s: the run failed before its first checkpoint", run_dir)
        raise


def resume_run(run_dir: str | Path, engine: Engine) -> Path:
    """Continue a killed run from its last checkpoint (or start it again if no epoch finished); a finished run
    (``DONE``) is left as it is."""
    from spft.experiments.rundir import config_to_resume

    run_dir = Path(run_dir)
    cfg = config_to_resume(run_dir)  # takes the lock
    if cfg is None:
        return run_dir
    from spft.tracking import require

    require(cfg)
    engine.seed(cfg)
    return run_to_done(engine, cfg, run_dir, resume_point(run_dir, engine))


def resume_point(run_dir: Path, engine: Engine) -> Path | None:
    """The last checkpoint to resume from (the best one, with a warning, when the last is damaged), or None (with a
    warning) when the run died before its first epoch ended."""
    from spft.experiments.checkpoints import newest_intact

    best, last = engine.checkpoint_names
    ckpt = newest_intact(Path(run_dir) / "checkpoints", (last, best), loadable=engine.loadable)
    if ckpt is None:
        log.warning("%s has no %s (killed before the first epoch ended): starting it again", run_dir, last)
    return ckpt
