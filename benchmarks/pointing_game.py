"""Do the heatmaps point at the findings? The pointing game of a phantom-trained run, against chance.

Run: ``python benchmarks/pointing_game.py --run RUN`` (a finished run trained on CXR phantoms, e.g. ``spft demo``'s),
or ``python benchmarks/pointing_game.py --train DIR [KEY=VALUE ...]`` to train ``configs/phantom_cxr.yaml`` (with
those overrides) into DIR first. Options: ``--methods gradcam,rollout``, ``--split test``, ``--example PNG`` (a
picture: a test image, its Grad-CAM overlays for two findings, the generator's boxes in green), ``--json FILE``.

For every image of the split and every finding it shows that has a box in the generator's ``boxes.csv``, the map of
that class (Grad-CAM; rollout is class-agnostic, one map per image) is put back on the image's pixels and its peak is
a hit when inside one of the finding's boxes (:func:`spft.models.heatmaps.pointing_game`). Chance is the mean share
of the image the finding's boxes cover: the hit rate of a peak placed uniformly at random.
(:func:`spft.tasks.classification.pointing.phantom_pointing_game`). The last line is machine-readable:
``BENCH pointing_<method>=<hit rate> pointing_chance=<chance> pointing_n=<pairs>``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]


def train(out: Path, overrides: list[str]) -> Path:
    from spft.config import load_config
    from spft.tasks.classification.train import train as train_run

    cfg = load_config(REPO / "configs" / "phantom_cxr.yaml", [f"run.dir={out}", "trainer.progress_bar=false",
                                                              *overrides])
    return train_run(cfg)


def example_picture(run: Path, result: dict, out: Path, classes=("Cardiomegaly", "Effusion"), scale: int = 2) -> Path:
    """A test image where Grad-CAM hits as many of ``classes`` (then of any finding) as possible: the image, then
    one Grad-CAM overlay for each of two hit findings with its boxes outlined in green, side by side."""
    from PIL import Image, ImageDraw

    import spft
    from spft.data.registry import load_table
    from spft.experiments.rundir import load_run_config
    from spft.models.heatmaps import overlay
    from spft.tasks.classification.pointing import phantom_boxes

    cfg = load_run_config(run)
    table = load_table(cfg.data, cfg.seed)
    root = Path(table.source).parent
    boxes = phantom_boxes(table.source)
    hits: dict[str, set[str]] = {}
    for rel, c, hit, _ in result["pairs"]:
        if hit:
            hits.setdefault(rel, set()).add(c)
    wanted = set(classes)
    rel = max(hits, key=lambda r: (len(hits[r] & wanted), len(hits[r])))
    names = ([c for c in classes if c in hits[rel]] + sorted(hits[rel] - wanted))[:2]
    m = spft.load(run, device="cpu")
    maps = m.heatmaps(root / rel, classes=names)
    picture = Image.open(root / rel).convert("L")
    size = (picture.width * scale, picture.height * scale)
    panels = [picture.convert("RGB").resize(size, Image.Resampling.NEAREST)]
    for c in names:
        panel = overlay(picture, maps[c]).resize(size, Image.Resampling.BILINEAR)
        draw = ImageDraw.Draw(panel)
        for x0, y0, x1, y1 in boxes[(rel, c)]:
            draw.rectangle([x0 * scale, y0 * scale, x1 * scale - 1, y1 * scale - 1], outline=(0, 255, 0), width=2)
        draw.text((4, 4), f"Grad-CAM {c}", fill=(255, 255, 255))
        panels.append(panel)
    sheet = Image.new("RGB", (size[0] * len(panels) + 4 * (len(panels) - 1), size[1]), (255, 255, 255))
    for k, panel in enumerate(panels):
        sheet.paste(panel, (k * (size[0] + 4), 0))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(colors=192, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)  # a small file
    print(f"example: {out} ({rel}: {', '.join(names)})")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a finished run trained on CXR phantoms")
    parser.add_argument("--train", type=Path, metavar="DIR", help="train configs/phantom_cxr.yaml into DIR first")
    parser.add_argument("overrides", nargs="*", help="KEY=VALUE overrides for --train")
    parser.add_argument("--methods", default="gradcam,rollout")
    parser.add_argument("--split", default="test")
    parser.add_argument("--example", type=Path, help="write an example picture here (e.g. docs/heatmap_example.png)")
    parser.add_argument("--json", type=Path, help="write the results (without the per-pair list) here")
    args = parser.parse_args()
    if bool(args.run) == bool(args.train):
        parser.error("give --run RUN or --train DIR")
    import torch

    from spft.tasks.classification.pointing import format_pointing_game, phantom_pointing_game

    start = time.time()
    run = args.run or train(args.train, args.overrides)
    if args.train:
        print(f"trained {run} in {time.time() - start:.0f} s (configs/phantom_cxr.yaml {' '.join(args.overrides)})")
    metrics = json.loads((run / "metrics.json").read_text())
    print(f"run {run}: test macro AUC {metrics['macro_auc']:.3f}, best epoch {metrics.get('best_epoch')}; "
          f"{torch.get_num_threads()} threads")
    results = {}
    for method in args.methods.split(","):
        t = time.time()
        r = phantom_pointing_game(run, args.split, method)
        results[method] = r
        print(f"\n{method} ({r['images']} {args.split} images with boxed findings, {r['n']} image-finding pairs; "
              f"{r['no_box']} findings without a box left out, {r['no_signal']} all-zero maps counted as misses; "
              f"{time.time() - t:.0f} s):")
        print(format_pointing_game(r))
    if args.example and "gradcam" in results:
        example_picture(run, results["gradcam"], args.example)
    if args.json:
        args.json.write_text(json.dumps({m: {k: v for k, v in r.items() if k != "pairs"} for m, r in results.items()},
                                        indent=2))
    first = next(iter(results.values()))
    print("BENCH " + " ".join(f"pointing_{m}={r['hit_rate']:.3f}" for m, r in results.items())
          + f" pointing_chance={first['chance']:.3f} pointing_n={first['n']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
