"""``spft report SWEEP_DIR``: tables, figures and a self-contained report.html from run directories only.

Output (default ``SWEEP_DIR/report``): ``tables/<name>.{md,csv,tex}``, ``figures/<name>.{png,svg}``,
``report.md`` (every table), ``report.json`` (runs used/skipped, per-run AUCs, intervals) and ``report.html``.
Every number is recomputed from the runs' ``predictions_test.csv`` (``metrics.json`` when predictions are missing).

The task comes from the runs' ``config.yaml`` (``task:``) and its Task builds the report
(:meth:`spft.tasks.base.Task.report`): classification here (:func:`build_classification_report`); detection
(:mod:`.detection`: mAP@50, mAP@50-95, per-class AP@50) and segmentation (:mod:`.segmentation`: Dice) have reports
of their own; a sweep mixing tasks is refused. Every report shows the config and the exact overrides of each row
and run (:mod:`.provenance`).

The "best run" of the figures (per-class AUC, ROC curves) is chosen by validation, never by test AUC: the best
validation macro AUC of the monitored weights (EMA when the run used EMA, as checkpoint selection did; raw
otherwise) in ``history.csv``, among the runs of the study's full-SPFT row (``spft``; else the rows whose runs have
unfreezing, class weights and EMA all on; a plain repeat has one row).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import spft
from spft.atomic import atomic_write_json, atomic_write_text
from spft.reporting import figures, paper
from spft.reporting.bootstrap import BootstrapResult, bootstrap_ap, bootstrap_auc
from spft.reporting.collect import RunRecord, SweepData, collect, read_entries
from spft.reporting.html import Figure, render_html
from spft.reporting.operating import operating_section
from spft.reporting.provenance import overrides_table, overrides_text, summary_lines, sweep_task
from spft.reporting.provenance import relative_path as _rel
from spft.reporting.summaries import (
    MACRO,
    ablation_table,
    bootstrap_tables,
    class_order,
    depth_table,
    file_stem,
    group_noun,
    mean_std_auprc_table,
    mean_std_table,
    per_run_tables,
)
from spft.reporting.tables import Table, chance_flag, md_escape, mean_std

log = logging.getLogger(__name__)


def _bootstraps(data: SweepData, n_boot: int, seed: int, metric: str = "auc") -> dict[str, BootstrapResult]:
    """One bootstrap per run with predictions; ``metric`` auc or ap (AUPRC, the same replicates)."""
    boots, fn = {}, bootstrap_ap if metric == "ap" else bootstrap_auc
    for run in data.runs:
        if run.probs is not None:
            boots[str(run.run_dir)] = fn(run.probs, run.labels, run.classes, run.groups, n_boot, seed)
    return boots


def build_tables(data: SweepData, boots: dict[str, BootstrapResult],
                 boots_ap: dict[str, BootstrapResult] | None = None) -> tuple[list[Table], list[Table]]:
    """(summary tables: ablation, depth per class, mean ± std AUC and AUPRC; per-run tables: AUC and bootstrap
    intervals of AUC and AUPRC)."""
    dataset = paper.paper_dataset(data.data_name)
    study = [t for t in (ablation_table(data, dataset), depth_table(data, dataset)) if t is not None]
    auprc = [t for t in (mean_std_auprc_table(data),) if t is not None]
    return ([*study, mean_std_table(data, dataset), *auprc],
            [*per_run_tables(data, dataset), *bootstrap_tables(data, boots, boots_ap)])


FULL_ROW = "spft"  # the built-in studies' full-recipe row (ladder, probe)


def _full_recipe(run: RunRecord) -> bool:
    recipe = run.config.get("recipe", {}) or {}
    return all((recipe.get(k, {}) or {}).get("enabled", True) for k in ("unfreeze", "class_weights", "ema"))


def full_recipe_rows(data: SweepData) -> tuple[list[str], str]:
    """The rows the best run is chosen from, and how to say which in a caption."""
    overlays = data.overlay_order()
    if len(overlays) == 1:
        return overlays, "the runs of the sweep"
    if FULL_ROW in overlays:
        return [FULL_ROW], f"the study's full-SPFT row '{data.label(FULL_ROW)}'"
    full = [o for o in overlays if all(_full_recipe(r) for r in data.of(o))]
    if full:
        return full, "the rows running the full recipe (unfreezing, class weights, EMA): " + ", ".join(
            f"'{data.label(o)}'" for o in full)
    return overlays, "all rows (none runs the full recipe)"


def validation_score(run: RunRecord) -> tuple[float | None, str]:
    """(best validation macro AUC of the monitored weights in history.csv, its column): ``val_auc_ema`` when the
    run used EMA (checkpoints and early stopping monitor the EMA weights then), ``val_auc_raw`` otherwise."""
    ema = ((run.config.get("recipe", {}) or {}).get("ema", {}) or {}).get("enabled", True)
    key = "val_auc_ema" if ema else "val_auc_raw"
    values = []
    for row in run.history:
        try:
            value = float(row.get(key) or "nan")
        except ValueError:
            continue
        if math.isfinite(value):
            values.append(value)
    return (max(values) if values else None), key


def best_run(data: SweepData) -> tuple[RunRecord, str]:
    """The run shown in the best-run figures, and the sentence saying how it was chosen (never by test AUC)."""
    rows, where = full_recipe_rows(data)
    candidates = sorted((r for o in rows for r in data.of(o)), key=lambda r: (rows.index(r.overlay), r.seed))
    scored = [(validation_score(r), r) for r in candidates]
    scored = [((v, k), r) for (v, k), r in scored if v is not None]
    if not scored:
        run = candidates[0]
        return run, (f"no run of {where} has validation AUC in history.csv, so the first one is shown (lowest seed), "
                     "not chosen by any score")
    (value, key), run = max(scored, key=lambda item: item[0][0])  # first of equals: lowest seed
    weights = "EMA weights" if key == "val_auc_ema" else "raw weights"
    return run, (f"chosen by the best validation macro AUC ({key} in history.csv: {weights}, the metric checkpoints "
                 f"were selected on; {value:.4f}) among {where}, never by test AUC")


def build_figures(data: SweepData, fig_dir: Path) -> list[Figure]:
    """Fig. 2 (error bars across seeds), Fig. 3 (best run), ROC curves of the best run, training curves."""
    classes, overlays = class_order(data), data.overlay_order()
    rows = [MACRO, *classes]
    series = {}
    for o in overlays:
        stats = [mean_std([r.macro if n == MACRO else r.auc.per_class.get(n) for r in data.of(o)]) for n in rows]
        series[f"{data.label(o)} (n={len(data.of(o))})"] = ([s.mean for s in stats], [s.std for s in stats])
    out = [Figure(figures.auc_error_bars(rows, series, "Per-class test AUC across seeds", fig_dir / "auc_error_bars"),
                  "Per-class test AUC, mean with ±1 sample std (ddof=1) error bars across seeds (paper Fig. 2). "
                  "Dotted line: chance (AUC 0.5); a class whose mean is under it is marked 'below chance' in red.")]
    best, how = best_run(data)
    name = f"{data.label(best.overlay)}, seed {best.seed}" if len(overlays) > 1 else f"seed {best.seed}"
    out.append(Figure(figures.best_run_chart(best.auc.per_class, best.macro, f"Best run by validation ({name})",
                                             fig_dir / "auc_best_run"),
                      f"Per-class test AUC of the best run, {name}: {how} (paper Fig. 3). Black line: macro AUC; "
                      "dotted line: chance (AUC 0.5); bars under it are red and marked 'below chance'."))
    if best.probs is not None:
        out.append(Figure(figures.roc_curves(best.probs, best.labels, best.classes, best.auc.per_class,
                                             f"ROC curves, best run by validation ({name})", fig_dir / "roc_best_run"),
                          f"ROC curve of each class on the test split, best run ({name}, {how}); the dotted "
                          "diagonal is chance (AUC 0.5)."))
    for o in overlays:
        histories = {f"seed {r.seed}": r.history for r in data.of(o) if r.history}
        if histories:
            stem = f"training_curves_{file_stem(o)}" if len(overlays) > 1 else "training_curves"
            out.append(Figure(figures.training_curves(histories, f"Training curves — {data.label(o)}", fig_dir / stem),
                              f"Loss (solid: train, dashed: validation) and validation macro AUC (solid with circles: "
                              f"EMA weights, dash-dot: raw weights) per epoch, {data.label(o)}; the grey band is "
                              "stage 2, thin grey lines further unfreezing steps, the dotted line chance."))
    return out



def _summary(data: SweepData, boots: dict, n_boot: int, seed: int) -> list[tuple[str, str]]:
    first = data.runs[0]
    study = f" — study '{data.study.get('name')}'" if data.kind == "ablate" else ""
    n_test = len(first.probs) if first.probs is not None else first.metrics.get("n", "?")
    prov = [(k, v) for k, v in summary_lines(data.prov) if k != "config"]
    lines = [("sweep", str(data.root)), ("kind", data.kind + study),
             ("config", data.config or str(first.run_dir / "config.yaml")), *prov,
             ("dataset", f"{data.data_name} ({len(first.classes)} classes, {n_test} test images)"),
             ("seeds", ", ".join(str(s) for s in sorted({r.seed for r in data.runs}))),
             ("runs", f"{len(data.runs)} used, {len(data.skipped)} skipped")]
    if boots:
        lines.append(("bootstrap", f"B={n_boot} percentile intervals of AUC and AUPRC, seed {seed}"))
    return lines + [("generated", f"{time.strftime('%Y-%m-%d %H:%M:%S')} by spft {spft.__version__}")]


def _note(data: SweepData) -> str:
    dataset = paper.paper_dataset(data.data_name)
    text = ("Every number of ours is recomputed from the runs' predictions_test.csv (metrics.json where no "
            "predictions exist); std is the sample standard deviation (ddof=1). ")
    if dataset:
        return text + (f"Columns marked 'paper' are the numbers published in the SPFT paper for "
                       f"{paper.PAPER[dataset]['title']} (typed from the paper's tables into spft.reporting.paper), "
                       "shown for reference: they were not produced by these runs.")
    return text + f"data.name is '{data.data_name}': the paper publishes no numbers for it, so none are shown."


def _boot_json(b: BootstrapResult | None) -> dict | None:
    if b is None:
        return None
    return {"unit": b.unit, "n_units": b.n_units, "n_boot": b.n_boot, "seed": b.seed, "macro": [b.macro_lo, b.macro_hi],
            "per_class": {c: [b.lo[c], b.hi[c]] for c in b.classes}, "n_pos": b.n_pos,
            "n_pos_units": b.n_pos_units if b.unit == "groups" else None}


def _report_json(data: SweepData, boots: dict[str, BootstrapResult], boots_ap: dict[str, BootstrapResult]) -> dict:
    runs = []
    for r in data.runs:
        score, key = validation_score(r)
        runs.append({"overlay": r.overlay, "seed": r.seed, "run_dir": _rel(r.run_dir, data.root), "macro_auc": r.macro,
                     "per_class_auc": r.auc.per_class, "excluded_classes": r.auc.excluded,
                     "below_chance": [c for c, v in r.auc.per_class.items() if chance_flag(v)],
                     "per_class_auprc": r.auprc or None, "n_pos": {c: r.n_pos(c) for c in r.classes},
                     "best_validation": {"metric": key, "value": score},
                     "overrides": data.prov.of_run(r.run_dir),
                     "bootstrap": _boot_json(boots.get(str(r.run_dir))),
                     "bootstrap_auprc": _boot_json(boots_ap.get(str(r.run_dir)))})
    skipped = [{"overlay": s.overlay, "seed": s.seed, "run_dir": _rel(s.run_dir, data.root), "reason": s.reason}
               for s in data.skipped]
    best, how = best_run(data)
    return {"sweep": str(data.root), "task": "classification", "kind": data.kind, "study": data.study,
            "data_name": data.data_name, **{k: v for k, v in data.prov.as_json(data.root).items() if k != "task"},
            "best_run": {"run_dir": _rel(best.run_dir, data.root), "overlay": best.overlay, "seed": best.seed,
                         "chosen": how},
            "runs": runs, "skipped": skipped}


def _overrides_table(data: SweepData) -> Table:
    return overrides_table(data.prov, [(o, data.label(o)) for o in data.overlay_order()])


def _runs_table(data: SweepData) -> Table:
    """The runs used with the exact overrides each ran with (for report.md)."""
    table = Table("runs_used", f"Runs used ({len(data.runs)})", "Exact overrides from each run's env.json command "
                  "(or the sweep's plan).", ["overlay", "seed", "run directory", "macro AUC", "overrides (exact)"])
    for r in data.runs:
        table.rows.append([r.overlay, str(r.seed), _rel(r.run_dir, data.root), r.macro,
                           overrides_text(data.prov.of_run(r.run_dir))])
    return table


def build_report(sweep_dir: str | Path, out: str | Path | None = None, n_boot: int = 1000, seed: int = 0) -> Path:
    """Write the report of the sweep (or run directory) ``sweep_dir``; returns the report directory.

    Args:
        sweep_dir: a ``spft repeat``/``spft ablate`` directory, a single run directory, or a folder of runs.
        out: report directory (default ``<sweep_dir>/report``).
        n_boot: bootstrap replicates per run (B).
        seed: bootstrap seed.
    """
    from spft.tasks.registry import get_task

    root = Path(sweep_dir)
    task = sweep_task(root, read_entries(root)[2])  # from the runs' config.yaml; mixed tasks are refused
    report_dir = get_task(task).report(root, out, n_boot=n_boot, seed=seed)  # each task's own tables
    from spft.tracking import attach_report

    attach_report(root, report_dir)  # report.html and tables on the sweep's MLflow parent run, when it has one
    return report_dir


def build_classification_report(root: Path, out: str | Path | None = None, n_boot: int = 1000, seed: int = 0) -> Path:
    """The classification report (AUC tables, bootstrap intervals, figures, operating points) of ``root``."""
    data = collect(root)
    out = Path(out) if out else data.root / "report"
    log.info("report: %d runs used, %d skipped; bootstrap B=%d per run", len(data.runs), len(data.skipped), n_boot)
    boots = _bootstraps(data, n_boot, seed)
    boots_ap = _bootstraps(data, n_boot, seed, "ap")
    summary_tables, run_tables = build_tables(data, boots, boots_ap)
    best, how = best_run(data)  # operating points per run, reliability diagrams of the best run (thresholds.json)
    op_tables, op_figs, op_note, op_json = operating_section(data, n_boot, seed, out / "figures", best, how,
                                                             group_noun(data))
    run_tables = run_tables + op_tables
    tables = summary_tables + run_tables
    for table in tables:
        table.write(out / "tables")
    figs = build_figures(data, out / "figures") + op_figs
    note = _note(data) + op_note
    provenance_md = [_overrides_table(data).to_markdown(), _runs_table(data).to_markdown()]
    atomic_write_text(out / "report.md", f"# SPFT report: {md_escape(data.root.name)}\n\n{md_escape(note)}\n\n"
                      + "\n".join(provenance_md + [t.to_markdown() for t in tables]))
    report = _report_json(data, boots, boots_ap)
    for entry, run in zip(report["runs"], data.runs, strict=True):
        entry["operating_points"] = op_json.get(str(run.run_dir))
    atomic_write_json(out / "report.json", report)
    used = [[r.overlay, str(r.seed), _rel(r.run_dir, data.root), "n/a" if r.macro is None else f"{r.macro:.4f}",
             str(r.metrics.get("best_epoch", "")), str(r.metrics.get("n", "")),
             overrides_text(data.prov.of_run(r.run_dir))] for r in data.runs]
    skipped = [[s.overlay, "" if s.seed is None else str(s.seed), _rel(s.run_dir, data.root), s.reason]
               for s in data.skipped]
    page = render_html(f"SPFT report: {data.root.name}", _summary(data, boots, n_boot, seed), note, used,
                       skipped, summary_tables, figs, run_tables, header_tables=[_overrides_table(data)])
    atomic_write_text(out / "report.html", page)
    return out
