"""The Task interface: everything the CLI, sweeps, ``spft data check``, ``spft prepare cache``, ``spft report`` and
``spft predict`` / ``spft export`` need from a task, so that none of them branches on a task's name or metric keys.

A task is one object (a :class:`Task` subclass) named in :data:`spft.tasks.registry.TASKS` (or given to
:func:`spft.tasks.registry.register`). Its module must stay light: the task's engine (Lightning, Ultralytics) is
imported inside the methods, so that a classification run never imports Ultralytics — and the config loader reads
a task's config declarations (:attr:`Task.sections`, :attr:`Task.datasets`, :attr:`Task.not_applicable`,
:meth:`Task.check_config`) when a config is loaded.

    class MyTask(Task):
        name = "mytask"
        checkpoint_names = ("best.ckpt", "last.ckpt")       # (best, last) under checkpoints/
        primary_metric, primary_label = "mean_iou", "mean IoU"   # the metrics.json key that ranks runs
        train_module = "spft.tasks.mytask.train"          # train(cfg) / resume(run_dir) via spft.tasks.lifecycle
        evaluate_module = "spft.tasks.mytask.evaluate"    # evaluate_run, format_table, prediction_rows
        sections = {"model": EncoderModelConfig,           # its config: the class of each engine section (and its
                    "trainer": LightningTrainerConfig}    # own sections), the data.name values it trains on, keys of
        datasets = {"mytask_phantom": PhantomData}        # shared sections its engine cannot honour, and its checks,
        not_applicable = {"loss": "why"}                  # read by spft.config.loader; a key of no section class
        def check_config(self, cfg): ...                  # of the task is refused without being listed
        # or override train(cfg), resume(run_dir), evaluate(run_dir, overrides, split, checkpoint, out, name)
        # optional, with defaults: summary(metrics), report(...), data_check(...), prepare_cache(...), predict_api()
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spft.errors import ConfigError


@dataclass
class Evaluation:
    """What :meth:`Task.evaluate` returns, the same for every task.

    ``metrics``: what was written to the metrics file; ``rows``: per-sample rows (the predictions file; empty when
    the engine keeps none, as Ultralytics does); ``primary``: the key of the metric that ranks runs; ``table``: the
    text ``spft evaluate`` prints; ``result``: the task's own evaluation object, for callers that need more.
    """

    metrics: dict
    primary: str
    table: str
    rows: list[dict] = field(default_factory=list)
    result: Any = None

    @property
    def value(self) -> float | None:
        """The primary metric's value (``None`` when undefined)."""
        return self.metrics.get(self.primary)


class Task:
    """One task (classification, detection, segmentation ...): subclass it and name the instance in the registry."""

    name: str = ""
    checkpoint_names: tuple[str, str] = ("best.ckpt", "last.ckpt")  # (best, last) under checkpoints/
    primary_metric: str = ""  # metrics.json key that ranks runs (sweep summaries, logs)
    primary_label: str = ""  # how that metric is named in printed tables
    predict_module: str | None = None  # module with load / predict; None: not yet supported
    export_module: str | None = None  # module with export_run(run_dir, out, format, checkpoint); None: not yet
    extra: str | None = None  # the pip extra the task's engine needs (named in the error when it is missing)
    train_module: str = ""  # module with train(cfg) and resume(run_dir), imported on first use
    evaluate_module: str = ""  # module with evaluate_run(...), format_table(ev) and (optional) prediction_rows(ev)
    # --- the task's config (read by spft.config.loader at load time: keep them plain data) ---
    # section -> its class for this task (spft.config.schema): "model" and "trainer" (the engine's classes; default
    # the base ones, keys every engine reads) and the task's own sections ("detection", "evaluation", ...)
    sections: dict[str, type] = {}
    engine: str = ""  # the library that trains it, named when a key of another engine is refused
    datasets: dict[str, type] = {}  # data.name -> its config class (spft.config.datasets), the first the default
    not_applicable: dict[str, str] = {}  # keys of the shared sections (loss, recipe) its engine cannot honour -> why

    def check_config(self, cfg) -> None:
        """The task's own cross-field checks of a loaded config (:func:`spft.config.schema.validate` calls it once,
        after refusing the keys the task cannot honour); raise :class:`~spft.errors.ConfigError` naming the key."""

    def module(self, name: str):
        """Import one of the task's (heavy) modules; a missing third-party package names the extra to install."""
        import importlib

        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("spft"):
                raise
            hint = f" (install the extra: pip install 'spft[{self.extra}]')" if self.extra else ""
            raise ModuleNotFoundError(f"task {self.name!r} needs the package {exc.name!r}{hint}") from exc

    # --- training and evaluation -----------------------------------------------------------------------------
    def train(self, cfg) -> Path:
        """Start a run for ``cfg`` (through :func:`spft.tasks.lifecycle.start_run`); returns the run directory."""
        return self.module(self.train_module).train(cfg)

    def resume(self, run_dir: str | Path) -> Path:
        """Continue a killed run (through :func:`spft.tasks.lifecycle.resume_run`); returns the run directory."""
        return self.module(self.train_module).resume(run_dir)

    def evaluate(self, run_dir: str | Path, overrides: tuple[str, ...] = (), split: str | None = None,
                 checkpoint: str = "best", out: str | None = None, name: str | None = None) -> Evaluation:
        """Score a run's ``checkpoint`` weights on ``split`` of its data (``None``: the task's default), or on other
        data through ``overrides``; ``out`` / ``name`` place the files (``spft evaluate``)."""
        mod = self.module(self.evaluate_module)
        ev = mod.evaluate_run(run_dir, tuple(overrides), split=split, checkpoint=checkpoint, out=out, name=name)
        rows = mod.prediction_rows(ev) if hasattr(mod, "prediction_rows") else []
        return Evaluation(ev.metrics(), self.primary_metric, mod.format_table(ev), rows, ev)

    # --- what the commands print and write ---------------------------------------------------------------------
    def format_metric(self, value) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    def primary_value(self, run_dir: str | Path) -> str:
        """The primary metric of a finished run's ``metrics.json``, formatted (``n/a`` when missing)."""
        try:
            value = json.loads((Path(run_dir) / "metrics.json").read_text())[self.primary_metric]
        except (OSError, ValueError, KeyError, TypeError):
            return "n/a"
        return self.format_metric(value)

    def summary(self, metrics: dict) -> str:
        """What ``spft train`` prints from the run's ``metrics.json`` (default: every metric as it is)."""
        lines = [f"\nTest metrics ({metrics.get('split')}, n={metrics.get('n')}):"]
        lines += [f"  {key}: {json.dumps(value)}" for key, value in metrics.items() if key not in ("split", "n")]
        return "\n".join(lines)

    def report(self, sweep_dir: Path, out: str | Path | None = None, n_boot: int = 1000, seed: int = 0) -> Path:
        """Write ``spft report``'s tables, figures and report.html for a sweep of this task's runs."""
        raise ConfigError(f"spft report is not yet supported for {self.name} runs")

    def data_check(self, cfg, scan: bool = False, workers: int | None = None, headers: bool = False):
        """``spft data check``: a report with ``problems`` (list of lines), ``to_json()`` and ``text()``."""
        raise ConfigError(f"spft data check is not yet supported for {self.name} data")

    def prepare_cache(self, cfg, workers: int | None = None) -> dict:
        """``spft prepare cache``: the summary of the pre-resized image cache written for ``cfg``."""
        raise ConfigError(f"spft prepare cache: the image cache is not used by {self.name} runs "
                          "(it serves classification only)")

    def predict_api(self):
        """``load``, ``predict`` and ``export`` (``spft predict``, ``spft export``, ``spft.load``)."""
        if self.predict_module is None:
            raise ConfigError(f"predict/export is not yet supported for {self.name} runs (classification only for now)")
        from types import SimpleNamespace

        mod = self.module(self.predict_module)
        return SimpleNamespace(load=mod.load, predict=mod.predict, export=self._export)

    def _export(self, run_dir, out, format: str = "safetensors", checkpoint: str = "best"):  # noqa: A002
        if self.export_module is None:
            raise ConfigError(f"spft export is not yet supported for {self.name} runs")
        return self.module(self.export_module).export_run(run_dir, out, format, checkpoint)


def evaluation_of(result, primary: str, table: str, rows: list[dict] | None = None) -> Evaluation:
    """An :class:`Evaluation` from a task's own evaluation object (which has ``metrics()``)."""
    return Evaluation(result.metrics(), primary, table, rows or [], result)
