"""Run directories from elsewhere are data, not instructions: a run moved or copied to another folder resumes
exactly as it would have in place (Lightning's checkpoint state holds absolute paths), and links or special files
planted in a run directory never make spft write outside it (issue 20, critical items 1 and 3)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import REPO, run_cli, tiny_overrides
from run_hooks import crash_after_epoch

from spft.atomic import check_tree, open_append, open_regular
from spft.errors import RunDirError
from spft.experiments.lock import LOCK, RunLock
from spft.tasks.lightning.trainer import LastCheckpoint, RelocatableCheckpoint

CONFIG = "configs/phantom_cxr.yaml"


class ReportBestScore(L.Callback):
    """Injected into a resumed run (``SPFT_TEST_CALLBACK=test_run_relocation:ReportBestScore``): writes the best
    score the checkpoint callback carries as training restarts to ``$SPFT_BEST_SCORE_FILE``."""

    def on_train_start(self, trainer, pl_module) -> None:
        score = trainer.checkpoint_callback.best_model_score
        Path(os.environ["SPFT_BEST_SCORE_FILE"]).write_text(json.dumps(None if score is None else float(score)))


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def straight(spft_cache, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("relocation") / "straight"
    run_cli("train", CONFIG, *tiny_overrides(run_dir))
    return run_dir


@pytest.mark.parametrize("how", ["moved", "copied"])
def test_a_moved_run_resumes_as_the_uninterrupted_run(straight, tmp_path, how):
    killed = tmp_path / "killed"
    proc = run_cli("train", CONFIG, *tiny_overrides(killed), env=crash_after_epoch(1), check=False)
    assert proc.returncode == 17, proc.stderr
    elsewhere = tmp_path / "elsewhere" / "run"
    elsewhere.parent.mkdir()
    if how == "moved":
        shutil.move(killed, elsewhere)
    else:
        shutil.copytree(killed, elsewhere)
    best_file = tmp_path / "best.json"
    env = {"PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]),
           "SPFT_TEST_CALLBACK": "test_run_relocation:ReportBestScore", "SPFT_BEST_SCORE_FILE": str(best_file)}
    proc = run_cli("train", "--resume", str(elsewhere), env=env)
    assert "dirpath has changed" not in proc.stderr
    # the best score of epochs 0-1 is carried into the resumed run (Lightning drops it when the folder moved)
    history = _rows(straight / "history.csv")
    best_before = max(float(r["val_auc_ema"]) for r in history[:2])
    assert json.loads(best_file.read_text()) == pytest.approx(best_before, abs=1e-6)
    for name in ("history.csv", "predictions_test.csv", "metrics.json", "thresholds.json", "calibration.json"):
        assert (elsewhere / name).read_text() == (straight / name).read_text(), name
    state = torch.load(elsewhere / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    saved = next(v for k, v in state["callbacks"].items() if k.startswith("ModelCheckpoint"))
    assert saved["dirpath"] == str((elsewhere / "checkpoints").resolve())
    assert set(saved["best_k_models"]) == {str((elsewhere / "checkpoints" / "best.ckpt").resolve())}
    if how == "copied":  # the original is untouched by the copy's resume
        assert not (killed / "DONE").exists()


def test_checkpoint_state_from_another_folder_keeps_its_best_score(tmp_path):
    old = {  # what Lightning saved in /old/run/checkpoints
        "monitor": "val/auc", "best_model_score": torch.tensor(0.9),
        "best_model_path": "/old/run/checkpoints/best.ckpt",
        "current_score": torch.tensor(0.8), "dirpath": "/old/run/checkpoints",
        "best_k_models": {"/old/run/checkpoints/best.ckpt": torch.tensor(0.9)},
        "kth_best_model_path": "/old/run/checkpoints/best.ckpt", "kth_value": torch.tensor(0.9),
        "last_model_path": ""}
    here = tmp_path / "checkpoints"
    cb = RelocatableCheckpoint(dirpath=here, filename="best", monitor="val/auc", mode="max")
    cb.load_state_dict(old)
    assert float(cb.best_model_score) == pytest.approx(0.9)
    assert cb.best_model_path == str(here.resolve() / "best.ckpt")
    assert set(cb.best_k_models) == {str(here.resolve() / "best.ckpt")}
    assert old["dirpath"] == "/old/run/checkpoints"  # the saved state itself is not modified
    # the state keys of checkpoints written before this class existed still match
    assert cb.state_key.startswith("ModelCheckpoint{")
    assert LastCheckpoint(cb, dirpath=here).state_key.startswith("LastCheckpoint{")


# --- links and special files planted in a run directory -------------------------------------------------------------

def test_a_linked_run_lock_is_refused_and_its_target_untouched(straight, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (run / LOCK).symlink_to(victim)
    proc = run_cli("evaluate", str(run), check=False)
    assert proc.returncode == 2, proc.stderr
    assert f"{run / LOCK} is a symbolic link" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert victim.read_text() == "precious\n"
    proc = run_cli("train", "--resume", str(run), check=False)
    assert proc.returncode == 2 and victim.read_text() == "precious\n"


@pytest.mark.parametrize("planted", ["logs_dir_link", "metrics_link", "fifo"])
def test_links_inside_a_run_are_refused_before_anything_is_written(straight, tmp_path, planted):
    run = tmp_path / "run"
    shutil.copytree(straight, run)
    outside = tmp_path / "outside"
    outside.mkdir()
    if planted == "logs_dir_link":
        shutil.rmtree(run / "logs")
        (run / "logs").symlink_to(outside, target_is_directory=True)
        name = run / "logs"
    elif planted == "metrics_link":
        (run / "metrics.json").unlink()
        (outside / "metrics.json").write_text("{}")
        (run / "metrics.json").symlink_to(outside / "metrics.json")
        name = run / "metrics.json"
    else:
        os.mkfifo(run / "thresholds.csv")
        name = run / "thresholds.csv"
    before = sorted(p.name for p in outside.iterdir())
    proc = run_cli("evaluate", str(run), check=False)
    assert proc.returncode == 2 and str(name) in proc.stderr, proc.stderr
    assert sorted(p.name for p in outside.iterdir()) == before
    assert not (run / LOCK).exists()  # the refused command leaves no lock behind


def test_open_regular_refuses_links_and_fifos(tmp_path):
    target = tmp_path / "target"
    target.write_text("x")
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(RunDirError, match="is a symbolic link"):
        open_regular(tmp_path / "link", os.O_RDWR | os.O_CREAT)
    with pytest.raises(RunDirError, match="is a symbolic link"):
        open_append(tmp_path / "link")
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(RunDirError, match="not a regular file"):
        open_append(tmp_path / "fifo")  # would block forever without a reader
    with open_append(tmp_path / "log") as fh:
        fh.write("line\n")
    assert (tmp_path / "log").read_text() == "line\n" and target.read_text() == "x"
    with pytest.raises(RunDirError):
        check_tree(tmp_path)
    with pytest.raises(RunDirError, match="is a symbolic link|not a regular file"):
        RunLock(tmp_path, "test").acquire()
    assert not (tmp_path / LOCK).exists()


# --- a read-only run (an archive, a read-only mount) ----------------------------------------------------------------

@pytest.fixture
def read_only_run(straight, tmp_path):
    """A copy of the finished run on a read-only file system: a tmpfs remounted read-only where this process may
    mount (root, as in CI), else a copy whose write bits are removed (an ordinary user cannot write there)."""
    mount = tmp_path / "ro"
    mount.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mount)]).returncode == 0
    run = mount / "run"
    shutil.copytree(straight, run)
    if mounted:
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
    else:
        for p in [run, *run.rglob("*")]:
            p.chmod(p.stat().st_mode & ~0o222)
    try:
        with pytest.raises(OSError):
            (run / "probe").write_text("x")
        yield run
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(mount)], check=True)
        else:
            for p in [run, *run.rglob("*")]:
                p.chmod(p.stat().st_mode | 0o200)


def test_a_read_only_run_evaluates_elsewhere_and_refuses_resume_in_one_line(read_only_run, tmp_path):
    out = tmp_path / "elsewhere"
    proc = run_cli("evaluate", str(read_only_run), "--out", str(out), "--json")
    assert json.loads(proc.stdout)["macro_auc"] is not None and any(out.glob("metrics*.json"))
    for args in (("evaluate", str(read_only_run)), ("train", "--resume", str(read_only_run))):
        proc = run_cli(*args, check=False)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and "is read-only" in lines[0], proc.stderr


def test_evaluate_of_a_missing_run_creates_nothing(tmp_path):
    proc = run_cli("evaluate", str(tmp_path / "runs" / "nope"), check=False)
    assert proc.returncode == 2 and "is not a run directory" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_check_tree_keeps_links_that_stay_inside_and_refuses_chains_that_leave(tmp_path):
    run, outside = tmp_path / "run", tmp_path / "outside.txt"
    (run / "slurm").mkdir(parents=True)
    outside.write_text("x")
    (run / "slurm" / "job.sh").write_text("#!/bin/sh\n")
    (run / "slurm" / ".submission_file_1.sh").symlink_to("job.sh")  # what submitit leaves: inside, harmless
    check_tree(run)
    (run / "hop").symlink_to(outside)  # a chain inside -> inside -> outside is followed to its end
    (run / "slurm" / "chain").symlink_to(run / "hop")
    with pytest.raises(RunDirError, match="leading outside the folder"):
        check_tree(run)
