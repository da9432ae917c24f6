"""What a run sends to a tracking server, read from its run directory alone (no tracking library imported here).

The run directory stays the record; tracking is a copy of it. This module says what is copied: the resolved config
as flat params (:func:`flat_params`), each ``history.csv`` row as metrics at ``step = epoch`` (:func:`epoch_metrics`),
the numbers of ``metrics.json`` at the end (:func:`final_metrics`), the record files and figures
(:func:`artifact_files`). It also keeps the two files tracking adds to a run directory:

- ``tracking.json`` (:class:`TrackingState`): the server, experiment and run id (a resumed run continues the same
  MLflow run), which epochs were handled (sent, or queued as unsent) so a resumed run never logs an epoch twice,
  and whether the params, the end of the run and its status went out;
- ``tracking_unsent.jsonl`` (:class:`UnsentLog`): one JSON object per call the server did not take,
  ``{"kind", "payload", "time"}``, in order; ``spft track push RUN`` sends them and removes the file.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from spft.csvsafe import read_rows

STATE_FILE = "tracking.json"
UNSENT_FILE = "tracking_unsent.jsonl"

# MLflow's limits (mlflow.utils.validation): values are cut to fit, batches are split
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
MAX_KEY = 250
MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000

# the run's record files sent as artifacts at the end (those present), then *.png at the top and under figures/
RECORD_FILES = ("config.yaml", "env.json", "data.json", "metrics.json", "class_weights.json", "history.csv",
                "thresholds.json", "calibration.json", "ultralytics.json")

_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-. :/]")


def clean_key(key: str) -> str:
    """A param or metric name MLflow accepts: letters, digits, ``_ - . : /`` and spaces; others become ``_``."""
    return _BAD_KEY_CHARS.sub("_", str(key))[:MAX_KEY]


def _param_text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def flat_params(tree: dict, prefix: str = "") -> dict[str, str]:
    """The resolved config as ``{dotted key: text}``: nested mappings are walked (``model.config.hidden_size``),
    lists and scalars are JSON text (``null``, ``true``, ``[0.7, 0.15, 0.15]``), strings as they are; each value is
    cut to MLflow's 6000 characters."""
    out: dict[str, str] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat_params(value, dotted + "."))
        else:
            out[clean_key(dotted)] = _param_text(value)[:MAX_PARAM_VALUE]
    return out


def number(value) -> float | None:
    """A finite float from a CSV cell or JSON value; None for text, blanks, booleans, NaN and infinities."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def read_history(run_dir: Path) -> list[dict]:
    """The rows of ``history.csv`` (an empty list when it is absent or being replaced)."""
    path = Path(run_dir) / "history.csv"
    try:
        with open(path, newline="") as fh:
            return read_rows(fh)  # spft.csvsafe: cells as written before escaping
    except OSError:
        return []


def epoch_of(row: dict) -> int | None:
    value = number(row.get("epoch"))
    return None if value is None else int(value)


def epoch_metrics(row: dict, timestamp_ms: int) -> list[dict]:
    """One history row as metrics ``{key, value, step, timestamp}`` at ``step = epoch``: every numeric column
    (``stage`` and the open-block count too), blanks and text left out."""
    epoch = epoch_of(row)
    out = []
    for key, cell in row.items():
        value = number(cell)
        if key is None or value is None or epoch is None:
            continue
        out.append({"key": clean_key(key), "value": value, "step": epoch, "timestamp": timestamp_ms})
    return out


def _flat_numbers(node, prefix: str, out: dict[str, float]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            _flat_numbers(value, f"{prefix}/{key}" if prefix else str(key), out)
        return
    value = number(node)
    if value is not None and prefix:
        out[clean_key(prefix)] = value


def final_metrics(run_dir: Path, timestamp_ms: int) -> list[dict]:
    """The numbers of ``metrics.json`` as metrics named ``<split>_<key>`` (nested keys joined by ``/``:
    ``test_per_class_auc/Cardiomegaly``), at the step of the best epoch (0 when unknown)."""
    path = Path(run_dir) / "metrics.json"
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(metrics, dict):
        return []
    split = str(metrics.get("split") or "test")
    flat: dict[str, float] = {}
    _flat_numbers({k: v for k, v in metrics.items() if k not in ("split",)}, "", flat)
    best = number(metrics.get("best_epoch"))
    step = int(best) if best is not None else 0
    return [{"key": clean_key(f"{split}_{k}"), "value": v, "step": step, "timestamp": timestamp_ms}
            for k, v in flat.items()]


def artifact_files(run_dir: Path) -> list[list]:
    """``[relative path, artifact folder or None]`` of the files sent at the end: the record files present
    (:data:`RECORD_FILES`), ``*.png`` beside them, segmentation's overlays (``predictions_test/*_overlay.png``) and
    every ``*.png`` under ``figures/`` (its folders kept)."""
    run_dir = Path(run_dir)
    files: list[list] = [[name, None] for name in RECORD_FILES if (run_dir / name).is_file()]
    files += [[p.name, None] for p in sorted(run_dir.glob("*.png")) if p.is_file()]
    files += [[f"predictions_test/{p.name}", "predictions_test"]
              for p in sorted((run_dir / "predictions_test").glob("*_overlay.png")) if p.is_file()]
    figures = run_dir / "figures"
    if figures.is_dir():
        for p in sorted(figures.rglob("*.png")):
            rel = p.relative_to(run_dir)
            files.append([str(rel), str(rel.parent)])
    return files


def chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)] or [[]]


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class TrackingState:
    """``tracking.json``: where the run is tracked and what has gone out (see the module doc)."""

    uri: str | None = None
    experiment: str | None = None
    experiment_id: str | None = None
    run_id: str | None = None
    run_name: str | None = None
    parent_run_id: str | None = None
    params: bool = False  # the config's params were sent or queued
    epochs: list[int] = field(default_factory=list)  # epochs whose history row was sent or queued
    stage2_start_epoch: int | None = None
    final: bool = False  # metrics.json values and artifacts were sent or queued
    status: str | None = None  # the last status sent or queued: RUNNING, FINISHED, FAILED, KILLED

    @classmethod
    def read(cls, folder: Path) -> TrackingState:
        path = Path(folder) / STATE_FILE
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return cls()
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__} if isinstance(data, dict) else {}
        state = cls(**known)
        state.epochs = sorted({int(e) for e in state.epochs or []})
        return state

    def write(self, folder: Path) -> None:
        from spft.atomic import atomic_write_json

        atomic_write_json(Path(folder) / STATE_FILE, asdict(self))


class UnsentLog:
    """``tracking_unsent.jsonl``: the calls a tracking server did not take, appended one JSON line each."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / UNSENT_FILE

    def append(self, kind: str, payload: dict) -> None:
        line = json.dumps({"kind": kind, "payload": payload, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        from spft.atomic import open_append

        with open_append(self.path) as fh:  # one write per record (a kill leaves whole lines); never through a link
            fh.write(line + "\n")

    def records(self) -> list[dict]:
        """The records in order; a line a kill cut short is left out."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except OSError:
            return []
        out = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and "kind" in record:
                out.append(record)
        return out

    def replace(self, records: list[dict]) -> None:
        """Keep only ``records`` (what is still unsent); no records: the file is removed."""
        if not records:
            self.path.unlink(missing_ok=True)
            return
        from spft.atomic import atomic_write_text

        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in records))


def is_file_store(uri: str) -> bool:
    """``file:...`` or a bare path (``./mlruns``, ``/data/mlruns``): MLflow's file store."""
    from urllib.parse import urlparse

    scheme = urlparse(uri).scheme
    return scheme in ("", "file") or len(scheme) == 1  # one letter: a Windows drive (C:\\mlruns)


def check_uri(uri: str | None, what: str = "tracking.mlflow.uri") -> None:
    """Refuse in one line, before anything is sent or trained, a file-store URI that the installed MLflow will not
    open: MLflow 3 put its file store in maintenance mode and raises on it unless ``MLFLOW_ALLOW_FILE_STORE=true``
    (then it is used as MLflow allows). ``sqlite:///PATH/mlflow.db`` is the local-file store that works."""
    if not uri or not is_file_store(uri):
        return
    try:
        from mlflow.environment_variables import MLFLOW_ALLOW_FILE_STORE
    except ImportError:  # an MLflow without the switch: its file store still works
        return
    try:
        if MLFLOW_ALLOW_FILE_STORE.get():
            return
    except ValueError:  # not true/false/1/0: MLflow would refuse the store too
        pass
    import mlflow

    from spft.errors import ConfigError

    raise ConfigError(f"{what} {uri}: MLflow {mlflow.__version__}'s file store is in maintenance mode and refuses "
                      "new runs; use a local database such as sqlite:///mlflow.db (or an http:// server), or set "
                      "MLFLOW_ALLOW_FILE_STORE=true to use the file store anyway")
