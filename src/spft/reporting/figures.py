"""Figures from run-directory data (matplotlib, Agg): per-class AUC bars (the paper's Fig. 3), per-class AUC with
error bars across runs (Fig. 2), ROC curves per class and training curves with the SPFT stage boundaries.

Report figures are written as PNG (embedded in report.html) and SVG (for papers); ``auc_bar_chart`` is the demo's
single-run chart. Every AUC axis shows the chance level (0.5, dotted grey line); a class whose AUC is under 0.5 is
drawn red and labelled "below chance". Names (classes, overlays) are drawn as plain text: a ``$`` never starts
matplotlib's math mode.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

_BLUE, _RED, _GREY = "#4C72B0", "#C44E52", "#cccccc"
_CHANCE = "chance (AUC 0.5)"
_PALETTE = ["#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plain(text) -> str:
    """``text`` shown literally by matplotlib (``$`` would start math mode, and an odd one is an error; control
    characters such as a tab have no glyph and become spaces)."""
    return re.sub(r"[\x00-\x1f]", " ", str(text)).replace("$", r"\$")


def _chance_line(ax) -> None:
    ax.axvline(0.5, ls=":", color="#777777", lw=1, label=_CHANCE)


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


def _bars(per_class: dict, macro: float | None, xlabel: str, title: str):
    """Horizontal per-class AUC bars with the macro AUC as a dashed line; classes without AUC grey, marked n/a."""
    plt = _plt()
    classes = list(per_class)
    values = [per_class[c] if per_class[c] is not None else 0.0 for c in classes]
    below = [per_class[c] is not None and per_class[c] < 0.5 for c in classes]
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(classes) + 1.5))
    colors = [_GREY if per_class[c] is None else _RED if low else _BLUE for c, low in zip(classes, below, strict=True)]
    y = np.arange(len(classes))
    bars = ax.barh(y, values, color=colors)
    ax.set_yticks(y, [plain(c) for c in classes])
    for tick, low in zip(ax.get_yticklabels(), below, strict=True):
        if low:
            tick.set_color(_RED)
    for bar, c, low in zip(bars, classes, below, strict=True):
        text = "n/a" if per_class[c] is None else f"{per_class[c]:.3f}" + (" below chance" if low else "")
        ax.text(bar.get_width() + 0.005, bar.get_y() + bar.get_height() / 2, text, va="center", fontsize=8,
                color=_RED if low else "black")
    _chance_line(ax)
    if macro is not None:
        ax.axvline(macro, ls="--", color=_RED, label=f"macro AUC {macro:.3f}")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_xlim(min([0.45] + [v - 0.05 for v in values]), 1.12)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(plain(title))
    fig.tight_layout()
    return fig


def auc_bar_chart(metrics_json: str | Path, out_png: str | Path, title: str | None = None) -> Path:
    """Horizontal bar chart of per-class test AUC with the macro AUC as a dashed line; classes without AUC marked."""
    metrics = json.loads(Path(metrics_json).read_text())
    fig = _bars(metrics["per_class_auc"], metrics.get("macro_auc"),
                f"ROC AUC ({metrics['split']} split, n={metrics['n']})", title or "Per-class AUC")
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=120)
    _plt().close(fig)
    return out_png


def best_run_chart(per_class: dict, macro: float | None, title: str, out_stem: str | Path) -> Path:
    """Per-class AUC of one run (the paper's Fig. 3 for the best run), PNG + SVG."""
    return save(_bars(per_class, macro, "ROC AUC (test split)", title), out_stem)


def auc_error_bars(classes: list[str], series: dict[str, tuple[list, list]], title: str, out_stem: str | Path,
                   xlabel: str = "ROC AUC (test split), mean ± sample std across seeds", chance: bool = True) -> Path:
    """Per-class mean AUC with ±1 sample std error bars across runs, one bar group per series (the paper's Fig. 2).

    Args:
        classes: row names (macro AUC first is fine).
        series: ``{label: (means, stds)}`` aligned with ``classes``; None where undefined.
        xlabel: the axis label (another metric, e.g. AP@50, with ``chance=False``).
        chance: draw the 0.5 chance line and mark rows whose mean is under 0.5 (an AUC axis).
    """
    plt = _plt()
    k = len(series)
    height = 0.8 / k
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(classes) * max(1, k ** 0.6) + 1.8))
    y = np.arange(len(classes))
    for i, (label, (means, stds)) in enumerate(series.items()):
        m = np.array([v if v is not None else np.nan for v in means], dtype=float)
        s = np.array([v if v is not None else 0.0 for v in stds], dtype=float)
        ax.barh(y + (i - (k - 1) / 2) * height, np.nan_to_num(m), height=height, xerr=s, capsize=2,
                color=_PALETTE[i % len(_PALETTE)], label=plain(label), error_kw={"elinewidth": 0.8})
    finite = [v for means, _ in series.values() for v in means if v is not None]
    below = [chance and any(means[j] is not None and means[j] < 0.5 for means, _ in series.values())
             for j in range(len(classes))]
    if chance:
        _chance_line(ax)
        ax.set_xlim(max(0.0, min(finite + [0.5]) - 0.05), 1.02)
    else:
        ax.set_xlim(0.0, 1.02)
    ax.set_yticks(y, [plain(c) + ("  (below chance)" if low else "") for c, low in zip(classes, below, strict=True)])
    for tick, low in zip(ax.get_yticklabels(), below, strict=True):
        if low:
            tick.set_color(_RED)
    ax.invert_yaxis()
    ax.set_xlabel(xlabel)
    ax.set_title(plain(title))
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    return save(fig, out_stem)


def roc_curves(probs: np.ndarray, labels: np.ndarray, classes: list[str], aucs: dict, title: str,
               out_stem: str | Path) -> Path:
    """One small ROC panel per class (unknown labels dropped), AUC in each panel's title."""
    from sklearn.metrics import roc_curve

    plt = _plt()
    cols = min(4, len(classes))
    rows = math.ceil(len(classes) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.5 * rows + 0.4), squeeze=False)
    for ax, (j, name) in zip(axes.flat, enumerate(classes), strict=False):  # spare panels are switched off below
        known = ~np.isnan(labels[:, j])
        ax.plot([0, 1], [0, 1], ls=":", color="#999999", lw=0.8)
        if aucs.get(name) is not None:
            low = aucs[name] < 0.5
            fpr, tpr, _ = roc_curve(labels[known, j], probs[known, j])
            ax.plot(fpr, tpr, color=_RED if low else _BLUE, lw=1.4)
            ax.set_title(f"{plain(name)}\nAUC {aucs[name]:.3f}" + (" below chance" if low else ""), fontsize=8,
                         color=_RED if low else "black")
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
    fig.tight_layout()
    return save(fig, out_stem)


def _col(history: list[dict], key: str) -> np.ndarray:
    return np.array([float(r[key]) if r.get(key) not in (None, "") else np.nan for r in history], dtype=float)


def _mark_stages(ax, history: list[dict], blocks_key: str = "open_blocks") -> None:
    """Dashed line where stage 2 starts, dotted lines where more encoder blocks open."""
    epochs, stages, blocks = _col(history, "epoch"), _col(history, "stage"), _col(history, blocks_key)
    for i in range(1, len(history)):
        if stages[i] != stages[i - 1]:
            ax.axvline(epochs[i] - 0.5, ls="--", color="#555555", lw=1)
        elif blocks[i] > blocks[i - 1]:
            ax.axvline(epochs[i] - 0.5, ls=":", color="#999999", lw=0.8)


def training_curves(histories: dict[str, list[dict]], title: str, out_stem: str | Path) -> Path:
    """Loss and validation AUC per epoch for each run (one colour per run), stage boundaries marked.

    Args:
        histories: ``{run label: rows of history.csv}``.
    """
    plt = _plt()
    fig, (ax_loss, ax_auc) = plt.subplots(1, 2, figsize=(10, 3.6))
    for i, (label, hist) in enumerate(histories.items()):
        if not hist:
            continue
        color, epochs = _PALETTE[i % len(_PALETTE)], _col(hist, "epoch")
        label = plain(label)
        ax_loss.plot(epochs, _col(hist, "train_loss"), color=color, lw=1.2, label=f"{label} train")
        ax_loss.plot(epochs, _col(hist, "val_loss"), color=color, lw=1.2, ls="--", label=f"{label} val")
        ax_auc.plot(epochs, _col(hist, "val_auc_ema"), color=color, lw=1.4, marker="o", ms=3, label=f"{label} EMA")
        ax_auc.plot(epochs, _col(hist, "val_auc_raw"), color=color, lw=0.9, ls=":", label=f"{label} raw")
    first = next((h for h in histories.values() if h), [])
    ax_auc.axhline(0.5, ls=":", color="#777777", lw=1, label=_CHANCE)
    for ax, ylabel in ((ax_loss, "loss (class-weighted)"), (ax_auc, "validation macro AUC")):
        _mark_stages(ax, first)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=6, ncol=2)
    fig.suptitle(f"{plain(title)}  (dashed: stage 2 starts; dotted: more blocks open)", fontsize=9)
    fig.tight_layout()
    return save(fig, out_stem)


def detection_curves(histories: dict[str, list[dict]], title: str, out_stem: str | Path) -> Path:
    """Detection training curves: train losses (box, cls, dfl or RT-DETR's) and validation mAP@50 / mAP@50-95 per
    epoch for each run, stage 2 and each further opening of backbone modules marked.

    Args:
        histories: ``{run label: rows of a detection run's history.csv}``.
    """
    plt = _plt()
    fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(10, 3.6))
    for i, (label, hist) in enumerate(histories.items()):
        if not hist:
            continue
        color, epochs, label = _PALETTE[i % len(_PALETTE)], _col(hist, "epoch"), plain(label)
        losses = [k for k in hist[0] if k.startswith("train_") and k.endswith("loss")]
        total = np.nansum([_col(hist, k) for k in losses], axis=0) if losses else np.full(len(hist), np.nan)
        ax_loss.plot(epochs, total, color=color, lw=1.2, label=f"{label} train (sum of {len(losses)} losses)")
        ax_map.plot(epochs, _col(hist, "val_map50"), color=color, lw=1.4, marker="o", ms=3, label=f"{label} mAP@50")
        ax_map.plot(epochs, _col(hist, "val_map50_95"), color=color, lw=0.9, ls=":", label=f"{label} mAP@50-95")
    first = next((h for h in histories.values() if h), [])
    for ax, ylabel in ((ax_loss, "train loss (class-weighted)"), (ax_map, "validation mAP")):
        _mark_stages(ax, first, "open_backbone_modules")
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=6, ncol=2)
    fig.suptitle(f"{plain(title)}  (dashed: stage 2 starts; dotted: more backbone modules open)", fontsize=9)
    fig.tight_layout()
    return save(fig, out_stem)
