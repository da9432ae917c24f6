"""Run-directory safety through the real CLI: crafted and damaged checkpoints, one writer per run, a failed start,
a damaged config.yaml, a full disk, an unwritable feature cache, and the feature cache's cap and `spft cache`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_cli, tiny_overrides
from run_hooks import crash_after_epoch

from spft.experiments import checkpoints as ck
from spft.experiments.lock import LOCK, RunLock
from spft.tasks.classification import feature_store

CONFIG = "configs/phantom_cxr.yaml"


def _small(run_dir: Path, epochs: int = 2, extra: tuple[str, ...] = ()) -> list[str]:
    return tiny_overrides(run_dir, n_images=120, epochs=epochs, extra=extra)


@pytest.fixture(scope="module")
def trained(spft_cache, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("safety") / "run"
    run_cli("train", CONFIG, *_small(run_dir))
    return run_dir


def _copy_run(run_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(run_dir, target)
    return target


class _Payload:
    """Unpickling this runs ``touch MARKER`` — what a crafted checkpoint does to ``torch.load(weights_only=False)``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _craft(path: Path, marker: Path) -> None:
    torch.save({"state_dict": {}, "epoch": 0, "payload": _Payload(marker)}, path)


@pytest.mark.slow
def test_checkpoints_are_separate_files_with_recorded_digests(trained):
    ckpts = trained / "checkpoints"
    last, best = ckpts / "last.ckpt", ckpts / "best.ckpt"
    assert not os.path.samestat(last.stat(), best.stat()), "last.ckpt must not share an inode with best.ckpt"
    digests = json.loads((ckpts / ck.DIGESTS).read_text())
    assert ck.file_digest(last) in digests["last.ckpt"] and ck.file_digest(best) in digests["best.ckpt"]
    assert not (trained / LOCK).exists(), "the run lock is released when the command ends"


@pytest.mark.slow
def test_crafted_checkpoint_never_runs_code(trained, tmp_path):
    run_dir = _copy_run(trained, tmp_path)
    marker = tmp_path / "pwned"
    for name in ("best.ckpt", "last.ckpt"):
        _craft(run_dir / "checkpoints" / name, marker)
    # with the digests spft recorded: both files are refused as damaged before anything is unpickled
    proc = run_cli("evaluate", str(run_dir), check=False)
    assert proc.returncode == 2, proc.stderr
    assert "every checkpoint in" in proc.stderr and "damaged" in proc.stderr
    assert not marker.exists()
    # without digests (a run copied without digests.json): torch.load(weights_only=True) refuses the pickle
    (run_dir / "checkpoints" / ck.DIGESTS).unlink()
    proc = run_cli("evaluate", str(run_dir), check=False)
    assert proc.returncode == 2, proc.stderr
    assert "refused to load" in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists()
    proc = run_cli("train", "--resume", str(run_dir), check=False)  # DONE: nothing loaded; evaluate is the path
    assert not marker.exists()


@pytest.mark.slow
def test_damaged_best_falls_back_to_intact_last_with_a_warning(trained, tmp_path):
    run_dir = _copy_run(trained, tmp_path)
    best = run_dir / "checkpoints" / "best.ckpt"
    best.write_bytes(best.read_bytes()[: best.stat().st_size // 2])  # truncated
    proc = run_cli("evaluate", str(run_dir), "--json")
    assert f"{best} is damaged" in proc.stderr and "using" in proc.stderr
    assert json.loads(proc.stdout)["macro_auc"] is not None


@pytest.mark.slow
def test_truncated_last_ckpt_resumes_from_best(spft_cache, tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli("train", CONFIG, *_small(run_dir, epochs=3), env=crash_after_epoch(1), check=False)
    assert proc.returncode != 0 and not (run_dir / "DONE").exists()
    last = run_dir / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    (run_dir / "checkpoints" / ".last.ckpt.abc123.tmp").write_bytes(b"left by a killed write")
    proc = run_cli("train", "--resume", str(run_dir))
    assert f"{last} is damaged" in proc.stderr
    assert (run_dir / "DONE").is_file()
    assert not list(run_dir.rglob(".*.tmp")), "temp files of killed writes are removed on resume"
    assert ck.is_intact(last)


@pytest.mark.slow
def test_second_writer_is_refused_naming_the_holder(spft_cache, tmp_path):
    run_dir = tmp_path / "run"
    held, release = tmp_path / "held", tmp_path / "release"
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests"), "SPFT_TEST_CALLBACK": "run_hooks:HoldUntilReleased",
           "SPFT_HELD_FILE": str(held), "SPFT_RELEASE_FILE": str(release)}
    first = subprocess.Popen([sys.executable, "-m", "spft.cli", "train", CONFIG, *_small(run_dir, epochs=3)],
                             cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not held.exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert held.exists(), "the first run should be in its second epoch, holding the run lock"
        second = run_cli("train", CONFIG, *_small(run_dir), check=False)
        assert second.returncode == 2, second.stderr
        assert f"PID {first.pid}" in second.stderr and "in use by" in second.stderr
        resumer = run_cli("train", "--resume", str(run_dir), check=False)
        assert resumer.returncode == 2 and f"PID {first.pid}" in resumer.stderr
        evaluator = run_cli("evaluate", str(run_dir), check=False)
        assert evaluator.returncode == 2 and f"PID {first.pid}" in evaluator.stderr
        release.touch()
        out, err = first.communicate(timeout=300)
    finally:
        release.touch()
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err
    assert (run_dir / "DONE").is_file() and not (run_dir / LOCK).exists()


def test_stale_lock_of_a_dead_process_does_not_block(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # what a kill -9 leaves: the file with the dead holder's details, but no flock (the kernel dropped it)
    (run_dir / LOCK).write_text(json.dumps({"pid": 999999, "host": "gone", "purpose": "train"}))
    with RunLock(run_dir, "test"):
        assert json.loads((run_dir / LOCK).read_text())["pid"] == os.getpid()
        with pytest.raises(FileExistsError, match=f"PID {os.getpid()}"):
            RunLock(run_dir, "other").acquire()
    assert not (run_dir / LOCK).exists()


@pytest.mark.slow
def test_failed_start_leaves_no_directory(spft_cache, tmp_path):
    run_dir = tmp_path / "run"
    csv = tmp_path / "labels.csv"
    csv.write_text("Image Index,Patient ID,a\nmissing.png,p1,1\n")
    proc = run_cli("train", CONFIG, *tiny_overrides(run_dir, epochs=2, phantom=False), "data.name=csv",
                   f"data.csv={csv}", f"data.root={tmp_path}",
                   "data.label_columns=[a]", "recipe.class_weights.heuristic={}", check=False)
    assert proc.returncode == 2, proc.stderr
    assert not run_dir.exists(), "a start that failed before its first checkpoint leaves nothing behind"


@pytest.mark.slow
def test_damaged_config_yaml_is_one_line(trained, tmp_path):
    run_dir = _copy_run(trained, tmp_path)
    (run_dir / "config.yaml").write_text("seed: [unclosed\n")
    for args in (("evaluate", str(run_dir)), ("train", "--resume", str(run_dir))):
        proc = run_cli(*args, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert f"{run_dir / 'config.yaml'} is damaged" in proc.stderr


def _fsize_limit(limit: int):
    def apply():  # runs in the child: writes past `limit` bytes fail with EFBIG, as on a full disk
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.mark.slow
def test_full_disk_while_writing_a_checkpoint(spft_cache, tmp_path):
    """A checkpoint write fails (RLIMIT_FSIZE makes the kernel refuse it, as a full disk would): one line naming the
    file, non-zero exit, the last good checkpoint kept; after "freeing space" --resume finishes the run."""
    run_dir = tmp_path / "run"
    run_cli("train", CONFIG, *_small(run_dir, epochs=3), "trainer.feature_cache=false",
            env=crash_after_epoch(0), check=False)
    last = run_dir / "checkpoints" / "last.ckpt"
    good = last.read_bytes()
    # stage 2 adds optimizer state for the opened block: the next checkpoint is larger than this limit allows
    cmd = [sys.executable, "-m", "spft.cli", "train", "--resume", str(run_dir)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          preexec_fn=_fsize_limit(len(good) + 2000))
    assert proc.returncode == 2, proc.stderr
    assert "no space left writing" in proc.stderr and ".ckpt" in proc.stderr and "Traceback" not in proc.stderr
    assert last.read_bytes() == good and ck.is_intact(last)
    assert not list(run_dir.rglob(".*.tmp")) and not (run_dir / "DONE").exists()
    run_cli("train", "--resume", str(run_dir))
    assert (run_dir / "DONE").is_file()


@pytest.mark.slow
def test_unwritable_feature_cache_warns_and_trains_on(spft_cache, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "features").write_text("a file where the feature cache's folder would be")  # writes there fail
    run_dir = tmp_path / "run"
    proc = run_cli("train", CONFIG, *_small(run_dir), env={"SPFT_CACHE": str(cache)}, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "training on without persisting" in proc.stderr
    assert (run_dir / "DONE").is_file()


def test_store_evicts_least_recently_used_entries(tmp_path, monkeypatch):
    root = tmp_path / "features"
    for i, key in enumerate(("old", "mid", "new")):
        folder = root / key
        folder.mkdir(parents=True)
        (folder / "train.npy").write_bytes(b"\0" * 1000)
        os.utime(folder, (1000 + i, 1000 + i))
    feature_store.touch(root / "old")  # used just now: "mid" is now the least recently used
    removed = feature_store.evict(2100, keep=("new",), root=root)
    assert [e.key for e in removed] == ["mid"]
    assert sorted(p.name for p in root.iterdir()) == ["new", "old"]
    monkeypatch.setenv(feature_store.MAX_GB_ENV, "0.000001")
    assert feature_store.max_bytes() == 1000
    monkeypatch.setenv(feature_store.MAX_GB_ENV, "lots")
    with pytest.raises(ValueError, match="SPFT_CACHE_MAX_GB"):
        feature_store.max_bytes()


@pytest.mark.slow
def test_cache_cli_lists_and_cleans(trained, spft_cache):
    listing = run_cli("cache", "list").stdout
    assert "train" in listing and "entr" in listing
    assert run_cli("cache", "clean", "--all").stdout.startswith("removed ")
    assert "0 entries" in run_cli("cache", "list").stdout


def test_a_start_killed_before_config_yaml_leaves_a_reusable_folder(tmp_path):
    """SIGKILL between creating the run directory and writing config.yaml leaves the lock file (no flock: the kernel
    dropped it), maybe a temp file and empty log folders: no run, so the same run.dir can be used again; a folder
    with a recorded run (or anything else) is still refused."""
    from spft.config import load_config
    from spft.experiments.lock import release_run_locks
    from spft.experiments.rundir import create_run_dir

    run_dir = tmp_path / "run"
    (run_dir / "logs").mkdir(parents=True)
    (run_dir / LOCK).write_text(json.dumps({"pid": 999999}))
    (run_dir / ".config.yaml.abc.tmp").write_text("half")
    cfg = load_config(REPO / CONFIG, [f"run.dir={run_dir}"])
    try:
        assert create_run_dir(cfg) == run_dir
    finally:
        release_run_locks()
    (run_dir / "config.yaml").write_text("seed: 0\n")
    with pytest.raises(FileExistsError, match="already holds a run"):
        create_run_dir(load_config(REPO / CONFIG, [f"run.dir={run_dir}"]))
    release_run_locks()


def test_a_killed_holder_frees_the_run_even_while_its_forked_workers_live(tmp_path):
    """kill -9 of `spft train` with DataLoader workers: the lock dies with the holder, not with the last orphaned
    worker (which shares the locked file through fork), so an immediate --resume is not refused."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()  # spft train creates the folder, then locks it (lock_run never creates a run's folder)
    ready_r, ready_w = os.pipe()
    holder = os.fork()
    if holder == 0:  # the `spft train` stand-in: lock the run, fork a long-lived worker, then die at once
        try:
            from spft.experiments.lock import lock_run

            lock_run(run_dir, "train")
            if os.fork() == 0:  # the worker: keeps living (and keeps its inherited descriptors, if any)
                time.sleep(5)
                os._exit(0)
            os.write(ready_w, b"x")
        finally:
            os._exit(0)  # like kill -9: no atexit, no release
    os.close(ready_w)
    assert os.read(ready_r, 1) == b"x"
    os.waitpid(holder, 0)
    with RunLock(run_dir, "resume"):  # refused (RunDirError naming the dead PID) while a worker held the lock
        pass
