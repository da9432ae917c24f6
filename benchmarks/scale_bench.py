"""Full-scale ChestX-ray14 start-up benchmark (not a test): a 112,120-row copy with tiny images, then what a user
waits for before and around a smoke run.

    python benchmarks/scale_bench.py [--root DIR] [--rows 112120] [--skip-train]

The copy (``Data_Entry_2017_v2020.csv`` with the real columns, ``train_val_list.txt`` / ``test_list.txt``, one
16x16 grey PNG per row in ``images_001/images/`` ... ``images_012/images/``) is generated once under ``--root``
(default ``$TMPDIR/spft-scale-bench/chestxray14-<rows>``) and reused by later runs: one PNG is written and every
row's file is a hard link to it (a copy where links are refused), so 112k files take seconds and almost no space.
The image check reads only headers and file ends, which this exercises fully; decoding costs are those of a 16 px
image (the OS page cache is warm: a cold network disk is slower than "header check, cold" here).

Measured, with budgets for a 2-core machine (PASS / OVER printed for each):

* ``spft data check configs/chestxray14.yaml data.root=ROOT``, as a child process: wall time <= 60 s and peak RSS
  <= 2.0 GiB (``ru_maxrss`` of that child alone);
* loading the table (CSV, file index, official lists, the grouped stratified validation split) <= 20 s, and the
  stratified split alone (:func:`spft.data.splits.multilabel_grouped_split`) <= 10 s;
* the image check before training (``data.check_images: header``): cold (no image check cache) <= 150 s, warm (every
  file remembered: only ``stat``) <= 10 s;
* stage-1 feature extraction of the tiny encoder (DINOv2, 2 blocks, 32 px; decode + preprocessing + forward, one
  process, no workers) >= 150 img/s;
* the smoke run ``spft train configs/chestxray14.yaml data.root=ROOT model.config=<tiny dinov2>
  trainer.limit_train_batches=20 trainer.limit_val_batches=10 trainer.limit_test_batches=10 trainer.max_epochs=3``
  (2 stage-1 epochs on cached features + 1 stage-2 epoch), image check warm: start to first training step (the
  stage-1 features of both splits ready) <= 60 s, the whole run <= 180 s, and every pass limited (the run extracts
  20 x 32 x 2 epochs train + 10 x 64 val features at most, and scores 10 x 64 test images).

Results: benchmarks/RESULTS.md, "Full-scale start-up (ChestX-ray14 layout)".
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

FINDINGS = {"Atelectasis": 0.103, "Cardiomegaly": 0.025, "Effusion": 0.119, "Infiltration": 0.177, "Mass": 0.052,
            "Nodule": 0.056, "Pneumonia": 0.013, "Pneumothorax": 0.047, "Consolidation": 0.042, "Edema": 0.021,
            "Emphysema": 0.022, "Fibrosis": 0.015, "Pleural_Thickening": 0.030, "Hernia": 0.002}  # NIH prevalence
HEADER = ("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
          "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]")
TINY = ("model.name=null", "model.config={model_type: dinov2, hidden_size: 32, num_hidden_layers: 2, "
        "num_attention_heads: 2, mlp_ratio: 2, patch_size: 8, image_size: 32}", "model.head_hidden=32",
        "data.image_size=32")
BUDGETS = {"data_check_s": 60, "data_check_rss_gib": 2.0, "table_load_s": 20, "stratified_split_s": 10,
           "header_check_cold_s": 150, "header_check_warm_s": 10, "features_img_per_s": 150,
           "smoke_start_to_first_step_s": 60, "smoke_total_s": 180}
AT_LEAST = {"features_img_per_s"}


def generate(root: Path, rows: int, seed: int = 0) -> Path:
    """The ChestX-ray14-format copy under ``root`` (reused when complete)."""
    import numpy as np
    from PIL import Image

    done = root / ".complete"
    if done.is_file() and done.read_text().strip() == str(rows):
        return root
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    names = list(FINDINGS)
    prevalence = np.array([FINDINGS[n] for n in names])
    lines, trainval, test = [HEADER], [], []
    pid, follow = 1, 0
    visits = int(rng.integers(1, 7))
    for _ in range(rows):
        if follow >= visits:
            pid, follow, visits = pid + 1, 0, int(rng.integers(1, 7))
        name = f"{pid:08d}_{follow:03d}.png"
        found = [n for n, hit in zip(names, rng.random(len(names)) < prevalence) if hit]
        lines.append(f"{name},{'|'.join(found) or 'No Finding'},{follow},{pid},{int(rng.integers(1, 95))},"
                     f"{'MF'[pid % 2]},{('PA', 'AP')[follow % 2]},2500,2048,0.143,0.143")
        (test if pid % 9 in (0, 1) else trainval).append(name)  # ~22% of patients: the official test share
        follow += 1
    (root / "Data_Entry_2017_v2020.csv").write_text("\n".join(lines) + "\n")
    (root / "train_val_list.txt").write_text("\n".join(trainval) + "\n")
    (root / "test_list.txt").write_text("\n".join(test) + "\n")
    source = root / ".one.png"
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8), "L").save(source)
    folders = 12
    per = -(-rows // folders)
    link = True
    for i, line in enumerate(lines[1:]):
        folder = root / f"images_{1 + i // per:03d}" / "images"
        if i % per == 0:
            folder.mkdir(parents=True)
        target = folder / line.split(",", 1)[0]
        if link:
            try:
                os.link(source, target)
                continue
            except OSError:
                link = False
        shutil.copyfile(source, target)
    old = time.time() - 3600  # not "just written": the image check cache remembers them
    os.utime(source, (old, old))  # hard links share the inode, so this dates them all
    done.write_text(f"{rows}\n")
    return root


def child(args: list[str], env: dict, watch: dict[str, str] | None = None, timeout: int = 1800) -> dict:
    """Run ``args`` in a fresh wrapper process: wall time, that child's peak RSS, and when each ``watch`` pattern
    first appeared in its output (seconds from the start)."""
    wrapper = (
        "import json, resource, subprocess, sys, time\n"
        "t = time.time()\n"
        "p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)\n"
        "for line in p.stdout:\n"
        "    print(f'{time.time() - t:.3f}\\t{line}', end='', flush=True)\n"
        "rc = p.wait()\n"
        "print(json.dumps({'rc': rc, 'wall': time.time() - t, "
        "'maxrss_kib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))\n")
    proc = subprocess.run([sys.executable, "-c", wrapper, *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=timeout)
    out = proc.stdout.splitlines()
    result = json.loads(out[-1])
    seen = {}
    for line in out[:-1]:
        stamp, _, text = line.partition("\t")
        for key, pattern in (watch or {}).items():
            if key not in seen and re.search(pattern, text):
                seen[key] = float(stamp)
    result["seen"] = seen
    result["output"] = "\n".join(line.partition("\t")[2] for line in out[:-1])
    if result["rc"] != 0:
        sys.stderr.write(result["output"][-4000:] + "\n")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", help="where the copy lives (generated when missing)")
    parser.add_argument("--rows", type=int, default=112_120)
    parser.add_argument("--cache", help="SPFT_CACHE for the run (default: ROOT/../spft-cache, emptied first)")
    parser.add_argument("--skip-train", action="store_true", help="leave out the smoke run")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    root = Path(args.root or Path(tempfile.gettempdir()) / "spft-scale-bench" / f"chestxray14-{args.rows}")
    cache = Path(args.cache or root.parent / f"spft-cache-{args.rows}")
    shutil.rmtree(cache, ignore_errors=True)
    os.environ.update(SPFT_CACHE=str(cache), HF_HUB_OFFLINE="1", YOLO_OFFLINE="1")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]))
    results: dict[str, float] = {}

    t = time.time()
    generate(root, args.rows)
    print(f"copy: {root} ({args.rows} rows, ready in {time.time() - t:.1f} s)", flush=True)

    check = child([sys.executable, "-m", "spft.cli", "data", "check", "configs/chestxray14.yaml",
                   f"data.root={root}"], env)
    results["data_check_s"] = check["wall"]
    results["data_check_rss_gib"] = check["maxrss_kib"] / 2**20

    import numpy as np

    from spft.config import load_config
    from spft.data import splits as splits_mod
    from spft.data.check import scan_images
    from spft.data.io import set_max_pixels
    from spft.data.registry import load_table

    cfg = load_config(REPO / "configs" / "chestxray14.yaml", [f"data.root={root}", *TINY])
    timed = {"split": 0.0}
    real_split = splits_mod.multilabel_grouped_split

    def timed_split(*a, **k):
        t0 = time.time()
        try:
            return real_split(*a, **k)
        finally:
            timed["split"] += time.time() - t0

    import spft.data.chestxray14 as nih

    nih.multilabel_grouped_split = timed_split
    t = time.time()
    table = load_table(cfg.data, cfg.seed)
    results["table_load_s"] = time.time() - t
    results["stratified_split_s"] = timed["split"]
    nih.multilabel_grouped_split = real_split
    sizes = table.split_sizes()["n_images"]
    print(f"table: {sizes}", flush=True)

    set_max_pixels(cfg.data.max_image_pixels)
    paths = sorted(set(table.paths))
    t = time.time()
    bad = scan_images(paths, decode=False, progress=False)
    results["header_check_cold_s"] = time.time() - t
    t = time.time()
    bad_again = scan_images(paths, decode=False, progress=False)
    results["header_check_warm_s"] = time.time() - t
    assert not bad and not bad_again, (len(bad), len(bad_again))

    import torch

    from spft.tasks.classification.build import build_run

    _, _, module, dm = build_run(cfg, None, table=table)
    n = min(2048, len(dm.datasets["train"]))
    t = time.time()
    dm.feature_cache._extract("train", dm.datasets["train"], torch.device("cpu"), 64, {"num_workers": 0}, 0, 1,
                              "fp32", np.arange(n))
    results["features_img_per_s"] = n / (time.time() - t)

    if not args.skip_train:
        run = root.parent / f"smoke-run-{args.rows}"
        shutil.rmtree(run, ignore_errors=True)
        smoke = child([sys.executable, "-m", "spft.cli", "train", "configs/chestxray14.yaml", f"data.root={root}",
                       *TINY, "data.num_workers=1", "trainer.limit_train_batches=20",
                       "trainer.limit_val_batches=10", "trainer.limit_test_batches=10", "trainer.max_epochs=3",
                       "trainer.progress_bar=false", f"run.dir={run}"], env,
                      watch={"setup": r"run directory:", "first_step": r"stage-1 feature cache: .*val features"})
        results["smoke_start_to_first_step_s"] = smoke["seen"].get("first_step", float("nan"))
        results["smoke_total_s"] = smoke["wall"]
        metrics = json.loads((run / "metrics.json").read_text()) if (run / "metrics.json").is_file() else {}
        written = [int(m) for m in re.findall(r"stage-1 feature cache: (\d+) \w+ features written", smoke["output"])]
        print(f"smoke run: rc {smoke['rc']}, setup done at {smoke['seen'].get('setup', float('nan')):.1f} s, "
              f"features extracted {written}, test n={metrics.get('n')}, limited={metrics.get('limited')}")
        assert smoke["rc"] == 0 and metrics.get("n", 10**9) <= 10 * 64 and sum(written) <= 20 * 32 * 2 + 10 * 64

    print(f"\n{'measure':<32}{'value':>12}  budget")
    for key, value in results.items():
        budget = BUDGETS[key]
        ok = value >= budget if key in AT_LEAST else value <= budget
        sign = ">=" if key in AT_LEAST else "<="
        print(f"{key:<32}{value:>12.2f}  {sign} {budget:<8} {'PASS' if ok else 'OVER'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": args.rows, "results": results, "budgets": BUDGETS}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
