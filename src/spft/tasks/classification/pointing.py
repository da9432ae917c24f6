"""The pointing game on phantoms: does a classifier's heatmap point at the finding?

:func:`phantom_pointing_game` scores a phantom-trained run: for each image of a split and each finding it shows,
the class's Grad-CAM peak is a *hit* when it lies inside one of that finding's boxes in the generator's
``boxes.csv``; chance is the box area over the image area (the hit rate of a uniformly random peak). The maps come
from :mod:`spft.tasks.classification.explain` (the heatmaps ``spft predict --heatmaps`` writes), the model from
:func:`spft.tasks.classification.predict.load`; ``benchmarks/pointing_game.py`` runs it.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

from spft.errors import ConfigError, DataError
from spft.tasks.classification.explain import check_request, iter_maps
from spft.tasks.classification.predict import load


def phantom_boxes(labels_csv: str | Path) -> dict[tuple[str, str], list[tuple[int, int, int, int]]]:
    """``{(image as in labels.csv, finding): [(x_min, y_min, x_max, y_max), ...]}`` from the ``boxes.csv`` beside
    a phantom set's ``labels.csv``."""
    boxes_csv = Path(labels_csv).parent / "boxes.csv"
    if not boxes_csv.is_file():
        raise DataError(f"{boxes_csv}: no boxes.csv beside {labels_csv} (the pointing game needs phantom boxes)")
    out: dict[tuple[str, str], list[tuple[int, int, int, int]]] = defaultdict(list)
    for row in pd.read_csv(boxes_csv).itertuples(index=False):
        out[(row.image, row.finding)].append((int(row.x_min), int(row.y_min), int(row.x_max), int(row.y_max)))
    return dict(out)


def box_fraction(boxes, height: int, width: int) -> float:
    """The share of an ``height x width`` image inside the union of ``boxes`` (max exclusive)."""
    mask = np.zeros((height, width), bool)
    for x0, y0, x1, y1 in boxes:
        mask[max(0, y0):min(height, y1), max(0, x0):min(width, x1)] = True
    return float(mask.mean())


def phantom_pointing_game(run_dir: str | Path, split: str = "test", method: str = "gradcam", model=None,
                          batch_size: int = 8, limit: int | None = None) -> dict:
    """The pointing game of a phantom-trained run on ``split`` (see the module docstring).

    Returns ``{"method", "split", "n", "hit_rate", "chance", "per_class": {class: {"n", "hits", "hit_rate",
    "chance"}}, "images", "no_box", "no_signal", "pairs": [(image, class, hit, chance), ...]}``. ``n`` counts (image,
    finding) pairs with at least one box; a map without any positive value (``no_signal``) counts as a miss.
    ``limit``: at most this many images (the first of the split). ``model``: an already loaded classifier.
    """
    from spft.data.registry import load_table
    from spft.experiments.rundir import load_run_config
    from spft.models.heatmaps import pointing_game

    cfg = load_run_config(run_dir)
    if cfg.data.name != "phantom" or getattr(cfg.data.phantom, "kind", "cxr") != "cxr":
        raise ConfigError(f"{run_dir}: the pointing game needs a run trained on CXR phantoms (data.name: phantom)")
    model = model or load(run_dir)
    check_request(model, None, method)
    table = load_table(cfg.data, cfg.seed)
    root = Path(table.source).parent
    boxes = phantom_boxes(table.source)
    jobs, keys, no_box = [], [], 0
    for path, s, labels in zip(table.paths, table.splits, table.labels):
        if s != split:
            continue
        rel = Path(path).relative_to(root).as_posix()
        present = [c for c, y in zip(table.classes, labels) if y == 1 and c in model.classes]
        with_box = [c for c in present if boxes.get((rel, c))]
        no_box += len(present) - len(with_box)
        if with_box:
            jobs.append((path, [model.classes.index(c) for c in with_box]))
            keys.append((rel, with_box))
        if limit is not None and len(jobs) >= limit:
            break
    if not jobs:
        raise DataError(f"{run_dir}: no {split} image with a boxed finding")
    pairs = []
    no_signal = 0
    for k, picture, maps in iter_maps(model, jobs, method, batch_size):
        rel, names = keys[k]
        for c in names:
            heat = maps[None] if method == "rollout" else maps[model.classes.index(c)]
            bxs = boxes[(rel, c)]
            hit = pointing_game([heat], [bxs])[0]
            no_signal += hit is None
            pairs.append((rel, c, bool(hit), box_fraction(bxs, picture.height, picture.width)))
    per_class = {}
    for c in model.classes:
        mine = [p for p in pairs if p[1] == c]
        if mine:
            hits = sum(p[2] for p in mine)
            per_class[c] = {"n": len(mine), "hits": hits, "hit_rate": hits / len(mine),
                            "chance": float(np.mean([p[3] for p in mine]))}
    return {"method": method, "split": split, "images": len(jobs), "n": len(pairs),
            "hit_rate": sum(p[2] for p in pairs) / len(pairs), "chance": float(np.mean([p[3] for p in pairs])),
            "per_class": per_class, "no_box": no_box, "no_signal": no_signal, "pairs": pairs}


def format_pointing_game(result: dict) -> str:
    """The result of :func:`phantom_pointing_game` as a Markdown table."""
    lines = ["| class | n | hit rate | chance |", "|---|---:|---:|---:|"]
    for c, r in result["per_class"].items():
        lines.append(f"| {c} | {r['n']} | {r['hit_rate']:.2f} | {r['chance']:.2f} |")
    lines.append(f"| **all** | {result['n']} | {result['hit_rate']:.2f} | {result['chance']:.2f} |")
    return "\n".join(lines)
