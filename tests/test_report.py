"""Reporting on synthetic run directories (fast): bootstrap against a naive reference, the three table formats,
mean ± std, paired differences, paper columns, runs skipped, and a self-contained report.html."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import run_cli

from spft.metrics import binary_auc
from spft.reporting.bootstrap import bootstrap_ap, bootstrap_auc, resample_units, weighted_ap, weighted_auc
from spft.reporting.collect import load_run
from spft.reporting.report import build_report, validation_score
from spft.reporting.tables import Interval, MeanStd, Table, format_cell, mean_std

CXR = ["Atelectasis", "Pleural_Thickening", "Hernia"]


def _write_run(run_dir: Path, seed: int, classes=CXR, data_name="phantom", quality=1.0, recipe=None, n=60,
               done=True, val=0.0) -> None:
    """A finished run directory as `spft train` writes it, with predictions that get better with ``quality``."""
    rng = np.random.default_rng(seed)
    run_dir.mkdir(parents=True)
    labels = (rng.random((n, len(classes))) < 0.3).astype(float)
    labels[rng.random(labels.shape) < 0.05] = np.nan
    probs = np.clip(0.5 + quality * 0.3 * (np.nan_to_num(labels) - 0.5) + rng.normal(0, 0.25, labels.shape), 0, 1)
    groups = [f"p{i // 2:03d}" for i in range(n)]  # two images per patient
    rows = []
    for i in range(n):
        row = {"id": f"img{i}.png", "group": groups[i]}
        row.update({f"prob_{c}": probs[i, j] for j, c in enumerate(classes)})
        row.update({f"label_{c}": "" if np.isnan(labels[i, j]) else int(labels[i, j]) for j, c in enumerate(classes)})
        rows.append(row)
    with open(run_dir / "predictions_test.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    per_class = {c: binary_auc(probs[:, j], labels[:, j]) for j, c in enumerate(classes)}
    (run_dir / "metrics.json").write_text(json.dumps({
        "split": "test", "n": n, "macro_auc": float(np.mean([v for v in per_class.values() if v is not None])),
        "per_class_auc": per_class, "excluded_classes": [], "best_epoch": 2}))
    config = {"seed": seed, "name": "synthetic", "data": {"name": data_name, "phantom": {"kind": "cxr"}},
              "recipe": recipe or {"unfreeze": {"enabled": True, "top_k": 10}, "class_weights": {"enabled": True},
                                   "ema": {"enabled": True}}}
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    hist = [{"epoch": e, "stage": 1 if e < 1 else 2, "open_blocks": min(e, 2), "train_loss": 1 - 0.1 * e,
             "val_loss": 1 - 0.08 * e, "val_auc_raw": 0.6 + 0.05 * e + val, "val_auc_ema": 0.62 + 0.05 * e + val}
            for e in range(4)]
    with open(run_dir / "history.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(hist[0]))
        writer.writeheader()
        writer.writerows(hist)
    if done:
        (run_dir / "DONE").write_text("now\n")


def _write_sweep(root: Path, study: dict, seeds: list[int], statuses: dict | None = None) -> None:
    runs = [{"overlay": o["name"], "seed": s, "run_dir": f"{o['name']}/seed{s}", "status": "done", "returncode": 0}
            for o in study["overlays"] for s in seeds]
    for r in runs:
        r.update((statuses or {}).get((r["overlay"], r["seed"]), {}))
    (root / "sweep.json").write_text(json.dumps({"definition": {"kind": "ablate", "config": "cfg.yaml",
                                                                "overrides": [], "study": study}, "runs": runs}))


def _csv(path: Path) -> dict[str, dict]:
    with open(path) as fh:
        return {row[next(iter(row))]: row for row in csv.DictReader(fh)}


# --- bootstrap ---------------------------------------------------------------------------------------------------

def test_weighted_auc_equals_binary_auc_on_materialised_resamples():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, 40) / 5.0  # many ties
    labels = (rng.random(40) < 0.4).astype(float)
    weights = rng.integers(0, 3, size=(25, 40)).astype(float)
    fast = weighted_auc(scores, labels, weights)
    for b in range(25):
        idx = np.repeat(np.arange(40), weights[b].astype(int))
        ref = binary_auc(scores[idx], labels[idx])
        assert (np.isnan(fast[b]) if ref is None else fast[b] == pytest.approx(ref, abs=1e-12))


def test_bootstrap_resamples_groups_when_they_repeat_else_images():
    assert resample_units(np.array(["a", "a", "b"]), 3)[1] == "groups"
    assert resample_units(np.array(["a", "b", "c"]), 3)[1] == "images"
    assert resample_units(None, 3)[1] == "images"


def test_bootstrap_interval_matches_a_naive_loop_and_is_seeded():
    rng = np.random.default_rng(1)
    probs = rng.random((80, 2))
    labels = (rng.random((80, 2)) < 0.3).astype(float)
    labels[::7, 1] = np.nan
    groups = np.array([f"g{i // 3}" for i in range(80)])
    res = bootstrap_auc(probs, labels, ["a", "b"], groups, n_boot=150, seed=4)
    assert res.unit == "groups" and res.n_units == 27
    units, inverse = np.unique(groups, return_inverse=True)
    draws = np.random.default_rng(4).integers(0, len(units), size=(150, len(units)))
    macros, per_a = [], []
    for row in draws:
        idx = np.concatenate([np.flatnonzero(inverse == u) for u in row])
        vals = [binary_auc(probs[idx, j], labels[idx, j]) for j in range(2)]
        per_a.append(vals[0])
        macros.append(np.mean([v for v in vals if v is not None]))
    assert (res.lo["a"], res.hi["a"]) == pytest.approx(tuple(np.percentile(per_a, [2.5, 97.5])), abs=1e-12)
    assert (res.macro_lo, res.macro_hi) == pytest.approx(tuple(np.percentile(macros, [2.5, 97.5])), abs=1e-12)
    again = bootstrap_auc(probs, labels, ["a", "b"], groups, n_boot=150, seed=4)
    other = bootstrap_auc(probs, labels, ["a", "b"], groups, n_boot=150, seed=5)
    assert again.lo == res.lo and other.lo != res.lo


# --- tables ------------------------------------------------------------------------------------------------------

def test_mean_std_is_sample_std_and_tables_render_in_three_formats(tmp_path):
    ms = mean_std([0.8331, 0.8302, 0.8309])
    assert ms.std == pytest.approx(np.std([0.8331, 0.8302, 0.8309], ddof=1)) and ms.n == 3
    assert format_cell(ms) == "0.8314 ± 0.0015" and mean_std([0.5]).std is None
    table = Table("demo_table", "A title", "A caption with 50% of_under", ["Class", "ours", "CI"],
                  [["Pleural_Thickening", ms, Interval(0.8, 0.7, 0.9)], ["n/a row", None, None]])
    paths = table.write(tmp_path)
    assert sorted(p.suffix for p in paths) == [".csv", ".md", ".tex"]
    md, tex = (tmp_path / "demo_table.md").read_text(), (tmp_path / "demo_table.tex").read_text()
    assert "| Pleural_Thickening | 0.8314 ± 0.0015 | 0.8000 [0.7000, 0.9000] |" in md
    assert r"Pleural\_Thickening & $0.8314 \pm 0.0015$" in tex and r"50\% of\_under" in tex and r"\toprule" in tex
    with open(tmp_path / "demo_table.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["Class", "ours mean", "ours std", "ours n", "CI", "CI lo", "CI hi"]
    assert float(rows[1][1]) == ms.mean and rows[1][3] == "3" and rows[2][1] == ""
    assert format_cell(MeanStd(0.01, 0.002, 2, signed=True)) == "+0.0100 ± 0.0020"


# --- whole reports on synthetic sweeps -----------------------------------------------------------------------------

LADDER = {"name": "ladder", "kind": "ladder", "overlays": [
    {"name": "head_only", "label": "MLP head only"}, {"name": "unfreeze", "label": "+ progressive unfreezing"},
    {"name": "class_weights", "label": "+ class weights"}, {"name": "spft", "label": "+ EMA (full SPFT)"}]}


def test_ablation_report_has_paired_differences_paper_column_and_skipped_runs(tmp_path):
    sweep = tmp_path / "sweep"
    for i, o in enumerate(LADDER["overlays"]):
        for s in (0, 1, 2):
            if (o["name"], s) == ("spft", 2):
                continue  # failed: never written
            recipe = {"unfreeze": {"enabled": i > 0, "top_k": 10}, "class_weights": {"enabled": i > 1},
                      "ema": {"enabled": i > 2}}
            _write_run(sweep / o["name"] / f"seed{s}", s + 10 * i, data_name="chestxray14", quality=0.5 + i * 0.3,
                       recipe=recipe, done=(o["name"], s) != ("class_weights", 1))
    _write_sweep(sweep, LADDER, [0, 1, 2], {("spft", 2): {"status": "failed", "returncode": 1, "note": "exit code 1"},
                                            ("class_weights", 1): {"status": "running"}})
    out = build_report(sweep, n_boot=50)
    ablation = _csv(out / "tables" / "ablation.csv")
    # labels starting with "+" would be formulas in a spreadsheet: CSV writes them with a leading ' (OWASP)
    assert list(ablation) == ["MLP head only", "'+ progressive unfreezing", "'+ class weights", "'+ EMA (full SPFT)"]
    ablation = {k.lstrip("'"): v for k, v in ablation.items()}
    assert ablation["MLP head only"]["unfreeze"] == "×" and ablation["+ EMA (full SPFT)"]["EMA"] == "✓"
    assert float(ablation["+ EMA (full SPFT)"]["paper"]) == 0.8331
    assert float(ablation["MLP head only"]["paper"]) == 0.8095
    macro = {(o["name"], s): json.loads((sweep / o["name"] / f"seed{s}" / "metrics.json").read_text())["macro_auc"]
             for o in LADDER["overlays"] for s in (0, 1, 2) if (sweep / o["name"] / f"seed{s}" / "DONE").exists()}
    # + EMA has seeds 0, 1; + class weights only seed 0 (seed 1 unfinished): the paired difference uses seed 0 only
    diff = ablation["+ EMA (full SPFT)"]
    assert float(diff["Δ vs previous row (paired) mean"]) == pytest.approx(macro["spft", 0] - macro["class_weights", 0])
    assert diff["Δ vs previous row (paired) n"] == "1"
    d = [macro["unfreeze", s] - macro["head_only", s] for s in (0, 1, 2)]
    row = ablation["+ progressive unfreezing"]
    assert float(row["Δ vs previous row (paired) std"]) == pytest.approx(np.std(d, ddof=1))
    page = (out / "report.html").read_text()
    assert "Runs skipped (2)" in page and "unfinished (no DONE)" in page and "failed (exit code 1)" in page
    assert 'class="paper"' in page and "ChestX-ray14" in page


def test_repeat_report_on_a_paper_dataset_shows_published_runs_and_mean_std(tmp_path):
    sweep = tmp_path / "repeat"
    for s in (0, 1):
        _write_run(sweep / "base" / f"seed{s}", s, data_name="chestxray14")
    _write_sweep(sweep, {"name": "repeat", "kind": "repeat", "overlays": [{"name": "base", "label": "SPFT"}]}, [0, 1])
    out = build_report(sweep, n_boot=30)
    mean_std_rows = _csv(out / "tables" / "mean_std_auc.csv")
    assert float(mean_std_rows["Pleural_Thickening"]["paper mean"]) == 0.7975  # Table V, matched across spellings
    assert float(mean_std_rows["Macro AUC"]["paper std"]) == 0.0015
    per_run = _csv(out / "tables" / "per_run_auc.csv")
    assert float(per_run["Hernia"]["paper run 3"]) == 0.9152
    assert "lesions" not in (out / "tables" / "bootstrap_ci.md").read_text()


def test_depth_report_puts_the_papers_table_vi_beside_ours(tmp_path):
    sweep = tmp_path / "depth"
    study = {"name": "depth", "kind": "depth", "overlays": [{"name": "top10", "label": "SPFT, top-10 blocks"},
                                                            {"name": "all_blocks", "label": "SPFT, all blocks"}]}
    for o in study["overlays"]:
        _write_run(sweep / o["name"] / "seed0", 1, data_name="chestxray14")
    _write_sweep(sweep, study, [0])
    rows = _csv(build_report(sweep, n_boot=20) / "tables" / "depth_per_class.csv")
    assert float(rows["Atelectasis"]["paper: SPFT, all blocks"]) == 0.7766
    assert float(rows["Macro AUC"]["paper: SPFT, top-10 blocks"]) == 0.8331
    assert rows["Hernia"]["SPFT, all blocks n"] == "1"


@pytest.mark.slow
def test_report_cli_on_a_run_directory_and_a_phantom_dataset_has_no_paper_numbers(tmp_path):
    run = tmp_path / "one_run"
    _write_run(run, 3)
    proc = run_cli("report", str(run), "--bootstrap", "20", "--out", str(tmp_path / "rep"))
    assert proc.stdout.strip().splitlines()[-1] == str(tmp_path / "rep")
    page = (tmp_path / "rep" / "report.html").read_text()
    assert 'class="paper"' not in page and "publishes no numbers" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", page)
    bad = run_cli("report", str(tmp_path / "nothing_here"), check=False)
    assert bad.returncode == 2 and "no such directory" in bad.stderr


# --- best run by validation, chance line, AUPRC, positives ----------------------------------------------------------

def _macro_of(run_dir: Path) -> float:
    return json.loads((run_dir / "metrics.json").read_text())["macro_auc"]


def test_best_run_is_chosen_by_validation_auc_within_the_full_recipe_row_never_by_test_auc(tmp_path):
    sweep = tmp_path / "ladder"
    for i, o in enumerate(LADDER["overlays"]):
        for s in (0, 1):
            # head_only has the best test AUC of all; in the spft row seed 1 has the better test AUC but seed 0 the
            # better validation AUC (EMA, the monitored one)
            quality = {"head_only": 3.0, "spft": 1.0 if s == 0 else 2.0}.get(o["name"], 0.5)
            val = {("spft", 0): 0.2, ("head_only", 0): 0.3}.get((o["name"], s), 0.0)
            recipe = {"unfreeze": {"enabled": i > 0}, "class_weights": {"enabled": i > 1}, "ema": {"enabled": i > 2}}
            _write_run(sweep / o["name"] / f"seed{s}", s, quality=quality, recipe=recipe, val=val)
    _write_sweep(sweep, LADDER, [0, 1])
    assert _macro_of(sweep / "spft" / "seed1") > _macro_of(sweep / "spft" / "seed0")
    assert _macro_of(sweep / "head_only" / "seed0") > _macro_of(sweep / "spft" / "seed1")
    out = build_report(sweep, n_boot=10)
    best = json.loads((out / "report.json").read_text())["best_run"]
    assert best["run_dir"] == "spft/seed0" and "val_auc_ema" in best["chosen"] and "never by test AUC" in best["chosen"]
    page = (out / "report.html").read_text()
    assert "best run, + EMA (full SPFT), seed 0: chosen by the best validation macro AUC" in page
    assert "full-SPFT row" in page


def test_validation_score_reads_the_monitored_column_ema_or_raw(tmp_path):
    _write_run(tmp_path / "ema", 0, val=0.1)
    _write_run(tmp_path / "raw", 0, recipe={"ema": {"enabled": False}}, val=0.1)
    ema = load_run(tmp_path / "ema", "base", "base")
    raw = load_run(tmp_path / "raw", "base", "base")
    assert validation_score(ema) == (pytest.approx(0.62 + 0.15 + 0.1), "val_auc_ema")
    assert validation_score(raw) == (pytest.approx(0.6 + 0.15 + 0.1), "val_auc_raw")


def test_auc_below_chance_is_flagged_in_tables_html_and_json(tmp_path):
    run = tmp_path / "run"
    _write_run(run, 0, quality=-1.5)  # predictions anti-correlated with the labels: every AUC < 0.5
    out = build_report(run, n_boot=10)
    md = (out / "tables" / "per_run_auc.md").read_text()
    assert re.search(r"\| Hernia \| 0\.\d{4} \(below chance\) \| seed 0 \|", md)
    rows = _csv(out / "tables" / "per_run_auc.csv")
    assert float(rows["Hernia"]["seed 0"]) < 0.5 and rows["Hernia"]["below chance in"] == "seed 0"
    assert "(below chance)" in (out / "tables" / "mean_std_auc.md").read_text()
    assert '<td class="below">' in (out / "report.html").read_text()
    assert set(json.loads((out / "report.json").read_text())["runs"][0]["below_chance"]) == set(CXR)


def test_auprc_is_sklearns_average_precision_with_a_bootstrap_interval_and_positives(tmp_path):
    from sklearn.metrics import average_precision_score

    run = tmp_path / "run"
    _write_run(run, 4)
    out = build_report(run, n_boot=40)
    rec = load_run(run, "base", "base")
    for j, c in enumerate(CXR):
        known = ~np.isnan(rec.labels[:, j])
        assert rec.auprc[c] == pytest.approx(average_precision_score(rec.labels[known, j], rec.probs[known, j]))
    boot = _csv(out / "tables" / "bootstrap_ci.csv")
    assert float(boot["Hernia"]["seed 4 AUPRC"]) == pytest.approx(rec.auprc["Hernia"])
    n_pos = int(np.nansum(rec.labels[:, CXR.index("Hernia")]))
    assert int(boot["Hernia"]["seed 4 AUC n_pos"]) == n_pos and int(boot["Hernia"]["seed 4 AUPRC n_pos"]) == n_pos
    assert f"(n+={n_pos}, " in (out / "tables" / "bootstrap_ci.md").read_text()
    ap = _csv(out / "tables" / "mean_std_auprc.csv")
    assert float(ap["Hernia"]["ours mean"]) == pytest.approx(rec.auprc["Hernia"])


def test_weighted_ap_equals_sklearn_on_materialised_resamples_and_bootstrap_ap_uses_the_same_draws():
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(2)
    scores = rng.integers(0, 6, 40) / 5.0  # ties
    labels = (rng.random(40) < 0.4).astype(float)
    weights = rng.integers(0, 3, size=(25, 40)).astype(float)
    fast = weighted_ap(scores, labels, weights)
    for b in range(25):
        idx = np.repeat(np.arange(40), weights[b].astype(int))
        if labels[idx].sum() == 0:
            assert np.isnan(fast[b])
        else:
            assert fast[b] == pytest.approx(average_precision_score(labels[idx], scores[idx]), abs=1e-12)
    probs = rng.random((60, 1))
    lab = (rng.random((60, 1)) < 0.3).astype(float)
    res = bootstrap_ap(probs, lab, ["a"], None, n_boot=60, seed=7)
    draws = np.random.default_rng(7).integers(0, 60, size=(60, 60))
    ref = [average_precision_score(lab[row, 0], probs[row, 0]) for row in draws if lab[row, 0].any()]
    assert (res.lo["a"], res.hi["a"]) == pytest.approx(tuple(np.percentile(ref, [2.5, 97.5])), abs=1e-12)
    assert res.n_pos["a"] == int(lab.sum()) and res.metric == "ap"
