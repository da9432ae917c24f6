"""`spft repeat|ablate --jobs N`: device slots, the time-left estimate, the scheduler (concurrency, pinning, signals,
lock refusals) and a real 3-seed `--jobs 2` sweep equal to the sequential one; stage-1 features and phantoms built
once when two processes need them at the same moment."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, SWEEP_CONFIG, run_cli, sweep_overrides

from spft.config import ConfigError
from spft.experiments.lock import RunLock
from spft.experiments.parallel import (
    assign_devices,
    device_overrides,
    eta_seconds,
    eta_text,
    format_duration,
    parse_devices,
    sweep_slots,
    visible_devices,
)
from spft.experiments.sweep import plan_sweep, run_sweep

# --- devices (pure functions, no GPU needed) ------------------------------------------------------------------------


def test_slots_hand_out_k_devices_each():
    four = ["0", "1", "2", "3"]
    assert assign_devices(2, 2, four) == [("0", "1"), ("2", "3")]
    assert assign_devices(4, None, four) == [("0",), ("1",), ("2",), ("3",)]
    assert assign_devices(1, 3, four) == [("0", "1", "2")]
    assert assign_devices(3, None, []) == [(), (), ()]  # a CPU machine: N CPU processes, nothing pinned
    assert parse_devices("0-2,5") == ["0", "1", "2", "5"] and parse_devices("GPU-ab12-cd") == ["GPU-ab12-cd"]
    assert sweep_slots(1) == [()]  # the sequential sweep as it always was: no pinning at all
    assert sweep_slots(2, "4,5,6,7", 2) == [("4", "5"), ("6", "7")]


@pytest.mark.parametrize("jobs, k, devices, message", [
    (3, 2, "0,1,2,3", "--jobs 3 x --gpus-per-run 2 needs 6 devices but 4 are available"),
    (5, None, "0,1,2,3", "needs 5 devices but 4"),
    (0, None, "0", "--jobs 0"),
    (1, 0, "0", "--gpus-per-run 0"),
    (2, None, "0,0", "listed twice"),
    (2, 2, "", "no CUDA device is visible"),
])
def test_too_many_devices_is_one_clear_error(jobs, k, devices, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        sweep_slots(jobs, devices, k)


def test_visible_devices_follow_the_parents_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert visible_devices() == ["2", "3"]  # children get subsets of what the sweep itself may use
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_devices() == []
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,-1,2")
    assert visible_devices() == ["1"]  # CUDA stops at the first invalid id


def test_trainer_devices_must_fit_the_slot(tmp_path):
    sweep = plan_sweep(SWEEP_CONFIG, [0, 1], tuple(sweep_overrides()), out=tmp_path / "s")
    assert device_overrides(sweep, [(), ()], explicit=False) == {}  # CPU slots: the config as it is
    assert device_overrides(sweep, [("0",), ("1",)], explicit=False) == {"base": ()}  # devices: 1 fits
    assert device_overrides(sweep, [("0", "1")], explicit=True) == {"base": ("trainer.devices=2",)}  # DDP per run
    with pytest.raises(ConfigError, match="give --gpus-per-run N"):
        wide = plan_sweep(SWEEP_CONFIG, [0], (*sweep_overrides(), "trainer.devices=2"), out=tmp_path / "w")
        device_overrides(wide, [("0",), ("1",)], explicit=False)
    run = tmp_path / "s" / "base" / "seed1"  # a run started on 2 devices resumes with its own config
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("task: classification\ntrainer: {devices: 2}\n")
    sweep = plan_sweep(SWEEP_CONFIG, [0, 1], tuple(sweep_overrides()), out=tmp_path / "s")
    assert [r.action for r in sweep.runs] == ["train", "resume"]
    with pytest.raises(ConfigError, match=r"base/seed1 was started with trainer.devices=2.*--gpus-per-run 2"):
        device_overrides(sweep, [("0",)], explicit=True)


def test_cli_refuses_too_many_devices_before_anything_runs(tmp_path):
    out = tmp_path / "sweep"
    proc = run_cli("repeat", SWEEP_CONFIG, *sweep_overrides(), "--seeds", "0,1", "--out", str(out), "--jobs", "3",
                   "--gpus-per-run", "2", "--devices", "0,1,2,3", check=False)
    assert proc.returncode == 2 and not out.exists()
    assert proc.stderr.strip() == ("spft repeat: error: --jobs 3 x --gpus-per-run 2 needs 6 devices but 4 are "
                                   "available (0,1,2,3): lower --jobs or --gpus-per-run, or give --devices")


# --- time left ------------------------------------------------------------------------------------------------------

def test_eta_fills_the_free_slots_with_the_mean_duration():
    assert eta_seconds([], running=[1.0], waiting=3, slots=2) is None  # nothing finished: no estimate
    assert eta_seconds([10.0, 20.0], running=[], waiting=3, slots=1) == 45.0  # sequential: mean x runs left
    assert eta_seconds([10.0], running=[4.0], waiting=3, slots=2) == 20.0  # 6 s + 10 on one slot, 10 + 10 on the other
    assert eta_seconds([10.0], running=[4.0, 30.0], waiting=0, slots=2) == 6.0  # an overdue run counts as ending now
    assert eta_seconds([10.0], running=[], waiting=0, slots=4) == 0.0
    assert eta_seconds([60.0], running=[], waiting=8, slots=4) == 120.0  # 8 runs on 4 slots: two rounds
    assert format_duration(42.4) == "42 s" and format_duration(725) == "12 min"
    assert format_duration(7500) == "2 h 05 min"
    assert eta_text([60.0], [], 8, 4) == "about 2 min left" and eta_text([60.0], [], 0, 4) == ""


# --- the scheduler, with stand-in children ---------------------------------------------------------------------------

def _stand_in(monkeypatch, script: str) -> None:
    """Replace `spft train` by ``python -c script`` (``RUN``: the run directory, ``SEED``: its seed)."""

    def command(_, run):
        head = f"import pathlib; RUN = pathlib.Path({str(run.run_dir)!r}); SEED = {run.seed}\n"
        return [sys.executable, "-c", head + textwrap.dedent(script)]

    monkeypatch.setattr("spft.experiments.sweep._command", command)


def test_jobs_run_at_once_each_on_its_slot(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    _stand_in(monkeypatch, """
        import json, os, time
        start = time.time(); time.sleep(1.0)
        RUN.mkdir(parents=True)
        env = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS")}
        (RUN / "times.json").write_text(json.dumps({"start": start, "end": time.time(), **env}))
        (RUN / "DONE").write_text("x")
    """)
    out = tmp_path / "sweep"
    sweep = plan_sweep(SWEEP_CONFIG, [0, 1, 2, 3, 4], tuple(sweep_overrides()), out=out)
    monkeypatch.setattr("spft.experiments.sweep._primary", lambda *_: "0.5")
    start = time.time()
    run_sweep(sweep, [("0", "1"), ("2", "3")])
    took = time.time() - start
    runs = [json.loads((out / "base" / f"seed{s}" / "times.json").read_text()) for s in range(5)]
    events = sorted([(r["start"], 1) for r in runs] + [(r["end"], -1) for r in runs])
    overlap = max(np.cumsum([e for _, e in events]))
    assert overlap == 2 and took < 5 * 1.0  # two at a time, never three
    assert {r["CUDA_VISIBLE_DEVICES"] for r in runs} == {"0,1", "2,3"}
    assert {r["OMP_NUM_THREADS"] for r in runs} == {str(max(1, len(os.sched_getaffinity(0)) // 2))}
    record = json.loads((out / "sweep.json").read_text())
    assert record["status"] == "finished" and all(r["status"] == "done" for r in record["runs"])
    assert {r["devices"] for r in record["runs"]} == {"0,1", "2,3"}
    assert "CUDA_VISIBLE_DEVICES=" in (out / "logs" / "base-seed0.log").read_text()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_running_children_and_is_recorded(tmp_path, monkeypatch, signum):
    _stand_in(monkeypatch, """
        import signal, sys, time
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        RUN.mkdir(parents=True); (RUN / "started").write_text("x")
        try:
            time.sleep(60)
        except KeyboardInterrupt:
            sys.exit(130)
    """)
    out = tmp_path / "sweep"
    sweep = plan_sweep(SWEEP_CONFIG, [0, 1, 2], tuple(sweep_overrides()), out=out)

    def stop_when_both_started():
        deadline = time.time() + 30
        while time.time() < deadline and not all((out / "base" / f"seed{s}" / "started").exists() for s in (0, 1)):
            time.sleep(0.05)
        os.kill(os.getpid(), signum)  # to the sweep only: it forwards to its children

    threading.Thread(target=stop_when_both_started, daemon=True).start()
    start = time.time()
    with pytest.raises(KeyboardInterrupt) as stopped:
        run_sweep(sweep, [(), ()])
    assert stopped.value.signum == signum  # the CLI exits 128 + signum: 143 for SIGTERM, as spft train
    assert time.time() - start < 30  # the children stopped: nobody slept its 60 s
    record = json.loads((out / "sweep.json").read_text())
    assert record["status"] == "interrupted"
    assert [(r["status"], r["returncode"]) for r in record["runs"]] == [
        ("interrupted", 143 if signum == signal.SIGTERM else 130)] * 2 + [("pending", None)]


def test_a_run_that_wrote_done_is_done_even_when_the_signal_reached_it_at_the_end(tmp_path, monkeypatch):
    _stand_in(monkeypatch, """
        import signal, sys, time
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        RUN.mkdir(parents=True); (RUN / "DONE").write_text("x"); (RUN / "started").write_text("x")
        time.sleep(60)  # e.g. still closing its loggers when the sweep is stopped
    """)
    out = tmp_path / "sweep"
    sweep = plan_sweep(SWEEP_CONFIG, [0], tuple(sweep_overrides()), out=out)

    def stop_when_started():
        deadline = time.time() + 30
        while time.time() < deadline and not (out / "base" / "seed0" / "started").exists():
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=stop_when_started, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        run_sweep(sweep, [()])
    entry = json.loads((out / "sweep.json").read_text())["runs"][0]
    assert (entry["status"], entry["returncode"]) == ("done", 143)


def test_a_run_directory_in_use_is_a_clear_failed_run(tmp_path, spft_cache, monkeypatch):
    from spft.config import dump_yaml, load_config

    monkeypatch.setattr("spft.experiments.parallel.BUSY_WAIT_S", 1.0)  # held for good: waited for, then started

    # the child: the real CLI taking the run lock as `spft train --resume` does (tests/test_run_safety.py runs two
    # real trainings), here through `spft evaluate`, which takes it before importing torch: a second, not 10
    monkeypatch.setattr("spft.experiments.sweep._command",
                        lambda _, r: [sys.executable, "-m", "spft.cli", "evaluate", str(r.run_dir)])
    out = tmp_path / "sweep"
    run = out / "base" / "seed1"  # a run to resume, while another process (this test) holds its lock
    run.mkdir(parents=True)
    cfg = load_config(SWEEP_CONFIG, [*sweep_overrides(), "seed=1", f"run.dir={run}"])
    (run / "config.yaml").write_text(dump_yaml(cfg))
    sweep = plan_sweep(SWEEP_CONFIG, [1], tuple(sweep_overrides()), out=out)
    assert [r.action for r in sweep.runs] == ["resume"]
    with RunLock(run, "train"):
        run_sweep(sweep, [(), ()])
    entry = json.loads((out / "sweep.json").read_text())["runs"][0]
    assert entry["status"] == "failed" and entry["returncode"] == 2
    assert f"is in use by PID {os.getpid()}" in entry["note"] and "exit code 2" in entry["note"]


# --- shared caches: computed once when two processes need them at once ----------------------------------------------

_CACHE_CHILD = """
import logging, sys, time
from pathlib import Path
import numpy as np, torch
sys.path.insert(0, {tests!r})
from conftest import tiny_overrides
from spft.config import load_config
from spft.tasks.classification.feature_cache import FeatureCache
from spft.tasks.classification.train import build_run

logging.basicConfig(level=logging.INFO, format="%(message)s")
work, me = Path(sys.argv[1]), sys.argv[2]
(work / f"ready-{{me}}").touch()
while not all((work / f"ready-{{x}}").exists() for x in "ab"):  # start together: phantoms are generated now
    time.sleep(0.01)
cfg = load_config("configs/phantom_cxr.yaml", tiny_overrides(work / f"run-{{me}}", n_images=60))
torch.manual_seed(0)  # the same encoder weights in both: the same cache key
_, _, module, dm = build_run(cfg, None)
extract = FeatureCache._extract

def counted(self, *args, **kwargs):  # slow enough that the other process asks while this one computes
    with open(work / "extractions", "a") as fh:
        fh.write(me + "\\n")
    time.sleep(1.0)
    return extract(self, *args, **kwargs)

FeatureCache._extract = counted
(work / f"built-{{me}}").touch()
while not all((work / f"built-{{x}}").exists() for x in "ab"):
    time.sleep(0.01)
features = FeatureCache(module.model, dm.transform, cfg.data.color, work / "features").get(
    "val", dm.datasets["val"], torch.device("cpu"), 16, {{"num_workers": 0}})
np.save(work / f"features-{{me}}.npy", features.numpy())
"""


def test_two_processes_compute_the_phantoms_and_features_once(tmp_path):
    script = _CACHE_CHILD.format(tests=str(REPO / "tests"))
    env = {**os.environ, "SPFT_CACHE": str(tmp_path / "cache")}  # fresh: the phantoms do not exist yet either
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path), me], cwd=REPO, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for me in "ab"]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(logs)
    both = "\n".join(logs)
    assert both.count("generating 60 cxr phantoms") == 1, both  # the other waited for the set, then read it
    assert (tmp_path / "extractions").read_text().count("\n") == 1, both  # exactly one extraction
    assert both.count("features written to") == 1 and "computed meanwhile by another process" in both, both
    a, b = (np.load(tmp_path / f"features-{me}.npy") for me in "ab")
    assert a.shape[0] > 0 and np.array_equal(a, b)
    assert not list((tmp_path / "cache").rglob("*.lock")) and not list((tmp_path / "cache").rglob("*.tmp"))


# --- a real parallel sweep equals the sequential one ----------------------------------------------------------------

def _table(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_parallel_repeat_equals_the_sequential_one(repeat_sweep, tmp_path):
    sequential, _, _ = repeat_sweep
    out = tmp_path / "parallel"
    proc = run_cli("repeat", SWEEP_CONFIG, *sweep_overrides(), "--seeds", "0,1,2", "--out", str(out), "--jobs", "2")
    assert proc.stdout.strip().splitlines()[-1] == str(out) and "2 at a time (CPU)" in proc.stdout
    record = json.loads((out / "sweep.json").read_text())
    assert record["status"] == "finished" and [r["status"] for r in record["runs"]] == ["done"] * 3
    starts = [line for line in proc.stderr.splitlines() if ": training" in line]
    assert len(starts) == 3 and all(f"[{i}/3]" in line for i, line in enumerate(starts, 1))  # one line per change
    for seed in (0, 1, 2):
        ours, theirs = (_table(d / "base" / f"seed{seed}" / "predictions_test.csv") for d in (out, sequential))
        assert [r["id"] for r in ours] == [r["id"] for r in theirs]
        for column in ours[0]:
            a, b = [r[column] for r in ours], [r[column] for r in theirs]
            if column.startswith(("prob_", "logit_")):  # each child has 1 thread instead of 2: sums in other orders
                assert np.allclose(np.array(a, float), np.array(b, float), rtol=0, atol=1e-6), (seed, column)
            else:
                assert a == b, (seed, column)
        m1, m2 = (json.loads((d / "base" / f"seed{seed}" / "metrics.json").read_text()) for d in (out, sequential))
        assert m1["macro_auc"] == pytest.approx(m2["macro_auc"], abs=1e-9)
        assert m1["per_class_auc"] == pytest.approx(m2["per_class_auc"], abs=1e-9)


_KILLABLE_SWEEP = """
import pathlib, sys, textwrap
import spft.experiments.sweep as sw
from spft.experiments.sweep import plan_sweep, run_sweep
CHILD = textwrap.dedent('''
    import os, pathlib, signal, sys, time
    from spft.experiments.lock import RunLock
    RUN = pathlib.Path(sys.argv[1])
    RUN.mkdir(parents=True, exist_ok=True)
    with RunLock(RUN, "train"):
        (RUN / "config.yaml").write_text("task: classification" + chr(10))
        if (RUN / "second").exists():  # the rerun's child: finish
            (RUN / "DONE").write_text("x")
            sys.exit(0)
        (RUN / "second").write_text("x")
        (RUN / f"pid{os.getpid()}").write_text("x")
        def stop(*_):
            time.sleep(2)  # saving its checkpoint: the lock is still held for a while
            (RUN / "stopped").write_text("SIGTERM")
            sys.exit(143)
        signal.signal(signal.SIGTERM, stop)
        time.sleep(120)
''')
sw._command = lambda sweep, run: [sys.executable, "-c", CHILD, str(run.run_dir)]
sweep = plan_sweep(sys.argv[1], [0, 1], tuple(sys.argv[3:]), out=pathlib.Path(sys.argv[2]))
run_sweep(sweep, [(), ()])
"""


def test_kill_9_of_the_sweep_stops_its_children_and_a_rerun_waits_for_them(tmp_path, monkeypatch):
    out = tmp_path / "sweep"
    parent = subprocess.Popen([sys.executable, "-c", _KILLABLE_SWEEP, str(SWEEP_CONFIG), str(out),
                               *sweep_overrides()], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    runs = [out / "base" / f"seed{s}" for s in (0, 1)]
    deadline = time.time() + 60
    while time.time() < deadline and not all(list(r.glob("pid*")) for r in runs):
        time.sleep(0.05)
    assert all(list(r.glob("pid*")) for r in runs), parent.communicate(timeout=5)
    parent.kill()  # kill -9: no handler runs in the sweep process
    parent.wait()
    # the children got SIGTERM from the kernel (parent-death signal) and are stopping, still holding their locks;
    # a rerun started at once waits for them, then resumes each run (here: the stand-in finishes)
    monkeypatch.setattr("spft.experiments.sweep._command", lambda _, run: [
        sys.executable, "-c", "import pathlib, sys; from spft.experiments.lock import RunLock\n"
        "RUN = pathlib.Path(sys.argv[1])\nwith RunLock(RUN, 'train'):\n    (RUN / 'DONE').write_text('x')",
        str(run.run_dir)])
    sweep = plan_sweep(SWEEP_CONFIG, [0, 1], tuple(sweep_overrides()), out=out)
    run_sweep(sweep, [(), ()])
    for run in runs:
        assert (run / "stopped").read_text() == "SIGTERM"  # the orphan stopped cleanly, not killed or left running
        pid = int(next(run.glob("pid*")).name[3:])
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    record = json.loads((out / "sweep.json").read_text())
    assert record["status"] == "finished" and [r["status"] for r in record["runs"]] == ["done", "done"]
