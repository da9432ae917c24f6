"""Detection transfer: YOLOv8n pretrained on *source* phantoms, fine-tuned on *target* phantoms (CPU-sized).

The setting the recipe's freezing is meant for (issue 19 item 5, last part). Source and target are the cxr phantom
generator with disjoint findings: the source set draws only ``SOURCE_FINDINGS`` (the other four at prevalence 0,
generator seed 1), the target set only ``TARGET_FINDINGS`` (seed 2); each finding is drawn with probability
``--prevalence`` per image. Each set is laid out for Ultralytics with its own 4 classes (``yolo_layout`` helpers).
The target's training split is cut to ``--target-train`` images (a fixed, seeded subset); its val and test splits
are the generator's whole ones.

1. **Pretrain** once (cached under ``--cache``): ``spft train`` with the shipped config's from-scratch settings
   (configs/phantom_detect_yolov8.yaml: YOLOv8n from yolov8n.yaml, nothing frozen, backbone LR ratio 1) on the source
   set; its ``best.pt`` (EMA weights) is the pretrained detector.
2. **Fine-tune** on the target set from those weights, same epochs / batch / imgsz / mosaic / fliplr, per seed:

   - ``ultralytics``: ``YOLO(pt).train(...)`` with Ultralytics' defaults (optimizer auto, 3 warm-up epochs, its EMA,
     linear decay; plots=False);
   - ``spft_recipe``: the recipe proper (``recipe.stage1_epochs=2 recipe.unfreeze.blocks_per_epoch=2
     optim.lr_encoder=1e-4``, a tenth of the head LR as the paper) with ``detection.weights=pt``;
   - ``spft_open``: the shipped from-scratch settings (nothing frozen, ratio 1) with ``detection.weights=pt``;
   - ``spft_scratch``: the shipped config from random weights (no pretraining): what the pretraining is worth;
   - ablation (``--methods``): ``spft_recipe_ratio1`` (the recipe's freezing, backbone LR ratio 1) and
     ``spft_open_ratio01`` (nothing frozen, ratio 0.1) separate the recipe's two parts.

   spft runs use the target set through ``data.name=tbx11k detection.dataset_dir=<prepared copy>`` (the documented
   way to point a detection run at a prepared Ultralytics dataset; nothing TBX11K-specific is used),
   ``trainer.patience`` = epochs (no early stop: every method trains the same epochs) and ``detection.figures=0``.
   All are scored on the target test split with their best.pt (val mAP50-95).

    OMP_NUM_THREADS=1 python benchmarks/detect_transfer.py --seeds 0 1 2 --jobs 2 --out /tmp/dtx/run  # ~20 min, 2 cores

Prints a markdown table (per seed, then mean ± std, then paired differences) and writes ``results.json``. CPU minutes
are each process's own user + system time (fairer than wall time on a shared machine).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from detect_bench import CONFIG, ULTRALYTICS_RUN, _env, _timed  # noqa: E402  (the sibling benchmark's helpers)

SOURCE_FINDINGS = ("Atelectasis", "Effusion", "Infiltration", "Nodule")
TARGET_FINDINGS = ("Cardiomegaly", "Mass", "Pneumothorax", "Consolidation")
PAPER = ["recipe.stage1_epochs=2", "recipe.unfreeze.blocks_per_epoch=2", "optim.lr_encoder=1e-4"]
METHODS = ("ultralytics", "spft_recipe", "spft_open", "spft_scratch", "spft_recipe_ratio1", "spft_open_ratio01")
DEFAULT_METHODS = METHODS[:4]


def prepare(folder: Path, findings: tuple[str, ...], n_images: int, seed: int, prevalence: float, image_size: int,
            train_subset: int | None = None) -> Path:
    """Generate (once) cxr phantoms drawing only ``findings`` and lay them out with those classes; dataset.yaml."""
    from spft.data import phantoms
    from spft.data.yolo_layout import SPLITS, link_or_copy, write_dataset, write_labels

    if (folder / "yolo" / "dataset.yaml").is_file():
        return folder / "yolo" / "dataset.yaml"
    if not (folder / "labels.csv").is_file():
        prev = {f: (prevalence if f in findings else 0.0) for f in phantoms.CXR_FINDINGS}
        phantoms.generate_cxr(folder, n_images=n_images, image_size=image_size, seed=seed, prevalence=prev)
    class_id = {f: i for i, f in enumerate(findings)}
    boxes: dict[str, list] = {}
    with open(folder / "boxes.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["finding"] in class_id:  # others have prevalence 0: none are drawn
                boxes.setdefault(row["image"], []).append(
                    (class_id[row["finding"]], *(float(row[k]) for k in ("x_min", "y_min", "x_max", "y_max"))))
    with open(folder / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if train_subset is not None:
        train = sorted(r["image"] for r in rows if r["split"] == "train")
        keep = set(random.Random(0).sample(train, min(train_subset, len(train))))
        rows = [r for r in rows if r["split"] != "train" or r["image"] in keep]
    out = folder / "yolo"
    split_images: dict[str, list[Path]] = {s: [] for s in SPLITS}
    for row in rows:
        image = out / "images" / row["split"] / Path(row["image"]).name
        link_or_copy(folder / row["image"], image)
        write_labels(image, boxes.get(row["image"], []), image_size, image_size)
        split_images[row["split"]].append(image)
    return write_dataset(out, findings, split_images, {"source": f"spft cxr phantoms seed {seed}, {findings}"})


def counts(data: Path) -> str:
    from spft.data.yolo_layout import instance_counts, split_image_list

    return "; ".join(f"{s}: {len(split_image_list(data, s))} images, {sum(instance_counts(data, s))} boxes"
                     for s in ("train", "val", "test"))


def spft_cmd(args, data: Path, run_dir: Path, seed: int, epochs: int, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "spft.cli", "train", str(CONFIG), f"seed={seed}", f"run.dir={run_dir}",
            "data.name=tbx11k", f"detection.dataset_dir={data.parent}", f"data.num_workers={args.workers}",
            f"detection.imgsz={args.imgsz}", f"trainer.max_epochs={epochs}", f"trainer.batch_size={args.batch}",
            f"trainer.patience={epochs}", "detection.figures=0", *extra]


def pretrain(args, source: Path) -> tuple[Path, dict]:
    """The source detector (cached): spft's shipped from-scratch settings on the source set."""
    key = (f"yolov8n_src_n{args.source_images}_p{args.prevalence}_e{args.source_epochs}_i{args.imgsz}"
           f"_b{args.batch}")
    pt = args.cache / "detect_transfer" / f"{key}.pt"
    info = pt.with_suffix(".json")
    if pt.is_file() and info.is_file():
        return pt, json.loads(info.read_text())
    run_dir = args.out / "source_run"
    cmd = spft_cmd(args, source, run_dir, 0, args.source_epochs, [])
    proc, minutes, cpu = _timed(cmd, cwd=args.out, env=_env(args.cache))
    (args.out / "source_run.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"source pretraining failed (exit {proc.returncode}); see {args.out}/source_run.log")
    m = json.loads((run_dir / "metrics.json").read_text())
    pt.parent.mkdir(parents=True, exist_ok=True)
    tmp = pt.with_suffix(".tmp")
    tmp.write_bytes((run_dir / "checkpoints" / "best.pt").read_bytes())
    os.replace(tmp, pt)
    meta = {"map50": m["map50"], "map50_95": m["map50_95"], "minutes": minutes, "cpu_minutes": cpu,
            "command": " ".join(cmd[2:])}
    info.write_text(json.dumps(meta, indent=2))
    return pt, meta


def run(args, method: str, seed: int, target: Path, pt: Path) -> dict:
    name = f"{method}_seed{seed}"
    log = args.out / f"{name}.log"
    if method == "ultralytics":
        a = {"weights": str(pt), "data": str(target), "epochs": args.epochs, "imgsz": args.imgsz, "batch": args.batch,
             "seed": seed, "workers": args.workers, "project": str(args.out / "ultralytics"), "name": f"seed{seed}"}
        proc, minutes, cpu = _timed([sys.executable, "-c", ULTRALYTICS_RUN, json.dumps(a)], cwd=args.out,
                                    env=_env(args.cache))
        log.write_text(proc.stdout + proc.stderr)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not lines:
            raise SystemExit(f"{name} failed (exit {proc.returncode}); see {log}")
        m = json.loads(lines[-1][7:])
    else:
        extra = {"spft_recipe": [f"detection.weights={pt}", *PAPER], "spft_open": [f"detection.weights={pt}"],
                 "spft_scratch": [],
                 "spft_recipe_ratio1": [f"detection.weights={pt}", *PAPER[:2], "optim.lr_encoder=1e-3"],
                 "spft_open_ratio01": [f"detection.weights={pt}", "detection.backbone_lr_ratio=0.1"]}[method]
        run_dir = args.out / name
        proc, minutes, cpu = _timed(spft_cmd(args, target, run_dir, seed, args.epochs, extra), cwd=args.out,
                                    env=_env(args.cache))
        log.write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            raise SystemExit(f"{name} failed (exit {proc.returncode}); see {log}")
        m = json.loads((run_dir / "metrics.json").read_text())
    return {"method": method, "seed": seed, "map50": m["map50"], "map50_95": m["map50_95"], "minutes": minutes,
            "cpu_minutes": cpu}


def table(rows: list[dict]) -> str:
    from detect_bench import table as bench_table

    out = [bench_table(rows)]
    seeds = sorted({r["seed"] for r in rows})
    by = {(r["method"], r["seed"]): r for r in rows}
    if "spft_recipe" in {r["method"] for r in rows}:
        out.append("\nPaired by seed, spft_recipe minus each other method (mAP50 / mAP50-95):")
        for other in dict.fromkeys(r["method"] for r in rows):
            if other == "spft_recipe":
                continue
            d = [(by["spft_recipe", s]["map50"] - by[other, s]["map50"],
                  by["spft_recipe", s]["map50_95"] - by[other, s]["map50_95"])
                 for s in seeds if ("spft_recipe", s) in by and (other, s) in by]
            out.append(f"- vs {other}: " + ", ".join(f"{a:+.3f} / {b:+.3f}" for a, b in d))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=METHODS,
                   help="default: the first four; spft_recipe_ratio1 / spft_open_ratio01 split the recipe's effect "
                        "into its freezing (stage 1 + progressive unfreezing) and its backbone LR ratio 0.1")
    p.add_argument("--out", type=Path, default=Path("/tmp/spft_detect_transfer"))
    p.add_argument("--cache", type=Path, default=Path(os.environ.get("SPFT_CACHE", "/tmp/spft_cache")),
                   help="phantoms and the pretrained source detector are cached here")
    p.add_argument("--source-images", type=int, default=1500, help="source phantoms generated (70/15/15 split)")
    p.add_argument("--source-epochs", type=int, default=15)
    p.add_argument("--target-images", type=int, default=700, help="target phantoms generated (70/15/15 split)")
    p.add_argument("--target-train", type=int, default=150, help="target training images kept (val/test whole)")
    p.add_argument("--prevalence", type=float, default=0.3, help="per-image probability of each finding drawn")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--imgsz", type=int, default=128)
    p.add_argument("--epochs", type=int, default=15, help="fine-tuning epochs (every method)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1, help="fine-tuning runs at once (each its own process)")
    args = p.parse_args(argv)
    args.out, args.cache = args.out.resolve(), args.cache.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ["SPFT_CACHE"] = str(args.cache)
    base = args.cache / "detect_transfer"
    source = prepare(base / f"source-n{args.source_images}-p{args.prevalence}-s{args.image_size}-seed1",
                     SOURCE_FINDINGS, args.source_images, 1, args.prevalence, args.image_size)
    target = prepare(base / f"target-n{args.target_images}-p{args.prevalence}-s{args.image_size}-seed2"
                            f"-train{args.target_train}",
                     TARGET_FINDINGS, args.target_images, 2, args.prevalence, args.image_size, args.target_train)
    print(f"source {SOURCE_FINDINGS}: {counts(source)}", flush=True)
    print(f"target {TARGET_FINDINGS}: {counts(target)}", flush=True)
    t0 = time.time()
    pt, src = pretrain(args, source)
    print(f"source detector {pt}: source test mAP50 {src['map50']:.3f}, mAP50-95 {src['map50_95']:.3f}, "
          f"{src['cpu_minutes']:.1f} CPU minutes", flush=True)
    jobs = [(m, s) for s in args.seeds for m in args.methods]
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        futures = [pool.submit(run, args, m, s, target, pt) for m, s in jobs]
        rows = []
        for f in futures:
            rows.append(f.result())
            print(json.dumps(rows[-1]), flush=True)
    rows.sort(key=lambda r: (METHODS.index(r["method"]), r["seed"]))
    (args.out / "results.json").write_text(json.dumps({
        "args": {k: str(v) for k, v in vars(args).items()}, "source": src, "source_counts": counts(source),
        "target_counts": counts(target), "wall_minutes": (time.time() - t0) / 60, "rows": rows}, indent=2))
    print(table(rows))


if __name__ == "__main__":
    main()
