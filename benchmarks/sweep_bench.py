"""Wall time of a small phantom ``spft repeat`` sweep with ``--jobs 1`` against ``--jobs N`` on this machine.

Run: ``python benchmarks/sweep_bench.py [--seeds 0-3] [--jobs 1,2] [--epochs 2] [--images 240]``.

The same sweep (tiny 2-block Dinov2 at 32 px, phantoms, CPU) runs once per ``--jobs`` value, each into a fresh sweep
directory, through the real CLI; the phantoms are generated beforehand so that no measurement pays for them. Prints
each sweep's wall time, the mean time of one run inside it, and the speed-up against the first ``--jobs`` value.
The last line is machine-readable: ``BENCH sweep_jobs1_s=<s> sweep_jobs2_s=<s> sweep_speedup_2=<ratio>``. Not a
test: nothing here asserts a wall-clock limit.

What to expect. On a CPU machine the runs share the cores: ``--jobs N`` gives each child ``cores // N`` threads
(``OMP_NUM_THREADS``), so the gain comes from overlapping what one run cannot spread over the cores (start-up and
imports, data loading, Python overhead, evaluation) and is far below N for compute-bound runs. With one GPU per run
(``--jobs N`` on N GPUs, ``--gpus-per-run 1``) the runs do not share the device, so a sweep of many runs finishes
about N times sooner — linear in the number of GPUs as long as the CPU cores feed every GPU (each run's
``data.num_workers`` workers plus its main process; ``spft prepare cache ... data.image_cache_format=npy`` makes
data loading nearly free) and the disk keeps up. The last runs of a sweep whose run count is not a multiple of N
leave slots idle (the ETA accounts for it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = [
    "model.config={model_type: dinov2, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, "
    "mlp_ratio: 2, patch_size: 8, image_size: 32}",
    "model.head_hidden=32",
    "data.image_size=32",
    "data.phantom.image_size=64",
    "data.num_workers=0",
    "trainer.batch_size=32",
    "trainer.progress_bar=false",
    "recipe.stage1_epochs=1",
    "recipe.unfreeze.blocks_per_epoch=1",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0-3", help="the sweep's seeds (default 0-3: 4 runs)")
    parser.add_argument("--jobs", default="1,2", help="--jobs values to compare, the first is the baseline")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--images", type=int, default=240)
    args = parser.parse_args()
    jobs = [int(j) for j in args.jobs.split(",")]
    overrides = [*TINY, f"data.phantom.n_images={args.images}", f"trainer.max_epochs={args.epochs}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "YOLO_OFFLINE": "1"}
    with tempfile.TemporaryDirectory(prefix="sweep_bench-") as tmp:
        env["SPFT_CACHE"] = str(Path(tmp) / "cache")
        subprocess.run([sys.executable, "-m", "spft.cli", "data", "check", "configs/phantom_cxr.yaml", *overrides],
                       cwd=REPO, env=env, check=True, capture_output=True)  # generates the phantoms once
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        print(f"spft repeat, seeds {args.seeds}, {args.epochs} epochs, {args.images} phantoms, tiny Dinov2, CPU, "
              f"{cores} cores")
        wall: dict[int, float] = {}
        for n in jobs:
            out = Path(tmp) / f"jobs{n}"
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "spft.cli", "repeat", "configs/phantom_cxr.yaml",
                                   *overrides, "--seeds", args.seeds, "--out", str(out), "--jobs", str(n)],
                                  cwd=REPO, env=env, capture_output=True, text=True)
            wall[n] = time.perf_counter() - start
            if proc.returncode != 0:
                print(proc.stdout, proc.stderr, file=sys.stderr)
                return proc.returncode
            runs = json.loads((out / "sweep.json").read_text())["runs"]
            per_run = sum(r["seconds"] for r in runs) / len(runs)
            print(f"  --jobs {n}: {wall[n]:6.1f} s for {len(runs)} runs (one run {per_run:5.1f} s on average), "
                  f"speed-up {wall[jobs[0]] / wall[n]:.2f}x")
    fields = [f"sweep_jobs{n}_s={wall[n]:.1f}" for n in jobs]
    fields += [f"sweep_speedup_{n}={wall[jobs[0]] / wall[n]:.2f}" for n in jobs[1:]]
    print("BENCH " + " ".join(fields))
    return 0


if __name__ == "__main__":
    sys.exit(main())
