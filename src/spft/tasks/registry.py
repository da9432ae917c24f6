"""Task dispatch: the config's ``task`` key picks the :class:`~spft.tasks.base.Task` that trains, resumes,
evaluates, reports, checks data and predicts.

Registration: each task is one line of :data:`TASKS`, ``name -> "package:ATTRIBUTE"`` of its Task object, imported
on first use (:func:`get_task`), so that a classification run never imports Ultralytics and this module imports no
task (which keeps it out of every import cycle: the config schema reads the task names and each task's config
declarations through it). A task defined elsewhere (a plugin, a test) is added with
:func:`register`. The CLI, sweeps, ``spft data check``, ``spft prepare cache`` and ``spft report`` ask the Task and
never branch on task names or metric keys.
"""

from __future__ import annotations

import importlib
from types import SimpleNamespace

from spft.errors import ConfigError

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
