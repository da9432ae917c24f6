"""A miniature foundation model, made offline: a small Dinov2 pretrained on *source* phantoms, saved like RAD-DINO.

Run: ``python benchmarks/foundation.py`` (defaults: 30,000 source images, 6 epochs, hidden 96, 4 blocks — the
demo's architecture; about 15 minutes on 2 CPU cores) or ``--quick`` (6,000 images, 2 epochs, about 1.5 minutes;
the preset behind the built-in ``model.name: spft:phantom-dinov2`` that the demo uses).
The last stdout line is the model folder; use it as ``spft train configs/phantom_cxr.yaml model.name=<folder>``.
``--probe`` then compares linear probes on the target CXR phantoms: this encoder vs the same architecture with random
weights (``BENCH`` line). Flags: ``--images``, ``--epochs``, ``--hidden``, ``--layers``, ``--heads``, ``--batch``,
``--lr``, ``--seed``, ``--force`` (retrain even when cached), ``--cache-dir``.

The source set, the objective, the output folder and its cache live in :mod:`spft.models.foundation` (read its
docstring); this script is the command line over it plus the linear probe (:func:`linear_probe`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from spft.models.foundation import (  # noqa: E402
    PRESETS,
    SOURCE_FINDINGS,
    Params,
    ensure_foundation,
    foundation_dir,
    generate_source,
    log,
    render_source,
)

__all__ = ["PRESETS", "SOURCE_FINDINGS", "Params", "ensure_foundation", "foundation_dir", "generate_source",
           "linear_probe", "main", "render_source"]


# ------------------------------------------------------------------------------------------------------------------
# transfer check: linear probe on the target CXR phantoms
# ------------------------------------------------------------------------------------------------------------------


def _features(encoder, prep, paths: list[str], batch: int = 128) -> np.ndarray:
    import torch

    from spft.data.transforms import ImageTransform
    from spft.models.encoders import n_prefix_tokens, pool_features

    tf = ImageTransform(prep)
    out = []
    encoder.eval()
    with torch.no_grad():
        for s in range(0, len(paths), batch):
            x = torch.stack([tf(Image.open(pth)) for pth in paths[s:s + batch]])
            h = encoder(pixel_values=x).last_hidden_state
            out.append(pool_features(h, n_prefix_tokens(encoder), "mean").numpy())
    return np.concatenate(out)


def linear_probe(folder: Path | None, config: dict | None = None, n_images: int = 3000, phantom_size: int = 128,
                 phantom_seed: int = 0, seed: int = 0) -> dict:
    """Test macro AUC of a per-class logistic regression on frozen mean-pooled features of the target CXR phantoms.

    ``folder``: a model folder (its own preprocessing); ``None``: ``config`` (a ``model.config`` mapping) with random
    weights (``torch.manual_seed(seed)``) and RAD-DINO-style preprocessing at its image size. The regularisation C is
    chosen on the validation split (macro AUC) from a small grid; train + val are not merged.
    """
    from types import SimpleNamespace

    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from spft.data.phantoms import CXR_FINDINGS
    from spft.data.registry import ensure_phantoms
    from spft.metrics.auc import multilabel_auc
    from spft.models.encoders import build_encoder, preprocessing_for

    data = ensure_phantoms(SimpleNamespace(kind="cxr", n_images=n_images, image_size=phantom_size,
                                           seed=phantom_seed, cache_dir=None))
    import csv

    with open(data / "labels.csv") as fh:
        rows = list(csv.DictReader(fh))
    torch.manual_seed(seed)
    if folder is not None:
        encoder = build_encoder(str(folder))
        prep = preprocessing_for(str(folder), encoder, None)
    else:
        encoder = build_encoder(None, config)
        prep = preprocessing_for(None, encoder, None)
    split = {s: [r for r in rows if r["split"] == s] for s in ("train", "val", "test")}
    feats = {s: _features(encoder, prep, [str(data / r["image"]) for r in rs]) for s, rs in split.items()}
    ys = {s: np.array([[float(r[c]) for c in CXR_FINDINGS] for r in rs]) for s, rs in split.items()}
    scaler = StandardScaler().fit(feats["train"])
    xs = {s: scaler.transform(f) for s, f in feats.items()}

    def fit_predict(c: float, split_name: str) -> np.ndarray:
        cols = []
        for k in range(len(CXR_FINDINGS)):
            clf = LogisticRegression(C=c, max_iter=2000).fit(xs["train"], ys["train"][:, k])
            cols.append(clf.predict_proba(xs[split_name])[:, 1])
        return np.stack(cols, 1)

    grid = (0.01, 0.1, 1.0, 10.0)
    val = {c: multilabel_auc(fit_predict(c, "val"), ys["val"], list(CXR_FINDINGS)).macro for c in grid}
    best = max(grid, key=lambda c: val[c])
    test = multilabel_auc(fit_predict(best, "test"), ys["test"], list(CXR_FINDINGS))
    return {"test_macro_auc": test.macro, "per_class": test.per_class, "C": best, "val_macro_auc": val[best],
            "n_train": len(split["train"]), "n_test": len(split["test"]), "preprocessing": prep.source}


# ------------------------------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------------------------------


def params_from_args(args) -> Params:
    base = PRESETS["quick" if args.quick else "default"]
    changes = {k: getattr(args, k) for k in ("images", "epochs", "hidden", "layers", "heads", "batch", "lr", "seed")
               if getattr(args, k) is not None}
    return dataclasses.replace(base, **changes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small preset for checks (6,000 images, 2 epochs)")
    ap.add_argument("--images", type=int, help="source images (default 30000; quick 6000)")
    ap.add_argument("--epochs", type=int, help="pretraining epochs (default 6; quick 2)")
    ap.add_argument("--hidden", type=int, help="hidden size (default 96)")
    ap.add_argument("--layers", type=int, help="transformer blocks (default 4)")
    ap.add_argument("--heads", type=int, help="attention heads (default 4; must divide --hidden)")
    ap.add_argument("--batch", type=int, help="batch size (default 64)")
    ap.add_argument("--lr", type=float, help="peak learning rate (default 1e-3)")
    ap.add_argument("--seed", type=int, help="seed of the source set and of training (default 0)")
    ap.add_argument("--cache-dir", help="cache root (default $SPFT_CACHE, else ~/.cache/spft)")
    ap.add_argument("--force", action="store_true", help="pretrain again even when the folder is cached")
    ap.add_argument("--probe", action="store_true",
                    help="then linear-probe the target CXR phantoms: this encoder vs random init (BENCH line)")
    ap.add_argument("--probe-images", type=int, default=3000, help="target phantoms for --probe (default 3000)")
    args = ap.parse_args(argv)
    p = params_from_args(args)
    if p.hidden % p.heads:
        ap.error(f"--heads {p.heads} must divide --hidden {p.hidden}")
    cached = (foundation_dir(p, args.cache_dir) / "foundation.json").is_file() and not args.force
    folder = ensure_foundation(p, args.cache_dir, args.force)
    if cached:
        log(f"cached: {folder}")
    if args.probe:
        t = time.time()
        pre = linear_probe(folder, n_images=args.probe_images, seed=p.seed)
        rnd = linear_probe(None, p.dinov2_config(), n_images=args.probe_images, seed=p.seed)
        log(json.dumps({"pretrained": pre, "random_init": rnd}, indent=1))
        print(f"BENCH probe_pretrained={pre['test_macro_auc']:.4f} probe_random={rnd['test_macro_auc']:.4f} "
              f"probe_n_train={pre['n_train']} probe_s={time.time() - t:.0f}")
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
