"""``spft report`` for detection sweeps (Ultralytics YOLOv8 / RT-DETR runs): mAP and per-class AP tables.

Numbers come from each run's ``metrics.json`` (``map50``, ``map50_95``, ``precision``, ``recall``,
``per_class_ap50`` and, for VinDr-CXR, ``map40``: Ultralytics' validator on the best EMA weights, test split) —
detection runs write no per-image predictions to recompute from. Tables: mean ± sample std (ddof=1) across seeds
of the summary metrics and of AP@50 per class, one column per study row (overlay); per-run values; for a study the
ablation table (each row's switches, mAP mean ± std, and the seed-wise paired difference of mAP@50-95 against the
row above). Figures: per-class AP@50 with error bars across seeds and the training curves (validation mAP per
epoch, stage boundaries marked). The runs used, the runs skipped, the config and the exact overrides are listed as
in the classification report.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import spft
from spft.atomic import atomic_write_json, atomic_write_text
from spft.errors import MissingFileError
from spft.reporting import figures
from spft.reporting.collect import SkippedRun, _read_history, _status_reason, read_entries
from spft.reporting.html import Figure, render_html
from spft.reporting.provenance import (
    Provenance,
    overrides_table,
    overrides_text,
    provenance,
    read_config,
    summary_lines,
)
from spft.reporting.provenance import (
    relative_path as _rel,
)
from spft.reporting.summaries import _switches, file_stem
from spft.reporting.tables import MeanStd, Table, md_escape, mean_std

log = logging.getLogger(__name__)

MAP50 = "mAP@50"
SUMMARY = (("map50", "mAP@50"), ("map50_95", "mAP@50-95"), ("precision", "precision"), ("recall", "recall"),
           ("map40", "mAP@40"))
_STD_NOTE = "std is the sample standard deviation (ddof=1) across seeds; n = finished runs"


@dataclass
class DetectionRun:
    overlay: str
    label: str
    seed: int
    run_dir: Path
    config: dict
    metrics: dict
    history: list[dict] = field(default_factory=list)

    def ap50(self, name: str) -> float | None:
        return self.metrics.get("map50") if name == MAP50 else self.metrics.get("per_class_ap50", {}).get(name)


@dataclass
class DetectionData:
    root: Path
    kind: str
    study: dict
    runs: list[DetectionRun]
    skipped: list[SkippedRun]
    prov: Provenance

    def overlay_order(self) -> list[str]:
        used = list(dict.fromkeys(r.overlay for r in self.runs))
        order = [o["name"] for o in self.study.get("overlays", []) if o["name"] in used]
        return order + [o for o in used if o not in order]

    def label(self, overlay: str) -> str:
        for o in self.study.get("overlays", []):
            if o["name"] == overlay:
                return o.get("label") or overlay
        return overlay

    def of(self, overlay: str) -> list[DetectionRun]:
        return sorted((r for r in self.runs if r.overlay == overlay), key=lambda r: r.seed)

    def classes(self) -> list[str]:
        order: list[str] = []
        for r in self.runs:
            order += [c for c in r.metrics.get("per_class_ap50", {}) if c not in order]
        return order


def collect_detection(root: str | Path) -> DetectionData:
    """The finished detection runs (``DONE`` and ``metrics.json``) of the sweep, run or folder at ``root``."""
    root = Path(root)
    kind, study, entries, config = read_entries(root)
    data = DetectionData(root, kind, study, [], [], provenance(root, "detection", entries, study, config))
    for entry in entries:
        run_dir = Path(entry["run_dir"])
        reason = _status_reason(run_dir, entry)
        if reason is None and not (run_dir / "metrics.json").is_file():
            reason = "finished but has no metrics.json"
        if reason is not None:
            data.skipped.append(SkippedRun(entry["overlay"], entry["seed"], run_dir, reason))
            continue
        cfg = read_config(run_dir)
        seed = int(cfg.get("seed", 0)) if entry["seed"] is None else entry["seed"]
        metrics = json.loads((run_dir / "metrics.json").read_text())
        data.runs.append(DetectionRun(entry["overlay"], data.label(entry["overlay"]), seed, run_dir, cfg, metrics,
                                      _read_history(run_dir / "history.csv")))
    if not data.runs:
        raise MissingFileError(f"{root}: no finished detection run (with DONE and metrics.json) to report on"
                               + (f"; skipped: {len(data.skipped)}" if data.skipped else ""))
    return data


def _column(data: DetectionData, overlay: str) -> str:
    return data.label(overlay) if len(data.overlay_order()) > 1 else "ours"


def summary_table(data: DetectionData) -> Table:
    """mAP@50, mAP@50-95, precision, recall (and mAP@40 when recorded): mean ± std across seeds per overlay."""
    overlays = data.overlay_order()
    keys = [(k, name) for k, name in SUMMARY if any(r.metrics.get(k) is not None for r in data.runs)]
    rows = [[name, *(mean_std([r.metrics.get(k) for r in data.of(o)]) for o in overlays)] for k, name in keys]
    return Table("detection_mean_std", "Detection metrics, mean ± std across seeds",
                 "Test split, best EMA weights, Ultralytics' validator (metrics.json): mAP@50-95 averages IoU "
                 f"0.50:0.95; precision and recall at the validator's confidence; {_STD_NOTE}.",
                 ["metric", *(_column(data, o) for o in overlays)], rows)


def ap_table(data: DetectionData) -> Table:
    """Per-class AP@50, mean ± std across seeds, one column per overlay; mAP@50 first."""
    overlays = data.overlay_order()
    rows = [[name, *(mean_std([r.ap50(name) for r in data.of(o)]) for o in overlays)]
            for name in [MAP50, *data.classes()]]
    return Table("ap50_mean_std", "Per-class AP@50, mean ± std across seeds",
                 f"Average precision at IoU 0.5 per class on the test split; {_STD_NOTE}; n/a: no box of that class "
                 "in the test split.", ["class", *(_column(data, o) for o in overlays)], rows)


def per_run_tables(data: DetectionData) -> list[Table]:
    """Per-class AP@50 and the summary metrics of every run, one table per overlay."""
    tables, multi = [], len(data.overlay_order()) > 1
    for overlay in data.overlay_order():
        runs = data.of(overlay)
        keys = [(k, name) for k, name in SUMMARY if any(r.metrics.get(k) is not None for r in runs)]
        rows = [[name, *(r.metrics.get(k) for r in runs)] for k, name in keys]
        rows += [[name, *(r.ap50(name) for r in runs)] for name in data.classes()]
        rows.append(["best epoch", *("" if r.metrics.get("best_epoch") is None else str(r.metrics["best_epoch"])
                                     for r in runs)])
        suffix = f"_{file_stem(overlay)}" if multi else ""
        title = f" — {data.label(overlay)}" if multi else ""
        tables.append(Table(f"detection_per_run{suffix}", f"Per-run detection metrics{title}",
                            "Each run's metrics.json (test split); class rows are AP@50; best epoch: the epoch of "
                            "best.pt (highest validation mAP@50-95).", ["", *(f"seed {r.seed}" for r in runs)], rows))
    return tables


def _paired(current: list[DetectionRun], previous: list[DetectionRun], key: str) -> MeanStd:
    before = {r.seed: r.metrics.get(key) for r in previous}
    return mean_std([r.metrics[key] - before[r.seed] for r in current
                     if r.metrics.get(key) is not None and before.get(r.seed) is not None], signed=True)


def ablation_table(data: DetectionData) -> Table | None:
    """One row per overlay: switches, mAP@50 and mAP@50-95 mean ± std, paired Δ mAP@50-95 against the row above."""
    overlays = data.overlay_order()
    if len(overlays) < 2:
        return None
    rows = []
    for i, overlay in enumerate(overlays):
        runs = data.of(overlay)
        delta = _paired(runs, data.of(overlays[i - 1]), "map50_95") if i else "—"
        rows.append([data.label(overlay), *_switches(runs[0]), mean_std([r.metrics.get("map50") for r in runs]),
                     mean_std([r.metrics.get("map50_95") for r in runs]), delta])
    return Table("ablation", f"Ablation: {data.study.get('name', '')}",
                 f"Test mAP per row ({_STD_NOTE}). Δ: mean ± std of the seed-wise paired differences of mAP@50-95 "
                 "(this row − the previous row, same seed), over the seeds both rows finished.",
                 ["Row", "unfreeze", "top k", "class weights", "EMA", "mAP@50", "mAP@50-95",
                  "Δ mAP@50-95 vs previous row (paired)"], rows)


def build_figures(data: DetectionData, fig_dir: Path) -> list[Figure]:
    overlays, names = data.overlay_order(), [MAP50, *data.classes()]
    series = {}
    for o in overlays:
        stats = [mean_std([r.ap50(n) for r in data.of(o)]) for n in names]
        series[f"{data.label(o)} (n={len(data.of(o))})"] = ([s.mean for s in stats], [s.std for s in stats])
    out = [Figure(figures.auc_error_bars(names, series, "Per-class test AP@50 across seeds",
                                         fig_dir / "ap50_error_bars",
                                         xlabel="AP@50 (test split), mean ± sample std across seeds", chance=False),
                  "Per-class test AP@50 (and mAP@50), mean with ±1 sample std (ddof=1) error bars across seeds.")]
    for o in overlays:
        histories = {f"seed {r.seed}": r.history for r in data.of(o) if r.history}
        if histories:
            stem = f"training_curves_{file_stem(o)}" if len(overlays) > 1 else "training_curves"
            out.append(Figure(figures.detection_curves(histories, f"Training curves — {data.label(o)}",
                                                       fig_dir / stem),
                              f"Summed train losses and validation mAP@50 (circles) / mAP@50-95 (squares) (EMA "
                              f"weights) per epoch, {data.label(o)}; the grey band is stage 2, thin grey lines "
                              "further backbone modules opening."))
    return out



def _num(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def build_detection_report(sweep_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``tables/``, ``figures/``, ``report.md``, ``report.json`` and ``report.html`` for a detection sweep."""
    data = collect_detection(sweep_dir)
    root = data.root
    out = Path(out) if out else root / "report"
    log.info("detection report: %d runs used, %d skipped", len(data.runs), len(data.skipped))
    study = [t for t in (ablation_table(data),) if t is not None]
    summary_tables = [*study, summary_table(data), ap_table(data)]
    run_tables = per_run_tables(data)
    for table in summary_tables + run_tables:
        table.write(out / "tables")
    figs = build_figures(data, out / "figures")
    overlays = [(o, data.label(o)) for o in data.overlay_order()]
    over = overrides_table(data.prov, overlays)
    runs_md = Table("runs_used", f"Runs used ({len(data.runs)})", "Exact overrides from each run's env.json command "
                    "(or the sweep's plan).", ["overlay", "seed", "run directory", "mAP@50-95", "overrides (exact)"],
                    [[r.overlay, str(r.seed), _rel(r.run_dir, root), r.metrics.get("map50_95"),
                      overrides_text(data.prov.of_run(r.run_dir))] for r in data.runs])
    note = ("Every number comes from the runs' metrics.json (Ultralytics' validator on each run's best EMA weights, "
            "test split); std is the sample standard deviation (ddof=1). The paper publishes no detection numbers, so "
            "none are shown.")
    atomic_write_text(out / "report.md", f"# SPFT detection report: {md_escape(root.name)}\n\n{md_escape(note)}\n\n"
                      + "\n".join(t.to_markdown() for t in [over, runs_md, *summary_tables, *run_tables]))
    atomic_write_json(out / "report.json", {
        "sweep": str(root), "kind": data.kind, "study": data.study, **data.prov.as_json(root),
        "runs": [{"overlay": r.overlay, "seed": r.seed, "run_dir": _rel(r.run_dir, root),
                  "overrides": data.prov.of_run(r.run_dir), **r.metrics} for r in data.runs],
        "skipped": [{"overlay": s.overlay, "seed": s.seed, "run_dir": _rel(s.run_dir, root), "reason": s.reason}
                    for s in data.skipped]})
    first = data.runs[0]
    lines = [("sweep", str(root)), ("kind", data.kind + (f" — study '{data.study.get('name')}'"
                                                         if data.kind == "ablate" else "")),
             *summary_lines(data.prov),
             ("dataset", f"{first.config.get('data', {}).get('name')} ({len(data.classes())} classes, "
                         f"{first.metrics.get('n', '?')} test images)"),
             ("model", str(first.config.get("model", {}).get("name"))),
             ("seeds", ", ".join(str(s) for s in sorted({r.seed for r in data.runs}))),
             ("runs", f"{len(data.runs)} used, {len(data.skipped)} skipped"),
             ("generated", f"{time.strftime('%Y-%m-%d %H:%M:%S')} by spft {spft.__version__}")]
    used = [[r.overlay, str(r.seed), _rel(r.run_dir, root), _num(r.metrics.get("map50")),
             _num(r.metrics.get("map50_95")), str(r.metrics.get("best_epoch", "")), str(r.metrics.get("n", "")),
             overrides_text(data.prov.of_run(r.run_dir))] for r in data.runs]
    skipped = [[s.overlay, "" if s.seed is None else str(s.seed), _rel(s.run_dir, root), s.reason]
               for s in data.skipped]
    page = render_html(f"SPFT detection report: {root.name}", lines, note, used, skipped, summary_tables, figs,
                       run_tables, used_header=["overlay", "seed", "run directory", "mAP@50", "mAP@50-95",
                                                "best epoch", "test images", "overrides (exact)"],
                       header_tables=[over])
    atomic_write_text(out / "report.html", page)
    return out
