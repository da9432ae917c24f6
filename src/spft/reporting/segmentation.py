"""``spft report`` for segmentation sweeps: per-run and mean ± std per-structure Dice tables from run directories.

Segmentation runs have Dice, not AUC, so they get their own tables; everything else (finding the runs of a sweep,
table formats, the HTML page, the config and exact overrides of each row and run) is the classification report's.
Numbers come from each run's ``metrics.json``. The task is read from the runs' ``config.yaml`` (``task:``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

import spft
from spft.atomic import atomic_write_json, atomic_write_text
from spft.errors import MissingFileError
from spft.experiments.rundir import is_done
from spft.reporting.collect import _entries, read_entries
from spft.reporting.html import render_html
from spft.reporting.provenance import overrides_table, overrides_text, provenance, summary_lines, sweep_task
from spft.reporting.tables import Table, md_escape, mean_std

MEAN = "mean Dice"


def is_segmentation(root: str | Path) -> bool:
    """True when the first run of the sweep (or run directory) at ``root`` is a segmentation run."""
    root = Path(root)
    if not root.is_dir():
        return False
    return sweep_task(root, _entries(root)[2]) == "segmentation"


def _runs(root: Path) -> tuple[list[dict], list[list[str]]]:
    runs, skipped = [], []
    for entry in _entries(root)[2]:
        run_dir = Path(entry["run_dir"])
        metrics = run_dir / "metrics.json"
        seed = entry["seed"]
        if seed is None and (run_dir / "config.yaml").is_file():
            seed = (yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).get("seed", 0)
        if is_done(run_dir) and metrics.is_file():
            runs.append({"overlay": entry["overlay"], "seed": seed, "run_dir": run_dir,
                         "metrics": json.loads(metrics.read_text())})
        else:
            skipped.append([entry["overlay"], str(seed), str(run_dir), "not finished (no DONE or metrics.json)"])
    if not runs:
        raise MissingFileError(f"{root}: no finished segmentation run (with DONE and metrics.json) to report on")
    return runs, skipped


def dice_tables(runs: list[dict]) -> tuple[Table, Table]:
    """(mean ± std across seeds per structure and overlay, one row per run)."""
    structures = list(runs[0]["metrics"]["per_structure_dice"])
    overlays = list(dict.fromkeys(r["overlay"] for r in runs))
    summary = Table("dice_mean_std", "Test Dice, mean ± std across seeds",
                    "Per-structure test Dice (per image, averaged over images); std is the sample std (ddof=1).",
                    ["structure", *overlays])
    for name in [*structures, MEAN]:
        cells = []
        for o in overlays:
            of = [r["metrics"] for r in runs if r["overlay"] == o]
            cells.append(mean_std([m["mean_dice"] if name == MEAN else m["per_structure_dice"].get(name) for m in of]))
        summary.rows.append([name, *cells])
    per_run = Table("dice_per_run", "Test Dice per run", "One row per run directory.",
                    ["overlay", "seed", *structures, MEAN, "n"])
    for r in runs:
        m = r["metrics"]
        per_run.rows.append([r["overlay"], str(r["seed"]), *[m["per_structure_dice"].get(s) for s in structures],
                             m["mean_dice"], str(m.get("n", ""))])
    return summary, per_run


def _dice(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def build_segmentation_report(sweep_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``tables/``, ``report.md``, ``report.json`` and ``report.html`` for a segmentation sweep."""
    root = Path(sweep_dir)
    out = Path(out) if out else root / "report"
    kind, study, entries, config = read_entries(root)
    prov = provenance(root, "segmentation", entries, study, config)
    runs, skipped = _runs(root)
    summary, per_run = dice_tables(runs)
    for table in (summary, per_run):
        table.write(out / "tables")
    labels = {o["name"]: o.get("label") or o["name"] for o in study.get("overlays", [])}
    over = overrides_table(prov, [(o, labels.get(o, o)) for o in dict.fromkeys(r["overlay"] for r in runs)])
    runs_md = Table("runs_used", f"Runs used ({len(runs)})", "Exact overrides from each run's env.json command (or "
                    "the sweep's plan).", ["overlay", "seed", "run directory", "overrides (exact)"],
                    [[r["overlay"], str(r["seed"]), str(r["run_dir"]), overrides_text(prov.of_run(r["run_dir"]))]
                     for r in runs])
    note = "Every number comes from the runs' metrics.json (Dice at each test image's own size, exact box prompts)."
    atomic_write_text(out / "report.md", f"# SPFT segmentation report: {md_escape(root.name)}\n\n{note}\n\n"
                      + "\n".join(t.to_markdown() for t in (over, runs_md, summary, per_run)))
    atomic_write_json(out / "report.json", {"sweep": str(root), **prov.as_json(root), "runs": [
        {"overlay": r["overlay"], "seed": r["seed"], "run_dir": str(r["run_dir"]),
         "overrides": prov.of_run(r["run_dir"]), **r["metrics"]} for r in runs],
        "skipped": [{"overlay": s[0], "seed": s[1], "run_dir": s[2], "reason": s[3]} for s in skipped]})
    lines = [("sweep", str(root)), *summary_lines(prov), ("runs", f"{len(runs)} used, {len(skipped)} skipped"),
             ("generated", f"{time.strftime('%Y-%m-%d %H:%M:%S')} by spft {spft.__version__}")]
    used = [[r["overlay"], str(r["seed"]), str(r["run_dir"]), _dice(r["metrics"].get("mean_dice")),
             str(r["metrics"].get("n", "")), overrides_text(prov.of_run(r["run_dir"]))] for r in runs]
    atomic_write_text(out / "report.html", render_html(
        f"SPFT segmentation report: {root.name}", lines, note, used, skipped, [summary], [], [per_run],
        used_header=["overlay", "seed", "run directory", "mean Dice", "test images", "overrides (exact)"],
        header_tables=[over]))
    return out
