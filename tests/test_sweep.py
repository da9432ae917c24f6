"""`spft repeat`, `spft ablate` and `spft report` through the real CLI on tiny phantoms (2-block Dinov2, 2 epochs),
plus the sweep planning rules (validation before any run, reserved keys, another sweep in the same directory)."""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import SWEEP_CONFIG as CONFIG
from conftest import run_cli, sweep_overrides
from sklearn.metrics import roc_auc_score

from spft.config import ConfigError
from spft.experiments.studies import BUILTIN, load_study
from spft.experiments.sweep import parse_seeds, plan_sweep, run_sweep

BOOT = 200


def _rows(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _predictions(run_dir: Path):
    rows = _rows(run_dir / "predictions_test.csv")
    classes = [k[5:] for k in rows[0] if k.startswith("prob_")]
    probs = np.array([[float(r[f"prob_{c}"]) for c in classes] for r in rows])
    labels = np.array([[float(r[f"label_{c}"]) if r[f"label_{c}"] != "" else np.nan for c in classes] for r in rows])
    return classes, probs, labels, np.array([r["group"] for r in rows])


def _sk_auc(p: np.ndarray, y: np.ndarray) -> float | None:
    known = ~np.isnan(y)
    y, p = y[known], p[known]
    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else None


def _macro(probs, labels) -> float:
    return float(np.mean([a for j in range(probs.shape[1]) if (a := _sk_auc(probs[:, j], labels[:, j])) is not None]))


# --- planning rules (no training) -----------------------------------------------------------------------------------

def test_parse_seeds():
    assert parse_seeds("0,1,2") == [0, 1, 2] and parse_seeds("3-5,1") == [1, 3, 4, 5]
    with pytest.raises(ConfigError):
        parse_seeds("a,b")


def test_builtin_studies_are_the_papers_and_validate():
    assert [o.name for o in BUILTIN["ladder"].overlays] == ["head_only", "unfreeze", "class_weights", "spft"]
    assert "recipe.unfreeze.top_k=null" in BUILTIN["depth"].overlays[1].overrides
    assert [o.overrides[-1] for o in BUILTIN["class_weights"].overlays] == [
        "recipe.class_weights.enabled=false", "recipe.class_weights.apply=both", "recipe.class_weights.apply=positive"]
    for name in BUILTIN:
        plan = plan_sweep(CONFIG, [0], tuple(sweep_overrides()), load_study(name), out="/nonexistent/x")
        assert all(r.action == "train" for r in plan.runs)


def test_a_bad_overlay_is_refused_before_any_run_and_named(tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump({"name": "mine", "overlays": [
        {"name": "fine", "overrides": ["optim.lr_head=1e-4"]},
        {"name": "typo", "overrides": ["recipe.ema.decai=0.9"]}]}))
    proc = run_cli("ablate", CONFIG, "--study", str(study), "--out", str(tmp_path / "sweep"), check=False)
    assert proc.returncode == 2
    assert "overlay 'typo'" in proc.stderr and "recipe.ema.decai" in proc.stderr and "recipe.ema.decay" in proc.stderr
    assert not (tmp_path / "sweep").exists()
    with pytest.raises(ConfigError, match="set by the sweep"):
        plan_sweep(CONFIG, [0], ("seed=3",), out=tmp_path / "s2")


def test_another_sweep_in_the_same_directory_is_refused(tmp_path):
    plan = plan_sweep(CONFIG, [0], ("optim.lr_head=1e-4",), out=tmp_path)
    (tmp_path / "sweep.json").write_text(json.dumps({"definition": plan.definition(), "runs": []}))
    assert plan_sweep(CONFIG, [0, 1], ("optim.lr_head=1e-4",), out=tmp_path).seeds == [0, 1]  # more seeds: fine
    with pytest.raises(FileExistsError, match="overrides"):
        plan_sweep(CONFIG, [0], ("optim.lr_head=2e-4",), out=tmp_path)


def test_a_second_process_on_the_same_sweep_is_refused_naming_the_first(tmp_path, monkeypatch):
    from spft.errors import RunDirError
    from spft.experiments.lock import RunLock

    plan = plan_sweep(CONFIG, [0], ("optim.lr_head=1e-4",), out=tmp_path)
    started = []
    monkeypatch.setattr("spft.experiments.sweep._run_locked", lambda *a: started.append(a))
    with RunLock(tmp_path, "spft repeat"):  # what the first sweep process holds while it runs
        with pytest.raises(RunDirError, match=r"in use by PID \d+ .*spft repeat"):
            run_sweep(plan)
    assert started == [] and not (tmp_path / "run.lock").exists()
    run_sweep(plan)  # once the first one is gone, the same command goes on
    assert len(started) == 1


def test_a_failed_run_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    out = tmp_path / "sweep"
    (out / "base" / "seed2").mkdir(parents=True)
    (out / "base" / "seed2" / "stray.txt").write_text("not a run")  # blocked: reported failed, nothing started
    sweep = plan_sweep(CONFIG, [0, 1, 2], tuple(sweep_overrides()), out=out)
    assert [r.action for r in sweep.runs] == ["train", "train", "blocked"]
    children = {  # stand-ins for `spft train`: seed 0 crashes, seed 1 finishes
        0: "import sys; print('boom'); sys.exit(3)",
        1: f"import pathlib; d = pathlib.Path({str(out / 'base' / 'seed1')!r}); d.mkdir(parents=True); "
           "(d / 'DONE').write_text('x')"}
    monkeypatch.setattr("spft.experiments.sweep._command", lambda _, run: [sys.executable, "-c", children[run.seed]])
    run_sweep(sweep)
    record = json.loads((out / "sweep.json").read_text())
    assert record["status"] == "failed"
    assert [(r["status"], r["returncode"]) for r in record["runs"]] == [("failed", 3), ("done", 0), ("failed", None)]
    assert "boom" in (out / "logs" / "base-seed0.log").read_text()
    # through the CLI: the exit status says a run failed, the last line is still the sweep directory
    proc = run_cli("repeat", CONFIG, *sweep_overrides(), "--seeds", "2", "--out", str(out), check=False)
    assert proc.returncode == 1 and re.search(r"base\s+seed 2\s+blocked", proc.stdout)
    assert proc.stdout.strip().splitlines()[-1] == str(out)


# --- real sweeps ------------------------------------------------------------------------------------------------------

# repeat_sweep (a sequential 3-seed sweep, shared with test_sweep_parallel.py) is in conftest.py


@pytest.fixture(scope="module")
def ladder_sweep(spft_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweeps") / "ladder"
    return out, run_cli("ablate", CONFIG, *sweep_overrides(), "--study", "ladder", "--seeds", "0", "--out", str(out))


@pytest.mark.slow
def test_repeat_runs_each_seed_in_its_own_run_directory(repeat_sweep):
    out, proc, _ = repeat_sweep
    assert proc.stdout.strip().splitlines()[-1] == str(out)
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep["status"] == "finished" and sweep["seeds"] == [0, 1, 2]
    assert [(r["overlay"], r["seed"], r["status"]) for r in sweep["runs"]] == [("base", s, "done") for s in (0, 1, 2)]
    for seed in (0, 1, 2):
        run = out / "base" / f"seed{seed}"
        assert (run / "DONE").is_file() and (out / "logs" / f"base-seed{seed}.log").is_file()
        assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == seed
    assert "[3/3] base/seed2: done" in proc.stderr


@pytest.mark.slow
def test_interrupted_repeat_redoes_only_the_unfinished_run(repeat_sweep):
    out, _, args = repeat_sweep
    mtimes = {s: (out / "base" / f"seed{s}" / "metrics.json").stat().st_mtime_ns for s in (0, 1, 2)}
    (out / "base" / "seed1" / "DONE").unlink()  # as if the sweep was killed while seed 1 was finishing
    proc = run_cli(*args)
    plan = {int(m.group(1)): m.group(2) for m in re.finditer(r"base\s+seed (\d+)\s+(\w+)", proc.stdout)}
    assert plan == {0: "skip", 1: "resume", 2: "skip"}
    assert "[1/1] base/seed1: resuming" in proc.stderr
    assert (out / "base" / "seed1" / "DONE").is_file()
    after = {s: (out / "base" / f"seed{s}" / "metrics.json").stat().st_mtime_ns for s in (0, 1, 2)}
    assert after[0] == mtimes[0] and after[2] == mtimes[2] and after[1] > mtimes[1]


@pytest.mark.slow
def test_report_on_repeat_matches_numpy_mean_std_and_bootstrap(repeat_sweep, tmp_path):
    out, _, _ = repeat_sweep
    proc = run_cli("report", str(out), "--bootstrap", str(BOOT), "--out", str(tmp_path / "report"))
    report = tmp_path / "report"
    assert proc.stdout.strip().splitlines()[-1] == str(report)
    for name in ("per_run_auc", "mean_std_auc", "bootstrap_ci"):
        assert all((report / "tables" / f"{name}.{ext}").is_file() for ext in ("md", "csv", "tex")), name
    for name in ("auc_error_bars", "auc_best_run", "roc_best_run", "training_curves"):
        assert all((report / "figures" / f"{name}.{ext}").is_file() for ext in ("png", "svg")), name
    # mean ± std across seeds, recomputed here with scikit-learn and numpy
    preds = [_predictions(out / "base" / f"seed{s}") for s in (0, 1, 2)]
    macros = [_macro(p, y) for _, p, y, _ in preds]
    row = {r["Class"]: r for r in _rows(report / "tables" / "mean_std_auc.csv")}["Macro AUC"]
    assert float(row["ours mean"]) == pytest.approx(np.mean(macros), abs=1e-12)
    assert float(row["ours std"]) == pytest.approx(np.std(macros, ddof=1), abs=1e-12)
    # seed 0's macro-AUC bootstrap interval: resample patients (sorted unique groups) with the documented rng draws
    classes, probs, labels, groups = preds[0]
    units, inverse = np.unique(groups, return_inverse=True)
    assert len(units) < len(groups)  # phantom patients have several images: groups are resampled
    defined = [j for j in range(len(classes)) if _sk_auc(probs[:, j], labels[:, j]) is not None]
    reps = []
    for draw in np.random.default_rng(0).integers(0, len(units), size=(BOOT, len(units))):
        idx = np.concatenate([np.flatnonzero(inverse == u) for u in draw])
        vals = [_sk_auc(probs[idx, j], labels[idx, j]) for j in defined]
        reps.append(np.mean([v for v in vals if v is not None]))
    ci = {r["Class"]: r for r in _rows(report / "tables" / "bootstrap_ci.csv")}["Macro"]
    assert (float(ci["seed 0 AUC lo"]), float(ci["seed 0 AUC hi"])) == pytest.approx(
        tuple(np.percentile(reps, [2.5, 97.5])), abs=1e-12)
    page = (report / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", page) and "<script" not in page
    assert "Runs used (3)" in page and "Runs skipped (0)" in page and "data:image/png;base64," in page


@pytest.mark.slow
def test_ablate_ladder_runs_the_four_rows_and_reports_them(ladder_sweep, tmp_path):
    out, proc = ladder_sweep
    assert proc.stdout.strip().splitlines()[-1] == str(out)
    switches = {}
    for name in ("head_only", "unfreeze", "class_weights", "spft"):
        recipe = yaml.safe_load((out / name / "seed0" / "config.yaml").read_text())["recipe"]
        switches[name] = (recipe["unfreeze"]["enabled"], recipe["class_weights"]["enabled"], recipe["ema"]["enabled"])
    assert switches == {"head_only": (False, False, False), "unfreeze": (True, False, False),
                        "class_weights": (True, True, False), "spft": (True, True, True)}
    assert {r["open_blocks"] for r in _rows(out / "head_only" / "seed0" / "history.csv")} == {"0"}
    report = tmp_path / "report"
    run_cli("report", str(out), "--bootstrap", "50", "--out", str(report))
    for name in ("ablation", "mean_std_auc", "per_run_auc_spft", "bootstrap_ci_head_only"):
        assert all((report / "tables" / f"{name}.{ext}").is_file() for ext in ("md", "csv", "tex")), name
    rows = _rows(report / "tables" / "ablation.csv")
    # CSV cells starting with "+" get a leading "'" so spreadsheets do not read them as formulas (report escaping)
    assert [r["Row"] for r in rows] == ["MLP head only", "'+ progressive unfreezing", "'+ class weights",
                                        "'+ EMA (full SPFT)"]
    macro = [_macro(*_predictions(out / n / "seed0")[1:3]) for n in ("head_only", "unfreeze", "class_weights", "spft")]
    assert [float(r["macro AUC mean"]) for r in rows] == pytest.approx(macro, abs=1e-12)
    deltas = [float(r["Δ vs previous row (paired) mean"]) for r in rows[1:]]
    assert deltas == pytest.approx(list(np.diff(macro)), abs=1e-12)  # one seed: the paired difference itself
    assert (report / "figures" / "training_curves_head_only.png").is_file()
