"""spft's segmentation recipe vs a plain PyTorch loop fine-tuning the same SAM2, on the same phantom data (CPU-sized).

For each seed: ``spft train configs/phantom_segment_sam2.yaml`` with the benchmark's size overrides (its own
process, the real CLI) and, in this process, a plain loop on the same model built from the same seed (the CLI seeds
with ``seed`` and builds SAM2 the same way: identical initial weights), the same mask table (splits), the same box
jitter, batch size, epochs and Dice + BCE loss — but no stages (image encoder and mask decoder train from the first
step, the prompt encoder stays frozen as in spft), no structure weights, no EMA, one constant AdamW learning rate.
The plain loop's LR is the best of a small grid on validation Dice (chosen per seed; the weights of its best
validation epoch are kept, as spft keeps its best epoch). Both are scored on the test split by spft's own
evaluation (Dice at the image's 128 px, exact box prompts). Minutes are wall-clock: spft's whole command (training,
validation, test pass and overlays); the plain loop's training + per-epoch validation of the chosen LR + its test
pass (the grid's other runs are not counted).

    python benchmarks/segment_bench.py --seeds 0 1 2 --out /tmp/segment_bench     # ~15 min on 2 CPU cores

Prints a markdown table (per seed, then mean ± std) and writes ``results.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "src" / "spft" / "configs" / "phantom_segment_sam2.yaml"
STRUCTURES = ("heart", "left_lung", "right_lung")
# the benchmark's size: the shipped config shortened to CPU minutes (the short setup of
# tests/test_segmentation_learns.py with 300 phantoms): batch 4, 8 epochs, 1 stage-1 epoch. Phantoms fixed (data
# seed 0); the run's seed varies the initial weights, the split and the batch order.
SIZE = ["data.phantom.n_images=300", "trainer.max_epochs=8", "trainer.batch_size=4", "recipe.stage1_epochs=1",
        "optim.warmup_steps=0", "data.num_workers=0", "trainer.progress_bar=false", "segmentation.n_overlays=0"]
PLAIN_LRS = (1e-3, 3e-3, 1e-2)


def plain_finetune(overrides: list[str], lr: float, seed: int, log=print) -> dict:
    """The plain loop: returns per-epoch validation Dice, the test metrics of the best validation epoch, minutes."""
    import copy

    import lightning as L
    import torch

    from spft.config import load_config
    from spft.data.masks import MaskDataset, build_mask_table
    from spft.models.sam2 import build_sam2
    from spft.tasks.segmentation.evaluate import eval_loader, evaluate_module
    from spft.tasks.segmentation.loss import weighted_dice_bce
    from spft.tasks.segmentation.module import jitter_boxes

    start = time.perf_counter()
    cfg = load_config(str(CONFIG), [*overrides, f"seed={seed}"])
    structures = list(cfg.segmentation.structures)
    table = build_mask_table(cfg.data, structures, cfg.seed)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model, prep = build_sam2(cfg.model)  # as the CLI builds it: same seed, same initial weights
    data = {s: MaskDataset(table, s, prep, cfg.data.color) for s in ("train", "val", "test")}
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = torch.utils.data.DataLoader(data["train"], batch_size=cfg.trainer.batch_size, shuffle=True,
                                         generator=gen, drop_last=False)
    params = [p for p in model.parameters() if p.requires_grad]  # all but the prompt encoder (frozen, as in spft)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=cfg.optim.weight_decay)
    ones = torch.ones(len(structures))
    s = cfg.segmentation
    view = SimpleNamespace(eval_model=lambda: model, structures=structures)
    best, best_state, curve = -1.0, None, []
    for _epoch in range(cfg.trainer.max_epochs):
        model.train()
        for batch in loader:
            boxes = jitter_boxes(batch["boxes"], batch["valid"], s.box_jitter, model.size)
            loss = weighted_dice_bce(model(batch["image"], boxes), batch["masks"], batch["valid"], ones,
                                     s.dice_weight, s.bce_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        val = evaluate_module(view, eval_loader(data["val"], cfg.trainer.batch_size * 2), "val").metrics()["mean_dice"]
        val = float(val or 0.0)
        curve.append(round(val, 4))
        if val > best:
            best, best_state = val, copy.deepcopy(model.state_dict())
        model.train()
    model.load_state_dict(best_state)
    test = evaluate_module(view, eval_loader(data["test"], cfg.trainer.batch_size * 2), "test").metrics()
    minutes = (time.perf_counter() - start) / 60
    log(f"plain lr {lr:g} seed {seed}: val Dice per epoch {curve}; test {test['per_structure_dice']} "
        f"({minutes:.1f} min)")
    return {"lr": lr, "val_curve": curve, "val_best": best, "test": test, "minutes": minutes}


def spft_run(overrides: list[str], seed: int, out: Path) -> dict:
    run_dir = out / f"spft_seed{seed}"
    start = time.perf_counter()
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "spft.cli", "train", str(CONFIG), *overrides, f"seed={seed}",
                           f"run.dir={run_dir}"], capture_output=True, text=True, env=env, cwd=REPO)
    minutes = (time.perf_counter() - start) / 60
    if proc.returncode != 0:
        raise SystemExit(f"spft train failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    test = json.loads((run_dir / "metrics.json").read_text())
    print(f"spft seed {seed}: test {test['per_structure_dice']} ({minutes:.1f} min)", flush=True)
    return {"test": test, "minutes": minutes, "run_dir": str(run_dir)}


def _cell(values: list[float], digits: int = 3) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--lrs", type=float, nargs="+", default=list(PLAIN_LRS), help="the plain loop's LR grid")
    ap.add_argument("--out", type=Path, default=Path("/tmp/segment_bench"))
    ap.add_argument("overrides", nargs="*", help="extra config overrides for both sides (after the benchmark's size)")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    overrides = [*SIZE, *args.overrides]
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in args.seeds:
        spft = spft_run(overrides, seed, args.out)
        grid = [plain_finetune(overrides, lr, seed, log=lambda m: print(m, flush=True)) for lr in args.lrs]
        plain = max(grid, key=lambda g: g["val_best"])
        rows.append({"seed": seed, "spft": spft, "plain": plain, "plain_grid": grid})
        (args.out / "results.json").write_text(json.dumps({"overrides": overrides, "rows": rows}, indent=1))
    print(f"\nphantoms: {' '.join(overrides)}; seeds {args.seeds}; plain LR grid {args.lrs}\n")
    print("| run | seed | " + " | ".join(f"Dice {s}" for s in STRUCTURES) + " | mean Dice | minutes |")
    print("|---" * (len(STRUCTURES) + 4) + "|")
    for r in rows:
        for side in ("spft", "plain"):
            t = r[side]["test"]
            name = "spft recipe" if side == "spft" else f"plain loop (LR {r['plain']['lr']:g})"
            print(f"| {name} | {r['seed']} | " + " | ".join(f"{t['per_structure_dice'][s]:.3f}" for s in STRUCTURES)
                  + f" | {t['mean_dice']:.3f} | {r[side]['minutes']:.1f} |")
    for side, name in (("spft", "spft recipe"), ("plain", "plain loop")):
        cells = [_cell([r[side]["test"]["per_structure_dice"][s] for r in rows]) for s in STRUCTURES]
        print(f"| **{name}, mean ± std** | {len(rows)} | " + " | ".join(cells)
              + f" | {_cell([r[side]['test']['mean_dice'] for r in rows])}"
              + f" | {_cell([r[side]['minutes'] for r in rows], 1)} |")


if __name__ == "__main__":
    main()
