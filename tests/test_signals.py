"""SIGTERM / SIGINT through the real CLI (issue 12): exit 143 / 130, one ``interrupted at epoch N; resume with ...``
line, no DONE, and ``--resume`` finishes with the history of an uninterrupted run. DataLoader workers = 2; the
Ctrl+C case signals the whole process group, workers included, as a terminal does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO, run_cli, tiny_overrides

pytestmark = pytest.mark.slow

sys.path.insert(0, str(REPO / "scripts"))
import fault_inject  # noqa: E402

CONFIG = "configs/phantom_cxr.yaml"
EXTRA = ("data.num_workers=2",)


@pytest.fixture(scope="module")
def reference(spft_cache, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ref") / "straight"
    run_cli("train", CONFIG, *tiny_overrides(run_dir, extra=EXTRA))
    return run_dir


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_after_the_first_checkpoint_exits_128_plus_signal_and_resumes(reference, tmp_path, signum):
    run_dir = tmp_path / "signalled"
    env = {**os.environ, "PYTHONPATH": str(REPO / "scripts"), "SPFT_TEST_CALLBACK": "fault_inject:KillAt",
           "SPFT_SLOW_STEP": "0.1"}  # 0.1 s per step: the signal lands inside a later epoch
    proc = subprocess.Popen([sys.executable, "-m", "spft.cli", "train", CONFIG, *tiny_overrides(run_dir, extra=EXTRA)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.time() + 120
    while not (run_dir / "checkpoints" / "last.ckpt").is_file() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    if signum == signal.SIGINT:
        os.killpg(proc.pid, signum)  # Ctrl+C: the main process and its DataLoader workers
    else:
        proc.send_signal(signum)  # SLURM / Kubernetes: the main process
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err
    lines = [line for line in err.splitlines() if "interrupted at epoch" in line]
    assert len(lines) == 1 and lines[0].endswith(f"; resume with spft train --resume {run_dir}"), err
    assert "Received SIGTERM" not in err  # Lightning's own notice (after Ctrl+C it named the wrong signal)
    assert not (run_dir / "DONE").exists()
    assert out.strip() == ""  # no result, no run directory line: the run did not finish
    resumed = run_cli("train", "--resume", str(run_dir))
    assert resumed.stdout.strip().splitlines()[-1] == str(run_dir)
    assert fault_inject.differences(run_dir, reference) == []
