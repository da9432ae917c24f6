"""``--resume`` equals an uninterrupted run with DataLoader workers (issue 11 §2), through the real CLI.

Workers prefetch from the iterator Lightning creates before it restores the checkpoint's epoch; without
:class:`spft.tasks.lightning.data.FreshEpochOrder` the first resumed epoch trained on epoch 0's order (and epoch 0's
augmentation draws). Each run is killed with SIGKILL at a random training batch (printed on failure), resumed, and
compared with the uninterrupted run: history.csv, predictions_test.csv, logs/metrics.csv and the best weights.
The uninterrupted runs also show that stdout holds results only (progress bars on stderr) and that the Lightning
warnings a user cannot act on are gone.
"""

from __future__ import annotations

import random
import sys

import pytest
from conftest import REPO, run_cli, tiny_overrides

pytestmark = pytest.mark.slow

sys.path.insert(0, str(REPO / "scripts"))
import fault_inject  # noqa: E402

CONFIG = "configs/phantom_cxr.yaml"
BASE = ("data.num_workers=2", "recipe.stage1_epochs=2")  # stage 1: epochs 0-1, stage 2: epochs 2-3
VARIANTS = {
    "cached": (),  # stage 1 on cached features (no workers), stage 2 on images with workers
    "augment": ("data.augment.enabled=true",),  # no feature cache: both stages on images with workers
}


def _overrides(run_dir, variant: str) -> list[str]:
    return tiny_overrides(run_dir, epochs=4, extra=(*BASE, *VARIANTS[variant]))


@pytest.fixture(scope="module")
def references(spft_cache, tmp_path_factory) -> dict:
    out = {}
    for variant in VARIANTS:
        run_dir = tmp_path_factory.mktemp("ref") / variant
        # fresh processes: what stderr shows must include whatever importing torch / Lightning prints
        proc = run_cli("train", CONFIG, *_overrides(run_dir, variant), "trainer.progress_bar=true", fresh=True)
        out[variant] = (run_dir, proc)
    return out


def _killed_and_resumed(run_dir, variant: str, epoch: int, batch: int):
    env = {"SPFT_TEST_CALLBACK": "fault_inject:KillAt", "SPFT_KILL_AT": f"{epoch}:{batch}:KILL",
           "PYTHONPATH": str(REPO / "scripts")}
    proc = run_cli("train", CONFIG, *_overrides(run_dir, variant), env=env, check=False)
    assert proc.returncode == -9, proc.stderr
    assert not (run_dir / "DONE").exists()
    return run_cli("train", "--resume", str(run_dir))


def test_stdout_holds_results_only_and_unactionable_warnings_are_gone(references):
    run_dir, proc = references["cached"]
    assert proc.stdout.strip().splitlines()[-1] == str(run_dir)
    for mark in ("it/s", "\r", "█", "Epoch 0"):
        assert mark not in proc.stdout, mark
    assert "Epoch 0" in proc.stderr  # the bars are on stderr
    for noise in ("does not have many workers", "transfer_batch_to_device", "exists and is not empty",
                  "LeafSpec"):
        assert noise not in proc.stderr, noise


# cached: epoch 2 is the first stage-2 epoch, where a resume used to read the stage-1 features again
@pytest.mark.parametrize("variant, stage_epochs", [("cached", (2,)), ("augment", (1,))])
def test_kill_at_a_random_batch_and_resume_equals_uninterrupted(references, spft_cache, tmp_path, variant,
                                                                stage_epochs):
    reference, _ = references[variant]
    epoch, batch = random.choice(stage_epochs), random.randrange(fault_inject.BATCHES_PER_EPOCH)
    where = f"{variant}: killed at epoch {epoch}, batch {batch}"
    run_dir = tmp_path / "killed"
    features = {p: p.stat().st_mtime_ns for p in spft_cache.glob("features/*/*.npy")}
    resumed = _killed_and_resumed(run_dir, variant, epoch, batch)
    assert resumed.stdout.strip().splitlines()[-1] == str(run_dir), where
    assert fault_inject.differences(run_dir, reference) == [], where
    if variant == "cached":
        # a stage-2 resume trains on images: the stage-1 features are neither computed nor read again
        assert features and "stage-1 feature cache:" not in resumed.stderr, where
        assert {p: p.stat().st_mtime_ns for p in spft_cache.glob("features/*/*.npy")} == features, where
