"""spft's detection recipe vs Ultralytics' default training, on the same prepared phantom data (CPU-sized).

For each seed: ``spft train configs/phantom_detect_yolov8.yaml`` (the shipped config: YOLOv8n from yolov8n.yaml,
random weights) and ``YOLO("yolov8n.yaml").train(...)`` with Ultralytics' defaults (optimizer "auto", 3 warm-up
epochs, its ModelEMA, linear LR decay) and the same data, epochs, image size, batch, mosaic and fliplr. Both are
scored on the test split with their best.pt (Ultralytics' fitness, val mAP50-95); minutes are wall-clock for the
whole command (training, validation, the test pass; for spft also its figures), CPU minutes the process's own user +
system time, which on a shared machine says more than wall time. Each run is its own process.

    python benchmarks/detect_bench.py --seeds 0 1 --out /tmp/detect_bench      # ~15 min on 2 CPU cores

Prints a markdown table (per seed, then mean ± std) and writes ``results.json`` under ``--out``. The Ultralytics runs
use ``--out`` as their working directory, so its MLflow integration (on by default when mlflow is installed) writes
``mlflow.db`` there, not in the current directory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "src" / "spft" / "configs" / "phantom_detect_yolov8.yaml"

ULTRALYTICS_RUN = """
import json, sys
from ultralytics import YOLO
a = json.loads(sys.argv[1])
model = YOLO(a.get("weights", "yolov8n.yaml"))  # random weights from the YAML, or a .pt to fine-tune
model.train(data=a["data"], epochs=a["epochs"], imgsz=a["imgsz"], batch=a["batch"], mosaic=1.0, fliplr=0.0,
            seed=a["seed"], workers=a["workers"], plots=False, project=a["project"], name=a["name"], exist_ok=True,
            verbose=False)
best = YOLO(f'{a["project"]}/{a["name"]}/weights/best.pt')
r = best.val(data=a["data"], split="test", imgsz=a["imgsz"], batch=2 * a["batch"], plots=False, workers=a["workers"],
             project=a["project"], name=a["name"] + "_test", exist_ok=True, verbose=False)
print("RESULT " + json.dumps({"map50": float(r.box.map50), "map50_95": float(r.box.map)}))
"""


def _timed(cmd: list[str], **kwargs) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run ``cmd``; return it with its wall and CPU (user + system, the child's own) minutes."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    wall = (time.time() - t0) / 60
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) / 60
    return proc, wall, cpu


def _env(cache: Path) -> dict:
    env = dict(os.environ, SPFT_CACHE=str(cache), HF_HUB_OFFLINE="1", YOLO_OFFLINE="1")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def dataset_yaml(args) -> Path:
    """Generate (once, cached) the phantoms the shipped config names and lay them out for Ultralytics."""
    code = ("import sys\nfrom spft.config.schema import PhantomConfig\n"
            "from spft.data.yolo_layout import build_phantom_detection\n"
            "print(build_phantom_detection(PhantomConfig(kind='cxr', n_images=int(sys.argv[1]), "
            "image_size=int(sys.argv[2]), seed=0)))")
    out = subprocess.run([sys.executable, "-c", code, str(args.n_images), str(args.image_size)], check=True,
                         capture_output=True, text=True, env=_env(args.out / "cache"))
    return Path(out.stdout.strip().splitlines()[-1])


def run_spft(args, seed: int) -> dict:
    run_dir = args.out / f"spft_seed{seed}"
    cmd = [sys.executable, "-m", "spft.cli", "train", str(CONFIG), f"seed={seed}", f"run.dir={run_dir}",
           f"data.num_workers={args.workers}", f"data.phantom.n_images={args.n_images}",
           f"data.phantom.image_size={args.image_size}", f"detection.imgsz={args.imgsz}",
           f"trainer.max_epochs={args.epochs}", f"trainer.batch_size={args.batch}", *args.spft_overrides]
    proc, minutes, cpu = _timed(cmd, cwd=args.out, env=_env(args.out / "cache"))
    (args.out / f"spft_seed{seed}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"spft seed {seed} failed (exit {proc.returncode}); see {args.out}/spft_seed{seed}.log")
    m = json.loads((run_dir / "metrics.json").read_text())
    return {"method": "spft", "seed": seed, "map50": m["map50"], "map50_95": m["map50_95"], "minutes": minutes,
            "cpu_minutes": cpu}


def run_ultralytics(args, seed: int, data: Path) -> dict:
    a = {"data": str(data), "epochs": args.epochs, "imgsz": args.imgsz, "batch": args.batch, "seed": seed,
         "workers": args.workers, "project": str(args.out / "ultralytics"), "name": f"seed{seed}"}
    proc, minutes, cpu = _timed([sys.executable, "-c", ULTRALYTICS_RUN, json.dumps(a)], cwd=args.out,
                                env=_env(args.out / "cache"))
    (args.out / f"ultralytics_seed{seed}.log").write_text(proc.stdout + proc.stderr)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"Ultralytics seed {seed} failed (exit {proc.returncode}); see "
                         f"{args.out}/ultralytics_seed{seed}.log")
    return {"method": "ultralytics", "seed": seed, **json.loads(lines[-1][7:]), "minutes": minutes,
            "cpu_minutes": cpu}


def table(rows: list[dict]) -> str:
    out = ["| method | seed | test mAP50 | test mAP50-95 | minutes | CPU minutes |", "|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['method']} | {r['seed']} | {r['map50']:.3f} | {r['map50_95']:.3f} | {r['minutes']:.1f} | "
                   f"{r['cpu_minutes']:.1f} |")
    for method in dict.fromkeys(r["method"] for r in rows):
        sel = [r for r in rows if r["method"] == method]

        def ms(key, fmt, sel=sel):
            vals = [r[key] for r in sel]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            return f"{statistics.mean(vals):{fmt}} ± {sd:{fmt}}"

        out.append(f"| **{method}** | mean ± std ({len(sel)}) | {ms('map50', '.3f')} | {ms('map50_95', '.3f')} | "
                   f"{ms('minutes', '.1f')} | {ms('cpu_minutes', '.1f')} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--out", type=Path, default=Path("/tmp/spft_detect_bench"))
    p.add_argument("--n-images", type=int, default=600, help="phantoms generated (70/15/15 split)")
    p.add_argument("--image-size", type=int, default=128, help="phantom side in pixels")
    p.add_argument("--imgsz", type=int, default=128, help="Ultralytics input size")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--spft-overrides", nargs="*", default=[], help="extra KEY=VALUE overrides for the spft runs")
    args = p.parse_args(argv)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    data = dataset_yaml(args)
    rows = []
    for seed in args.seeds:
        rows.append(run_spft(args, seed))
        print(json.dumps(rows[-1]), flush=True)
        rows.append(run_ultralytics(args, seed, data))
        print(json.dumps(rows[-1]), flush=True)
    rows.sort(key=lambda r: (r["method"] != "spft", r["seed"]))
    (args.out / "results.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                       "rows": rows}, indent=2))
    print(table(rows))


if __name__ == "__main__":
    main()
