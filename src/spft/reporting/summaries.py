"""The report's tables, built from the runs of a sweep (never from hand-copied numbers).

Per-run per-class AUC (paper Tables I/IV), mean ± sample std across seeds (Tables II/V), the same for AUPRC,
bootstrap intervals of AUC and AUPRC per run (each with the positives it rests on), the ablation table with
seed-wise paired differences (Table X) and the depth study per class (Table VI). Paper columns are added, marked,
when the dataset is one of the paper's. An AUC under 0.5 (worse than chance) is flagged ``below chance`` in its
cell, and a column lists where that happened.
"""

from __future__ import annotations

import re

import numpy as np

from spft.reporting import paper
from spft.reporting.bootstrap import BootstrapResult
from spft.reporting.collect import RunRecord, SweepData
from spft.reporting.tables import Flagged, Interval, MeanStd, Table, chance_flag, mean_std

MACRO = "Macro AUC"
MACRO_AP = "Macro AUPRC"
BELOW = "below chance in"
_STD_NOTE = "std is the sample standard deviation (ddof=1) across seeds; n = finished runs"


def class_order(data: SweepData) -> list[str]:
    """Classes in the order of the first run, then any class only later runs have."""
    order: list[str] = []
    for run in data.runs:
        order += [c for c in run.classes if c not in order]
    return order


def _value(run: RunRecord, name: str) -> float | None:
    return run.macro if name == MACRO else run.auc.per_class.get(name)


def file_stem(name: str) -> str:
    """``name`` usable as one file name (overlay names of a folder of runs may hold slashes or odd characters)."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(name)).strip(".") or "_"


def _suffix(data: SweepData, overlay: str) -> str:
    return f"_{file_stem(overlay)}" if len(data.overlay_order()) > 1 else ""


def _flagged(value: float | None) -> float | Flagged | None:
    flag = chance_flag(value)
    return Flagged(value, flag) if flag else value


def _below_seeds(runs: list[RunRecord], name: str) -> str:
    return ", ".join(f"seed {r.seed}" for r in runs if chance_flag(_value(r, name)))


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
        columns = ["Class"] + [f"seed {r.seed}" for r in runs] + [BELOW]
        n_paper = len(paper.lookup(dataset, "runs", "macro") or []) if single else 0
        paper_cols = tuple(f"paper run {i + 1}" for i in range(n_paper))
        rows = []
        for name in [MACRO, *classes]:
            published = (paper.lookup(dataset, "runs", "macro" if name == MACRO else name) or [None] * n_paper)
            rows.append([name, *(_flagged(_value(r, name)) for r in runs), _below_seeds(runs, name),
                         *published[:n_paper]])
        tables.append(Table(f"per_run_auc{_suffix(data, overlay)}", f"Per-run test AUC{_title_of(data, overlay)}",
                            "ROC AUC on the test split, recomputed from each run's predictions_test.csv; 'below "
                            f"chance' marks an AUC under 0.5 (the '{BELOW}' column lists those runs)."
                            + _excluded_note(runs) + (" Columns 'paper run k' are the published runs (paper)."
                                                      if paper_cols else ""),
                            columns + list(paper_cols), rows, paper_columns=paper_cols))
    return tables


def mean_std_table(data: SweepData, dataset: str | None) -> Table:
    """Mean ± std across seeds per class, one column per overlay; the paper's mean ± std beside a plain repeat."""
    classes, overlays = class_order(data), data.overlay_order()
    columns = ["Class"] + [data.label(o) if len(overlays) > 1 else "ours" for o in overlays] + [BELOW]
    with_paper = len(overlays) == 1 and paper.lookup(dataset, "mean_std", "macro") is not None
    paper_cols = ("paper",) if with_paper else ()
    rows = []
    for name in [MACRO, *classes]:
        row = [name]
        for o in overlays:
            ms = mean_std([_value(r, name) for r in data.of(o)])
            row.append(MeanStd(ms.mean, ms.std, ms.n, flag=chance_flag(ms.mean)))
        below = [(o, _below_seeds(data.of(o), name)) for o in overlays]
        row.append("; ".join(f"{data.label(o)}: {b}" if len(overlays) > 1 else b for o, b in below if b))
        if with_paper:
            published = paper.lookup(dataset, "mean_std", "macro" if name == MACRO else name)
            row.append(MeanStd(published[0], published[1], 3) if published else None)
        rows.append(row)
    caption = (f"Test AUC, mean ± std across seeds; {_STD_NOTE}. 'below chance': a mean under 0.5; "
               f"'{BELOW}': the runs whose AUC is under 0.5.")
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


def mean_std_auprc_table(data: SweepData) -> Table | None:
    """Per-class AUPRC (average precision), mean ± std across seeds, one column per overlay; None without
    predictions. Chance level of AUPRC is the class's prevalence, shown beside it (mean over the runs)."""
    classes, overlays = class_order(data), data.overlay_order()
    if not any(r.auprc for r in data.runs):
        return None
    rows = []
    for name in [MACRO_AP, *classes]:
        row = [name]
        for o in overlays:
            row.append(mean_std([_ap(r, name) for r in data.of(o) if r.auprc]))
        prevalence = [r.n_pos(name) / _n_known(r, name) for r in data.runs
                      if name != MACRO_AP and r.n_pos(name) is not None and _n_known(r, name)]
        row.append(mean_std(prevalence).mean if prevalence else None)
        rows.append(row)
    return Table("mean_std_auprc", "Per-class AUPRC, mean ± std across seeds",
                 "Area under the precision-recall curve on the test split (scikit-learn's average_precision_score on "
                 f"each run's predictions_test.csv), mean ± std across seeds; {_STD_NOTE}. A classifier at chance "
                 "has AUPRC equal to the class prevalence (last column, mean over runs); macro AUPRC is the mean over "
                 "classes with a positive.",
                 ["Class"] + [data.label(o) if len(overlays) > 1 else "ours" for o in overlays] + ["prevalence"], rows)


def _ap(run: RunRecord, name: str) -> float | None:
    if name == MACRO_AP:
        values = [v for v in run.auprc.values() if v is not None]
        return sum(values) / len(values) if values else None
    return run.auprc.get(name)


def _n_known(run: RunRecord, name: str) -> int:
    return int((~np.isnan(run.labels[:, run.classes.index(name)])).sum()) if run.labels is not None else 0


def _interval(b: BootstrapResult, key: str, noun: str, flag_chance: bool) -> Interval | None:
    if key != "macro" and key not in b.point:
        return None
    point, lo, hi = b.interval(key)
    if key == "macro":
        return Interval(point, lo, hi)
    units = b.n_pos_units.get(key) if b.unit == "groups" else None
    return Interval(point, lo, hi, b.n_pos.get(key), units, noun if units is not None else "",
                    chance_flag(point) if flag_chance else "")


def bootstrap_tables(data: SweepData, boots: dict[str, BootstrapResult],
                     boots_ap: dict[str, BootstrapResult] | None = None) -> list[Table]:
    """Per class and macro: test AUC and, beside it, AUPRC with 95% bootstrap intervals and the positives each
    interval rests on; one column pair per run, one table per overlay."""
    classes, tables, boots_ap = class_order(data), [], boots_ap or {}
    noun = group_noun(data)
    for overlay in data.overlay_order():
        runs = [r for r in data.of(overlay) if str(r.run_dir) in boots]
        if not runs:
            continue
        bs = [boots[str(r.run_dir)] for r in runs]
        aps = [boots_ap.get(str(r.run_dir)) for r in runs]
        units = sorted({_unit_text(b, noun) for b in bs})
        rows = []
        for name in ["Macro", *classes]:
            key = "macro" if name == "Macro" else name
            row = [name]
            for b, a in zip(bs, aps, strict=True):
                row.append(_interval(b, key, noun, True))
                if any(aps):
                    row.append(_interval(a, key, noun, False) if a is not None else None)
            rows.append(row)
        columns = ["Class"]
        for r in runs:
            columns += [f"seed {r.seed} AUC"] + ([f"seed {r.seed} AUPRC"] if any(aps) else [])
        grouped = bs[0].unit == "groups"
        caption = (f"Test AUC and AUPRC [95% percentile bootstrap interval]: B={bs[0].n_boot} replicates, seed "
                   f"{bs[0].seed}, resampling {'; '.join(units)} with replacement (AUC and AUPRC from the same "
                   f"replicates). n+: the positive test images the interval rests on"
                   + (f", then the {noun} holding them (the resampled units)" if grouped else "")
                   + "; few positives mean a wide, unreliable interval. 'below chance': an AUC under 0.5. Macro: the "
                   "mean over classes defined on the whole test split.")
        tables.append(Table(f"bootstrap_ci{_suffix(data, overlay)}",
                            f"Bootstrap confidence intervals{_title_of(data, overlay)}", caption, columns, rows))
    return tables


def _switches(run: RunRecord) -> list[str]:
    recipe = run.config.get("recipe", {})
    unfreeze = recipe.get("unfreeze", {})
    on = unfreeze.get("enabled", True)
    top_k = unfreeze.get("top_k")
    return ["✓" if on else "×", ("all" if top_k is None else str(top_k)) if on else "—",
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
        delta = paired_difference(runs, data.of(overlays[i - 1])) if i else "—"
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
