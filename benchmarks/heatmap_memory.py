"""Peak memory of ``spft predict --heatmaps`` at RAD-DINO size (ViT-B/14, 518 px), against the same command
without heatmaps (plain inference, ``torch.inference_mode``) in a process of its own.

Run: ``python benchmarks/heatmap_memory.py [--images 6,16,64] [--before 6] [--device cpu]``

A randomly initialised classifier of RAD-DINO's shape is written as an ``spft export`` folder (the layout
``spft.load`` reads; :func:`predict_bench.write_export`) with grey 512 px PNGs. Each measurement runs
``spft predict EXPORT IMAGES --out FILE [--heatmaps DIR --heatmap-classes c0]`` in a fresh child process and reads
its peak resident set size (``ru_maxrss``). ``--before N`` also measures N images with Grad-CAM differentiating
through every encoder block, as spft did before (the blocks below the last one are run without autograd now:
:func:`spft.models.heatmaps._grad_of_logit`); that mode patches spft in the child and exists for this comparison
only. Grad-CAM runs at most 8 (image, class) pairs per forward/backward pass, so memory is bounded by that batch,
not by the number of images.

The last line is machine-readable: ``BENCH heatmap_rss_gb_<N>=<GB> ... predict_rss_gb_<N>=<GB>``. Not a test.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

CHILD = r"""
import os, resource, sys
if os.environ.get("SPFT_BENCH_FULL_GRAPH") == "1":  # the Grad-CAM before the change: autograd through every block
    import torch
    from spft.models import heatmaps as hm

    def full_graph(model, pixel_values, class_index, use_input):
        capture = hm._Capture(hm._last_block(model), use_input)
        try:
            with hm._eval_mode(model), torch.enable_grad():
                logits = model(pixel_values)
                idx = hm._class_indices(class_index, len(logits), logits.device)
                (grad,) = torch.autograd.grad(logits.gather(1, idx[:, None]).sum(), capture.value)
        finally:
            capture.remove()
        return capture.value.detach(), grad.detach()

    hm._grad_of_logit = full_graph
from spft.cli import main
code = main(sys.argv[1:])
sys.stderr.write(f"\nMAXRSS_KB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\n")
sys.exit(code)
"""


def measure(export: Path, images: list[Path], out: Path, heatmaps: bool, before: bool,
            device: str) -> tuple[float, float]:
    """(peak RSS in GB, seconds) of one ``spft predict`` child."""
    folder = out / f"in{len(images)}"
    folder.mkdir(parents=True, exist_ok=True)
    for p in images:
        link = folder / p.name
        if not link.exists():
            link.symlink_to(p)
    tag = f"{len(images)}{'_hm' if heatmaps else ''}{'_before' if before else ''}"
    args = ["predict", str(export), str(folder), "--out", str(out / f"pred_{tag}.csv"), "--device", device,
            "--overwrite"]
    if heatmaps:
        args += ["--heatmaps", str(out / f"maps_{tag}"), "--heatmap-classes", "c0"]
    env = {**os.environ, "SPFT_BENCH_FULL_GRAPH": "1" if before else "0"}
    start = time.time()
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, env=env)
    seconds = time.time() - start
    if proc.returncode != 0:
        raise SystemExit(f"spft predict failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    kb = int(proc.stderr.rsplit("MAXRSS_KB", 1)[1].split()[0])
    return kb / 1024 ** 2, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default="6,16,64", help="image counts (comma-separated)")
    parser.add_argument("--before", type=int, default=0, help="also measure N images with the old full-graph Grad-CAM")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--work", default=None)
    args = parser.parse_args()
    from predict_bench import write_export, write_images

    work = Path(args.work or tempfile.mkdtemp(prefix="spft-heatmap-mem-"))
    export = work / "export"
    if not (export / "config.json").is_file():
        write_export(export, "raddino")
    counts = [int(n) for n in args.images.split(",") if n]
    pngs = write_images(work / "png", max(counts + [args.before]), 512)
    bench = []
    print(f"RAD-DINO shape (ViT-B/14, 518 px), random weights, device {args.device}, export {export}")
    print(f"{'images':>6}  {'predict GB':>10}  {'+ heatmaps GB':>13}  {'heatmaps s':>10}")
    for n in counts:
        plain_gb, _ = measure(export, pngs[:n], work, False, False, args.device)
        hm_gb, hm_s = measure(export, pngs[:n], work, True, False, args.device)
        print(f"{n:>6}  {plain_gb:>10.2f}  {hm_gb:>13.2f}  {hm_s:>10.0f}", flush=True)
        bench += [f"predict_rss_gb_{n}={plain_gb:.2f}", f"heatmap_rss_gb_{n}={hm_gb:.2f}"]
    if args.before:
        old_gb, old_s = measure(export, pngs[:args.before], work, True, True, args.device)
        print(f"{args.before:>6}  {'':>10}  {old_gb:>13.2f}  {old_s:>10.0f}  (before: autograd through every block)")
        bench.append(f"heatmap_before_rss_gb_{args.before}={old_gb:.2f}")
    print("BENCH " + " ".join(bench))


if __name__ == "__main__":
    main()
