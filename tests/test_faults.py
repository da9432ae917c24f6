"""Fault injection in the suite: one tiny run with DataLoader workers, killed inside a file write (SIGKILL), at a
random training batch (SIGKILL) and by SIGTERM, resumed after each, must equal the uninterrupted run in every record;
one more run is moved to a new folder and made read-only between kills.

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


@pytest.fixture(scope="module")
def reference(spft_cache, tmp_path_factory):
    return fault_inject.reference_run(tmp_path_factory.mktemp("faults"), spft_cache, epochs=4)


def test_three_kill_points_and_the_run_equals_an_uninterrupted_one(reference, spft_cache, tmp_path):
    seed = random.randrange(10_000)
    rng = random.Random(seed)
    kinds = ["write", "sigkill", "sigterm"]
    rng.shuffle(kinds)
    lines: list[str] = []
    cache = fault_inject.campaign_cache(tmp_path, spft_cache, "attacked")
    kills, problems = fault_inject.campaign(tmp_path / "attacked", cache, reference, 4, kinds, rng, log=lines.append)
    report = f"seed {seed}, attacks {kinds}:\n" + "\n".join(lines)
    assert not problems, report + "\n" + "\n".join(problems)
    assert kills == 3, report  # every planned kill lands
    print(report)


def test_a_moved_and_a_read_only_run_resume_to_the_uninterrupted_one(reference, spft_cache, tmp_path):
    """Killed in epoch 1, moved to a new name, resumed there; killed inside a later write, made read-only (the
    resume refuses in one line and changes nothing), made writable, resumed to the end: equal in every record."""
    seed = random.randrange(10_000)
    lines: list[str] = []
    cache = fault_inject.campaign_cache(tmp_path, spft_cache, "moved")
    kills, problems = fault_inject.campaign(tmp_path / "moved", cache, reference, 4, ["sigkill", "write"],
                                            random.Random(seed), log=lines.append, modifiers=["relocated", "read-only"])
    report = f"seed {seed}:\n" + "\n".join(lines)
    assert not problems, report + "\n" + "\n".join(problems)
    assert kills == 2 and "relocated -> moved~moved1" in report and "read-only: refused, unchanged" in report, report
    assert not (tmp_path / "moved").exists()


def test_a_resumed_csv_log_keeps_lightnings_bytes(tmp_path):
    """Dropping the rows of an epoch cut short keeps the other lines as Lightning wrote them (CRLF): a resumed run's
    metrics.csv is byte-identical to an uninterrupted run's (it was rewritten with LF, then appended with CRLF)."""
    from spft.tasks.lightning.trainer import _KeepingWriter

    text = "epoch,step,val/auc\r\n0.0,5,\r\n0,5,0.5\r\n1,11,0.6\r\n2,17,0.7\r\n"
    (tmp_path / "metrics.csv").write_bytes(text.encode())
    _KeepingWriter(str(tmp_path)).keep_epochs_before(1)
    assert (tmp_path / "metrics.csv").read_bytes() == b"epoch,step,val/auc\r\n0.0,5,\r\n0,5,0.5\r\n"


def test_an_evaluation_loader_leaves_the_global_rng_alone():
    """With persistent workers an uninterrupted run creates the validation iterator once, a resumed run once more in
    its first epoch: drawn from the global RNG, that base seed left the resumed epoch's checkpoint with another
    recorded RNG state than the uninterrupted run's (found by the harness: ``/spft/rng/torch`` differed)."""
    from types import SimpleNamespace

    import torch
    from torch.utils.data import TensorDataset

    from spft.tasks.lightning.data import SplitDataModule

    ds = TensorDataset(torch.arange(8.0))
    cfg = SimpleNamespace(num_workers=0, pin_memory=False, prefetch_factor=None)
    dm = SplitDataModule({"train": ds, "val": ds, "test": ds}, cfg, batch_size=4, eval_batch_size=4, seed=0)
    torch.manual_seed(1)
    before = torch.get_rng_state()
    for split in ("val", "test"):
        next(iter(dm.loader(split, rank=0, world=1)))
    assert torch.equal(torch.get_rng_state(), before)


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
