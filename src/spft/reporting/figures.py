"""Figures from run-directory data (matplotlib, Agg): per-class AUC bars (the paper's Fig. 3), per-class AUC with
error bars across runs (Fig. 2), ROC curves per class, training curves with the SPFT stage boundaries (reports) and
one run's ``curves.png`` (written at the end of ``spft train``).

Report figures are written as PNG (embedded in report.html) and SVG (for papers); ``auc_bar_chart`` is the demo's
single-run chart. Every ``*_figure`` function returns the matplotlib Figure (tests read its axes back); the
function of the same name without ``_figure`` saves and closes it. Names (classes, overlays) are drawn as plain
text: a ``$`` never starts matplotlib's math mode.

One visual convention for every figure (each style or colour has exactly one meaning):

=====================================  ==================================================================
meaning                                drawn as
=====================================  ==================================================================
a run, seed or ablation row            its own colour from :data:`SERIES_COLOURS` (blue, orange, green,
                                       purple, ...; never red, never grey)
training loss                          the run's colour, solid line, no markers
validation loss                        the run's colour, dashed line (``--``)
validation metric on the EMA weights   the run's colour, solid line with circles (AUC or Dice; detection:
(the monitored one)                    mAP@50)
validation metric on the raw weights   the run's colour, dash-dot line (``-.``), no markers
a second metric (detection mAP@50-95)  the run's colour, solid line with squares
stage 2 (the encoder opens)            a light grey band from the first stage-2 epoch to the end
more encoder blocks open               a thin solid grey vertical line
chance (AUC 0.5, the ROC diagonal)     a grey dotted line (``:``): the only dotted line
perfect calibration                    a grey dash-dot-dot line (reliability diagrams)
macro AUC (bar charts)                 a black solid vertical line
a value below chance                   red (bar, value and class name): red means nothing else
no value (AUC undefined)               a grey bar marked n/a
=====================================  ==================================================================

Axes: an AUC axis runs from min(data, 0.5) rounded down to a tenth up to 1.0, never beyond (chance stays in view);
a Dice or mAP axis from min(data) rounded down up to 1.0; epoch axes have integer ticks. Legends and per-bar value
labels sit outside the plotting area (legends below it, values in a column right of it), so they never hide a bar,
a label or a curve.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

BLUE, RED, GREY = "#4c72b0", "#c44e52", "#cccccc"  # bars: a value; below chance; no value
BLACK, REF_GREY = "#222222", "#777777"  # macro AUC line; reference lines (chance, calibration, unfreezing)
STAGE2_SHADE = "#e9e9e9"
SERIES_COLOURS = ["#4c72b0", "#dd8452", "#55a868", "#8172b3", "#937860", "#da8bc3", "#17becf", "#bcbd22"]
CHANCE_STYLE = {"ls": ":", "color": REF_GREY, "lw": 1.0}
CALIBRATION_STYLE = {"ls": (0, (6, 2, 1, 2, 1, 2)), "color": REF_GREY, "lw": 1.0}
BLOCKS_STYLE = {"ls": "-", "color": "#aaaaaa", "lw": 0.7}
TRAIN_LOSS, VAL_LOSS = {"ls": "-", "lw": 1.2}, {"ls": "--", "lw": 1.2}
METRIC_EMA, METRIC_RAW = {"ls": "-", "lw": 1.4, "marker": "o", "ms": 3}, {"ls": "-.", "lw": 1.0}
METRIC_SECOND = {"ls": "-", "lw": 1.0, "marker": "s", "ms": 3}
_CHANCE = "chance (AUC 0.5)"


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plain(text) -> str:
    """``text`` shown literally by matplotlib (``$`` would start math mode, and an odd one is an error; control
    characters such as a tab have no glyph and become spaces)."""
    return re.sub(r"[\x00-\x1f]", " ", str(text)).replace("$", r"\$")


def colour(i: int) -> str:
    """The colour of the ``i``-th run / series."""
    return SERIES_COLOURS[i % len(SERIES_COLOURS)]


def unit_limits(values, chance: bool = True) -> tuple[float, float]:
    """Axis limits of a score in [0, 1]: from min(values) (and 0.5 when ``chance``) rounded down to a tenth, to 1.0."""
    finite = [float(v) for v in values if v is not None and np.isfinite(v)]
    low = min(finite + ([0.5] if chance or not finite else []))
    return max(0.0, math.floor(round(low * 10, 6)) / 10), 1.0


def _chance_line(ax, vertical: bool = True) -> None:
    (ax.axvline if vertical else ax.axhline)(0.5, label=_CHANCE, **CHANCE_STYLE)


def _legend_below(fig, ax_or_axes, ncol: int = 3, fontsize: float = 7) -> None:
    """One legend for the figure, under the axes (outside every plotting area): handles of all ``axes``, each
    label once."""
    axes = ax_or_axes if isinstance(ax_or_axes, (list, tuple)) else [ax_or_axes]
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=min(ncol, len(handles)), fontsize=fontsize,
                   frameon=False)


def _integer_epochs(ax, histories: dict[str, list[dict]]) -> None:
    """Integer epoch ticks; the axis spans the epochs of ``histories`` with half an epoch either side."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    epochs = np.concatenate([_col(h, "epoch") for h in histories.values() if h] or [np.array([np.nan])])
    if np.isfinite(epochs).any():
        ax.set_xlim(float(np.nanmin(epochs)) - 0.5, float(np.nanmax(epochs)) + 0.5)


def save(fig, out_stem: str | Path, svg: bool = True) -> Path:
    """Save ``fig`` as ``<stem>.png`` (and ``<stem>.svg``), close it, return the PNG path."""
    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    png = out_stem.with_suffix(".png")
    fig.savefig(png, dpi=110)
    if svg:
        fig.savefig(out_stem.with_suffix(".svg"), metadata={"Date": None})
    _plt().close(fig)
    return png


def _value_column(ax, y, texts: list[str], colours: list[str]) -> None:
    """Per-bar values in a column right of the axes (never on top of a bar or the legend)."""
    trans = ax.get_yaxis_transform()  # x in axes coordinates, y in data
    for yi, text, c in zip(y, texts, colours, strict=True):
        ax.text(1.02, yi, text, transform=trans, va="center", ha="left", fontsize=8, color=c, clip_on=False)


def bars_figure(per_class: dict, macro: float | None, xlabel: str, title: str):
    """Horizontal per-class AUC bars with the macro AUC as a black line; classes without AUC grey, marked n/a."""
    plt = _plt()
    classes = list(per_class)
    values = [per_class[c] for c in classes]
    below = [v is not None and v < 0.5 for v in values]
    lo, hi = unit_limits(values + [macro])
    fig, ax = plt.subplots(figsize=(7.5, 0.4 * len(classes) + 2.0), layout="constrained")
    colors = [GREY if v is None else RED if low else BLUE for v, low in zip(values, below, strict=True)]
    y = np.arange(len(classes))
    widths = [0.0 if v is None else v - lo for v in values]
    ax.barh(y, widths, left=lo, color=colors)
    ax.set_yticks(y, [plain(c) + ("  (below chance)" if low else "") for c, low in zip(classes, below, strict=True)])
    for tick, low in zip(ax.get_yticklabels(), below, strict=True):
        if low:
            tick.set_color(RED)
    _value_column(ax, y, ["n/a" if v is None else f"{v:.3f}" for v in values],
                  [RED if low else "black" for low in below])
    _chance_line(ax)
    if macro is not None:
        ax.axvline(macro, ls="-", color=BLACK, lw=1.5, label=f"macro AUC {macro:.3f}")
    ax.set_xlim(lo, hi)
    ax.set_ylim(len(classes) - 0.5, -0.5)  # first class on top
    ax.set_xlabel(xlabel)
    ax.set_title(plain(title))
    _legend_below(fig, ax)
    return fig


_bars = bars_figure  # the name earlier code used


def auc_bar_chart(metrics_json: str | Path, out_png: str | Path, title: str | None = None) -> Path:
    """Horizontal bar chart of per-class test AUC with the macro AUC as a black line; classes without AUC marked."""
    metrics = json.loads(Path(metrics_json).read_text())
    fig = bars_figure(metrics["per_class_auc"], metrics.get("macro_auc"),
                      f"ROC AUC ({metrics['split']} split, n={metrics['n']})", title or "Per-class AUC")
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=120)
    _plt().close(fig)
    return out_png


def best_run_chart(per_class: dict, macro: float | None, title: str, out_stem: str | Path) -> Path:
    """Per-class AUC of one run (the paper's Fig. 3 for the best run), PNG + SVG."""
    return save(bars_figure(per_class, macro, "ROC AUC (test split)", title), out_stem)


def error_bars_figure(classes: list[str], series: dict[str, tuple[list, list]], title: str,
                      xlabel: str = "ROC AUC (test split), mean ± sample std across seeds", chance: bool = True):
    """The figure of :func:`auc_error_bars`."""
    plt = _plt()
    k = len(series)
    height = 0.8 / k
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(classes) * max(1, k ** 0.6) + 2.2), layout="constrained")
    y = np.arange(len(classes))
    finite = [v for means, _ in series.values() for v in means if v is not None]
    lo, hi = unit_limits(finite, chance) if chance else (0.0, 1.0)
    for i, (label, (means, stds)) in enumerate(series.items()):
        m = np.array([v if v is not None else np.nan for v in means], dtype=float)
        s = np.array([v if v is not None else 0.0 for v in stds], dtype=float)
        widths = np.where(np.isnan(m), 0.0, m - lo)
        ax.barh(y + (i - (k - 1) / 2) * height, widths, left=lo, height=height, xerr=s, capsize=2,
                color=colour(i), label=plain(label), error_kw={"elinewidth": 0.8})
    below = [chance and any(means[j] is not None and means[j] < 0.5 for means, _ in series.values())
             for j in range(len(classes))]
    if chance:
        _chance_line(ax)
    ax.set_xlim(lo, hi)
    ax.set_yticks(y, [plain(c) + ("  (below chance)" if low else "") for c, low in zip(classes, below, strict=True)])
    for tick, low in zip(ax.get_yticklabels(), below, strict=True):
        if low:
            tick.set_color(RED)
    ax.set_ylim(len(classes) - 0.5, -0.5)
    ax.set_xlabel(xlabel)
    ax.set_title(plain(title))
    _legend_below(fig, ax, ncol=2)
    return fig


def auc_error_bars(classes: list[str], series: dict[str, tuple[list, list]], title: str, out_stem: str | Path,
                   xlabel: str = "ROC AUC (test split), mean ± sample std across seeds", chance: bool = True) -> Path:
    """Per-class mean AUC with ±1 sample std error bars across runs, one bar group per series (the paper's Fig. 2).

    Args:
        classes: row names (macro AUC first is fine).
        series: ``{label: (means, stds)}`` aligned with ``classes``; None where undefined.
        xlabel: the axis label (another metric, e.g. AP@50, with ``chance=False``: the axis runs 0 to 1).
        chance: draw the 0.5 chance line and mark rows whose mean is under 0.5 (an AUC axis).
    """
    return save(error_bars_figure(classes, series, title, xlabel, chance), out_stem)


def roc_figure(probs: np.ndarray, labels: np.ndarray, classes: list[str], aucs: dict, title: str):
    """The figure of :func:`roc_curves`."""
    from sklearn.metrics import roc_curve

    plt = _plt()
    cols = min(4, len(classes))
    rows = math.ceil(len(classes) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.5 * rows + 0.6), squeeze=False, layout="constrained")
    for ax, (j, name) in zip(axes.flat, enumerate(classes), strict=False):  # spare panels are switched off below
        known = ~np.isnan(labels[:, j])
        ax.plot([0, 1], [0, 1], **CHANCE_STYLE)
        if aucs.get(name) is not None:
            low = aucs[name] < 0.5
            fpr, tpr, _ = roc_curve(labels[known, j], probs[known, j])
            ax.plot(fpr, tpr, color=RED if low else BLUE, lw=1.4)
            ax.set_title(f"{plain(name)}\nAUC {aucs[name]:.3f}" + (" below chance" if low else ""), fontsize=8,
                         color=RED if low else "black")
        else:
            ax.set_title(f"{plain(name)}\nAUC undefined", fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(classes):]:
        ax.axis("off")
    fig.supxlabel("false positive rate", fontsize=8)
    fig.supylabel("true positive rate", fontsize=8)
    fig.suptitle(plain(title) + "  (dotted diagonal: chance, AUC 0.5)", fontsize=10)
    return fig


def roc_curves(probs: np.ndarray, labels: np.ndarray, classes: list[str], aucs: dict, title: str,
               out_stem: str | Path) -> Path:
    """One small ROC panel per class (unknown labels dropped), AUC in each panel's title."""
    return save(roc_figure(probs, labels, classes, aucs, title), out_stem)


def _col(history: list[dict], key: str) -> np.ndarray:
    return np.array([float(r[key]) if r.get(key) not in (None, "") else np.nan for r in history], dtype=float)


def _mark_stages(ax, history: list[dict], blocks_key: str = "open_blocks") -> None:
    """A grey band from the first stage-2 epoch to the end; a thin grey line where more encoder blocks open."""
    if not history:
        return
    epochs, stages, blocks = _col(history, "epoch"), _col(history, "stage"), _col(history, blocks_key)
    end = float(np.nanmax(epochs)) + 0.5 if np.isfinite(epochs).any() else None
    shaded = False
    for i in range(1, len(history)):
        if stages[i] != stages[i - 1] and not shaded and end is not None:
            ax.axvspan(epochs[i] - 0.5, end, color=STAGE2_SHADE, zorder=0, lw=0, label="stage 2")
            shaded = True
        elif stages[i] == stages[i - 1] and blocks[i] > blocks[i - 1]:
            ax.axvline(epochs[i] - 0.5, zorder=1, label="more blocks open", **BLOCKS_STYLE)


# the validation metric of a training-curves figure: history.csv column prefix -> axis label, chance line
METRICS = {"val_auc": ("validation macro AUC", True), "val_dice": ("validation Dice (macro)", False)}


def training_curves_figure(histories: dict[str, list[dict]], title: str, metric: str = "val_auc",
                           blocks_key: str = "open_blocks"):
    """The figure of :func:`training_curves` (``metric``: a key of :data:`METRICS`; columns ``<metric>_ema`` and
    ``<metric>_raw``)."""
    plt = _plt()
    ylabel, chance = METRICS[metric]
    fig, (ax_loss, ax_metric) = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained")
    several = sum(1 for h in histories.values() if h) > 1
    values = []
    for i, (label, hist) in enumerate(histories.items()):
        if not hist:
            continue
        c, epochs = colour(i), _col(hist, "epoch")
        name = f"{plain(label)} " if several else ""
        ax_loss.plot(epochs, _col(hist, "train_loss"), color=c, label=f"{name}train loss", **TRAIN_LOSS)
        ax_loss.plot(epochs, _col(hist, "val_loss"), color=c, label=f"{name}validation loss", **VAL_LOSS)
        ema, raw = _col(hist, f"{metric}_ema"), _col(hist, f"{metric}_raw")
        if np.isfinite(ema).any():
            ax_metric.plot(epochs, ema, color=c, label=f"{name}EMA weights", **METRIC_EMA)
        ax_metric.plot(epochs, raw, color=c, label=f"{name}raw weights", **METRIC_RAW)
        values += [v for v in np.concatenate([ema, raw]) if np.isfinite(v)]
    if chance:
        _chance_line(ax_metric, vertical=False)
    ax_metric.set_ylim(*unit_limits(values, chance))
    first = next((h for h in histories.values() if h), [])
    for ax, label in ((ax_loss, "loss (class-weighted)"), (ax_metric, ylabel)):
        _mark_stages(ax, first, blocks_key)
        _integer_epochs(ax, histories)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
    fig.suptitle(plain(title), fontsize=10)
    _legend_below(fig, [ax_loss, ax_metric], ncol=4)
    return fig


def training_curves(histories: dict[str, list[dict]], title: str, out_stem: str | Path, metric: str = "val_auc",
                    svg: bool = True) -> Path:
    """Loss and validation metric (EMA and raw weights) per epoch for each run (one colour per run), stage 2 and
    further unfreezing marked.

    Args:
        histories: ``{run label: rows of history.csv}``.
        metric: ``val_auc`` (classification) or ``val_dice`` (segmentation).
    """
    return save(training_curves_figure(histories, title, metric), out_stem, svg)


def detection_curves_figure(histories: dict[str, list[dict]], title: str):
    """The figure of :func:`detection_curves`."""
    plt = _plt()
    fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(10, 4.2), layout="constrained")
    several = sum(1 for h in histories.values() if h) > 1
    values = []
    for i, (label, hist) in enumerate(histories.items()):
        if not hist:
            continue
        c, epochs = colour(i), _col(hist, "epoch")
        name = f"{plain(label)} " if several else ""
        losses = [k for k in hist[0] if k.startswith("train_") and k.endswith("loss")]
        total = np.nansum([_col(hist, k) for k in losses], axis=0) if losses else np.full(len(hist), np.nan)
        ax_loss.plot(epochs, total, color=c, label=f"{name}train loss (sum of {len(losses)})", **TRAIN_LOSS)
        m50, m5095 = _col(hist, "val_map50"), _col(hist, "val_map50_95")
        ax_map.plot(epochs, m50, color=c, label=f"{name}mAP@50", **METRIC_EMA)
        ax_map.plot(epochs, m5095, color=c, label=f"{name}mAP@50-95", **METRIC_SECOND)
        values += [v for v in np.concatenate([m50, m5095]) if np.isfinite(v)]
    ax_map.set_ylim(*unit_limits(values, chance=False))
    first = next((h for h in histories.values() if h), [])
    for ax, ylabel in ((ax_loss, "train loss (class-weighted)"), (ax_map, "validation mAP")):
        _mark_stages(ax, first, "open_backbone_modules")
        _integer_epochs(ax, histories)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
    fig.suptitle(plain(title), fontsize=10)
    _legend_below(fig, [ax_loss, ax_map], ncol=4)
    return fig


def detection_curves(histories: dict[str, list[dict]], title: str, out_stem: str | Path, svg: bool = True) -> Path:
    """Detection training curves: train losses (box, cls, dfl or RT-DETR's) and validation mAP@50 / mAP@50-95 per
    epoch for each run, stage 2 and each further opening of backbone modules marked.

    Args:
        histories: ``{run label: rows of a detection run's history.csv}``.
    """
    return save(detection_curves_figure(histories, title), out_stem, svg)


def run_curves(run_dir: str | Path, out_name: str = "curves.png") -> Path | None:
    """``<run_dir>/curves.png``: one run's training curves from its ``history.csv`` (classification: loss and
    validation AUC; segmentation: loss and Dice; detection: losses and mAP), stage 2 and unfreezing marked. None
    when the run has no history row yet."""
    from spft.csvsafe import read_rows

    run_dir = Path(run_dir)
    path = run_dir / "history.csv"
    if not path.is_file():
        return None
    with open(path, newline="") as fh:
        history = read_rows(fh)
    if not history:
        return None
    columns = set(history[0])
    title = f"Training curves — {run_dir.name}"
    stem = run_dir / Path(out_name).stem
    if "val_map50" in columns:
        return detection_curves({run_dir.name: history}, title, stem, svg=False)
    metric = "val_dice" if {"val_dice_raw", "val_dice_ema"} & columns else "val_auc"
    return training_curves({run_dir.name: history}, title, stem, metric, svg=False)


def heatmap_figure(picture, heatmap: np.ndarray, title: str, method: str = "Grad-CAM", cmap: str = "jet",
                   alpha: float = 0.45):
    """A heatmap as a person reads it: the image, the image with the map blended on top
    (:func:`spft.models.heatmaps.overlay`) and a colour bar of the map's scale, ``title`` (class and predicted
    probability) above; about 900 x 430 px at the default 100 dpi, whatever the image's size."""
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    from spft.models.heatmaps import overlay

    plt = _plt()
    heat = np.asarray(heatmap, dtype=np.float32)
    peak = float(heat.max()) if heat.size else 0.0
    fig, (ax_img, ax_map) = plt.subplots(1, 2, figsize=(9, 4.3), layout="constrained")
    grey = picture.mode in ("L", "I", "I;16", "F")
    ax_img.imshow(np.asarray(picture), cmap="gray" if grey else None)
    ax_img.set_title("image", fontsize=10)
    ax_map.imshow(np.asarray(overlay(picture, heat, alpha=alpha, cmap=cmap)))
    ax_map.set_title(f"{method} overlay", fontsize=10)
    for ax in (ax_img, ax_map):
        ax.set_xticks([])
        ax.set_yticks([])
    bar = fig.colorbar(ScalarMappable(norm=Normalize(0.0, peak if peak > 0 else 1.0), cmap=colormaps[cmap]),
                       ax=ax_map, fraction=0.046, pad=0.02)
    bar.set_label(f"{method} (raw scale; blended in proportion to the peak)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    fig.suptitle(plain(title), fontsize=12)
    return fig
