"""What ``spft evaluate`` does the same way for every task: its opening (:func:`open_evaluation`: the run's config
with the evaluation's overrides, whether that reads other data, the split asked for, a smoke limit given on the
command line) and its files (:meth:`EvaluationRequest.output_paths`: the training record and earlier evaluations of
other data are never overwritten; :func:`write_evaluation_files`). A task's ``evaluate_run`` reads its rows and
scores them in between.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from spft.errors import ConfigError, DataError

log = logging.getLogger(__name__)

# Keys that choose *which* data is read: changing any of them in `spft evaluate RUN KEY=VALUE` evaluates other data.
DATA_IDENTITY_KEYS = ("name", "root", "csv", "images_root", "masks_csv", "source", "phantom", "split_column",
                      "split_fractions", "split_seed", "official_test", "views", "image_column", "label_column",
                      "label_separator", "none_label", "train_json", "val_json", "test_json", "images", "yaml",
                      "class_column", "box_columns")


def is_other_data(recorded_cfg, cfg) -> bool:
    """Whether ``cfg`` (the run's config with the evaluation's overrides) reads other data than the run did."""
    import dataclasses

    old, new = dataclasses.asdict(recorded_cfg.data), dataclasses.asdict(cfg.data)
    return any(old.get(k) != new.get(k) for k in DATA_IDENTITY_KEYS)


def data_file_of(cfg, source: str = "") -> str:
    """The file (or folder) the evaluated rows came from, as recorded in the metrics (``data_file``)."""
    data = cfg.data
    return str(source or getattr(data, "csv", None) or getattr(data, "masks_csv", None) or data.root or data.name)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "data"


def output_paths(run_dir: Path, cfg, other: bool, split: str, split_given: bool, out: str | None = None,
                 name: str | None = None, data_file: str = "", predictions_suffix: str = ".csv"
                 ) -> tuple[Path, Path]:
    """``(metrics file, predictions file)`` of an evaluation; an earlier evaluation's files are never overwritten.

    * the run's own data: ``metrics_<split>_eval.json`` / ``predictions_<split>_eval.csv`` in the run directory
      (a re-evaluation of the same rows, replaced when run again);
    * other data: ``metrics_<name>.json`` / ``predictions_<name>.csv``, ``<name>`` = ``--name`` or the data file's
      stem (plus ``_<split>`` when ``--split`` was given); when either exists, ``<name>-2``, ``<name>-3`` ...;
    * ``--out DIR``: those names in DIR; ``--out FILE.json``: FILE.json and FILE.csv (replaced when run again).

    The training record (``metrics.json``, ``predictions_test.csv`` of the run directory) is never a target.
    """
    record = {(run_dir / "metrics.json").resolve(), (run_dir / "predictions_test.csv").resolve()}
    if out is not None and Path(out).suffix.lower() == ".json":
        metrics = Path(out).expanduser()
        predictions = metrics.with_suffix(predictions_suffix)
        if {metrics.resolve(), predictions.resolve()} & record:
            raise ConfigError(f"--out {out}: that is the run's training record, which an evaluation never replaces")
        metrics.parent.mkdir(parents=True, exist_ok=True)
        return metrics, predictions
    folder = Path(out).expanduser() if out is not None else run_dir
    folder.mkdir(parents=True, exist_ok=True)
    if name is not None:
        base = _safe_name(name)
    elif other:
        stem = Path(data_file).stem if data_file else cfg.data.name
        base = _safe_name(stem) + (f"_{split}" if split_given else "")
    else:
        base = f"{split}_eval"
    if not other and name is None:
        return folder / f"metrics_{base}.json", folder / f"predictions_{base}{predictions_suffix}"
    candidate, k = base, 1
    while True:
        metrics = folder / f"metrics_{candidate}.json"
        predictions = folder / f"predictions_{candidate}{predictions_suffix}"
        taken = metrics.exists() or predictions.exists() or {metrics.resolve(), predictions.resolve()} & record
        if not taken:
            return metrics, predictions
        k += 1
        candidate = f"{base}-{k}"


@dataclass
class EvaluationRequest:
    """One ``spft evaluate``: what was asked (run, checkpoint, split, ``--out`` / ``--name``) and what it implies."""

    run_dir: Path
    cfg: object  # the run's config with the evaluation's overrides (spft.config.SpftConfig)
    other: bool  # the overrides read other data than the run did
    split: str | None  # the split asked for (checked), None: the task's default
    checkpoint: str
    limit: int | float | None  # trainer.limit_test_batches given on the command line (never the run's own)
    out: str | None = None
    name: str | None = None

    @property
    def split_given(self) -> bool:
        return self.split is not None

    def rows(self, n_rows: int, indices) -> tuple[str, object, str]:
        """``(split, rows, what)``: every row of other data unless a split was asked for (``split`` "all"), else the
        asked (default ``test``) split's rows (``indices(split)``); refuses an empty selection."""
        import numpy as np

        if self.other and not self.split_given:
            split, rows, what = "all", np.arange(n_rows), "every row"
        else:
            split = self.split or "test"
            rows, what = indices(split), f"the {split} split"
        if len(rows) == 0:
            raise DataError(f"{data_file_of(self.cfg)}: the {split} split is empty: nothing to evaluate")
        return split, rows, what

    def output_paths(self, split: str, data_file: str, predictions_suffix: str = ".csv") -> tuple[Path, Path]:
        """Where this evaluation's metrics and predictions go (:func:`output_paths`)."""
        return output_paths(self.run_dir, self.cfg, self.other, split, self.split_given, self.out, self.name,
                            data_file, predictions_suffix)

    def record(self, ev, data_file: str) -> None:
        """Stamp ``ev`` (a task's evaluation object) with where its rows came from, the checkpoint and the limit."""
        ev.data_file, ev.checkpoint = data_file, self.checkpoint
        if self.limit is not None:
            ev.extra["limited"] = {"test": self.limit}


def open_evaluation(run_dir: str | Path, overrides=(), split: str | None = None, checkpoint: str = "best",
                    out: str | None = None, name: str | None = None) -> EvaluationRequest:
    """The opening of every ``evaluate_run``: the run's config with ``overrides``, whether they read other data,
    the split checked, and a smoke limit given on the command line (warned about: metrics of a subset)."""
    from spft.experiments.rundir import checked_split, load_run_config
    from spft.tasks.common.limits import given_test_limit

    run_dir = Path(run_dir)
    if split is not None:
        split = checked_split(split)
    cfg = load_run_config(run_dir, overrides)
    other = is_other_data(load_run_config(run_dir), cfg)
    limit = given_test_limit(cfg, overrides)  # the run's own trainer.limit_* do not apply here
    if limit is not None:
        log.warning("trainer.limit_test_batches=%s: scoring a SUBSET of the rows (a smoke check, not a result)", limit)
    return EvaluationRequest(run_dir, cfg, other, split, checkpoint, limit, out, name)


def write_evaluation_files(metrics_path: Path, predictions_path: Path, rows: list[dict], metrics: dict,
                           best_epoch: int | None = None) -> None:
    """The predictions CSV, then the metrics JSON naming it (with the checkpoint's epoch), both atomically."""
    from spft.atomic import atomic_write_csv, atomic_write_json

    atomic_write_csv(predictions_path, rows)
    metrics = dict(metrics)
    if best_epoch is not None:
        metrics["best_epoch"] = int(best_epoch)
    metrics["predictions_file"] = str(predictions_path)
    atomic_write_json(metrics_path, metrics)
