"""Report tables and pages escape what comes from the runs: a class named ``=HYPERLINK("x")`` or ``<script>``, an
overlay label starting with ``+``, an override with ``<``/``&``.

CSV follows the OWASP CSV-injection rule (text starting with = + - @ tab CR gets a leading ') while numbers stay
numbers (negative differences included); Markdown escapes | and HTML-significant characters; HTML escapes every
user string; LaTeX escapes its specials; matplotlib shows a $ literally.
"""

from __future__ import annotations

import csv
import html
import json
import re
from pathlib import Path

import numpy as np
import yaml

from spft.reporting.report import build_report
from spft.reporting.tables import Flagged, MeanStd, Table, csv_safe, md_escape

EVIL = '=HYPERLINK("http://evil.example/x","click")'
SCRIPT = "<script>alert(1)</script>"
PIPE = "a|b & $c"
CLASSES = [EVIL, SCRIPT, PIPE, "-2+3", "@SUM(A1)", "\tTab"]


def _csv_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as fh:
        return list(csv.reader(fh))


def test_csv_cells_follow_owasp_and_numbers_stay_numbers(tmp_path):
    table = Table("t", "T", "c", ["Class", "+ EMA", "Δ"],
                  [[EVIL, 0.5, MeanStd(-0.0123, 0.004, 3, signed=True)], ["-1", -0.25, None],
                   ["@x", Flagged(0.4, "below chance"), "—"], ["\rcr", 1.0, "-"]])
    rows = _csv_rows(Path(table.write(tmp_path)[1]))
    assert rows[0] == ["Class", "'+ EMA", "Δ mean", "Δ std", "Δ n"]
    assert rows[1][0] == "'" + EVIL and float(rows[1][2]) == -0.0123 and rows[1][2] == "-0.0123"
    assert rows[2][0] == "-1" and rows[2][1] == "-0.25"  # numbers (and text that is exactly a number) kept
    assert rows[3][0] == "'@x" and rows[3][1] == "0.4"  # a flagged value is a bare number in CSV
    assert rows[4][0] == "'\rcr" and rows[4][2] == "'-"
    assert csv_safe("-0.5e-3") == "-0.5e-3" and csv_safe("-1-1") == "'-1-1" and csv_safe(-3) == -3


def test_markdown_and_html_cells_are_escaped(tmp_path):
    table = Table("t", f"Title {SCRIPT}", f"caption {PIPE}", ["Class", "v"], [[SCRIPT, 0.5], [PIPE, None]])
    md = table.to_markdown()
    assert "<script>" not in md and "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    assert "| a\\|b &amp; $c | n/a |" in md
    assert all(line.count(" | ") == 1 for line in md.splitlines() if line.startswith("| ") and "---" not in line)
    page = table.to_html()
    assert "<script>" not in page and html.escape(SCRIPT) in page
    assert md_escape("x\ny") == "x y"


def _run(run_dir: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    run_dir.mkdir(parents=True)
    n = 40
    labels = (rng.random((n, len(CLASSES))) < 0.4).astype(int)
    probs = np.clip(0.5 + 0.3 * (labels - 0.5) + rng.normal(0, 0.2, labels.shape), 0, 1)
    with open(run_dir / "predictions_test.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "group", *(f"prob_{c}" for c in CLASSES), *(f"label_{c}" for c in CLASSES)])
        for i in range(n):
            writer.writerow([f"i{i}", f"p{i}", *probs[i], *labels[i]])
    (run_dir / "metrics.json").write_text(json.dumps({"split": "test", "n": n, "best_epoch": 1}))
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "data": {"name": "csv"}}))
    (run_dir / "env.json").write_text(json.dumps({"command": ["spft", "train", "c.yaml", "data.csv=<x>&y.csv",
                                                              f"seed={seed}"]}))
    (run_dir / "DONE").write_text("x\n")


def test_a_whole_report_with_hostile_class_and_row_names_is_escaped_everywhere(tmp_path):
    sweep = tmp_path / "sweep"
    study = {"name": "s", "kind": "custom", "overlays": [
        {"name": "a", "label": "+ <b>bold</b>", "overrides": ["optim.lr_head=1e-4"]},
        {"name": "b", "label": "=1+1", "overrides": []}]}
    for o in ("a", "b"):
        _run(sweep / o / "seed0", 0)
    (sweep / "sweep.json").write_text(json.dumps({"definition": {"kind": "ablate", "config": "c.yaml",
                                                                 "overrides": ["data.csv=<x>&y.csv"], "study": study},
                                                  "runs": [{"overlay": o, "seed": 0, "run_dir": f"{o}/seed0",
                                                            "status": "done"} for o in ("a", "b")]}))
    out = build_report(sweep, n_boot=20)
    page = (out / "report.html").read_text()
    text = re.sub(r"base64,[^\"]*", "", page)
    assert "<script>" not in text and "<b>bold</b>" not in text and "<x>" not in text
    assert html.escape(SCRIPT) in text and html.escape(EVIL) in text and "data.csv=&lt;x&gt;&amp;y.csv" in text
    for path in (out / "tables").glob("*.csv"):
        for row in _csv_rows(path):
            for cell in row:
                assert not cell.startswith(("=", "+", "@", "\t", "\r")), (path.name, cell)
                assert not cell.startswith("-") or re.fullmatch(r"-[\d.e+-]+", cell), (path.name, cell)
    mean_std = _csv_rows(out / "tables" / "mean_std_auc.csv")
    assert any(r[0] == "'" + EVIL for r in mean_std) and any(r[0] == "'@SUM(A1)" for r in mean_std)
    assert "'+ <b>bold</b> mean" in mean_std[0] and "'=1+1 mean" in mean_std[0]
    for md in [out / "report.md", *(out / "tables").glob("*.md")]:
        body = md.read_text()
        assert "<script>" not in body and "<b>" not in body and "<x>" not in body, md.name
    assert "a\\|b &amp; $c" in (out / "tables" / "mean_std_auc.md").read_text()
    tex = (out / "tables" / "mean_std_auc.tex").read_text()
    assert r"\textless{}script\textgreater{}" in tex and r"a\textbar{}b \& \$c" in tex
    assert (out / "figures" / "roc_best_run.png").is_file()  # "$c" drawn literally, not as broken math text


# --- one CSV cell rule for every CSV spft writes, reversed where spft reads its own files (issue 20 item 11) -------

TRICKY = ["=2+3_0.png", "+x", "-x", "@x", "\tx", "\rx", "'=x", "''+x", "'plain", "plain", "-0.25", "+1e-3", "", "'",
          "a=b"]


def test_escape_is_reversible_and_leaves_plain_cells_alone():
    from spft.csvsafe import escape_cell, unescape_cell

    for value in TRICKY:
        assert unescape_cell(escape_cell(value)) == value, value
        written = escape_cell(value)
        assert not written.startswith(("=", "+", "@", "\t", "\r")) or written in ("-0.25", "+1e-3"), written
    assert escape_cell("=2+3_0.png") == "'=2+3_0.png" and escape_cell("-0.25") == "-0.25" and escape_cell(1.5) == 1.5
    assert unescape_cell("'plain") == "'plain" and unescape_cell("plain") == "plain"


def test_atomic_csv_escapes_and_spft_reads_its_own_records_back(tmp_path):
    """predictions_test.csv (read by spft report) and history.csv (read on resume and by tracking): written with the
    formula ids quoted, read back by spft as the original ids; spreadsheets see text."""
    from spft.atomic import atomic_write_csv
    from spft.reporting.collect import read_predictions
    from spft.tracking.records import read_history

    ids = ["=2+3_0.png", "@evil.png", "ok.png", "'=x.png"]
    rows = [{"id": i, "group": f"-g{k}", "prob_a": 0.25 * k, "label_a": k % 2} for k, i in enumerate(ids)]
    atomic_write_csv(tmp_path / "predictions_test.csv", rows)
    raw = _csv_rows(tmp_path / "predictions_test.csv")
    assert [r[0] for r in raw[1:]] == ["'=2+3_0.png", "'@evil.png", "ok.png", "''=x.png"]
    assert raw[1][1] == "'-g0" and raw[2][2] == "0.25"
    classes, probs, labels, groups = read_predictions(tmp_path / "predictions_test.csv")
    assert classes == ["a"] and list(groups) == [f"-g{k}" for k in range(4)]
    assert probs[:, 0].tolist() == [0, 0.25, 0.5, 0.75]
    atomic_write_csv(tmp_path / "history.csv", [{"epoch": 0, "note": "=cmd|' /C calc'!A0", "val_loss": -1.5}])
    assert read_history(tmp_path) == [{"epoch": "0", "note": "=cmd|' /C calc'!A0", "val_loss": "-1.5"}]
    assert _csv_rows(tmp_path / "history.csv")[1] == ["0", "'=cmd|' /C calc'!A0", "-1.5"]
