"""The report's tables, built from the runs of a sweep (never from hand-copied numbers).

Per-run per-class AUC (paper Tables I/IV), mean ± sample std across seeds (Tables II/V), bootstrap intervals per
run, the ablation table with seed-wise paired differences (Table X) and the depth study per class (Table VI).
Paper columns are added, marked, when the dataset is one of the paper's.
"""

from __future__ import annotations

from spft.reporting import paper
from spft.reporting.bootstrap import BootstrapResult
from spft.reporting.collect import RunRecord, SweepData
from spft.reporting.tables import Interval, MeanStd, Table, mean_std

MACRO = "Macro AUC"
_STD_NOTE = "std is the sample standard deviation (ddof=1) across seeds; n = finished runs"


def class_order(data: SweepData) -> list[str]:
    """Classes in the order of the first run, then any class only later runs have."""
    order: list[str] = []
    for run in data.runs:
        order += [c for c in run.classes if c not in order]
    return order


def _value(run: RunRecord, name: str) -> float | None:
    return run.macro if name == MACRO else run.auc.per_class.get(name)


def _suffix(data: SweepData, overlay: str) -> str:
    return f"_{overlay}" if len(data.overlay_order()) > 1 else ""


def _title_of(data: SweepData, overlay: str) -> str:
    return f" — {data.label(overlay)}" if len(data.overlay_order()) > 1 else ""


def _excluded_note(runs: list[RunRecord]) -> str:
    excluded = sorted({c for r in runs for c in r.auc.excluded})
    return f" Excluded from macro AUC (no positive or no negative in the test split): {', '.join(excluded)}." \
        if excluded else ""


def per_run_tables(data: SweepData, dataset: str | None) -> list[Table]:
    """Per-class test AUC of every run, one table per overlay; the paper's runs beside a plain repeat."""
    classes, tables = class_order(data), []
    single = len(data.overlay_order()) == 1
    for overlay in data.overlay_order():
        runs = data.of(overlay)
        columns = ["Class"] + [f"seed {r.seed}" for r in runs]
        n_paper = len(paper.lookup(dataset, "runs", "macro") or []) if single else 0
        paper_cols = tuple(f"paper run {i + 1}" for i in range(n_paper))
        rows = []
        for name in [MACRO, *classes]:
            published = (paper.lookup(dataset, "runs", "macro" if name == MACRO else name) or [None] * n_paper)
            rows.append([name, *(_value(r, name) for r in runs), *published[:n_paper]])
        tables.append(Table(f"per_run_auc{_suffix(data, overlay)}", f"Per-run test AUC{_title_of(data, overlay)}",
                            "ROC AUC on the test split, recomputed from each run's predictions_test.csv."
                            + _excluded_note(runs) + (" Columns 'paper run k' are the published runs (paper)."
                                                      if paper_cols else ""),
                            columns + list(paper_cols), rows, paper_columns=paper_cols))
    return tables


def mean_std_table(data: SweepData, dataset: str | None) -> Table:
    """Mean ± std across seeds per class, one column per overlay; the paper's mean ± std beside a plain repeat."""
    classes, overlays = class_order(data), data.overlay_order()
    columns = ["Class"] + [data.label(o) if len(overlays) > 1 else "ours" for o in overlays]
    with_paper = len(overlays) == 1 and paper.lookup(dataset, "mean_std", "macro") is not None
    paper_cols = ("paper",) if with_paper else ()
    rows = []
    for name in [MACRO, *classes]:
        row = [name] + [mean_std([_value(r, name) for r in data.of(o)]) for o in overlays]
        if with_paper:
            published = paper.lookup(dataset, "mean_std", "macro" if name == MACRO else name)
            row.append(MeanStd(published[0], published[1], 3) if published else None)
        rows.append(row)
    caption = f"Test AUC, mean ± std across seeds; {_STD_NOTE}."
    if with_paper:
        caption += f" 'paper': the published mean ± std over 3 runs ({paper.PAPER[dataset]['title']})."
    return Table("mean_std_auc", "Per-class AUC, mean ± std across seeds", caption, columns + list(paper_cols), rows,
                 paper_columns=paper_cols)


def group_noun(data: SweepData) -> str:
    """What the ``group`` column holds: lesions for HAM10000-like data, patients otherwise."""
    cfg = data.runs[0].config.get("data", {})
    lesions = cfg.get("name") == "ham10000" or (cfg.get("name") == "phantom" and cfg.get("phantom", {}).get("kind")
                                                 == "lesion")
    return "lesions" if lesions else "patients"


def _unit_text(b: BootstrapResult, noun: str) -> str:
    return f"{b.n_units} {noun} (the 'group' column)" if b.unit == "groups" else f"{b.n_units} images"


def bootstrap_tables(data: SweepData, boots: dict[str, BootstrapResult]) -> list[Table]:
    """Point AUC and 95% bootstrap interval per class and macro, one column per run, one table per overlay."""
    classes, tables = class_order(data), []
    for overlay in data.overlay_order():
        runs = [r for r in data.of(overlay) if str(r.run_dir) in boots]
        if not runs:
            continue
        bs = [boots[str(r.run_dir)] for r in runs]
        units = sorted({_unit_text(b, group_noun(data)) for b in bs})
        rows = []
        for name in [MACRO, *classes]:
            key = "macro" if name == MACRO else name
            rows.append([name, *(Interval(*b.interval(key)) if key == "macro" or key in b.point else None
                                 for b in bs)])
        caption = (f"Test AUC [95% percentile bootstrap interval]: B={bs[0].n_boot} replicates, seed {bs[0].seed}, "
                   f"resampling {'; '.join(units)} with replacement.")
        tables.append(Table(f"bootstrap_ci{_suffix(data, overlay)}",
                            f"Bootstrap confidence intervals{_title_of(data, overlay)}", caption,
                            ["Class"] + [f"seed {r.seed}" for r in runs], rows))
    return tables


def _switches(run: RunRecord) -> list[str]:
    recipe = run.config.get("recipe", {})
    unfreeze = recipe.get("unfreeze", {})
    on = unfreeze.get("enabled", True)
    top_k = unfreeze.get("top_k")
    return ["✓" if on else "×", ("all" if top_k is None else str(top_k)) if on else "-",
            "✓" if recipe.get("class_weights", {}).get("enabled", True) else "×",
            "✓" if recipe.get("ema", {}).get("enabled", True) else "×"]


def paired_difference(current: list[RunRecord], previous: list[RunRecord]) -> MeanStd:
    """Mean ± sample std of (current − previous) macro AUC over the seeds both finished."""
    before = {r.seed: r.macro for r in previous}
    diffs = [r.macro - before[r.seed] for r in current
             if r.seed in before and r.macro is not None and before[r.seed] is not None]
    return mean_std(diffs, signed=True)


def ablation_table(data: SweepData, dataset: str | None) -> Table | None:
    """One row per overlay: its switches, macro AUC mean ± std, and the paired difference against the row above."""
    overlays = data.overlay_order()
    if len(overlays) < 2:
        return None
    ladder = paper.PAPER.get(dataset or "", {}).get("ladder") if data.study.get("kind") == "ladder" else None
    columns = ["Row", "unfreeze", "top k", "class weights", "EMA", "macro AUC", "Δ vs previous row (paired)"]
    columns += ["paper"] if ladder else []
    rows = []
    for i, overlay in enumerate(overlays):
        runs = data.of(overlay)
        delta = paired_difference(runs, data.of(overlays[i - 1])) if i else "-"
        row = [data.label(overlay), *_switches(runs[0]), mean_std([r.macro for r in runs]), delta]
        rows.append(row + ([ladder.get(overlay)] if ladder else []))
    caption = (f"Macro test AUC per row ({_STD_NOTE}). Δ: mean ± std of the seed-wise paired differences "
               "(this row − the previous row, same seed), over the seeds both rows finished.")
    if ladder:
        caption += " 'paper': published macro AUC of the paper's Table X (one run per row)."
    return Table("ablation", f"Ablation: {data.study.get('name', '')}", caption, columns, rows,
                 paper_columns=("paper",) if ladder else ())


def depth_table(data: SweepData, dataset: str | None) -> Table | None:
    """The depth study's rows side by side per class (Table VI), with the paper's values on its datasets.

    Other studies get the same comparison from :func:`mean_std_table` (one column per row of the study).
    """
    overlays = data.overlay_order()
    if len(overlays) < 2 or data.study.get("kind") != "depth":
        return None
    depth = paper.lookup(dataset, "depth", "macro") is not None
    names = paper.PAPER[dataset]["depth_columns"] if depth else []
    paper_cols = tuple(f"paper: {data.label(n)}" for n in names)
    rows = []
    for name in [MACRO, *class_order(data)]:
        published = paper.lookup(dataset, "depth", "macro" if name == MACRO else name) if depth else None
        rows.append([name, *(mean_std([_value(r, name) for r in data.of(o)]) for o in overlays),
                     *((published or [None] * len(names))[:len(names)])])
    caption = f"Test AUC mean ± std across seeds for each unfreezing depth; {_STD_NOTE}."
    if depth:
        caption += " 'paper:' columns are the paper's Table VI (one run each)."
    return Table("depth_per_class", "Unfreezing depth per class", caption,
                 ["Class"] + [data.label(o) for o in overlays] + list(paper_cols), rows, paper_columns=paper_cols)
