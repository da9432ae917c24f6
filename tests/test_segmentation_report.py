"""`spft report` on segmentation runs: per-structure Dice tables, mean ± std across seeds, from run directories."""

from __future__ import annotations

import json

import pytest

from spft.reporting.report import build_report


def _run(root, seed: int, dice: dict[str, float], done: bool = True):
    run_dir = root / "base" / f"seed{seed}"  # a folder of runs: overlay "base", one folder per seed
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(f"task: segmentation\nseed: {seed}\n")
    mean = sum(dice.values()) / len(dice)
    (run_dir / "metrics.json").write_text(json.dumps({"split": "test", "n": 10, "mean_dice": mean,
                                                      "per_structure_dice": dice}))
    if done:
        (run_dir / "DONE").write_text("x\n")


def test_report_tabulates_dice_mean_and_std_across_seeds(tmp_path):
    _run(tmp_path, 0, {"heart": 0.90, "left_lung": 0.94, "right_lung": 0.96})
    _run(tmp_path, 1, {"heart": 0.92, "left_lung": 0.96, "right_lung": 0.96})
    _run(tmp_path, 2, {"heart": 0.10, "left_lung": 0.10, "right_lung": 0.10}, done=False)
    out = build_report(tmp_path)
    md = (out / "report.md").read_text()
    assert "0.9100 ± 0.0141" in md and "0.9500 ± 0.0141" in md and "0.9600 ± 0.0000" in md
    report = json.loads((out / "report.json").read_text())
    assert [r["seed"] for r in report["runs"]] == [0, 1] and len(report["skipped"]) == 1
    assert (out / "tables" / "dice_mean_std.csv").is_file() and (out / "report.html").is_file()


def test_report_without_finished_runs_says_so(tmp_path):
    _run(tmp_path, 0, {"heart": 0.5}, done=False)
    with pytest.raises(FileNotFoundError, match="no finished segmentation run"):
        build_report(tmp_path)
