"""The class weights a config's training split gets: prevalence, N_neg/N_pos, the normalised weight (mean 1) with
and without the config's heuristic multipliers, and the positive-to-negative loss mass of each class under
``recipe.class_weights.apply`` both / positive (docs/recipe.md, "What the class weights do to common classes").

    python scripts/class_weight_numbers.py [CONFIG] [KEY=VALUE ...]      (default configs/phantom_cxr.yaml)

Builds the config's data table (generates the phantoms into $SPFT_CACHE the first time); trains nothing.
"""

from __future__ import annotations

import sys

import torch

from spft.config import load_config
from spft.data.registry import build_table
from spft.recipe import ClassWeights


def main(argv: list[str]) -> None:
    config = argv[0] if argv and "=" not in argv[0] else "configs/phantom_cxr.yaml"
    cfg = load_config(config, [a for a in argv if "=" in a])
    table = build_table(cfg.data, cfg.seed)
    labels = torch.from_numpy(table.labels[table.indices("train")]).double()
    plain = ClassWeights(table.classes, labels, heuristic={}, enabled=True).current.tolist()
    heur = ClassWeights(table.classes, labels, heuristic=cfg.recipe.class_weights.heuristic,
                        enabled=True).current.tolist()
    known = ~torch.isnan(labels)
    pos = torch.where(known, labels, torch.zeros_like(labels)).sum(0)
    neg = known.sum(0) - pos
    print(f"{config}: {len(labels)} training images")
    print(f"{'class':16s} {'prevalence':>10s} {'Nneg/Npos':>9s} {'weight':>7s} {'+heuristic':>10s} "
          f"{'pos:neg both':>12s} {'pos:neg positive':>16s}")
    for c, p, n, w, h in zip(table.classes, pos.tolist(), neg.tolist(), plain, heur):
        ratio = p / n if n else float("nan")
        print(f"{c:16s} {p / (p + n):10.3f} {n / p if p else float('nan'):9.2f} {w:7.3f} {h:10.3f} "
              f"{ratio:12.3f} {w * ratio:16.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
