"""Segmentation learns: a short phantom run of the shipped SAM2 config, through the real CLI, reaches test Dice >= 0.8
for every structure (issue 19 item 6).

The setup is the shipped config (its model: a RANDOMLY INITIALISED SAM2, hidden 16, 64 px input) shortened to a
test: 200 phantoms, batch 4, 8 epochs of which 1 in stage 1, so 280 optimizer steps (~45-55 s on 2 shared CPU
cores). What it guards: with too few steps a randomly initialised SAM2 stays on a plateau where it outputs
background everywhere (every mask empty, lungs first: they are as dark as the background outside the body, so the
decoder must learn to use the box prompt). With the shipped config's 2 stage-1 epochs (random encoder frozen) at the
same budget the run ends at heart / left / right Dice 0.81 / 0.79 / 0.75 (seed 0: 0.69 / 0.62 / 0.17) and this test
fails; with 3 epochs of 200 phantoms at batch 8 (54 steps) every mask is empty. Measured with this setup: seed 1
(below) 0.84 / 0.90 / 0.91, seed 0 0.84 / 0.83 / 0.87; 300 phantoms (benchmarks/segment_bench.py) 0.85 / 0.88 / 0.93.
"""

from __future__ import annotations

import csv
import json

import pytest
from conftest import run_cli

pytestmark = pytest.mark.slow

CONFIG = "configs/phantom_segment_sam2.yaml"
STRUCTURES = ["heart", "left_lung", "right_lung"]
# the short setup (docs/segmentation.md): the shipped config with fewer phantoms and epochs, more steps per epoch
SHORT = ["data.phantom.n_images=200", "trainer.max_epochs=8", "trainer.batch_size=4", "recipe.stage1_epochs=1",
         "optim.warmup_steps=0", "seed=1"]


def test_short_phantom_run_reaches_dice_0_8_per_structure(spft_cache, tmp_path):
    run_dir = tmp_path / "run"
    run_cli("train", CONFIG, *SHORT, "data.num_workers=0", "trainer.progress_bar=false", "segmentation.n_overlays=0",
            f"run.dir={run_dir}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    dice = metrics["per_structure_dice"]
    assert list(dice) == STRUCTURES and metrics["split"] == "test" and metrics["n"] > 0
    with open(run_dir / "history.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    # the recipe ran in full: a stage-1 epoch, then stage 2 opening blocks; EMA weights scored
    assert [int(r["stage"]) for r in rows] == [1] + [2] * 7
    assert int(rows[-1]["open_blocks"]) == 5 and rows[-1]["val_dice_ema"] != ""
    assert all(dice[s] >= 0.8 for s in STRUCTURES), dice
