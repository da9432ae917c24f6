"""The Task interface (spft.tasks.base) and the one run lifecycle (spft.tasks.lifecycle), without training.

A fourth task defined here, in the test module, and registered with one line (``register``) is picked up by the
CLI (train --resume, evaluate, data check, prepare cache, predict), the sweeps (resume decisions from its own
checkpoint names, the closing table's metric) and ``spft report`` — no spft code names it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from spft.errors import ConfigError
from spft.tasks import registry
from spft.tasks.base import Evaluation, Task
from spft.tasks.lifecycle import Unguarded, resume_run, start_run


@dataclass
class EchoReport:
    problems: list = field(default_factory=list)

    def to_json(self) -> dict:
        return {"echo": True, "problems": self.problems}

    def text(self) -> str:
        return "echo data: OK"


class EchoTask(Task):
    name = "echo"
    checkpoint_names = ("best.echo", "last.echo")
    primary_metric, primary_label = "score", "echo score"

    def resume(self, run_dir) -> Path:
        run_dir = Path(run_dir)
        (run_dir / "metrics.json").write_text(json.dumps({"split": "test", "n": 3, "score": 0.25}))
        (run_dir / "DONE").write_text("x\n")
        return run_dir

    def evaluate(self, run_dir, overrides=(), split=None, checkpoint="best", out=None, name=None) -> Evaluation:
        metrics = {"split": split or "test", "n": 3, "score": 0.5, "checkpoint": checkpoint}
        return Evaluation(metrics, self.primary_metric, f"echo table ({metrics['split']})", [{"id": "a"}])

    def report(self, sweep_dir, out=None, n_boot=1000, seed=0) -> Path:
        out = Path(out) if out else Path(sweep_dir) / "report"
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.html").write_text("<p>echo</p>")
        return out

    def data_check(self, cfg, scan=False, workers=None, headers=False):
        return EchoReport()

    def prepare_cache(self, cfg, workers=None) -> dict:
        return {"folder": "echo-cache", "size": 8, "written": 1, "skipped": 0, "missing": 0, "failed": {}}


@pytest.fixture
def echo(monkeypatch):
    task = EchoTask()
    monkeypatch.setitem(registry.TASKS, task.name, task)  # what `registry.register(task)` does, undone afterwards
    return task


@pytest.fixture
def echo_run(tmp_path, echo) -> Path:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("task: echo\nseed: 0\n")
    (run / "checkpoints" / "last.echo").write_text("weights")
    return run


def test_registered_task_is_found_and_unknown_tasks_are_named(echo):
    registry.register(echo)
    assert registry.get_task("echo") is echo
    with pytest.raises(ConfigError, match="unknown task 'nope'"):
        registry.get_task("nope")
    with pytest.raises(ConfigError, match="not yet supported for echo runs"):
        registry.predict_api("echo")


def test_builtin_tasks_answer_the_protocol():
    for name in ("classification", "detection", "segmentation"):
        task = registry.get_task(name)
        assert task.name == name and len(task.checkpoint_names) == 2 and task.primary_metric and task.primary_label
    assert registry.get_task("detection").checkpoint_names == ("best.pt", "last.pt")
    assert registry.get_task("classification").predict_module is not None
    with pytest.raises(ConfigError, match="image cache is not used by detection"):
        registry.get_task("detection").prepare_cache(None)


def test_cli_asks_the_task(echo_run, monkeypatch, capsys):
    from spft import cli

    assert cli.main(["train", "--resume", str(echo_run)]) == 0
    out = capsys.readouterr().out
    assert "score: 0.25" in out and out.strip().splitlines()[-1] == str(echo_run)
    assert cli.main(["evaluate", str(echo_run), "--split", "val"]) == 0
    assert capsys.readouterr().out.strip() == "echo table (val)"
    assert cli.main(["evaluate", str(echo_run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["score"] == 0.5
    monkeypatch.setattr("spft.config.load_config", lambda config, overrides=(): type("C", (), {"task": "echo"})())
    assert cli.main(["data", "check", "echo.yaml"]) == 0
    assert capsys.readouterr().out.strip() == "echo data: OK"
    assert cli.main(["prepare", "cache", "echo.yaml"]) == 0
    assert capsys.readouterr().out.startswith("cache echo-cache (8 px): 1 written")
    assert cli.main(["predict", str(echo_run), "x.png"]) == 2
    assert "predict/export is not yet supported for echo runs" in capsys.readouterr().err


def test_report_asks_the_task(echo_run):
    from spft.reporting.report import build_report

    assert (build_report(echo_run) / "report.html").read_text() == "<p>echo</p>"


def test_sweep_reads_the_tasks_checkpoint_names_and_metric(echo_run):
    from spft.experiments.studies import REPEAT
    from spft.experiments.sweep import PlannedRun, Sweep, primary_label, run_action, summary_rows

    assert run_action(echo_run) == ("resume", "from last.echo")
    (echo_run / "checkpoints" / "last.echo").unlink()
    assert run_action(echo_run) == ("resume", "no epoch finished: starts again")
    EchoTask().resume(echo_run)
    assert run_action(echo_run) == ("skip", "finished (DONE)")
    sweep = Sweep("repeat", Path("c.yaml"), REPEAT, [0], (), echo_run.parent, task="echo",
                  runs=[PlannedRun("base", 0, echo_run, "skip", status="done")])
    assert primary_label(sweep) == "echo score"
    assert summary_rows(sweep)[0][3] == "0.2500"


# --- the run lifecycle, with an engine that only records what it is asked -------------------------------------------

class RecordingEngine(Unguarded):
    checkpoint_names = ("best.rec", "last.rec")
    loadable = False

    def __init__(self, fail_in_fit: bool = False):
        self.calls: list[str] = []
        self.fail_in_fit = fail_in_fit

    def seed(self, cfg) -> None:
        self.calls.append("seed")

    def setup(self, cfg, run_dir, resume_from, guard):
        engine = self
        engine.calls.append(f"setup from {None if resume_from is None else Path(resume_from).name}")

        class Attempt:
            primary = True

            def records(self):
                return {"env.json": lambda: {"engine": "recording"}}

            def fit(self):
                engine.calls.append("fit")
                if engine.fail_in_fit:
                    raise RuntimeError("out of memory")

            def load_best(self):
                engine.calls.append("load_best")
                return 7

            def test(self, best):
                engine.calls.append(f"test {best}")
                (Path(run_dir) / "metrics.json").write_text("{}")

        return Attempt()


def _cfg(run_dir: Path):
    from spft.config import load_config

    return load_config("configs/phantom_cxr.yaml", [f"run.dir={run_dir}"])


def test_lifecycle_order_records_and_done(tmp_path):
    from spft.experiments.lock import release_run_locks

    engine = RecordingEngine()
    run = start_run(_cfg(tmp_path / "r"), engine)
    release_run_locks()
    assert engine.calls == ["seed", "setup from None", "fit", "load_best", "test 7"]
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "env.json", "metrics.json", "DONE"}
    assert json.loads((run / "env.json").read_text()) == {"engine": "recording"}
    engine.calls.clear()
    assert resume_run(run, engine) == run and engine.calls == []  # DONE: left as it is
    release_run_locks()


def test_lifecycle_resumes_from_the_engines_last_checkpoint_and_rewrites_only_missing_records(tmp_path):
    from spft.experiments.checkpoints import record_digest
    from spft.experiments.lock import release_run_locks

    engine = RecordingEngine(fail_in_fit=True)
    run_dir = tmp_path / "r"
    with pytest.raises(RuntimeError):
        start_run(_cfg(run_dir), engine)
    release_run_locks()
    assert not run_dir.exists()  # a failed start without a checkpoint removes what it created
    engine = RecordingEngine(fail_in_fit=True)
    cfg = _cfg(run_dir)

    class FirstEpoch(RecordingEngine):
        def setup(self, cfg, run_dir, resume_from, guard):
            attempt = super().setup(cfg, run_dir, resume_from, guard)
            (Path(run_dir) / "checkpoints").mkdir(exist_ok=True)
            (Path(run_dir) / "checkpoints" / "last.rec").write_text("epoch 0")
            record_digest(Path(run_dir) / "checkpoints" / "last.rec")
            return attempt

    with pytest.raises(RuntimeError):
        start_run(cfg, FirstEpoch(fail_in_fit=True))
    release_run_locks()
    assert (run_dir / "checkpoints" / "last.rec").is_file()  # kept: it has a checkpoint
    (run_dir / "env.json").unlink()
    (run_dir / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    engine = RecordingEngine()
    resume_run(run_dir, engine)
    release_run_locks()
    assert engine.calls == ["seed", "setup from last.rec", "fit", "load_best", "test 7"]
    assert (run_dir / "env.json").is_file() and (run_dir / "DONE").is_file()
