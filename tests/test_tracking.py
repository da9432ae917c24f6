"""MLflow tracking (``tracking.mlflow.*``) against a real ``mlflow server`` started here, through the real CLI:
params, per-epoch metrics (sent live, never twice after ``--resume``), tags, artifacts and status; a server that is
down (training finishes, one warning line, ``tracking_unsent.jsonl``, then ``spft track push``); the lifecycle path
shared by segmentation and detection; a sweep's parent run with the report attached."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import run_cli, tiny_overrides
from run_hooks import crash_after_epoch

from spft.config import ConfigError, load_config
from spft.errors import DependencyError
from spft.experiments.sweep import plan_sweep
from spft.tracking.records import UNSENT_FILE, artifact_files, epoch_metrics, final_metrics, flat_params

CONFIG = "configs/phantom_cxr.yaml"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory) -> str:
    """A real MLflow server (SQLite store, proxied artifacts) on a free local port, started once for this module."""
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job-runner processes
    mlflow = Path(sys.executable).with_name("mlflow")
    with open(root / "server.log", "w") as log:
        proc = subprocess.Popen([str(mlflow), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
                                 "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
                                 "--port", str(port), "--workers", "1"], stdout=log, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise AssertionError(f"mlflow server did not start:\n{(root / 'server.log').read_text()}") \
                        from None
                time.sleep(0.3)
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and the uvicorn worker it started
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def client(mlflow_uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=mlflow_uri)


def _steps(client, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def _artifacts(client, run_id: str, path: str | None = None) -> set[str]:
    return {a.path for a in client.list_artifacts(run_id, path)}


# --- what is sent (no server) ---------------------------------------------------------------------------------------

def test_records_flat_params_metrics_and_artifacts(tmp_path):
    params = flat_params({"optim": {"lr_head": 5e-5}, "model": {"config": {"hidden_size": 32}, "name": None},
                          "data": {"split_fractions": [0.7, 0.15, 0.15], "label_columns": []},
                          "recipe": {"class_weights": {"heuristic": {}}}, "long": "x" * 7000})
    assert params == {"optim.lr_head": "5e-05", "model.config.hidden_size": "32", "model.name": "null",
                      "data.split_fractions": "[0.7, 0.15, 0.15]", "data.label_columns": "[]",
                      "recipe.class_weights.heuristic": "{}", "long": "x" * 6000}
    row = {"epoch": "2", "stage": "2", "open_blocks": "1", "val_auc_ema": "0.75", "val_auc_raw": "",
           "w_Pleural (x)": "1"}
    assert {(m["key"], m["value"], m["step"]) for m in epoch_metrics(row, 0)} == {
        ("epoch", 2.0, 2), ("stage", 2.0, 2), ("open_blocks", 1.0, 2), ("val_auc_ema", 0.75, 2),
        ("w_Pleural _x_", 1.0, 2)}
    (tmp_path / "metrics.json").write_text(json.dumps({"split": "test", "n": 9, "macro_auc": 0.8, "best_epoch": 3,
                                                       "per_class_auc": {"A": 0.7, "B": None}, "ok": True}))
    assert {(m["key"], m["value"], m["step"]) for m in final_metrics(tmp_path, 0)} == {
        ("test_n", 9.0, 3), ("test_macro_auc", 0.8, 3), ("test_best_epoch", 3.0, 3), ("test_per_class_auc/A", 0.7, 3)}
    (tmp_path / "history.csv").write_text("epoch\n0\n")
    (tmp_path / "figures" / "val").mkdir(parents=True)
    (tmp_path / "figures" / "val" / "a.png").write_bytes(b"png")
    (tmp_path / "chart.png").write_bytes(b"png")
    (tmp_path / "predictions_test").mkdir()
    for name in ("x_overlay.png", "x_heart.png"):  # segmentation: the overlay is a figure, the mask is not
        (tmp_path / "predictions_test" / name).write_bytes(b"png")
    assert artifact_files(tmp_path) == [["metrics.json", None], ["history.csv", None], ["chart.png", None],
                                        ["predictions_test/x_overlay.png", "predictions_test"],
                                        ["figures/val/a.png", "figures/val"]]


def test_tracking_keys_validate_and_mlflow_is_required_only_when_on(monkeypatch):
    cfg = load_config(CONFIG)
    assert cfg.tracking.mlflow.uri is None
    with pytest.raises(ConfigError, match="tracking.mlflow.parent_run_id"):
        load_config(CONFIG, ["tracking.mlflow.parent_run_id=abc"])
    for module in ("mlflow", "mlflow.entities", "mlflow.tracking", "mlflow.utils.mlflow_tags"):
        monkeypatch.setitem(sys.modules, module, None)  # as if the track extra were not installed
    monkeypatch.delitem(sys.modules, "spft.tracking.mlflow", raising=False)
    from spft.tracking import require

    require(cfg)  # tracking off: MLflow is never imported
    with pytest.raises(DependencyError, match=r"pip install 'spft\[track\]'"):
        require(load_config(CONFIG, ["tracking.mlflow.uri=http://127.0.0.1:1"]))


# --- a real server --------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_train_is_tracked_live_and_resume_continues_the_same_run(spft_cache, mlflow_uri, client, tmp_path):
    run = tmp_path / "run"
    args = ["train", CONFIG, *tiny_overrides(run, n_images=160, epochs=2), f"tracking.mlflow.uri={mlflow_uri}",
            "tracking.mlflow.experiment=spft-tests", "tracking.mlflow.tags={team: imaging}"]
    # killed (os._exit) once epoch 0's checkpoint is written: epoch 0 is already on the server
    proc = run_cli(*args, env=crash_after_epoch(0), check=False)
    assert proc.returncode == 17, proc.stderr
    run_id = json.loads((run / "tracking.json").read_text())["run_id"]
    assert client.get_run(run_id).info.status == "RUNNING"
    assert _steps(client, run_id, "val_loss") == [0]

    proc = run_cli("train", "--resume", str(run))
    warnings = [line for line in proc.stderr.lower().splitlines()
                if "warning" in line and "auc undefined" not in line]  # the data's own warnings are not tracking's
    assert warnings == [] and not (run / UNSENT_FILE).exists(), warnings
    assert proc.stdout.strip().splitlines()[-1] == str(run)  # MLflow prints nothing on stdout
    state = json.loads((run / "tracking.json").read_text())
    assert state["run_id"] == run_id and state["epochs"] == [0, 1] and state["status"] == "FINISHED"
    got = client.get_run(run_id)
    assert got.info.status == "FINISHED" and got.info.run_name == "run"
    assert client.get_experiment(got.info.experiment_id).name == "spft-tests"
    # params: the resolved config, flat and as text
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert got.data.params["optim.lr_head"] == json.dumps(resolved["optim"]["lr_head"])
    assert got.data.params["trainer.max_epochs"] == "2"
    assert got.data.params["model.config.hidden_size"] == "32" and got.data.params["task"] == "classification"
    # every history.csv column per epoch, each epoch once (the resumed run did not send epoch 0 again)
    history = (run / "history.csv").read_text().splitlines()
    assert len(history) == 3
    for key in ("val_auc_ema", "val_loss", "stage", "open_blocks", "train_loss"):
        assert _steps(client, run_id, key) == [0, 1], key
    assert [m.value for m in sorted(client.get_metric_history(run_id, "stage"), key=lambda m: m.step)] == [1, 2]
    # metrics.json at the end, once
    metrics = json.loads((run / "metrics.json").read_text())
    assert got.data.metrics["test_macro_auc"] == pytest.approx(metrics["macro_auc"])
    assert len(client.get_metric_history(run_id, "test_macro_auc")) == 1
    tags = got.data.tags
    sha = json.loads((run / "env.json").read_text())["git_sha"]  # the checkout's HEAD when the run started
    assert tags["mlflow.source.git.commit"] == sha and len(sha) == 40
    assert (tags["spft.task"], tags["spft.dataset"], tags["team"]) == ("classification", "phantom", "imaging")
    assert tags["spft.stage2_start_epoch"] == "1" and tags["spft.run_dir"] == str(run.resolve())
    assert {"metrics.json", "history.csv", "config.yaml", "class_weights.json", "thresholds.json",
            "env.json"} <= _artifacts(client, run_id)


@pytest.mark.slow
def test_a_server_that_is_down_never_stops_training_and_push_sends_later(spft_cache, mlflow_uri, client, tmp_path):
    run = tmp_path / "offline"
    dead = f"http://127.0.0.1:{_free_port()}"  # nothing listens there
    start = time.time()
    proc = run_cli("train", CONFIG, *tiny_overrides(run, n_images=160, epochs=2), f"tracking.mlflow.uri={dead}")
    assert (run / "DONE").is_file()
    warnings = [line for line in proc.stderr.splitlines() if "MLflow" in line]
    assert len(warnings) == 1 and dead in warnings[0] and "Connection refused" in warnings[0], proc.stderr
    assert f"spft track push {run}" in warnings[0]
    unsent = [json.loads(line) for line in (run / UNSENT_FILE).read_text().splitlines()]
    assert [r["kind"] for r in unsent] == ["run", "params", "metrics", "metrics", "tags", "metrics", "artifacts",
                                           "status"]
    assert all({"kind", "payload", "time"} <= set(r) for r in unsent)
    assert unsent[-1]["payload"]["status"] == "FINISHED"
    assert time.time() - start < 120

    push = run_cli("track", "push", str(run), "--uri", mlflow_uri)
    assert "8 unsent record(s) sent, 0 more epoch(s)" in push.stdout
    assert not (run / UNSENT_FILE).exists()
    run_id = json.loads((run / "tracking.json").read_text())["run_id"]
    got = client.get_run(run_id)
    assert got.info.status == "FINISHED" and got.data.params["recipe.stage1_epochs"] == "1"
    assert _steps(client, run_id, "val_auc_ema") == [0, 1]
    assert {"metrics.json", "history.csv"} <= _artifacts(client, run_id)
    from spft.tracking import push

    assert push(run)["unsent_sent"] == 0 and push(run)["epochs"] == 0  # nothing left: nothing sent twice
    assert _steps(client, run_id, "val_auc_ema") == [0, 1]


class _Attempt:
    """A stand-in engine attempt: two epochs of history rows, each followed by the engine's epoch listeners."""

    primary = True

    def __init__(self, run_dir: Path, fail: bool) -> None:
        self.run_dir, self.fail, self.epoch_listeners = run_dir, fail, []

    def records(self) -> dict:
        return {}

    def fit(self) -> None:
        from spft.atomic import atomic_write_csv

        rows = []
        for epoch in range(2):
            rows.append({"epoch": epoch, "stage": 1 + epoch, "val_dice_ema": 0.5 + epoch / 10})
            atomic_write_csv(self.run_dir / "history.csv", rows)
            for listener in self.epoch_listeners:
                listener()
            (self.run_dir / "checkpoints").mkdir(exist_ok=True)
            (self.run_dir / "checkpoints" / "stand-in.ckpt").write_bytes(b"x")  # keeps a failed run's folder
        if self.fail:
            raise RuntimeError("boom")

    def load_best(self):
        return None

    def test(self, best) -> None:
        (self.run_dir / "metrics.json").write_text(json.dumps({"split": "test", "n": 4, "mean_dice": 0.7}))


def test_the_shared_lifecycle_tracks_segmentation_and_wires_detection(mlflow_uri, client, tmp_path, monkeypatch):
    from spft.tasks.lifecycle import Unguarded, start_run

    class Engine(Unguarded):
        checkpoint_names = ("best.ckpt", "last.ckpt")

        def __init__(self, fail: bool) -> None:
            self.fail = fail

        def setup(self, cfg, run_dir, resume_from, guard):
            return _Attempt(run_dir, self.fail)

    for name, fail in (("seg", False), ("seg_failed", True)):
        cfg = load_config("configs/phantom_segment_sam2.yaml", [f"run.dir={tmp_path / name}",
                                                                f"tracking.mlflow.uri={mlflow_uri}"])
        if fail:
            with pytest.raises(RuntimeError, match="boom"):
                start_run(cfg, Engine(fail))
        else:
            start_run(cfg, Engine(fail))
        state = json.loads((tmp_path / name / "tracking.json").read_text())
        got = client.get_run(state["run_id"])
        assert got.data.tags["spft.task"] == "segmentation" and got.info.run_name == name
        assert _steps(client, state["run_id"], "val_dice_ema") == [0, 1]
        assert got.info.status == ("FAILED" if fail else "FINISHED")
        assert ("test_mean_dice" in got.data.metrics) is not fail
    # the server down for a first attempt (killed by an error), back for --resume: what was queued goes out first,
    # into one MLflow run, and no epoch twice
    import requests
    from mlflow.tracking import MlflowClient

    from spft.tasks.lifecycle import resume_run

    down = [True]
    search = MlflowClient.search_experiments

    def flaky(self, *args, **kwargs):
        if down[0]:
            raise requests.exceptions.ConnectionError("[Errno 111] Connection refused")
        return search(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "search_experiments", flaky)
    run = tmp_path / "seg_resumed"
    cfg = load_config("configs/phantom_segment_sam2.yaml", [f"run.dir={run}", f"tracking.mlflow.uri={mlflow_uri}"])
    with pytest.raises(RuntimeError, match="boom"):
        start_run(cfg, Engine(fail=True))
    assert json.loads((run / "tracking.json").read_text())["run_id"] is None
    assert [json.loads(line)["kind"] for line in (run / UNSENT_FILE).read_text().splitlines()] == [
        "run", "params", "metrics", "metrics", "tags", "artifacts", "status"]
    down[0] = False
    resume_run(run, Engine(fail=False))
    state = json.loads((run / "tracking.json").read_text())
    assert not (run / UNSENT_FILE).exists() and state["status"] == "FINISHED"
    assert client.get_run(state["run_id"]).info.status == "FINISHED"
    assert _steps(client, state["run_id"], "val_dice_ema") == [0, 1]
    # detection: the lifecycle's listeners become Ultralytics on_fit_epoch_end callbacks
    from spft.tasks.detection import train as detection_train

    calls, registered = [], {}

    class Trainer:
        def __init__(self, overrides, spft_cfg, run_dir):
            pass

        def add_callback(self, event, fn):
            registered.setdefault(event, []).append(fn)

        def train(self):
            for fn in registered["on_fit_epoch_end"]:
                fn(self)

    monkeypatch.setattr(detection_train, "_trainer_class", lambda cfg: Trainer)
    cfg = load_config("configs/phantom_detect_yolov8.yaml", [f"run.dir={tmp_path / 'det'}"])
    attempt = detection_train.DetectionAttempt(cfg, tmp_path / "det", None, tmp_path / "data.yaml", {})
    attempt.epoch_listeners.append(lambda: calls.append("epoch"))
    attempt.fit()
    assert calls == ["epoch"] and list(registered) == ["on_fit_epoch_end"]
    from spft.experiments.lock import release_run_locks

    release_run_locks()


@pytest.mark.slow
def test_a_sweep_has_a_parent_run_with_the_report_attached(spft_cache, mlflow_uri, client, tmp_path):
    out = tmp_path / "sweep"
    overrides = [o for o in tiny_overrides(Path("unused"), n_images=160, epochs=1) if not o.startswith("run.dir=")]
    args = ["repeat", CONFIG, *overrides, f"tracking.mlflow.uri={mlflow_uri}", "--seeds", "0,1", "--out", str(out)]
    run_cli(*args)
    parent = json.loads((out / "tracking.json").read_text())["run_id"]
    got = client.get_run(parent)
    assert got.info.status == "FINISHED" and got.info.run_name == "sweep"
    assert (got.data.tags["spft.kind"], got.data.tags["spft.study"]) == ("repeat", "repeat")
    for seed in (0, 1):
        run = out / "base" / f"seed{seed}"
        child = client.get_run(json.loads((run / "tracking.json").read_text())["run_id"])
        assert child.data.tags["mlflow.parentRunId"] == parent and child.info.run_name == f"base/seed{seed}"
        assert child.info.status == "FINISHED" and child.info.experiment_id == got.info.experiment_id
        assert yaml.safe_load((run / "config.yaml").read_text())["tracking"]["mlflow"]["parent_run_id"] == parent
    again = plan_sweep(CONFIG, [0, 1], (*overrides, f"tracking.mlflow.uri={mlflow_uri}"), out=out)  # a re-run:
    assert [r.action for r in again.runs] == ["skip", "skip"]  # the same parent run, continued
    assert json.loads((out / "tracking.json").read_text())["run_id"] == parent
    run_cli("report", str(out), "--bootstrap", "20")
    assert {"report/report.html", "report/report.json", "report/tables"} <= _artifacts(client, parent, "report")


# --- an untrusted queue (a run directory from elsewhere) ------------------------------------------------------------

def _tracked_folder(tmp_path: Path, client, mlflow_uri: str, records: list[dict]) -> tuple[Path, str]:
    """A sweep-like folder tracked as a real MLflow run, whose tracking_unsent.jsonl holds ``records``."""
    folder = tmp_path / "from_elsewhere"
    folder.mkdir()
    experiment = client.create_experiment(f"untrusted-{time.time_ns()}")
    run_id = client.create_run(experiment).info.run_id
    (folder / "tracking.json").write_text(json.dumps({"uri": mlflow_uri, "experiment_id": experiment,
                                                      "run_id": run_id}))
    (folder / UNSENT_FILE).write_text("".join(json.dumps({"kind": k, "payload": p}) + "\n" for k, p in records))
    return folder, run_id


@pytest.mark.parametrize("where", ["absolute", "dotdot", "link"])
def test_push_never_sends_a_file_outside_the_folder(where, tmp_path, client, mlflow_uri):
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    rel = {"absolute": str(secret), "dotdot": "../secret.txt", "link": "innocent.txt"}[where]
    folder, run_id = _tracked_folder(tmp_path, client, mlflow_uri, [
        ("metrics", {"metrics": [{"key": "x", "value": 1.0, "timestamp": 0, "step": 0}]}),
        ("artifacts", {"files": [[rel, None]]})])
    if where == "link":
        (folder / "innocent.txt").symlink_to(secret)
    proc = run_cli("track", "push", str(folder), check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "record 2 (artifacts)" in lines[0] and "nothing was sent" in lines[0], lines
    assert _artifacts(client, run_id) == set()
    assert client.get_metric_history(run_id, "x") == []  # refused before anything went out
    assert len((folder / UNSENT_FILE).read_text().splitlines()) == 2  # the queue is left for the user to inspect


def test_push_sends_a_file_inside_the_folder(tmp_path, client, mlflow_uri):
    folder, run_id = _tracked_folder(tmp_path, client, mlflow_uri, [("artifacts", {"files": [["notes.txt", None]]}),
                                                                  ("status", {"status": "FINISHED"})])
    (folder / "notes.txt").write_text("inside")
    run_cli("track", "push", str(folder))
    assert _artifacts(client, run_id) == {"notes.txt"} and client.get_run(run_id).info.status == "FINISHED"
    assert not (folder / UNSENT_FILE).exists()


def test_push_refuses_an_unknown_record_kind(tmp_path, client, mlflow_uri):
    folder, run_id = _tracked_folder(tmp_path, client, mlflow_uri, [("shell", {"cmd": "rm -rf ~"})])
    proc = run_cli("track", "push", str(folder), check=False)
    assert proc.returncode == 2 and "record 1 (shell) is not a record spft writes" in proc.stderr


# --- a file-store URI (MLflow 3 keeps ./mlruns in maintenance mode and raises on it) ---------------------------------

def _mlflow_has_file_store_switch() -> bool:
    try:
        from mlflow.environment_variables import MLFLOW_ALLOW_FILE_STORE  # noqa: F401 - MLflow >= 3.13
    except ImportError:  # no MLflow, or one whose file store still works (spft then allows it)
        return False
    return True


needs_file_store_switch = pytest.mark.skipif(not _mlflow_has_file_store_switch(),
                                             reason="this MLflow has no file-store maintenance mode")


@needs_file_store_switch
@pytest.mark.parametrize("uri", ["file:///{tmp}/mlruns", "file:./mlruns", "{tmp}/mlruns"])
def test_push_to_a_file_store_is_one_line_before_anything(uri, tmp_path):
    """`spft track push --uri file:///...` (issue 20 item 6): MLflow 3.x's file store raises MlflowException unless
    MLFLOW_ALLOW_FILE_STORE is set; spft says so in one line, exit 2, pointing at sqlite, and creates nothing."""
    folder = tmp_path / "sweep"
    folder.mkdir()
    (folder / UNSENT_FILE).write_text(json.dumps({"kind": "status", "payload": {"status": "FINISHED"}}) + "\n")
    uri = uri.format(tmp=tmp_path)
    proc = run_cli("track", "push", str(folder), "--uri", uri, check=False, env={"MLFLOW_ALLOW_FILE_STORE": "false"})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert f"--uri {uri}: MLflow" in lines[0] and "file store is in maintenance mode" in lines[0]
    assert "sqlite:///" in lines[0] and "MLFLOW_ALLOW_FILE_STORE=true" in lines[0]
    assert not (tmp_path / "mlruns").exists() and len((folder / UNSENT_FILE).read_text().splitlines()) == 1


@needs_file_store_switch
def test_train_with_a_file_store_uri_is_refused_before_the_run_starts(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli("train", "phantom_cxr", *tiny_overrides(run_dir, extra=(f"tracking.mlflow.uri=file://{tmp_path}/m",)),
                   check=False, env={"MLFLOW_ALLOW_FILE_STORE": "false"})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "tracking.mlflow.uri file://" in lines[-1] and "maintenance mode" in lines[-1]
    assert not (run_dir / "history.csv").exists() and not (tmp_path / "m").exists()
