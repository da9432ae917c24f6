"""Two-process DDP on CPU (gloo): gathered evaluation equals one process; ranks hold identical weights after
blocks open mid-run (docs/decisions.md, rules 3 and 4)."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO, run_cli, tiny_overrides

pytestmark = pytest.mark.slow


def _torchrun(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "spft.cli", *args], capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"torchrun spft {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n"
                             f"{proc.stderr}")
    return proc


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_ddp_training_keeps_ranks_identical_and_evaluation_equals_one_process(spft_cache, tmp_path):
    run = tmp_path / "ddp"
    # 2 epochs: head only, then the top block opens (after DDP wrapped the model with the encoder frozen)
    proc = run_cli("train", "configs/phantom_cxr.yaml",
                   *tiny_overrides(run, n_images=256, epochs=3, extra=(
                       "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp")),
                   env={"OMP_NUM_THREADS": "1"}, fresh=True)  # Lightning launches the second rank as a new process
    log = proc.stdout + proc.stderr
    history = _rows(run / "history.csv")
    assert [r["stage"] for r in history] == ["1", "2", "2"] and int(history[-1]["open_blocks"]) == 2
    prints = {}
    for rank, epoch, digest in re.findall(r"rank (\d) weights digest after epoch (\d+): (\w+)", log):
        prints.setdefault(int(epoch), {})[int(rank)] = digest
    assert sorted(prints) == [0, 1, 2], log[-3000:]
    for epoch, by_rank in prints.items():
        assert set(by_rank) == {0, 1} and by_rank[0] == by_rank[1], (epoch, by_rank)
    assert prints[1][0] != prints[2][0]  # the weights did move after the block opened
    assert (run / "DONE").is_file() and json.loads((run / "metrics.json").read_text())["n"] > 0
    assert re.search(r"stage-1 feature cache: \d+ train features written to", log)  # extracted by both ranks

    data = json.loads((run / "data.json").read_text())
    assert data["n_images"]["val"] % 2 == 1, "the validation split must not divide evenly between 2 ranks"
    run_cli("evaluate", str(run), "--split", "val")
    single = json.loads((run / "metrics_val_eval.json").read_text())
    single_rows = _rows(run / "predictions_val_eval.csv")
    _torchrun("evaluate", str(run), "--split", "val")
    double = json.loads((run / "metrics_val_eval.json").read_text())
    assert double == single
    assert _rows(run / "predictions_val_eval.csv") == single_rows
