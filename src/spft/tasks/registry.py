"""Task dispatch: the config's ``task`` key picks the :class:`~spft.tasks.base.Task` that trains, resumes,
evaluates, reports, checks data and predicts.

Registration: each task is one line of :data:`TASKS`, ``name -> "package:ATTRIBUTE"`` of its Task object, imported
on first use (:func:`get_task`), so that a classification run never imports Ultralytics and this module imports no
task (which keeps it out of every import cycle). A task defined elsewhere (a plugin, a test) is added with
:func:`register`. The CLI, sweeps, ``spft data check``, ``spft prepare cache`` and ``spft report`` ask the Task and
never branch on task names or metric keys.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import SimpleNamespace

from spft.errors import ConfigError, MissingFileError

# task -> "package:ATTRIBUTE" of its Task object (or the object itself, once registered or loaded)
TASKS: dict = {
    "classification": "spft.tasks.classification:TASK",
    "detection": "spft.tasks.detection:TASK",
    "segmentation": "spft.tasks.segmentation:TASK",
}


def register(task) -> None:
    """Add (or replace) ``task``, a :class:`~spft.tasks.base.Task` instance, under ``task.name``."""
    TASKS[task.name] = task


def get_task(task: str):
    """The :class:`~spft.tasks.base.Task` named ``task``; a clear error for an unknown one."""
    if task not in TASKS:
        raise ConfigError(f"task: unknown task {task!r} (available: {', '.join(TASKS)})")
    entry = TASKS[task]
    if isinstance(entry, str):
        module, _, attribute = entry.partition(":")
        entry = TASKS[task] = getattr(importlib.import_module(module), attribute)
    return entry


def task_api(task: str) -> SimpleNamespace:
    """The older four-call view of ``task`` (``train``, ``resume``, ``evaluate_run``, ``format_table``), kept for
    callers of that interface; new code asks :func:`get_task`."""
    t = get_task(task)
    ev = t.module(t.evaluate_module)
    return SimpleNamespace(train=t.train, resume=t.resume, evaluate_run=ev.evaluate_run, format_table=ev.format_table)


def predict_api(task: str) -> SimpleNamespace:
    """``load``, ``predict`` and ``export`` of ``task`` (``spft predict``, ``spft export``, ``spft.load``): the
    Task's predict slot (:meth:`spft.tasks.base.Task.predict_api`; one line when the task has none yet)."""
    return get_task(task).predict_api()


def task_of_model(source: str | Path) -> str:
    """The task of a run directory (``config.yaml``) or of an ``spft export`` folder (``config.json``'s ``spft``
    block)."""
    source = Path(source).expanduser()
    if not source.is_dir():
        raise MissingFileError(f"{source}: no such run directory or export folder")
    if (source / "config.yaml").is_file():
        return task_of_run(source)
    config_json = source / "config.json"
    if config_json.is_file():
        import json

        try:
            block = json.loads(config_json.read_text(encoding="utf-8")).get("spft")
        except (ValueError, UnicodeDecodeError, AttributeError):
            block = None
        if isinstance(block, dict) and block.get("task"):
            return str(block["task"])
    raise MissingFileError(f"{source} is neither a run directory (no config.yaml) nor an spft export folder "
                           f"(no config.json with an spft block)")


def task_of_run(run_dir: str | Path) -> str:
    """The task recorded in a run directory's ``config.yaml``."""
    config_file = Path(run_dir) / "config.yaml"
    if not config_file.is_file():
        raise MissingFileError(f"{run_dir} is not a run directory (no config.yaml)")
    from spft.experiments.rundir import read_run_yaml

    return read_run_yaml(config_file).get("task", "classification")
