"""`spft repeat|ablate --launcher slurm`: the sbatch script built from the options, one-line errors, submission /
state / resubmission against stand-ins for sbatch and sacct, the array task (SweepRun) on its own, and the whole
path end to end through submitit's LocalExecutor with one forced requeue (preemption) of a real tiny run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import run_cli, tiny_overrides

from spft.cli import build_parser, parse_args
from spft.errors import ConfigError, DependencyError
from spft.experiments import slurm
from spft.experiments.slurm_run import RunFailed, SweepRun

CONFIG = "configs/phantom_cxr.yaml"


def _args(*argv: str):
    return parse_args(build_parser(), ["repeat", CONFIG, *argv])


def _fake_slurm(tmp_path: Path) -> dict[str, str]:
    """sbatch / srun / sacct / squeue stand-ins on PATH: sbatch keeps each script and answers ``Submitted batch job
    N`` (4242, 4243 ...); sacct prints ``state/sacct.txt`` (``JOBID|STATE|NODE`` lines) under its header, squeue
    ``state/squeue.txt`` (job ids)."""
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    scripts = {
        "sbatch": 'n=$(cat "$FAKE_SLURM/counter" 2>/dev/null || echo 4241); n=$((n+1))\n'
                  'echo $n > "$FAKE_SLURM/counter"\ncp "$1" "$FAKE_SLURM/sbatch-$n.sh"\n'
                  'echo "Submitted batch job $n"\n',
        "sacct": 'echo "JobID|State|NodeList"\ncat "$FAKE_SLURM/sacct.txt" 2>/dev/null\nexit 0\n',
        "squeue": 'cat "$FAKE_SLURM/squeue.txt" 2>/dev/null\nexit 0\n',
        "srun": "exit 0\n",
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body)
        (bin_dir / name).chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_SLURM": str(state)}


def sweep_overrides(epochs: int) -> list[str]:
    return [o for o in tiny_overrides(Path("unused"), n_images=240, epochs=epochs) if not o.startswith("run.dir=")]


# --- options -> sbatch --------------------------------------------------------------------------------------------

def test_the_sbatch_script_carries_every_option(tmp_path, monkeypatch):
    env = _fake_slurm(tmp_path)
    monkeypatch.setenv("PATH", env["PATH"])
    args = _args("--launcher", "slurm", "--slurm-partition", "gpu", "--slurm-time", "04:30:00",
                 "--slurm-gpus-per-run", "2", "--slurm-cpus-per-run", "12", "--slurm-mem", "64G",
                 "--slurm-array-parallelism", "8", "--slurm-opt", "account=proj42", "--slurm-opt", "mail-type=END")
    assert slurm.wanted(args)
    kind, params = slurm.executor_parameters(args, job_name="spft-ladder")
    script = slurm.sbatch_script(slurm.make_executor(kind, tmp_path / "jobs", params), n_runs=12)
    lines = set(script.splitlines())
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=270", "#SBATCH --gpus-per-task=2",
                 "#SBATCH --cpus-per-task=12", "#SBATCH --mem=64G", "#SBATCH --array=0-11%8",
                 "#SBATCH --account=proj42", "#SBATCH --mail-type=END", "#SBATCH --requeue",
                 "#SBATCH --signal=USR2@90", "#SBATCH --ntasks-per-node=1", "#SBATCH --job-name=spft-ladder"):
        assert line in lines, f"{line} not in\n{script}"
    # defaults: one GPU, 8 cores per GPU, 4 hours, every run at once
    kind, params = slurm.executor_parameters(_args("--launcher", "slurm"))
    script = slurm.sbatch_script(slurm.make_executor(kind, tmp_path / "jobs", params), n_runs=3)
    assert {"#SBATCH --gpus-per-task=1", "#SBATCH --cpus-per-task=8", "#SBATCH --time=240",
            "#SBATCH --array=0-2%3"} <= set(script.splitlines())
    assert "--partition" not in script and "--mem" not in script


def test_option_parsers():
    assert [slurm.parse_time(t) for t in ("240", "04:00:00", "0:01:30", "1-00:00:00")] == [240, 240, 2, 1440]
    assert [slurm.parse_mem(m) for m in ("64", "64G", "500M", "1.5g", "2TB")] == ["64G", "64G", "500M", "1536M", "2T"]
    assert slurm.parse_opts(["account=a", "--qos=high", "exclusive"]) == {"account": "a", "qos": "high",
                                                                          "exclusive": True}
    for bad in (("parse_time", "4h"), ("parse_time", "0"), ("parse_time", "1:99:00"), ("parse_mem", "lots"),
                ("parse_opts", ["=gpu"]), ("parse_opts", ["two words=x"]), ("parse_opts", ["account="]),
                ("parse_opts", ["array=0-3"])):
        with pytest.raises(ConfigError):
            getattr(slurm, bad[0])(bad[1])


def test_malformed_options_are_one_line_errors(tmp_path):
    for extra, words in ((["--slurm-time", "4h"], "--slurm-time '4h'"), (["--slurm-opt", "=gpu"], "--slurm-opt '=gpu'"),
                         (["--slurm-gpus-per-run", "-1"], "--slurm-gpus-per-run -1")):
        with pytest.raises(ConfigError, match=words):
            slurm.executor_parameters(_args("--launcher", "slurm", *extra))
    with pytest.raises(ConfigError, match="--slurm-partition applies to --launcher slurm"):
        slurm.wanted(_args("--slurm-partition", "gpu"))  # would otherwise train every run here
    with pytest.raises(ConfigError, match="--jobs applies to --launcher local"):
        slurm.wanted(_args("--launcher", "slurm", "--jobs", "2"))
    proc = run_cli("repeat", CONFIG, "--out", str(tmp_path / "s"), "--launcher", "slurm", "--slurm-time", "4h",
                   check=False)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "--slurm-time" in proc.stderr
    assert not (tmp_path / "s").exists()


def test_each_new_run_must_use_the_gpus_it_asks_for(tmp_path):
    from spft.experiments.sweep import plan_sweep

    sweep = plan_sweep(CONFIG, [0], ("trainer.devices=2",), out=tmp_path / "s")
    with pytest.raises(ConfigError, match=r"trainer.devices=2, but --slurm-gpus-per-run 1 .* trainer.devices=1"):
        slurm.check_devices(sweep, 1)
    slurm.check_devices(sweep, 2)
    slurm.check_devices(plan_sweep(CONFIG, [0], ("trainer.devices=auto",), out=tmp_path / "a"), 4)
    with pytest.raises(ConfigError, match="trainer.devices=4"):
        slurm.check_devices(plan_sweep(CONFIG, [0], (), out=tmp_path / "b"), 4)


def test_missing_submitit_or_sbatch_is_one_line(tmp_path, monkeypatch):
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
        with pytest.raises(DependencyError, match=r"pip install 'spft\[slurm\]'"):
            slurm.require_submitit()
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_cli("repeat", CONFIG, "--out", str(tmp_path / "s"), "--launcher", "slurm", env={"PATH": str(empty)},
                   check=False)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "sbatch and srun not found on PATH" in proc.stderr and "--slurm-executor local" in proc.stderr


# --- submission, state, resubmission (sbatch and sacct stand-ins) ---------------------------------------------------

def test_submit_show_and_resubmit_only_the_failed_run(tmp_path):
    env = _fake_slurm(tmp_path)
    state = Path(env["FAKE_SLURM"])
    out = tmp_path / "sweep"
    cmd = ["repeat", CONFIG, *sweep_overrides(2), "--seeds", "0,1,2", "--out", str(out), "--launcher", "slurm",
           "--slurm-partition", "gpu", "--slurm-array-parallelism", "2"]
    proc = run_cli(*cmd, env=env)
    assert "submitted job array 4242: 3 runs, at most 2 at a time" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == str(out)
    assert "#SBATCH --array=0-2%2" in (state / "sbatch-4242.sh").read_text()
    record = json.loads((out / "slurm.json").read_text())
    assert {k: e["job_id"] for k, e in record["runs"].items()} == {f"base/seed{s}": f"4242_{s}" for s in (0, 1, 2)}
    assert record["arrays"][0]["job_id"] == "4242"
    # paths inside the sweep are stored relative to it: a moved or copied sweep still finds them
    assert {e["folder"] for e in record["runs"].values()} == {"slurm"}
    assert all(not Path(e["log"]).is_absolute() for e in record["runs"].values())
    from spft.experiments.slurm import read_record

    moved = tmp_path / "moved"
    shutil.copytree(out, moved)
    entries = read_record(SimpleNamespace(out=moved))["runs"]
    assert {e["folder"] for e in entries.values()} == {str(moved / "slurm")}
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep["status"] == "submitted" and {r["status"] for r in sweep["runs"]} == {"submitted"}
    assert len(list((out / "slurm").glob("4242_*_submitted.pkl"))) == 3

    # seed 0 runs, seed 1 failed, seed 2 finished: only seed 1 goes again, as a job of its own
    (state / "sacct.txt").write_text("4242_0|RUNNING|n1\n4242_0.batch|RUNNING|n1\n4242_1|FAILED|n2\n"
                                     "4242_2|COMPLETED|n2\n")
    (out / "base" / "seed2").mkdir(parents=True)
    (out / "base" / "seed2" / "config.yaml").write_text("seed: 2\n")
    (out / "base" / "seed2" / "DONE").write_text("x\n")
    proc = run_cli(*cmd, env=env)
    rows = {line.split()[1]: line.split()[2:4] for line in proc.stdout.splitlines() if line.startswith("  base")}
    assert rows == {"0": ["RUNNING", "4242_0"], "1": ["SUBMITTED", "4243"], "2": ["DONE", "4242_2"]}
    assert "resubmitted after FAILED of 4242_1" in proc.stdout and "submitted job 4243: 1 run " in proc.stdout
    assert not (state / "sbatch-4244.sh").exists() and "--array" not in (state / "sbatch-4243.sh").read_text()
    record = json.loads((out / "slurm.json").read_text())
    assert record["runs"]["base/seed1"]["attempts"] == ["4242_1", "4243"]
    assert record["runs"]["base/seed0"]["job_id"] == "4242_0"
    sweep = json.loads((out / "sweep.json").read_text())
    assert [r["status"] for r in sweep["runs"]] == ["running", "submitted", "done"]

    # the resubmitted job is pending, the first still runs: nothing is submitted
    (state / "sacct.txt").write_text("4242_0|RUNNING|n1\n4243|PENDING|\n")
    proc = run_cli(*cmd, env=env)
    assert "nothing to submit" in proc.stdout and not (state / "sbatch-4244.sh").exists()
    # sacct knows neither job (no accounting record yet, or accounting off) and there is no result file: the one
    # still queued is left alone (a duplicate would fight over the run), the one squeue does not know is resubmitted
    (state / "sacct.txt").write_text("")
    (state / "squeue.txt").write_text("4242_0\n4242_7\n")
    proc = run_cli(*cmd, env=env)
    rows = {line.split()[1]: line.split()[2:4] for line in proc.stdout.splitlines() if line.startswith("  base")}
    assert rows == {"0": ["UNKNOWN", "4242_0"], "1": ["SUBMITTED", "4244"], "2": ["DONE", "4242_2"]}
    assert "resubmitted after GONE of 4243" in proc.stdout and not (state / "sbatch-4245.sh").exists()


# --- the array task on its own ----------------------------------------------------------------------------------------

def test_sweep_run_decides_at_start_and_fails_naming_the_log(tmp_path, monkeypatch):
    import cloudpickle

    run_dir, log = tmp_path / "base" / "seed0", tmp_path / "logs" / "base-seed0.log"
    call = SweepRun("base/seed0", CONFIG, ("seed=0",), str(run_dir), str(log), str(tmp_path), requeue_wait_s=0)
    seen = []

    def fake_command(config, overrides, run_dir_, resume):
        seen.append(resume)
        return [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"]

    monkeypatch.setattr("spft.experiments.slurm_run.train_command", fake_command)
    with pytest.raises(RunFailed, match=f"base/seed0: spft train exited with code 3; see {log}"):
        call()
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("seed: 0\n")  # an earlier attempt started the run: this one resumes
    with pytest.raises(RunFailed):
        call()
    assert seen == [False, True] and log.read_text().count("\nboom\n") == 2
    again = cloudpickle.loads(cloudpickle.dumps(call))  # what checkpoint() hands submitit: no process state
    assert again._proc is None and again.run_dir == str(run_dir)
    (run_dir / "DONE").write_text("x\n")
    assert again() == "done" and seen == [False, True]


# --- end to end: submitit's LocalExecutor, real runs, one forced requeue --------------------------------------------

def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _kill_tree(pid: int) -> None:
    for child in _children(pid):
        _kill_tree(child)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _wait(condition, timeout: float, what: str, step: float = 0.05) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(step)


@pytest.mark.slow
def test_local_executor_end_to_end_with_a_forced_requeue(spft_cache, tmp_path):
    out = tmp_path / "sweep"
    overrides = sweep_overrides(3)
    run_cli("data", "check", CONFIG, *overrides)  # the phantoms exist before two runs start at once
    cmd = ["repeat", CONFIG, *overrides, "--seeds", "0,1", "--out", str(out), "--launcher", "slurm",
           "--slurm-executor", "local"]
    start = time.time()
    proc = run_cli(*cmd)
    assert time.time() - start < 30, "the command must return once the jobs are started"
    assert "started 2 runs in the background as local jobs" in proc.stdout
    record = json.loads((out / "slurm.json").read_text())
    controllers = {key: int(e["job_id"]) for key, e in record["runs"].items()}  # a local job id is its controller
    assert set(controllers) == {"base/seed0", "base/seed1"}
    try:
        # preempt seed 0 once its first epoch is saved, as submitit's controller does at a time-out: SIGUSR2 to the
        # task process; SweepRun.checkpoint stops `spft train` (SIGTERM) and the job is requeued in place
        run0 = out / "base" / "seed0"
        _wait(lambda: (run0 / "checkpoints" / "last.ckpt").is_file(), 120, "seed 0's first last.ckpt")
        tasks = _children(controllers["base/seed0"])
        assert len(tasks) == 1
        os.kill(tasks[0], signal.SIGUSR2)
        _wait(lambda: all((out / "base" / f"seed{s}" / "DONE").is_file() for s in (0, 1)), 180, "both runs' DONE",
              step=0.5)
        _wait(lambda: not any(_children(pid) for pid in controllers.values()), 60, "the jobs to end", step=0.5)
    finally:
        for pid in controllers.values():
            _kill_tree(pid)
    log0 = (out / "logs" / "base-seed0.log").read_text()
    assert "preempted or timed out" in log0 and "interrupted at epoch" in log0
    assert f"train --resume {run0}" in log0
    jobs = out / "slurm"
    assert "Requeued job" in (jobs / f"{controllers['base/seed0']}_0_log.out").read_text()
    history = (run0 / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["0", "1", "2"]  # every epoch, once
    assert "--resume" not in (out / "logs" / "base-seed1.log").read_text()

    before = sorted(p.name for p in jobs.iterdir())
    proc = run_cli(*cmd)  # again: both finished, nothing submitted
    rows = [line.split()[:3] for line in proc.stdout.splitlines() if line.startswith("  base")]
    assert rows == [["base", "0", "DONE"], ["base", "1", "DONE"]] and "every run is finished" in proc.stdout
    assert sorted(p.name for p in jobs.iterdir()) == before
    sweep = json.loads((out / "sweep.json").read_text())
    assert sweep["status"] == "finished" and [r["status"] for r in sweep["runs"]] == ["done", "done"]
