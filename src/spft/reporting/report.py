"""``spft report SWEEP_DIR``: tables, figures and a self-contained report.html from run directories only.

Output (default ``SWEEP_DIR/report``): ``tables/<name>.{md,csv,tex}``, ``figures/<name>.{png,svg}``,
``report.md`` (every table), ``report.json`` (runs used/skipped, per-run AUCs, intervals) and ``report.html``.
Every number is recomputed from the runs' ``predictions_test.csv`` (``metrics.json`` when predictions are missing).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import spft
from spft.experiments.rundir import atomic_write_json, atomic_write_text
from spft.reporting import figures, paper
from spft.reporting.bootstrap import BootstrapResult, bootstrap_auc
from spft.reporting.collect import SweepData, collect
from spft.reporting.html import Figure, render_html
from spft.reporting.summaries import (
    MACRO,
    ablation_table,
    bootstrap_tables,
    class_order,
    depth_table,
    mean_std_table,
    per_run_tables,
)
from spft.reporting.tables import Table, mean_std

log = logging.getLogger(__name__)


def _bootstraps(data: SweepData, n_boot: int, seed: int) -> dict[str, BootstrapResult]:
    boots = {}
    for run in data.runs:
        if run.probs is not None:
            boots[str(run.run_dir)] = bootstrap_auc(run.probs, run.labels, run.classes, run.groups, n_boot, seed)
    return boots


def build_tables(data: SweepData, boots: dict[str, BootstrapResult]) -> tuple[list[Table], list[Table]]:
    """(summary tables: ablation, depth per class, mean ± std; per-run tables: AUC and bootstrap intervals)."""
    dataset = paper.paper_dataset(data.data_name)
    study = [t for t in (ablation_table(data, dataset), depth_table(data, dataset)) if t is not None]
    return [*study, mean_std_table(data, dataset)], [*per_run_tables(data, dataset), *bootstrap_tables(data, boots)]


def build_figures(data: SweepData, fig_dir: Path) -> list[Figure]:
    """Fig. 2 (error bars across seeds), Fig. 3 (best run), ROC curves of the best run, training curves."""
    classes, overlays = class_order(data), data.overlay_order()
    rows = [MACRO, *classes]
    series = {}
    for o in overlays:
        stats = [mean_std([r.macro if n == MACRO else r.auc.per_class.get(n) for r in data.of(o)]) for n in rows]
        series[f"{data.label(o)} (n={len(data.of(o))})"] = ([s.mean for s in stats], [s.std for s in stats])
    out = [Figure(figures.auc_error_bars(rows, series, "Per-class test AUC across seeds", fig_dir / "auc_error_bars"),
                  "Per-class test AUC, mean with ±1 sample std (ddof=1) error bars across seeds (paper Fig. 2).")]
    best = max(data.runs, key=lambda r: -1.0 if r.macro is None else r.macro)
    name = f"{data.label(best.overlay)}, seed {best.seed}" if len(overlays) > 1 else f"seed {best.seed}"
    out.append(Figure(figures.best_run_chart(best.auc.per_class, best.macro, f"Best run ({name})",
                                             fig_dir / "auc_best_run"),
                      f"Per-class test AUC of the best run by macro AUC: {name} (paper Fig. 3)."))
    if best.probs is not None:
        out.append(Figure(figures.roc_curves(best.probs, best.labels, best.classes, best.auc.per_class,
                                             f"ROC curves, best run ({name})", fig_dir / "roc_best_run"),
                          f"ROC curve of each class on the test split, best run ({name})."))
    for o in overlays:
        histories = {f"seed {r.seed}": r.history for r in data.of(o) if r.history}
        if histories:
            stem = f"training_curves_{o}" if len(overlays) > 1 else "training_curves"
            out.append(Figure(figures.training_curves(histories, f"Training curves — {data.label(o)}", fig_dir / stem),
                              f"Loss and validation macro AUC (EMA and raw weights) per epoch, {data.label(o)}; the "
                              "dashed line marks the start of stage 2, dotted lines further unfreezing steps."))
    return out


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _summary(data: SweepData, boots: dict, n_boot: int, seed: int) -> list[tuple[str, str]]:
    first = data.runs[0]
    study = f" — study '{data.study.get('name')}'" if data.kind == "ablate" else ""
    n_test = len(first.probs) if first.probs is not None else first.metrics.get("n", "?")
    lines = [("sweep", str(data.root)), ("kind", data.kind + study),
             ("config", data.config or str(first.run_dir / "config.yaml")),
             ("dataset", f"{data.data_name} ({len(first.classes)} classes, {n_test} test images)"),
             ("seeds", ", ".join(str(s) for s in sorted({r.seed for r in data.runs}))),
             ("runs", f"{len(data.runs)} used, {len(data.skipped)} skipped")]
    if boots:
        lines.append(("bootstrap", f"B={n_boot} percentile intervals, seed {seed}"))
    return lines + [("generated", f"{time.strftime('%Y-%m-%d %H:%M:%S')} by spft {spft.__version__}")]


def _note(data: SweepData) -> str:
    dataset = paper.paper_dataset(data.data_name)
    text = ("Every number of ours is recomputed from the runs' predictions_test.csv (metrics.json where no "
            "predictions exist); std is the sample standard deviation (ddof=1). ")
    if dataset:
        return text + (f"Columns marked 'paper' are the numbers published in the SPFT paper for "
                       f"{paper.PAPER[dataset]['title']} (SPEC.md §2), shown for reference: they were not produced "
                       "by these runs.")
    return text + f"data.name is '{data.data_name}': the paper publishes no numbers for it, so none are shown."


def _report_json(data: SweepData, boots: dict[str, BootstrapResult]) -> dict:
    runs = []
    for r in data.runs:
        b = boots.get(str(r.run_dir))
        runs.append({"overlay": r.overlay, "seed": r.seed, "run_dir": _rel(r.run_dir, data.root), "macro_auc": r.macro,
                     "per_class_auc": r.auc.per_class, "excluded_classes": r.auc.excluded,
                     "bootstrap": None if b is None else {
                         "unit": b.unit, "n_units": b.n_units, "n_boot": b.n_boot, "seed": b.seed,
                         "macro": [b.macro_lo, b.macro_hi], "per_class": {c: [b.lo[c], b.hi[c]] for c in b.classes}}})
    skipped = [{"overlay": s.overlay, "seed": s.seed, "run_dir": _rel(s.run_dir, data.root), "reason": s.reason}
               for s in data.skipped]
    return {"sweep": str(data.root), "kind": data.kind, "study": data.study, "data_name": data.data_name,
            "runs": runs, "skipped": skipped}


def build_report(sweep_dir: str | Path, out: str | Path | None = None, n_boot: int = 1000, seed: int = 0) -> Path:
    """Write the report of the sweep (or run directory) ``sweep_dir``; returns the report directory.

    Args:
        sweep_dir: a ``spft repeat``/``spft ablate`` directory, a single run directory, or a folder of runs.
        out: report directory (default ``<sweep_dir>/report``).
        n_boot: bootstrap replicates per run (B).
        seed: bootstrap seed.
    """
    from spft.reporting.segmentation import build_segmentation_report, is_segmentation

    if is_segmentation(sweep_dir):  # Dice, not AUC: per-structure tables of their own
        return build_segmentation_report(sweep_dir, out)
    data = collect(sweep_dir)
    out = Path(out) if out else data.root / "report"
    log.info("report: %d runs used, %d skipped; bootstrap B=%d per run", len(data.runs), len(data.skipped), n_boot)
    boots = _bootstraps(data, n_boot, seed)
    summary_tables, run_tables = build_tables(data, boots)
    tables = summary_tables + run_tables
    for table in tables:
        table.write(out / "tables")
    figs = build_figures(data, out / "figures")
    atomic_write_text(out / "report.md", f"# SPFT report: {data.root.name}\n\n{_note(data)}\n\n"
                      + "\n".join(t.to_markdown() for t in tables))
    atomic_write_json(out / "report.json", _report_json(data, boots))
    used = [[r.overlay, str(r.seed), _rel(r.run_dir, data.root), "n/a" if r.macro is None else f"{r.macro:.4f}",
             str(r.metrics.get("best_epoch", "")), str(r.metrics.get("n", ""))] for r in data.runs]
    skipped = [[s.overlay, "" if s.seed is None else str(s.seed), _rel(s.run_dir, data.root), s.reason]
               for s in data.skipped]
    page = render_html(f"SPFT report: {data.root.name}", _summary(data, boots, n_boot, seed), _note(data), used,
                       skipped, summary_tables, figs, run_tables)
    atomic_write_text(out / "report.html", page)
    return out
