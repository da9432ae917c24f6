"""Read a sweep (or one run, or a folder of runs) from run directories only: which runs finished, their predictions.

A run is *used* when it has ``DONE`` and ``predictions_test.csv`` (or at least ``metrics.json``); every other run
the sweep lists is *skipped* with the reason (failed, unfinished, not started). Per-class AUC is recomputed from
the predictions with :func:`spft.metrics.multilabel_auc`; a disagreement with ``metrics.json`` is logged. Per-class
AUPRC comes from the same predictions (scikit-learn's ``average_precision_score``).

This is the classification reader: the task is read from the runs' ``config.yaml`` (:mod:`.provenance`) and a
detection or segmentation sweep is refused here (``spft report`` sends those to their own reports).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from spft.csvsafe import read_rows
from spft.errors import DataError, MissingFileError
from spft.experiments.rundir import is_done
from spft.metrics import AucResult, multilabel_auc
from spft.reporting.bootstrap import average_precision
from spft.reporting.provenance import Provenance, provenance, sweep_task

log = logging.getLogger(__name__)


@dataclass
class RunRecord:
    """One finished run: its place in the sweep, resolved config, recomputed AUCs, predictions and history."""

    overlay: str
    label: str
    seed: int
    run_dir: Path
    config: dict
    auc: AucResult
    metrics: dict
    probs: np.ndarray | None = None
    labels: np.ndarray | None = None
    groups: np.ndarray | None = None
    history: list[dict] = field(default_factory=list)
    auprc: dict[str, float | None] = field(default_factory=dict)  # empty without predictions

    def n_pos(self, name: str) -> int | None:
        """Positive test images of class ``name`` (None without predictions)."""
        if self.labels is None or name not in self.classes:
            return None
        return int((np.nan_to_num(self.labels[:, self.classes.index(name)]) > 0.5).sum())

    @property
    def classes(self) -> list[str]:
        return self.auc.classes

    @property
    def macro(self) -> float | None:
        return self.auc.macro


@dataclass
class SkippedRun:
    overlay: str
    seed: int | None
    run_dir: Path
    reason: str


@dataclass
class SweepData:
    """Everything the report needs: the study's overlays in order, the runs used and the runs skipped."""

    root: Path
    kind: str  # repeat | ablate | run | runs
    study: dict
    runs: list[RunRecord]
    skipped: list[SkippedRun]
    config: str | None = None
    prov: Provenance | None = None

    def overlay_order(self) -> list[str]:
        """Overlays in the study's order, only those with at least one used run."""
        used = {r.overlay for r in self.runs}
        order = [o["name"] for o in self.study.get("overlays", [])]
        order += sorted(used - set(order))
        return [o for o in order if o in used]

    def label(self, overlay: str) -> str:
        for o in self.study.get("overlays", []):
            if o["name"] == overlay:
                return o.get("label") or overlay
        return overlay

    def of(self, overlay: str) -> list[RunRecord]:
        return sorted((r for r in self.runs if r.overlay == overlay), key=lambda r: r.seed)

    @property
    def data_name(self) -> str | None:
        return self.runs[0].config.get("data", {}).get("name") if self.runs else None


def read_predictions(path: Path, classes: list[str] | None = None):
    """``(classes, probs [N, C], labels [N, C] with NaN = unknown, groups [N])`` from ``predictions_<split>.csv``."""
    with open(path, newline="") as fh:
        rows = read_rows(fh)  # ids / groups back as written before escaping (spft.csvsafe)
    if not rows:
        raise DataError(f"{path}: no predictions")
    header = list(rows[0])
    found = [c[len("prob_"):] for c in header if c.startswith("prob_")]
    classes = [c for c in (classes or found) if c in found]
    probs = np.array([[float(r[f"prob_{c}"]) for c in classes] for r in rows], dtype=np.float64)
    labels = np.array([[float(r[f"label_{c}"]) if r[f"label_{c}"].strip() != "" else np.nan for c in classes]
                       for r in rows], dtype=np.float64)
    groups = np.array([r.get("group") or r.get("id") or str(i) for i, r in enumerate(rows)])
    return classes, probs, labels, groups


def _read_history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return read_rows(fh)


def load_run(run_dir: Path, overlay: str, label: str, seed: int | None = None) -> RunRecord:
    """A finished run directory as a :class:`RunRecord` (AUC recomputed from the predictions when present)."""
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").is_file() else {}
    metrics = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {}
    seed = int(config.get("seed", 0)) if seed is None else seed
    history = _read_history(run_dir / "history.csv")
    pred = run_dir / "predictions_test.csv"
    if not pred.is_file():
        if not isinstance(metrics.get("per_class_auc"), dict):
            raise DataError(f"{run_dir}: neither predictions_test.csv nor per_class_auc in metrics.json; is it a "
                            "classification run (config.yaml task)?")
        per_class = metrics["per_class_auc"]
        auc = AucResult(list(per_class), per_class, metrics.get("macro_auc"), list(metrics.get("excluded_classes", [])))
        return RunRecord(overlay, label, seed, run_dir, config, auc, metrics, history=history)
    classes, probs, labels, groups = read_predictions(pred, list(metrics.get("per_class_auc", {})) or None)
    auc = multilabel_auc(probs, labels, classes)
    stored = metrics.get("macro_auc")
    if stored is not None and auc.macro is not None and abs(stored - auc.macro) > 1e-6:
        log.warning("%s: macro AUC from predictions_test.csv (%.6f) differs from metrics.json (%.6f); the report "
                    "uses the predictions", run_dir, auc.macro, stored)
    return RunRecord(overlay, label, seed, run_dir, config, auc, metrics, probs, labels, groups, history,
                     average_precision(probs, labels, classes))


def _status_reason(run_dir: Path, entry: dict | None) -> str | None:
    """None when the run can be used, else why it is skipped."""
    if is_done(run_dir) and ((run_dir / "predictions_test.csv").is_file() or (run_dir / "metrics.json").is_file()):
        return None
    if entry is not None and entry.get("status") == "failed":
        return f"failed ({entry.get('note') or 'exit code ' + str(entry.get('returncode'))})"
    if is_done(run_dir):
        return "finished but has neither predictions_test.csv nor metrics.json"
    if (run_dir / "config.yaml").is_file():
        return "unfinished (no DONE)"
    return "not started"


def _entries(root: Path) -> tuple[str, dict, list[dict], str | None]:
    """(kind, study, run entries, config) from sweep.json, a single run directory, or a folder of run directories."""
    sweep_json = root / "sweep.json"
    if sweep_json.is_file():
        data = json.loads(sweep_json.read_text())
        definition = data.get("definition", {})
        entries = [dict(e, run_dir=root / e["run_dir"]) for e in data.get("runs", [])]
        return definition.get("kind", "ablate"), definition.get("study", {}), entries, definition.get("config")
    if (root / "config.yaml").is_file():
        return "run", {"name": root.name, "kind": "repeat", "overlays": []}, [
            {"overlay": root.name, "seed": None, "run_dir": root}], None
    entries = []
    for cfg in sorted(root.glob("**/config.yaml")):
        rel = cfg.parent.relative_to(root)
        if len(rel.parts) > 3 or "checkpoints" in rel.parts:
            continue
        seeded = re.fullmatch(r"seed(\d+)", rel.name) and len(rel.parts) > 1
        overlay = str(rel.parent) if seeded else str(rel)
        entries.append({"overlay": overlay, "seed": int(rel.name[4:]) if seeded else None, "run_dir": cfg.parent})
    return "runs", {"name": root.name, "kind": "custom", "overlays": []}, entries, None


def read_entries(root: str | Path) -> tuple[str, dict, list[dict], str | None]:
    """(kind, study, run entries, config) of the sweep, run or folder of runs at ``root``; MissingFileError if none."""
    root = Path(root)
    if not root.is_dir():
        raise MissingFileError(f"{root}: no such directory")
    return _entries(root)


def collect(root: str | Path) -> SweepData:
    """Read the sweep at ``root`` (``sweep.json``), or one run directory, or a folder holding run directories."""
    root = Path(root)
    kind, study, entries, config = read_entries(root)
    task = sweep_task(root, entries)
    if task != "classification":
        raise DataError(f"{root}: the runs are {task} runs (config.yaml task); this reader is for classification")
    data = SweepData(root, kind, study, [], [], config, provenance(root, task, entries, study, config))
    for entry in entries:
        run_dir = Path(entry["run_dir"])
        reason = _status_reason(run_dir, entry)
        if reason is None:
            data.runs.append(load_run(run_dir, entry["overlay"], data.label(entry["overlay"]), entry["seed"]))
        else:
            data.skipped.append(SkippedRun(entry["overlay"], entry["seed"], run_dir, reason))
    if not data.runs:
        raise MissingFileError(f"{root}: no finished run (with DONE and predictions_test.csv) to report on"
                                + (f"; skipped: {len(data.skipped)}" if data.skipped else ""))
    return data
