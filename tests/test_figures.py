"""Figures and report.html as a reader sees them (issue 22 item 7): one style per meaning, AUC axes that stop at
1.0, integer epoch ticks, legends and value labels outside the bars, heatmap figures with a colour bar and a
title, and HTML tables that cannot push the page past its column."""

from __future__ import annotations

import re

import numpy as np
import pytest
from matplotlib.colors import to_hex
from PIL import Image

from spft.reporting import figures
from spft.reporting.html import render_html
from spft.reporting.tables import Interval, Table, html_cell

PER_CLASS = {"Atelectasis": 0.71, "Cardiomegaly": 0.98, "Consolidation": 0.31, "Nodule": None, "Effusion": 0.88}


def _history(epochs: int = 8, stage2: int = 3, low: float = 0.0) -> list[dict]:
    return [{"epoch": e, "stage": 1 if e < stage2 else 2, "open_blocks": 0 if e < stage2 else 1 + (e >= 5),
             "train_loss": 1 / (e + 1), "val_loss": 1.2 / (e + 1), "val_auc_ema": 0.5 + 0.06 * e,
             "val_auc_raw": 0.42 + low + 0.06 * e} for e in range(epochs)]


def _close(fig) -> None:
    figures._plt().close(fig)


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def _visible_ticks(axis, lo, hi) -> list[float]:
    return [t for t in axis.get_majorticklocs() if lo - 1e-9 <= t <= hi + 1e-9]


def test_unit_limits_start_at_min_data_or_chance_rounded_down_and_stop_at_one():
    assert figures.unit_limits([0.71, 0.98]) == (0.5, 1.0)
    assert figures.unit_limits([0.31, 0.98, None]) == (0.3, 1.0)
    assert figures.unit_limits([0.6, 0.99], chance=False) == (0.6, 1.0)
    assert figures.unit_limits([]) == (0.5, 1.0)


def test_bar_chart_axis_legend_and_labels_stay_outside_the_bars():
    fig = figures.bars_figure(PER_CLASS, 0.72, "ROC AUC", "Best run")
    try:
        ax = fig.axes[0]
        assert ax.get_xlim() == pytest.approx((0.3, 1.0))  # min(0.31, 0.5) rounded down; never 1.1
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        plot_area = ax.get_window_extent(renderer)
        assert not ax.get_legend() and len(fig.legends) == 1  # one figure legend ...
        assert not _overlaps(fig.legends[0].get_window_extent(renderer), plot_area)  # ... outside the bars
        values = [t for t in ax.texts if t.get_text()]
        assert [t.get_text() for t in values] == ["0.710", "0.980", "0.310", "n/a", "0.880"]
        assert all(t.get_window_extent(renderer).x0 >= plot_area.x1 for t in values)  # a column right of the axes
        labels = {t.get_text(): to_hex(t.get_color()) for t in ax.get_yticklabels()}
        assert labels["Consolidation  (below chance)"] == figures.RED and labels["Cardiomegaly"] != figures.RED
        colours = [to_hex(p.get_facecolor()) for p in ax.patches]
        assert colours[2] == figures.RED and colours[0] == figures.BLUE and colours[3] == figures.GREY
    finally:
        _close(fig)


def test_error_bars_clip_at_one_and_never_draw_a_run_in_red():
    series = {f"row {i}": ([0.8, 0.6, 0.45], [0.3, 0.1, 0.05]) for i in range(6)}  # 6 rows: +EMA is the 4th
    fig = figures.error_bars_figure(["Macro AUC", "A", "B"], series, "Across seeds")
    try:
        ax = fig.axes[0]
        assert ax.get_xlim() == pytest.approx((0.4, 1.0))
        bar_colours = {to_hex(p.get_facecolor()) for p in ax.patches}
        assert figures.RED not in bar_colours and len(bar_colours) == 6
        assert not ax.get_legend() and fig.legends
    finally:
        _close(fig)
    fig = figures.error_bars_figure(["mAP@50"], {"a": ([0.3], [0.1])}, "AP", xlabel="AP@50", chance=False)
    try:
        assert fig.axes[0].get_xlim() == pytest.approx((0.0, 1.0))
    finally:
        _close(fig)


def test_training_curves_one_style_per_meaning_integer_epochs_auc_axis_to_one():
    fig = figures.training_curves_figure({"seed 0": _history(), "seed 1": _history(6, low=-0.2)}, "curves")
    try:
        ax_loss, ax_auc = fig.axes
        lo, hi = ax_auc.get_ylim()
        assert (lo, hi) == pytest.approx((0.2, 1.0))  # raw AUC down to 0.22: rounded down; top exactly 1.0
        for ax in (ax_loss, ax_auc):
            ticks = _visible_ticks(ax.xaxis, *ax.get_xlim())
            assert ticks and all(float(t).is_integer() for t in ticks)
            assert ax.get_xlim() == pytest.approx((-0.5, 7.5))
        styles = {line.get_label(): (line.get_linestyle(), line.get_marker()) for ax in fig.axes
                  for line in ax.get_lines()}
        assert styles["seed 0 train loss"] == ("-", "None") and styles["seed 0 validation loss"] == ("--", "None")
        assert styles["seed 0 EMA weights"] == ("-", "o") and styles["seed 0 raw weights"] == ("-.", "None")
        assert styles["chance (AUC 0.5)"] == (":", "None") and styles["more blocks open"] == ("-", "None")
        # each style means one thing: dashed is validation loss only, dotted chance only
        dashed = {k for k, (ls, _) in styles.items() if ls == "--"}
        dotted = {k for k, (ls, _) in styles.items() if ls == ":"}
        assert dashed == {"seed 0 validation loss", "seed 1 validation loss"} and dotted == {"chance (AUC 0.5)"}
        stage2 = [p for p in ax_auc.patches if p.get_label() == "stage 2"]  # a band, not a line
        # axvspan draws a Rectangle (matplotlib >= 3.9) or a Polygon (before): its left edge either way
        left = min(stage2[0].get_path().transformed(stage2[0].get_patch_transform()).vertices[:, 0]) \
            if stage2 else None
        assert len(stage2) == 1 and left == pytest.approx(2.5)
        run_colours = {to_hex(line.get_color()) for ax in fig.axes for line in ax.get_lines()
                       if line.get_label().startswith("seed")}
        assert run_colours == {figures.colour(0), figures.colour(1)} and figures.RED not in run_colours
        assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        legend = fig.legends[0].get_window_extent(renderer)
        assert not any(_overlaps(legend, ax.get_window_extent(renderer)) for ax in fig.axes)
    finally:
        _close(fig)


def test_segmentation_and_detection_curves_use_their_own_metric_axes():
    hist = [{**r, "val_dice_ema": 0.7 + 0.02 * r["epoch"], "val_dice_raw": 0.65 + 0.02 * r["epoch"]}
            for r in _history()]
    fig = figures.training_curves_figure({"run": hist}, "seg", metric="val_dice")
    try:
        assert fig.axes[1].get_ylim() == pytest.approx((0.6, 1.0))
        assert fig.axes[1].get_ylabel() == "validation Dice (macro)"
        assert "chance (AUC 0.5)" not in [line.get_label() for line in fig.axes[1].get_lines()]
    finally:
        _close(fig)
    det = [{"epoch": e, "stage": 1 + (e >= 2), "open_backbone_modules": e, "train_box_loss": 1.0, "train_cls_loss": 1.0,
            "val_map50": 0.1 * e, "val_map50_95": 0.05 * e} for e in range(5)]
    fig = figures.detection_curves_figure({"run": det}, "det")
    try:
        assert fig.axes[1].get_ylim() == pytest.approx((0.0, 1.0))
        ticks = _visible_ticks(fig.axes[0].xaxis, *fig.axes[0].get_xlim())
        assert all(float(t).is_integer() for t in ticks)
    finally:
        _close(fig)


def test_run_curves_writes_curves_png_from_history(tmp_path):
    import csv

    assert figures.run_curves(tmp_path) is None  # no history yet
    rows = _history(4)
    with open(tmp_path / "history.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    png = figures.run_curves(tmp_path)
    assert png == tmp_path / "curves.png" and Image.open(png).size[0] >= 800
    assert not (tmp_path / "curves.svg").exists()


def test_heatmap_figure_has_image_overlay_colour_bar_and_title():
    picture = Image.fromarray((np.arange(128 * 128).reshape(128, 128) % 251).astype(np.uint8), mode="L")
    heat = np.zeros((128, 128), np.float32)
    heat[40:60, 70:90] = 3.0
    fig = figures.heatmap_figure(picture, heat, "scan.png — Effusion: predicted probability 0.873")
    try:
        assert fig._suptitle.get_text() == "scan.png — Effusion: predicted probability 0.873"
        assert len(fig.axes) == 3  # image, overlay, colour bar
        bar = fig.axes[2]
        assert bar.get_ylim() == pytest.approx((0.0, 3.0))  # the map's raw scale
        width, height = fig.get_size_inches() * fig.dpi
        assert width >= 800 and height >= 400
    finally:
        _close(fig)


# --- report.html ---------------------------------------------------------------------------------------------------


def _wide_table() -> Table:
    cols = ["Class"] + [f"seed {s} {m}" for s in range(3) for m in ("AUC", "AUPRC")]
    rows = [[f"class {k}"] + [Interval(0.8152, 0.6999, 0.9081, n_pos=15, n_pos_units=11) for _ in cols[1:]]
            for k in range(4)]
    return Table("bootstrap_ci", "Bootstrap confidence intervals", "caption", cols, rows)


def test_every_html_table_sits_in_a_scroll_box_and_cells_wrap_between_parts():
    wide, narrow = _wide_table(), Table("t", "T", "c", ["Class", "v"], [["a", 0.5]])
    page = render_html("r", [("sweep", "/a/very/long/path" * 20)], "note", [["a", "0", "d", "0.8", "1", "10", "x"]],
                       [["b", "1", "e", "failed"]], [wide, narrow], [], details=[narrow], header_tables=[narrow])
    css = page[page.index("<style>"):page.index("</style>")]
    assert re.search(r"div\.scroll \{[^}]*overflow-x: auto", css) and re.search(r"max-width: 1100px", css)
    assert "white-space: nowrap" not in re.search(r"th, td \{[^}]*\}", css).group(0)  # cells may wrap ...
    assert re.search(r"span\.u \{ white-space: nowrap; \}", css)  # ... between their parts only
    body = page[page.index("</style>"):]
    tables = re.findall(r"(<div class=\"scroll[^\"]*\">)?<table", body)
    assert tables and all(tables), "a table outside its scroll box"
    assert body.count('<div class="scroll wide"><table>') == 1  # the 7-column table: smaller font
    cell = html_cell("0.8152 [0.6999, 0.9081] (n+=15, 11 patients)")
    assert cell == ('<span class="u">0.8152</span> <span class="u">[0.6999, 0.9081]</span> '
                    '<span class="u">(n+=15, 11 patients)</span>')
    assert html_cell("0.5000") == "0.5000" and html_cell("<b>") == "&lt;b&gt;"
    # the widest unbreakable part of a row of the wide table, in characters: 7 columns of at most ~20 characters
    # (one part each), about 1000 px at 0.78em, inside the 1100 px column
    row = re.search(r'<tr><td><span class="u">class 0</span></td>.*?</tr>', body).group(0)
    widest = [max(len(p) for p in re.findall(r'<span class="u">([^<]*)</span>', td))
              for td in re.findall(r"<td>(.*?)</td>", row)]
    assert len(widest) == 7 and sum(widest) <= 7 * 21
