"""Operating points and calibration in ``spft report``: per run a table of the per-class operating point at the
run's validation thresholds (``thresholds.json``) on its test predictions — threshold, sensitivity, specificity,
PPV, NPV, F1 with 95% bootstrap intervals — and, for the best run, reliability diagrams per class (before and after
temperature scaling when the run calibrated, ECE in the legend).

Intervals use the same resampling as the AUC intervals (:func:`spft.reporting.bootstrap.unit_draws`: patients or
lesions when some have several images, else images; the same seed draws the same replicates); the threshold stays
fixed (it was chosen on validation), only the test set is resampled. A metric undefined in a replicate (e.g. no
positive drawn) is left out of that replicate. Runs without ``thresholds.json`` (made before it existed) are reported
without these sections, and the report says which.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from spft.csvsafe import read_rows
from spft.metrics.calibration import BINS, calibrated_probabilities, per_class_ece, reliability
from spft.metrics.operating_points import METRICS, threshold_metrics
from spft.reporting import figures
from spft.reporting.bootstrap import resample_units, unit_draws
from spft.reporting.html import Figure
from spft.reporting.tables import Interval, Table

log = logging.getLogger(__name__)

LABELS = {"sensitivity": "Sensitivity", "specificity": "Specificity", "ppv": "PPV", "npv": "NPV", "f1": "F1"}


def read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        log.warning("%s is damaged: left out of the report", path)
        return None


def read_logits(run_dir: Path, classes: list[str]) -> np.ndarray | None:
    """``[N, C]`` logits from ``predictions_test.csv``'s ``logit_<class>`` columns; None without them."""
    path = Path(run_dir) / "predictions_test.csv"
    if not path.is_file():
        return None
    with open(path, newline="") as fh:
        rows = read_rows(fh)  # spft.csvsafe: header cells as written before escaping
    if not rows or not all(f"logit_{c}" in rows[0] for c in classes):
        return None
    return np.array([[float(r[f"logit_{c}"]) for c in classes] for r in rows], dtype=np.float64)


def bootstrap_operating_points(probs, labels, classes: list[str], thresholds: dict, groups=None, n_boot: int = 1000,
                               seed: int = 0, level: float = 0.95) -> dict[str, dict | None]:
    """Per class ``{threshold, metric: (point, lo, hi), n_pos}`` at the fixed ``thresholds`` (None where the class
    has no threshold); point values equal :func:`spft.metrics.operating_points.threshold_metrics`."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    unit_of, _ = resample_units(groups, len(probs))
    n_units = int(unit_of.max(initial=-1)) + 1
    per_class, counts = {}, {}
    for j, c in enumerate(classes):
        t = thresholds.get(c)
        if t is None:
            per_class[c] = None
            continue
        known = ~np.isnan(labels[:, j])
        y, pred = np.nan_to_num(labels[:, j]) > 0.5, probs[:, j] >= t
        cells = [known & y & pred, known & ~y & pred, known & ~y & ~pred, known & y & ~pred]  # TP FP TN FN
        counts[c] = np.stack([np.bincount(unit_of, weights=m.astype(np.float64), minlength=n_units) for m in cells])
        point = threshold_metrics(probs[:, j], labels[:, j], t)
        per_class[c] = {"threshold": float(t), "n_pos": int((known & y).sum()), "point": point}
    reps = {c: {m: [] for m in METRICS} for c in counts}
    for _, per_unit in unit_draws(n_units, n_boot, np.random.default_rng(seed)):
        for c, agg in counts.items():
            tp, fp, tn, fn = (per_unit @ agg.T).T  # [B] each: weighted counts of the replicates
            with np.errstate(invalid="ignore", divide="ignore"):
                values = {"sensitivity": tp / (tp + fn), "specificity": tn / (tn + fp), "ppv": tp / (tp + fp),
                          "npv": tn / (tn + fn), "f1": 2 * tp / (2 * tp + fp + fn)}
            for m in METRICS:
                reps[c][m].append(values[m])
    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    for c, rec in per_class.items():
        if rec is None:
            continue
        for m in METRICS:
            col = np.concatenate(reps[c][m]) if reps[c][m] else np.zeros(0)
            col = col[np.isfinite(col)]
            point = rec["point"][m]
            lo, hi = (float(v) for v in np.percentile(col, q)) if point is not None and col.size else (None, None)
            rec[m] = (point, lo, hi)
    return per_class


def operating_table(run, thresholds: dict, calibration: dict | None, boot: dict, n_boot: int, seed: int,
                    unit_text: str, stem: str, title_suffix: str = "") -> Table:
    """The operating-point table of one run: one row per class, a macro row (mean over defined classes)."""
    rows = []
    for c in run.classes:
        rec = boot.get(c)
        if rec is None:
            rows.append([c, None, *([None] * len(METRICS))])
            continue
        row = [c, rec["threshold"]]
        for m in METRICS:
            point, lo, hi = rec[m]
            row.append(Interval(point, lo, hi, rec["n_pos"] if m == "sensitivity" else None))
        rows.append(row)
    macro = ["Macro", None]
    for m in METRICS:
        values = [boot[c][m][0] for c in run.classes if boot.get(c) and boot[c][m][0] is not None]
        macro.append(float(np.mean(values)) if values else None)
    rows.insert(0, macro)
    method = thresholds.get("method", "?")
    target = thresholds.get("target")
    rule = {"youden": "maximising Youden's J", "f1": "maximising F1",
            "sensitivity": f"the highest reaching sensitivity {target}",
            "specificity": f"the lowest reaching specificity {target}"}.get(method, method)
    cal = calibration or {"method": "none", "temperature": 1.0}
    cal_text = (f"temperature scaling (T = {cal.get('temperature', 1.0):.4f}, fitted on validation)"
                if cal.get("method") == "temperature" else "none")
    undefined = [c for c in run.classes if boot.get(c) is None]
    caption = (f"Test operating points at thresholds chosen per class on the validation split ({method}: {rule}), "
               f"on the calibrated probabilities (calibration: {cal_text}). A test image is positive when its "
               f"probability is at least the threshold. [95% percentile bootstrap interval]: B={n_boot}, seed {seed}, "
               f"resampling {unit_text} with the threshold fixed; n+ (under Sensitivity): positive test images. "
               "Macro: the mean over classes where the value is defined."
               + (f" No threshold (no positive or no negative validation image; prediction falls back to 0.5): "
                  f"{', '.join(undefined)}." if undefined else ""))
    columns = ["Class", "Threshold", *(LABELS[m] for m in METRICS)]
    return Table(f"operating_points{stem}", f"Operating points{title_suffix}", caption, columns, rows)


def reliability_figure(probs_after: np.ndarray, probs_before: np.ndarray | None, labels: np.ndarray,
                       classes: list[str], title: str, out_stem: Path) -> Path:
    """One reliability diagram per class (fraction positive against mean probability per bin, bin counts as bars);
    the uncalibrated curve too when ``probs_before`` is given; ECE in each legend."""
    plt = figures._plt()
    n = len(classes)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.1 * rows), squeeze=False)
    after_ece = per_class_ece(probs_after, labels, classes)
    before_ece = per_class_ece(probs_before, labels, classes) if probs_before is not None else {}
    for k, ax in enumerate(axes.ravel()):
        if k >= n:
            ax.axis("off")
            continue
        c = classes[k]
        ax.plot([0, 1], [0, 1], **figures.CALIBRATION_STYLE)
        curves = [("calibrated" if probs_before is not None else "model", probs_after[:, k], after_ece[c],
                   figures.colour(0))]
        if probs_before is not None:
            curves.insert(0, ("before", probs_before[:, k], before_ece[c], figures.colour(1)))
        for name, p, e, colour in curves:
            r = reliability(p, labels[:, k])
            xs = [cf for cf, a in zip(r["confidence"], r["accuracy"], strict=True) if a is not None]
            ys = [a for a in r["accuracy"] if a is not None]
            label = f"{name} (ECE {e:.3f})" if e is not None else f"{name} (no label)"
            ax.plot(xs, ys, marker="o", ms=3, lw=1.3, color=colour, label=label)
        counts = np.array(reliability(probs_after[:, k], labels[:, k])["counts"], dtype=float)
        if counts.sum() > 0:
            ax.bar(np.arange(BINS) / BINS, counts / counts.sum(), width=1 / BINS, align="edge", color="#dddddd",
                   zorder=0)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(figures.plain(c), fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
        ax.tick_params(labelsize=7)
    fig.supxlabel("mean predicted probability (per bin)", fontsize=9)
    fig.supylabel("fraction positive", fontsize=9)
    fig.suptitle(figures.plain(title), fontsize=10)
    fig.tight_layout()
    return figures.save(fig, out_stem)


def operating_section(data, n_boot: int, seed: int, fig_dir: Path, best, best_how: str,
                      unit_noun: str) -> tuple[list[Table], list[Figure], str, dict]:
    """``(tables, figures, note, per-run json)`` of the operating-point part of a classification report."""
    from spft.reporting.summaries import file_stem

    tables, figs, missing, records = [], [], [], {}
    for run in data.runs:
        thresholds = read_json(Path(run.run_dir) / "thresholds.json")
        if thresholds is None or run.probs is None:
            missing.append(run)
            continue
        calibration = read_json(Path(run.run_dir) / "calibration.json")
        th = {c: (None if p is None else p.get("threshold")) for c, p in (thresholds.get("classes") or {}).items()}
        boot = bootstrap_operating_points(run.probs, run.labels, run.classes, th, run.groups, n_boot, seed)
        unit_of, unit = resample_units(run.groups, len(run.probs))
        units = f"{int(unit_of.max(initial=-1)) + 1} {unit_noun if unit == 'groups' else 'images'}"
        several = len(data.overlay_order()) > 1
        stem = (f"_{file_stem(run.overlay)}" if several else "") + f"_seed{run.seed}"
        suffix = (f" — {data.label(run.overlay)}, seed {run.seed}" if several else f" — seed {run.seed}")
        tables.append(operating_table(run, thresholds, calibration, boot, n_boot, seed, units, stem, suffix))
        records[str(run.run_dir)] = {
            "thresholds": {"method": thresholds.get("method"), "target": thresholds.get("target")},
            "calibration": calibration,
            "per_class": {c: (None if r is None else {"threshold": r["threshold"],
                                                     **{m: list(r[m]) for m in METRICS}}) for c, r in boot.items()}}
        if run is best:
            logits = read_logits(run.run_dir, run.classes)
            multiclass = (run.config.get("loss") == "ce")
            calibrated = calibration is not None and calibration.get("method") == "temperature"
            before = calibrated_probabilities(logits, 1.0, multiclass) if calibrated and logits is not None else None
            name = f"{data.label(run.overlay)}, seed {run.seed}" if several else f"seed {run.seed}"
            caption = (f"Reliability diagrams of the best run ({name}, {best_how}) on the test split: per class, the "
                       f"fraction of positive images against the mean predicted probability in {BINS} equal-width "
                       "bins (grey bars: share of images per bin; grey dash-dot-dot diagonal: perfect calibration); "
                       "ECE in the legend.")
            if before is not None:
                caption += (f" Orange: before, blue: after temperature scaling (T = {calibration['temperature']:.4f}, "
                            f"fitted on validation); test ECE {calibration.get('ece_test_before', float('nan')):.4f} "
                            f"before, {calibration.get('ece_test_after', float('nan')):.4f} after.")
            figs.append(Figure(reliability_figure(run.probs, before, run.labels, run.classes,
                                                  f"Reliability, best run by validation ({name})",
                                                  fig_dir / "reliability_best_run"), caption))
    note = ""
    if missing:
        names = ", ".join(f"{data.label(r.overlay)} seed {r.seed}" if len(data.overlay_order()) > 1 else
                          f"seed {r.seed}" for r in missing)
        note = (f" Operating points and reliability diagrams need a run's thresholds.json (written by runs of this "
                f"spft version and later): not shown for {names}.")
    return tables, figs, note, records
