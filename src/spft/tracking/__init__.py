"""Experiment tracking: the run directory copied to an MLflow server while it is written (``tracking.mlflow.*``).

One place for every task: the run lifecycle (:mod:`spft.tasks.lifecycle`) wraps training in :func:`track_run`, which
starts the MLflow run (params, tags), hands the engine an epoch listener (Lightning callback / Ultralytics
``on_fit_epoch_end``) that sends each new ``history.csv`` row, and at the end sends ``metrics.json``, the record
files and the run's status. Sweeps get a parent run (:func:`attach_sweep`, :func:`finish_sweep`) and ``spft report``
attaches the report to it (:func:`attach_report`). ``spft track push RUN`` sends what a server failure left in
``tracking_unsent.jsonl`` (:func:`push`).

This module stays light: MLflow is imported (by :mod:`spft.tracking.mlflow`) only when ``tracking.mlflow.uri`` is set;
without the ``track`` extra that is one line, ``pip install 'spft[track]'``, before any training.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from spft.tracking.records import check_uri, is_file_store  # noqa: F401  (re-exported: spft.tracking.check_uri)

log = logging.getLogger(__name__)

PARENT_KEY = "tracking.mlflow.parent_run_id"
RUN_NAME_KEY = "tracking.mlflow.run_name"


def enabled(cfg) -> bool:
    tracking = getattr(cfg, "tracking", None)
    return tracking is not None and tracking.mlflow.uri is not None


def require(cfg) -> None:
    """Raise :class:`~spft.errors.DependencyError` (one line) when ``cfg`` asks for MLflow and it is not installed,
    :class:`~spft.errors.ConfigError` when its URI is a file store the installed MLflow refuses (:func:`check_uri`)."""
    if enabled(cfg):
        import spft.tracking.mlflow  # noqa: F401 - raises DependencyError naming the extra

        check_uri(cfg.tracking.mlflow.uri)


@contextlib.contextmanager
def track_run(cfg, run_dir: Path, attempt, guard=None, resumed: bool = False) -> Iterator[object | None]:
    """Track the run around ``attempt.fit()`` ... ``DONE`` (primary process only; nothing when tracking is off).

    The tracker's ``epoch_end`` goes into ``attempt.epoch_listeners`` (when the engine has that list); the MLflow run
    ends FINISHED when ``DONE`` was written, KILLED after a signal or Ctrl+C, FAILED after any other exception, which
    is re-raised unchanged."""
    if not enabled(cfg) or not getattr(attempt, "primary", True):
        yield None
        return
    from spft.errors import DependencyError
    from spft.tracking.mlflow import RunTracker, status_of

    try:
        tracker = RunTracker(cfg, run_dir)
    except DependencyError:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. a URI MLflow does not understand: the run goes on untracked
        log.warning("warning: MLflow tracking at %s is off for this run: %s", cfg.tracking.mlflow.uri,
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        yield None
        return
    tracker.start(resumed=resumed)
    listeners = getattr(attempt, "epoch_listeners", None)
    if isinstance(listeners, list):
        listeners.append(tracker.epoch_end)
    try:
        yield tracker
    except BaseException as exc:
        tracker.finish(status_of(exc, guard))
        raise
    from spft.experiments.rundir import is_done

    tracker.finish("FINISHED" if is_done(run_dir) else status_of(RuntimeError(), guard))


# ---- sweeps ----------------------------------------------------------------------------------------------------------

def attach_sweep(sweep, cfg) -> None:
    """When ``cfg`` (the sweep's resolved config) tracks to MLflow: create or continue the sweep's parent run
    (``<sweep>/tracking.json``) and give every run the sweep will start the overrides
    ``tracking.mlflow.run_name=<overlay>/seed<k>`` and ``tracking.mlflow.parent_run_id=<parent>``. Overrides, not
    environment variables, so that a run started on another machine (SLURM) gets them too and records them in its
    ``config.yaml`` (a resumed run keeps them)."""
    if not enabled(cfg):
        return
    from spft.tracking.mlflow import sweep_parent

    parent = sweep_parent(sweep, cfg)
    for run in sweep.runs:
        if run.action != "train":
            continue
        extra = [f"{RUN_NAME_KEY}={run.overlay}/seed{run.seed}"] + ([f"{PARENT_KEY}={parent}"] if parent else [])
        run.overrides = (*[o for o in run.overrides if not o.startswith((RUN_NAME_KEY + "=", PARENT_KEY + "="))],
                         *extra)


def finish_sweep(sweep) -> None:
    """Set the parent run's status from the sweep's: finished -> FINISHED, failed -> FAILED, interrupted -> KILLED."""
    folder = Path(sweep.out)
    if not (folder / "tracking.json").is_file():
        return
    status = {"finished": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}.get(sweep.status)
    if status is None:
        return
    try:
        from spft.tracking.mlflow import finish_sweep as finish
    except ImportError as exc:  # DependencyError included: the sweep's own record stays; warn
        log.warning("warning: the sweep's MLflow parent run was not updated: %s", exc)
        return
    finish(folder, status)


def attach_report(sweep_dir: str | Path, out: str | Path) -> None:
    """``spft report``: attach report.html (and report.md/json, tables) to the sweep's parent run, when it has one."""
    folder = Path(sweep_dir)
    if not (folder / "tracking.json").is_file():
        return
    try:
        from spft.tracking.mlflow import attach_report as attach
    except ImportError as exc:
        log.warning("warning: the report was not attached to the sweep's MLflow run: %s", exc)
        return
    try:
        attach(folder, Path(out))
    except Exception as exc:  # noqa: BLE001 - the report is written; tracking is a copy
        log.warning("warning: the report was not attached to the sweep's MLflow run: %s", exc)


def push(folder: str | Path, uri: str | None = None) -> dict:
    """``spft track push``: see :func:`spft.tracking.mlflow.push`."""
    from spft.tracking.mlflow import push as push_folder

    check_uri(uri, "--uri")
    return push_folder(folder, uri)
