"""The transfer table: the paper's ablation ladder on an encoder that was pretrained, on target data it never saw.

Run (remakes everything; about 25-35 minutes on 2 CPU cores)::

    OMP_NUM_THREADS=1 SPFT_CACHE=/tmp/fcache python benchmarks/transfer.py --out /tmp/transfer --jobs 2

``--smoke`` runs every row once (seed 0, 2 epochs, one grid value) in a few minutes, to check the plumbing.

**Encoder.** The miniature foundation model of ``benchmarks/foundation.py`` (Dinov2, hidden 96, 4 blocks, patch 8,
64 px) pretrained on *source* phantoms whose ten findings are none of the target's eight; built (about 20 minutes)
unless cached, or ``--foundation FOLDER``. Loaded with ``model.name=<folder> model.config=null data.image_size=null``.

**Target.** The demo's cxr phantoms (``src/spft/configs/phantom_cxr.yaml``: 3,000 images of 128 px, phantom seed
0, 8 findings), its fixed val (457) and test (455) splits, and ``data.train_subset: N`` training images drawn from
its 2,088-image train split (seeded by the run's seed, stratified per class), N in ``--sizes`` (100 and 1,000).
Every row at a size has the same epochs and batch size (100 images: 12 epochs of batch 25; 1,000: 8 of 64), no early
stopping (``trainer.patience`` = epochs; the best validation epoch's weights are tested, as spft does).

**Rows.**

1. linear probe: per-class logistic regression on the frozen encoder's mean-pooled patch tokens (standardised), C
   from {0.01, 0.1, 1, 10} by validation macro AUC, on the same training subset as the runs of that seed;
2. MLP probe: spft with ``recipe.unfreeze.enabled=false`` (the head only, stage 1 for the whole run), no class
   weights, no EMA; head LR from ``--mlp-grid`` by validation;
3. plain full fine-tune: spft with every recipe switch off (no stage 1, every block and the embeddings open from
   the first step, no class weights, no EMA, constant LR, no warm-up) — ``tests/test_plain_loop.py`` shows this
   equals a plain PyTorch loop; encoder = head LR from ``--plain-grid`` by validation;
4. + progressive unfreezing: stage 1 (2 epochs) then the top 3 of 4 blocks (2 per epoch, embeddings frozen), cosine,
   a one-epoch warm-up after each unfreeze step, head LR of row 2, encoder LR from ``--enc-grid`` by validation;
5. + class weights, the paper's rule (``apply=both``) and 5b ``apply=positive`` (the demo's settings: refinement
   eta 0.3, Nodule x1.5);
6. + EMA (decay 0.99) = full SPFT, with each class-weight variant (6, 6b).

Grids (defaults: MLP head LR {3e-3, 1e-2, 3e-2}; plain LR {1e-4, 3e-4, 1e-3, 3e-3}; ladder encoder LR {3e-5, 1e-4,
3e-4}) are searched with the first seed only and chosen on *validation* macro AUC (never test); the chosen grid run
is reused as that row's first-seed run. Every spft row runs through ``spft ablate`` (one sweep per phase, ``--jobs``
at once; sweep folders are named by a hash of their rows, and a finished run with the same overrides anywhere under
``--out`` is copied in rather than retrained, so rerunning the command, or widening a grid, only trains what is
new); the final rows of each size form one sweep that ``spft report`` reads (``<out>/n<N>/final-<hash>/report``).

**Output** (``--out``): ``transfer.md`` (what is printed: test macro AUC mean ± std over seeds per row and size,
paired Δ vs the plain fine-tune with a 95% paired bootstrap interval, per-class test AUC, the grid choices, stage-1
and class-weight diagnostics), ``transfer.json`` and the figure (``--figure``, default ``docs/transfer.png``).

**Paired Δ.** For each bootstrap replicate (spft's protocol, :mod:`spft.reporting.bootstrap`: patients of the test
split resampled with ``np.random.default_rng(0)``, 1,000 replicates, the same draws for every run since the test set
is the same), Δ_b = mean over seeds of (macro AUC of the row − macro AUC of the plain fine-tune, same seed); the
interval is the 2.5/97.5th percentile of Δ_b. It covers test-set sampling, with seeds averaged; "± std" is the spread
of the seed-wise Δ.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "src" / "spft" / "configs" / "phantom_cxr.yaml"
SPFT = [sys.executable, "-c", "import sys; from spft.cli import main; sys.exit(main())"]

# per training-set size: (epochs, batch size); the same for every row at that size
BUDGET = {100: (12, 25), 1000: (8, 64)}
STAGE1_EPOCHS, TOP_K, BLOCKS_PER_EPOCH = 2, 3, 2


def lr_tag(lr: float) -> str:
    return f"{lr:.0e}".replace("e-0", "e-")


def common(folder: Path, n: int, epochs: int, batch: int) -> list[str]:
    return [f"model.name={folder}", "model.config=null", "data.image_size=null", f"data.train_subset={n}",
            f"trainer.max_epochs={epochs}", f"trainer.patience={epochs}", f"trainer.batch_size={batch}",
            "data.num_workers=0"]


def plain(lr: float) -> list[str]:
    return ["recipe.stage1_epochs=0", "recipe.unfreeze.enabled=true", "recipe.unfreeze.top_k=null",
            "recipe.unfreeze.blocks_per_epoch=100", "recipe.unfreeze.embeddings=true",
            "recipe.class_weights.enabled=false", "recipe.ema.enabled=false", "optim.schedule=constant",
            "optim.warmup_steps=0", f"optim.lr_encoder={lr}", f"optim.lr_head={lr}"]


def mlp(lr_head: float) -> list[str]:
    return ["recipe.unfreeze.enabled=false", "recipe.class_weights.enabled=false", "recipe.ema.enabled=false",
            "optim.warmup_steps=0", f"optim.lr_head={lr_head}"]


def ladder(lr_head: float, lr_enc: float, warmup: int, weights: str | None, ema: bool) -> list[str]:
    out = [f"recipe.stage1_epochs={STAGE1_EPOCHS}", "recipe.unfreeze.enabled=true", f"recipe.unfreeze.top_k={TOP_K}",
           f"recipe.unfreeze.blocks_per_epoch={BLOCKS_PER_EPOCH}", "recipe.unfreeze.embeddings=false",
           f"optim.warmup_steps={warmup}", f"optim.lr_head={lr_head}", f"optim.lr_encoder={lr_enc}",
           "optim.schedule=cosine"]
    out += (["recipe.class_weights.enabled=true", f"recipe.class_weights.apply={weights}"] if weights
            else ["recipe.class_weights.enabled=false"])
    out += [f"recipe.ema.enabled={'true' if ema else 'false'}"]
    return out


# ------------------------------------------------------------------------------------------------------------------
# sweeps
# ------------------------------------------------------------------------------------------------------------------


def run_sweep(name: str, overlays: list[dict], seeds: list[int], out: Path, jobs: int, log) -> Path:
    """``spft ablate`` the overlays (each with its full override list) for ``seeds`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    study = out / "study.json"
    study.write_text(json.dumps({"name": name, "kind": "custom", "overlays": overlays}, indent=1))
    cmd = [*SPFT, "ablate", str(CONFIG), "--study", str(study), "--seeds", ",".join(map(str, seeds)),
           "--out", str(out), "--jobs", str(jobs)]
    t0 = time.time()
    log(f"$ spft ablate {CONFIG.relative_to(ROOT)} --study {study} --seeds {','.join(map(str, seeds))} "
        f"--out {out} --jobs {jobs}   ({len(overlays)} rows)")
    proc = subprocess.run(cmd, cwd=out, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    (out / "ablate.log").write_text(proc.stdout)
    log(f"  done in {time.time() - t0:.0f} s (exit {proc.returncode})")
    if proc.returncode != 0:
        log(proc.stdout[-3000:])
        raise SystemExit(f"spft ablate failed for {out}")
    return out


def val_score(run_dir: Path) -> float:
    """Best validation macro AUC of the monitored weights (EMA when on), as spft's checkpoint selection."""
    rows = list(csv.DictReader(open(run_dir / "history.csv")))
    cfg_text = (run_dir / "config.yaml").read_text()
    import yaml

    ema = ((yaml.safe_load(cfg_text).get("recipe") or {}).get("ema") or {}).get("enabled", True)
    key = "val_auc_ema" if ema else "val_auc_raw"
    vals = [float(r[key]) for r in rows if r.get(key) not in (None, "") and math.isfinite(float(r[key]))]
    return max(vals) if vals else float("nan")


def choose(sweep: Path, names: list[str], seed: int) -> tuple[str, dict]:
    scores = {nm: val_score(sweep / nm / f"seed{seed}") for nm in names}
    return max(names, key=lambda nm: scores[nm]), scores


def finished_runs(out: Path, seed: int) -> dict[tuple, Path]:
    """``{overrides: run dir}`` of every finished run of ``seed`` in the sweeps under ``out`` (read from their
    study.json), so that a grid extended later, or a final row equal to a grid point, reuses it."""
    found: dict[tuple, Path] = {}
    for study in sorted(out.glob("**/study.json")):
        try:
            overlays = json.loads(study.read_text())["overlays"]
        except (OSError, ValueError, KeyError):
            continue
        for ov in overlays:
            run = study.parent / ov["name"] / f"seed{seed}"
            if (run / "DONE").is_file() and (run / "predictions_test.csv").is_file():
                found.setdefault(tuple(ov["overrides"]), run)
    return found


def sweep_dir(out: Path, prefix: str, overlays: list[dict]) -> Path:
    """A grid sweep's folder, named by its content (``spft ablate`` refuses a changed study in a used folder)."""
    import hashlib

    key = hashlib.sha256(json.dumps(overlays, sort_keys=True).encode()).hexdigest()[:10]
    return out / f"{prefix}-{key}"


def reuse(out: Path, target: Path, overlays: list[dict], seed: int) -> None:
    """Copy an earlier finished run with the same overrides into ``target`` for each overlay (the sweep skips it)."""
    found = finished_runs(out, seed)
    for ov in overlays:
        src = found.get(tuple(ov["overrides"]))
        if src is not None and src.parent.parent != target:
            adopt(src, target / ov["name"] / f"seed{seed}")


def adopt(src: Path, dst: Path) -> None:
    """Reuse a finished grid run as a final-row run (same overrides): copied, so the sweep skips it (DONE)."""
    if dst.exists():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, dst, symlinks=True)


# ------------------------------------------------------------------------------------------------------------------
# linear probe and predictions
# ------------------------------------------------------------------------------------------------------------------


def linear_probe_rows(folder: Path, sizes: list[int], seeds: list[int]) -> dict:
    """``{n: {seed: (test ids, probs [N, C], labels, groups, classes, C, val macro)}}`` with spft's own table and
    ``data.train_subset`` draw (the same training images as that seed's runs)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import torch
    from foundation import _features
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from spft.config import load_config
    from spft.data.registry import build_table, train_subset
    from spft.metrics.auc import multilabel_auc
    from spft.models.encoders import build_encoder, preprocessing_for

    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    cfg = load_config(CONFIG, [f"model.name={folder}", "model.config=null", "data.image_size=null"])
    table = build_table(cfg.data, 0)
    encoder = build_encoder(str(folder))
    prep = preprocessing_for(str(folder), encoder, None)
    feats = _features(encoder, prep, table.paths)
    index = {i: k for k, i in enumerate(table.ids)}
    out: dict = {}
    for n in sizes:
        out[n] = {}
        for seed in seeds:
            sub = train_subset(table, n, seed)
            x = {s: feats[[index[sub.ids[i]] for i in sub.indices(s)]] for s in ("train", "val", "test")}
            y = {s: sub.labels[sub.indices(s)] for s in ("train", "val", "test")}
            scaler = StandardScaler().fit(x["train"])
            xs = {s: scaler.transform(v) for s, v in x.items()}

            def fit_predict(c, split, xs=xs, y=y, sub=sub):
                cols = []
                for k in range(len(sub.classes)):
                    yk = y["train"][:, k]
                    if len(np.unique(yk)) < 2:
                        cols.append(np.full(len(xs[split]), float(yk.mean())))
                        continue
                    clf = LogisticRegression(C=c, max_iter=3000).fit(xs["train"], yk)
                    cols.append(clf.predict_proba(xs[split])[:, 1])
                return np.stack(cols, 1)

            grid = (0.01, 0.1, 1.0, 10.0)
            val = {c: multilabel_auc(fit_predict(c, "val"), y["val"], sub.classes).macro for c in grid}
            best = max(grid, key=lambda c: val[c])
            test_idx = sub.indices("test")
            out[n][seed] = dict(ids=[sub.ids[i] for i in test_idx], probs=fit_predict(best, "test"),
                                labels=y["test"], groups=[sub.groups[i] for i in test_idx],
                                classes=list(sub.classes), C=best, val=val[best])
    return out


def read_predictions(run_dir: Path) -> dict:
    rows = list(csv.DictReader(open(run_dir / "predictions_test.csv")))
    classes = [k[5:] for k in rows[0] if k.startswith("prob_")]
    rows.sort(key=lambda r: r["id"])
    return dict(ids=[r["id"] for r in rows], groups=[r["group"] for r in rows], classes=classes,
                probs=np.array([[float(r[f"prob_{c}"]) for c in classes] for r in rows]),
                labels=np.array([[float(r[f"label_{c}"]) if r[f"label_{c}"] != "" else np.nan for c in classes]
                                 for r in rows]))


def sort_pred(p: dict) -> dict:
    order = np.argsort(np.array(p["ids"]), kind="stable")
    return dict(p, ids=[p["ids"][i] for i in order], groups=[p["groups"][i] for i in order],
                probs=np.asarray(p["probs"])[order], labels=np.asarray(p["labels"])[order])


def macro_replicates(p: dict, n_boot: int, seed: int) -> tuple[float, np.ndarray, dict]:
    """(point macro AUC, [B] macro AUC of spft's bootstrap replicates, per-class point AUC)."""
    from spft.metrics import multilabel_auc
    from spft.reporting.bootstrap import _replicates, resample_units

    auc = multilabel_auc(p["probs"], p["labels"], p["classes"])
    unit_of, _ = resample_units(np.array(p["groups"]), len(p["ids"]))
    reps = _replicates(np.asarray(p["probs"], float), np.asarray(p["labels"], float), unit_of,
                       int(unit_of.max()) + 1, n_boot, seed)
    defined = [k for k, c in enumerate(p["classes"]) if auc.per_class[c] is not None]
    return auc.macro, np.nanmean(reps[:, defined], axis=1), auc.per_class


# ------------------------------------------------------------------------------------------------------------------
# main
# ------------------------------------------------------------------------------------------------------------------


def fmt(values, signed=False) -> str:
    v = [x for x in values if x is not None and math.isfinite(x)]
    if not v:
        return "n/a"
    m = float(np.mean(v))
    s = float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")
    f = "+.4f" if signed else ".4f"
    return f"{m:{f}} ± {s:.4f}" if len(v) > 1 else f"{m:{f}}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="/tmp/transfer")
    ap.add_argument("--sizes", default="100,1000")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--foundation", default=None, help="model folder (default: ensure_foundation() with defaults)")
    ap.add_argument("--plain-grid", default="1e-4,3e-4,1e-3,3e-3")
    ap.add_argument("--mlp-grid", default="3e-3,1e-2,3e-2")
    ap.add_argument("--enc-grid", default="3e-5,1e-4,3e-4")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--figure", default=str(ROOT / "docs" / "transfer.png"))
    ap.add_argument("--smoke", action="store_true", help="seed 0, 2 epochs, first grid value only")
    args = ap.parse_args(argv)

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    grids = {k: [float(v) for v in getattr(args, k).split(",")] for k in ("plain_grid", "mlp_grid", "enc_grid")}
    budget = dict(BUDGET)
    if args.smoke:
        seeds, grids = [0], {k: v[:1] for k, v in grids.items()}
        budget = {n: (2, b) for n, (e, b) in BUDGET.items()}
    lines: list[str] = []

    def log(msg: str = "") -> None:
        print(msg, flush=True)

    def emit(msg: str = "") -> None:
        lines.append(msg)
        log(msg)

    t_start = time.time()
    if args.foundation:
        folder = Path(args.foundation).resolve()
    else:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from foundation import ensure_foundation

        folder = Path(ensure_foundation())
    log(f"encoder: {folder}")
    first = seeds[0]
    steps = {n: math.ceil(n / budget[n][1]) for n in sizes}  # steps per epoch = the ladder's warm-up

    # phase 1: MLP-probe head LR and plain fine-tune LR grids, first seed, both sizes in one sweep
    g1 = []
    for n in sizes:
        base = common(folder, n, *budget[n])
        g1 += [{"name": f"n{n}-mlp-{lr_tag(lr)}", "overrides": base + mlp(lr)} for lr in grids["mlp_grid"]]
        g1 += [{"name": f"n{n}-plain-{lr_tag(lr)}", "overrides": base + plain(lr)} for lr in grids["plain_grid"]]
    grid1 = sweep_dir(out, "grid1", g1)
    reuse(out, grid1, g1, first)
    run_sweep("transfer-grid1", g1, [first], grid1, args.jobs, log)
    chosen: dict = {}
    for n in sizes:
        m, ms = choose(grid1, [f"n{n}-mlp-{lr_tag(lr)}" for lr in grids["mlp_grid"]], first)
        p, ps = choose(grid1, [f"n{n}-plain-{lr_tag(lr)}" for lr in grids["plain_grid"]], first)
        chosen[n] = {"mlp": m, "mlp_lr": grids["mlp_grid"][[f"n{n}-mlp-{lr_tag(lr)}" for lr in grids["mlp_grid"]]
                                                        .index(m)],
                     "plain": p, "plain_lr": grids["plain_grid"][[f"n{n}-plain-{lr_tag(lr)}"
                                                                  for lr in grids["plain_grid"]].index(p)],
                     "val": {**ms, **ps}}

    # phase 2: encoder LR of the ladder (progressive unfreezing, head LR of the MLP probe)
    g2 = []
    for n in sizes:
        base = common(folder, n, *budget[n])
        g2 += [{"name": f"n{n}-unfreeze-h{lr_tag(chosen[n]['mlp_lr'])}-e{lr_tag(lr)}",
                "overrides": base + ladder(chosen[n]["mlp_lr"], lr, steps[n], None, False)}
               for lr in grids["enc_grid"]]
    grid2 = sweep_dir(out, "grid2", g2)
    reuse(out, grid2, g2, first)
    run_sweep("transfer-grid2", g2, [first], grid2, args.jobs, log)
    for n in sizes:
        names = [f"n{n}-unfreeze-h{lr_tag(chosen[n]['mlp_lr'])}-e{lr_tag(lr)}" for lr in grids["enc_grid"]]
        u, us = choose(grid2, names, first)
        chosen[n].update(unfreeze=u, enc_lr=grids["enc_grid"][names.index(u)])
        chosen[n]["val"].update(us)

    # phase 3: the final rows, every seed; the chosen grid runs are the first seed's runs
    rows = [("mlp", "MLP probe (head only)"), ("plain", "plain full fine-tune"),
            ("unfreeze", "+ progressive unfreezing"), ("cw_both", "+ class weights (both terms, paper)"),
            ("cw_positive", "+ class weights (positive term)"), ("spft_both", "+ EMA = full SPFT (both)"),
            ("spft_positive", "+ EMA = full SPFT (positive)")]
    finals = {}
    for n in sizes:
        base, c = common(folder, n, *budget[n]), chosen[n]
        ov = {"mlp": base + mlp(c["mlp_lr"]), "plain": base + plain(c["plain_lr"])}
        for key, w, ema in (("unfreeze", None, False), ("cw_both", "both", False), ("cw_positive", "positive", False),
                            ("spft_both", "both", True), ("spft_positive", "positive", True)):
            ov[key] = base + ladder(c["mlp_lr"], c["enc_lr"], steps[n], w, ema)
        final_overlays = [{"name": k, "label": lab, "overrides": ov[k]} for k, lab in rows]
        final = sweep_dir(out / f"n{n}", "final", final_overlays)
        reuse(out, final, final_overlays, first)  # the chosen grid runs are the first seed's runs
        run_sweep(f"transfer-n{n}", final_overlays, seeds, final, args.jobs, log)
        subprocess.run([*SPFT, "report", str(final)], cwd=final, stdout=subprocess.DEVNULL,
                       stderr=subprocess.STDOUT, check=False)
        finals[n] = final

    # linear probe (in process) and the tables
    log("linear probe ...")
    lp = linear_probe_rows(folder, sizes, seeds)
    result: dict = {"encoder": str(folder), "seeds": seeds, "budget": {n: budget[n] for n in sizes},
                    "chosen": chosen, "sizes": {}}
    all_rows = [("linear", "linear probe (logistic regression)")] + rows
    emit(f"# Transfer table — encoder {folder.name}, target cxr phantoms (val 457 / test 455 images, fixed)")
    emit("")
    emit(f"seeds {','.join(map(str, seeds))}; grids chosen on validation macro AUC with seed {first}; "
         f"paired Δ vs the plain full fine-tune: mean over seeds, 95% paired bootstrap interval "
         f"({args.bootstrap} replicates of the test patients, spft's protocol)")
    for n in sizes:
        preds: dict = {}
        for key, _ in all_rows:
            preds[key] = {}
            for s in seeds:
                if key == "linear":
                    preds[key][s] = sort_pred(lp[n][s])
                else:
                    d = finals[n] / key / f"seed{s}"
                    if (d / "predictions_test.csv").is_file():
                        preds[key][s] = read_predictions(d)
        stats = {k: {s: macro_replicates(p, args.bootstrap, 0) for s, p in v.items()} for k, v in preds.items()}
        classes = next(iter(preds["plain"].values()))["classes"]
        epochs, batch = budget[n]
        emit("")
        emit(f"## {n} training images ({epochs} epochs of batch {batch} for every spft row)")
        emit("")
        emit("| row | test macro AUC (mean ± std) | Δ vs plain (seed-wise mean ± std) | Δ 95% paired CI "
             "| Δ vs linear probe [95% CI] |")
        emit("|---|---|---|---|---|")
        size_out = {}
        for key, label in all_rows:
            st = stats[key]
            macros = [st[s][0] for s in seeds if s in st]
            both = [s for s in seeds if s in st and s in stats["plain"]]
            deltas = [st[s][0] - stats["plain"][s][0] for s in both]
            if key != "plain" and both:
                reps = np.mean([st[s][1] - stats["plain"][s][1] for s in both], axis=0)
                lo, hi = np.percentile(reps, [2.5, 97.5])
                ci = f"[{lo:+.4f}, {hi:+.4f}]"
            else:
                lo = hi = None
                ci = "—"
            lin = [s for s in seeds if s in st and s in stats["linear"]]
            if key != "linear" and lin:
                lreps = np.mean([st[s][1] - stats["linear"][s][1] for s in lin], axis=0)
                llo, lhi = np.percentile(lreps, [2.5, 97.5])
                lin_cell = f"{np.mean([st[s][0] - stats['linear'][s][0] for s in lin]):+.4f} [{llo:+.4f}, {lhi:+.4f}]"
            else:
                lin_cell = "—"
            emit(f"| {label} | {fmt(macros)} | {fmt(deltas, True) if key != 'plain' else '—'} | {ci} | {lin_cell} |")
            size_out[key] = {"label": label, "macro": {s: st[s][0] for s in st}, "delta": dict(zip(both, deltas)),
                             "ci": [lo, hi] if lo is not None else None,
                             "per_class": {c: float(np.mean([st[s][2][c] for s in st if st[s][2][c] is not None]))
                                           for c in classes}}
        emit("")
        emit("Per-class test AUC, mean over seeds:")
        emit("")
        emit("| class | prevalence (test) | " + " | ".join(k for k, _ in all_rows) + " |")
        emit("|---|---|" + "---|" * len(all_rows))
        lab = next(iter(preds["plain"].values()))["labels"]
        for k, c in enumerate(classes):
            emit(f"| {c} | {np.nanmean(lab[:, k]):.3f} | "
                 + " | ".join(f"{size_out[key]['per_class'][c]:.3f}" for key, _ in all_rows) + " |")
        # diagnostics: stage-1 validation AUC, class weights
        diag = {}
        for key in ("mlp", "unfreeze", "cw_both", "spft_both", "plain"):
            v1 = []
            for s in seeds:
                d = finals[n] / key / f"seed{s}"
                if not (d / "history.csv").is_file():
                    continue
                hist = list(csv.DictReader(open(d / "history.csv")))
                vals = [float(r["val_auc_raw"]) for r in hist if r["val_auc_raw"] not in ("", None)]
                st1 = [float(r["val_auc_raw"]) for r in hist if r["stage"] == "1" and r["val_auc_raw"] not in ("",)]
                best_epoch = int(np.argmax(vals)) if vals else -1
                v1.append((st1[-1] if st1 else float("nan"), max(vals) if vals else float("nan"), best_epoch))
            diag[key] = v1
        emit("")
        emit("Validation macro AUC (raw weights): end of stage 1 / best over the run / best epoch, per seed:")
        emit("")
        for key, v in diag.items():
            emit(f"- {key}: " + "; ".join(f"{a:.3f} / {b:.3f} / {e}" for a, b, e in v))
        weights = {}
        for key in ("cw_both", "cw_positive", "spft_both"):
            wj = finals[n] / key / f"seed{first}" / "class_weights.json"
            if wj.is_file():
                weights[key] = json.loads(wj.read_text())
        if weights:
            emit("")
            emit(f"Class weights, seed {first} (after the heuristic multiplier = the start of stage 2; 'end': after "
                 "the last validation refinement):")
            emit("")
            emit("| class | start | " + " | ".join(f"end {k}" for k in weights) + " |")
            emit("|---|---|" + "---|" * len(weights))
            start = next(iter(weights.values()))["after_heuristics"]
            for c in classes:
                emit(f"| {c} | {float(start[c]):.2f} | "
                     + " | ".join(f"{float(w['current'][c]):.2f}" for w in weights.values()) + " |")
        result["sizes"][n] = {"rows": size_out, "stage1": diag}
    emit("")
    emit(f"Grid choices (validation macro AUC, seed {first}):")
    for n in sizes:
        c = chosen[n]
        emit(f"- {n} images: MLP head LR {c['mlp_lr']:g}, plain LR {c['plain_lr']:g}, ladder encoder LR "
             f"{c['enc_lr']:g} (head {c['mlp_lr']:g}); " + ", ".join(f"{k} {v:.4f}" for k, v in c["val"].items()))
    emit("")
    emit(f"Total wall time {time.time() - t_start:.0f} s; sweeps and `spft report` under {out}.")
    (out / "transfer.md").write_text("\n".join(lines) + "\n")
    (out / "transfer.json").write_text(json.dumps(result, indent=1, default=str))
    figure(result, sizes, all_rows, Path(args.figure))
    log(f"figure: {args.figure}")
    return 0


def figure(result: dict, sizes: list[int], rows, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.5, 4.6))
    width = 0.8 / len(sizes)
    for j, n in enumerate(sizes):
        data = result["sizes"][n]["rows"]
        means, stds = [], []
        for key, _ in rows:
            v = list(data[key]["macro"].values())
            means.append(float(np.mean(v)))
            stds.append(float(np.std(v, ddof=1)) if len(v) > 1 else 0.0)
        x = np.arange(len(rows)) + (j - (len(sizes) - 1) / 2) * width
        ax.bar(x, means, width, yerr=stds, capsize=3, label=f"{n} training images")
        ref = float(np.mean(list(data["plain"]["macro"].values())))
        ax.hlines(ref, -0.5, len(rows) - 0.5, colors=f"C{j}", linestyles="dotted", linewidth=1)
    ax.set_xticks(np.arange(len(rows)))
    import textwrap

    ax.set_xticklabels([textwrap.fill(lab, 16) for _, lab in rows], fontsize=7)
    lo = min(min(result["sizes"][n]["rows"][k]["macro"].values()) for n in sizes for k, _ in rows)
    ax.set_ylim(max(0.5, lo - 0.03), 1.0)
    ax.set_ylabel("test macro AUC (mean ± std over seeds)")
    ax.set_title("SPFT ladder on the miniature foundation model, cxr phantoms (dotted: plain fine-tune)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
