"""A diverging run stops at the step it diverges (issue 12): exit 3, one line with epoch, step and the batch's image
ids, the last good checkpoint kept (finite), no NaN in a JSON record; ``--resume`` stops the same way."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from conftest import run_cli, tiny_overrides

pytestmark = pytest.mark.slow

CONFIG = "configs/phantom_cxr.yaml"


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("spft train: error:")]
    assert len(lines) == 1, stderr
    return lines[0]


def test_head_lr_1e6_stops_at_the_step_with_the_batch_ids(spft_cache, tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli("train", CONFIG, *tiny_overrides(run_dir, extra=("optim.lr_head=1e6",)), check=False)
    assert proc.returncode == 3, proc.stderr
    line = _one_error_line(proc.stderr)
    assert re.search(r"training diverged at epoch 0, step \d+: non-finite", line), line
    assert "images/p" in line and "Out of range float" not in proc.stderr and "Traceback" not in proc.stderr
    # no epoch finished: nothing to keep (the failed start removes the directory it created)
    assert not (run_dir / "checkpoints" / "last.ckpt").exists()


def test_encoder_lr_1e6_keeps_the_last_good_epoch_and_resume_stops_again(spft_cache, tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli("train", CONFIG, *tiny_overrides(run_dir, extra=("optim.lr_encoder=1e6",)), check=False)
    assert proc.returncode == 3, proc.stderr
    line = _one_error_line(proc.stderr)
    assert re.search(r"training diverged at epoch 1, step \d+: non-finite .* image ids \[images/p", line), line
    assert not (run_dir / "DONE").exists()
    for name in ("last.ckpt", "best.ckpt"):
        ckpt = torch.load(run_dir / "checkpoints" / name, map_location="cpu", weights_only=False)
        assert ckpt["epoch"] == 0, name  # the stage-1 epoch, not the diverged one
        assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point()), name
    for path in run_dir.glob("*.json"):  # strict JSON: no NaN / Infinity anywhere
        text = path.read_text()
        assert not any(bad in text for bad in ("NaN", "Infinity")), path.name
        json.loads(text)
    weights = json.loads((run_dir / "class_weights.json").read_text())["initial"].values()
    assert all(math.isfinite(float(w)) for w in weights)
    again = run_cli("train", "--resume", str(run_dir), check=False)
    assert again.returncode == 3 and "training diverged at epoch 1" in _one_error_line(again.stderr), again.stderr
