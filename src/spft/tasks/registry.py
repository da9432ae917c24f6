"""Task dispatch: the config's ``task`` key picks the engine that trains, resumes and evaluates a run.

Every task module offers the same four calls — ``train(cfg) -> run_dir``, ``resume(run_dir) -> run_dir``,
``evaluate_run(run_dir, overrides, split, checkpoint) -> result with .metrics()`` and ``format_table(result)`` —
so the CLI, sweeps and reports stay task-agnostic. Modules are imported lazily: detection needs the optional
``detect`` extra (Ultralytics) and must not be imported by a classification run.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import SimpleNamespace

from spft.errors import ConfigError, MissingFileError

# task -> (module with train/resume, module with evaluate_run/format_table)
TASKS: dict[str, tuple[str, str]] = {
    "classification": ("spft.tasks.classification.train", "spft.tasks.classification.evaluate"),
    "detection": ("spft.tasks.detection.train", "spft.tasks.detection.evaluate"),
    "segmentation": ("spft.tasks.segmentation.train", "spft.tasks.segmentation.evaluate"),
}


def task_api(task: str) -> SimpleNamespace:
    """The four entry points of ``task``; a clear error when the task or its optional dependency is missing."""
    if task not in TASKS:
        raise ConfigError(f"task: unknown task {task!r} (available: {', '.join(TASKS)})")
    train_name, eval_name = TASKS[task]
    try:
        train_mod = importlib.import_module(train_name)
        eval_mod = importlib.import_module(eval_name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("spft"):
            raise ConfigError(f"task {task!r} is not available in this version of spft") from exc
        hint = " (install the extra: pip install 'spft[detect]')" if task == "detection" else ""
        raise ModuleNotFoundError(f"task {task!r} needs the package {exc.name!r}{hint}") from exc
    return SimpleNamespace(train=train_mod.train, resume=train_mod.resume, evaluate_run=eval_mod.evaluate_run,
                           format_table=eval_mod.format_table)


def task_of_run(run_dir: str | Path) -> str:
    """The task recorded in a run directory's ``config.yaml``."""
    config_file = Path(run_dir) / "config.yaml"
    if not config_file.is_file():
        raise MissingFileError(f"{run_dir} is not a run directory (no config.yaml)")
    from spft.experiments.rundir import read_run_yaml

    return read_run_yaml(config_file).get("task", "classification")
