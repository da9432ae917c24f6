"""Fault injection in the suite: one tiny run with DataLoader workers, killed inside a file write (SIGKILL), at a
random training batch (SIGKILL) and by SIGTERM, resumed after each, must equal the uninterrupted run.

The harness is scripts/fault_inject.py (``--kills 20`` for a longer campaign; see benchmarks/RESULTS.md).
"""

from __future__ import annotations

import random
import sys

import pytest
from conftest import REPO

pytestmark = pytest.mark.slow

sys.path.insert(0, str(REPO / "scripts"))
import fault_inject  # noqa: E402


def test_three_kill_points_and_the_run_equals_an_uninterrupted_one(spft_cache, tmp_path):
    seed = random.randrange(10_000)
    rng = random.Random(seed)
    ref = fault_inject.reference_run(tmp_path, spft_cache, epochs=4)
    kinds = ["write", "sigkill", "sigterm"]
    rng.shuffle(kinds)
    lines: list[str] = []
    cache = fault_inject.campaign_cache(tmp_path, spft_cache, "attacked")
    kills, problems = fault_inject.campaign(tmp_path / "attacked", cache, ref, 4, kinds, rng, log=lines.append)
    report = f"seed {seed}, attacks {kinds}:\n" + "\n".join(lines)
    assert not problems, report + "\n" + "\n".join(problems)
    assert kills >= 3 or any("not reached" in line for line in lines), report
    print(report)


def test_the_fault_hook_kills_inside_a_write_and_resume_cleans_the_temp_file(spft_cache, tmp_path):
    run_dir = tmp_path / "run"
    # writes 1-3 are config.yaml, env.json, data.json: the 3rd leaves .data.json.*.tmp behind
    proc = fault_inject.spft("train", fault_inject.CONFIG, *fault_inject.overrides(run_dir, 2),
                             env={"SPFT_CACHE": str(spft_cache), "SPFT_FAULT_POINT": "3"})
    assert proc.returncode == -9 and "fault injection: SIGKILL during write 3" in proc.stderr, proc.stderr
    assert list(run_dir.glob(".data.json.*.tmp")), sorted(p.name for p in run_dir.iterdir())
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    (run_dir / "checkpoints" / ".last.ckpt.abc123.tmp").write_bytes(b"half a checkpoint")
    proc = fault_inject.spft("train", "--resume", str(run_dir), env={"SPFT_CACHE": str(spft_cache)})
    assert proc.returncode == 0, proc.stderr
    assert not fault_inject.stray_temps(run_dir)
    assert (run_dir / "DONE").is_file()
