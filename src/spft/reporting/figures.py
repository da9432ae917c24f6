"""Figures from run-directory files: the per-class AUC bar chart (the paper's Fig. 3 for one run)."""

from __future__ import annotations

import json
from pathlib import Path


def auc_bar_chart(metrics_json: str | Path, out_png: str | Path, title: str | None = None) -> Path:
    """Horizontal bar chart of per-class test AUC with the macro AUC as a dashed line; classes without AUC marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = json.loads(Path(metrics_json).read_text())
    per_class = metrics["per_class_auc"]
    classes = list(per_class)
    values = [per_class[c] if per_class[c] is not None else 0.0 for c in classes]
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(classes) + 1.5))
    bars = ax.barh(classes, values, color=["#4C72B0" if per_class[c] is not None else "#cccccc" for c in classes])
    for bar, c in zip(bars, classes):
        text = "n/a" if per_class[c] is None else f"{per_class[c]:.3f}"
        ax.text(bar.get_width() + 0.005, bar.get_y() + bar.get_height() / 2, text, va="center", fontsize=8)
    if metrics.get("macro_auc") is not None:
        ax.axvline(metrics["macro_auc"], ls="--", color="#C44E52", label=f"macro AUC {metrics['macro_auc']:.3f}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlim(min([0.5] + [v - 0.05 for v in values]), 1.05)
    ax.invert_yaxis()
    ax.set_xlabel(f"ROC AUC ({metrics['split']} split, n={metrics['n']})")
    ax.set_title(title or "Per-class AUC")
    fig.tight_layout()
    out_png = Path(out_png)
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return out_png
