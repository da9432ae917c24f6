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


# task -> module with load(source, checkpoint, device), predict(model_source, inputs, ...) -> Predictions and
# export(run_dir, out, format, checkpoint); a task without an entry has no predict yet (one line says so)
PREDICT: dict[str, str] = {
    "classification": "spft.tasks.classification.predict",
}


def predict_api(task: str) -> SimpleNamespace:
    """``load``, ``predict`` and ``export`` of ``task`` (``spft predict``, ``spft export``, ``spft.load``)."""
    if task not in TASKS:
        raise ConfigError(f"task: unknown task {task!r} (available: {', '.join(TASKS)})")
    if task not in PREDICT:
        raise ConfigError(f"predict/export is not yet supported for {task} runs (classification only for now)")
    mod = importlib.import_module(PREDICT[task])
    return SimpleNamespace(load=mod.load, predict=mod.predict, export=mod.export)


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
