"""Throughput of spft against a plain PyTorch loop doing the same work, in one process, on the same model.

Run: ``make bench`` (or ``python benchmarks/bench.py [--size tiny|small|raddino] [--device cpu|cuda] ...``).

* **stage 2 step** — (a) a plain loop: forward, class-weighted BCE, backward, AdamW, torch's stock EMA
  (``AveragedModel`` + ``get_ema_multi_avg_fn``); (b) spft's step through Lightning (ClassificationModule + Trainer,
  the recipe's per-block AdamW groups and scheduler, warm-up EMA). In-memory batches feed both, so only the step
  differs. Prints img/s, peak memory (GPU), MFU against the device's bf16 peak (GPU), and spft/plain time.
* **stage 1 epoch** — spft's real training path on phantom PNGs (DataLoader, validation included), once with the
  feature cache off and once on: the first cached epoch computes the features, the next ones train the head on
  them. Prints seconds per epoch and the speed-up; plus a plain head-on-features loop for the ratio.
* **input pipeline** — ``benchmarks/pipeline.py``: decode + resize + normalise img/s per configuration.

The last line is machine-readable:
``BENCH stage2_ratio=<spft/plain time> stage1_cache_speedup=<uncached/cached epoch time> pipeline_img_s=<n>``.
Not a test: nothing here asserts a wall-clock limit.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

SIZES = {  # Dinov2 configs: "tiny" is the demo's encoder; "small" is closer to real work per image
    "tiny": dict(hidden_size=96, num_hidden_layers=4, num_attention_heads=4, mlp_ratio=2, patch_size=8, image_size=64),
    "small": dict(hidden_size=192, num_hidden_layers=6, num_attention_heads=6, mlp_ratio=4, patch_size=14,
                  image_size=112),
}


def model_kwargs(size: str) -> dict:
    if size == "raddino":
        from flops import RADDINO

        return dict(RADDINO)
    return dict(SIZES[size])


def _config(size: str, batch: int, device: str, precision: str, compile_: bool, stage1: bool = False,
            n_images: int = 600):
    from spft.config import load_config

    model = model_kwargs(size)
    recipe = (["recipe.stage1_epochs=100", "recipe.unfreeze.enabled=false"] if stage1 else
              ["recipe.stage1_epochs=0", "recipe.unfreeze.top_k=null", "recipe.unfreeze.blocks_per_epoch=100",
               "recipe.unfreeze.embeddings=true"])
    return load_config(None, base={"model": {"config": {"model_type": "dinov2", **model}}}, overrides=[
        "data.name=phantom", f"data.phantom.n_images={n_images}",
        f"data.image_size={model['image_size']}", f"trainer.batch_size={batch}", "trainer.progress_bar=false",
        f"trainer.accelerator={'gpu' if device == 'cuda' else 'cpu'}", f"trainer.precision={precision}",
        f"trainer.compile={str(compile_).lower()}", "optim.lr_encoder=1e-4", "optim.lr_head=1e-4", *recipe,
    ])


def _batches(cfg, n_classes: int, steps: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    size = cfg.data.image_size
    b = cfg.trainer.batch_size
    return [{"image": torch.randn(b, 3, size, size, generator=g),
             "labels": (torch.rand(b, n_classes, generator=g) < 0.2).float(),
             "index": torch.arange(b), "id": ["x"] * b, "group": ["g"] * b} for _ in range(steps)]


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _peak_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None


def _reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def plain_loop(cfg, batches: list[dict], n_classes: int, device: str) -> tuple[float, float | None]:
    """(seconds per step, peak GiB) of the hand-written loop."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from spft.models.classifier import build_classifier
    from spft.recipe import weighted_bce

    torch.manual_seed(0)
    _reset_peak(device)
    model, _ = build_classifier(cfg.model, n_classes, cfg.data.image_size)
    model.to(device)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.999))
    if cfg.trainer.compile:
        model.encoder.compile()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    weights = torch.ones(n_classes, device=device)
    bf16 = cfg.trainer.precision.startswith("bf16")
    model.train()
    start = None
    warmup = 3 if cfg.trainer.compile else 2
    for i, batch in enumerate(batches):
        if i == warmup:
            _sync(device)
            start = time.perf_counter()
        x = batch["image"].to(device, non_blocking=True)
        y = batch["labels"].to(device, non_blocking=True)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            logits = model(x)
        loss = weighted_bce(logits.float(), y, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.update_parameters(model)
    _sync(device)
    return (time.perf_counter() - start) / (len(batches) - warmup), _peak_gib(device)


def spft_loop(cfg, batches: list[dict], n_classes: int, device: str) -> tuple[float, float | None]:
    """(seconds per step, peak GiB) of spft's Lightning step (hooks, recipe optimizer/scheduler, EMA, logging)."""
    import lightning as L

    from spft.models.classifier import build_classifier
    from spft.recipe import ClassWeights
    from spft.tasks.classification.module import ClassificationModule
    from spft.tasks.lightning.callbacks import recipe_callbacks

    torch.manual_seed(0)
    _reset_peak(device)
    model, _ = build_classifier(cfg.model, n_classes, cfg.data.image_size)
    classes = [f"c{i}" for i in range(n_classes)]
    cw = ClassWeights(classes, torch.cat([b["labels"] for b in batches]), enabled=True)
    module = ClassificationModule(cfg, model, classes, cw, run_dir=None)
    module.apply_speed_options()
    starts: list[float] = []

    class Timer(L.Callback):  # batch-start timestamps: differences cover everything Lightning does per step
        def on_train_batch_start(self, *a):
            _sync(device)
            starts.append(time.perf_counter())

    trainer = L.Trainer(max_epochs=1, accelerator="gpu" if device == "cuda" else "cpu", devices=1,
                        precision=cfg.trainer.precision, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        callbacks=[Timer(), *recipe_callbacks(cfg, None)], num_sanity_val_steps=0)
    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    trainer.fit(module, train_dataloaders=loader)
    warmup = 3 if cfg.trainer.compile else 2
    steps = starts[warmup:]
    return (steps[-1] - steps[0]) / (len(steps) - 1), _peak_gib(device)


def stage1_epochs(cfg, epochs: int = 4) -> tuple[float, list[float]]:
    """Seconds of each stage-1 epoch through spft's real training path: training, validation, history and the
    checkpoints (best.ckpt, last.ckpt), i.e. from one epoch's start to the next one's."""
    import lightning as L

    from spft.tasks.classification.train import MONITOR, build_run
    from spft.tasks.lightning.trainer import build_trainer

    times: list[float] = []
    setup: list[float] = []

    class EpochTimer(L.Callback):  # epoch start to the next epoch's start: training, validation, checkpoints
        def on_train_epoch_start(self, trainer, module):
            now = time.perf_counter()
            if hasattr(self, "start"):
                times.append(now - self.start)
            else:  # before the first epoch: loaders set up (and, with the cache, the features computed)
                setup.append(now - self.fit_start)
            self.start = now

        def on_fit_end(self, trainer, module):
            times.append(time.perf_counter() - self.start)

    cfg.trainer.max_epochs = epochs
    L.seed_everything(0, verbose=False)
    with tempfile.TemporaryDirectory() as tmp:
        _, _, module, dm = build_run(cfg, None)
        trainer = build_trainer(cfg, Path(tmp), MONITOR, reload_dataloaders=dm.feature_cache is not None)
        timer = EpochTimer()
        trainer.callbacks.append(timer)
        timer.fit_start = time.perf_counter()
        trainer.fit(module, datamodule=dm)
    return setup[0], times


def plain_stage1_epochs(cfg, cached: bool, epochs: int = 4) -> list[float]:
    """Seconds per stage-1 epoch of a hand-written loop doing spft's work: head steps (AdamW, EMA of the head) on
    the frozen encoder's pooled features — computed per batch from the images, or once up front when ``cached`` —
    then a validation pass and a checkpoint (model, EMA, optimizer; torch.save + fsync), on the same data."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from spft.recipe import weighted_bce
    from spft.tasks.classification.train import build_run

    torch.manual_seed(0)
    _, _, module, dm = build_run(cfg, None)
    device = "cuda" if cfg.trainer.accelerator == "gpu" else "cpu"
    model = module.model.to(device)
    model.encoder.requires_grad_(False)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.999))  # the whole model, as stage 2 needs
    opt = torch.optim.AdamW(model.head.parameters(), lr=1e-4, weight_decay=0.05)
    weights = torch.ones(len(module.classes), device=device)
    bf16 = cfg.trainer.precision.startswith("bf16")
    loaders = {split: dm.loader(split, train=split == "train", rank=0, world=1) for split in ("train", "val")}

    def pooled(batch):
        with torch.no_grad(), torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            model.encoder.eval()
            return model.features(batch["image"].to(device, non_blocking=True)).float()

    feats = {}
    if cached:  # computed once, kept in memory, served in the loader's order
        for split, loader in loaders.items():
            rows = {}
            for batch in loader:
                rows.update(zip(batch["index"].tolist(), pooled(batch)))
            feats[split] = torch.stack([rows[i] for i in range(len(rows))])
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for epoch in range(epochs):
            _sync(device)
            start = time.perf_counter()
            loaders["train"].sampler.set_epoch(epoch)
            model.head.train()
            if cached:
                order = list(loaders["train"].sampler)
                batches = [order[i:i + cfg.trainer.batch_size] for i in range(0, len(order), cfg.trainer.batch_size)]
                labels = torch.from_numpy(dm.datasets["train"].labels())
                stream = ((feats["train"][idx], labels[idx]) for idx in batches)
            else:
                stream = ((pooled(b), b["labels"]) for b in loaders["train"])
            for x, y in stream:
                loss = weighted_bce(model.head(x.to(device)), y.to(device), weights)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                ema.update_parameters(model)
            model.head.eval()
            with torch.no_grad():
                if cached:
                    probs = torch.sigmoid(ema.module.head(feats["val"].to(device)))
                else:
                    probs = torch.cat([torch.sigmoid(ema.module.head(pooled(b))) for b in loaders["val"]])
            probs.cpu()
            state = {"model": model.state_dict(), "ema": ema.state_dict(), "optimizer": opt.state_dict()}
            with open(Path(tmp) / "ckpt.pt", "wb") as fh:
                torch.save(state, fh)
                fh.flush()
                os.fsync(fh.fileno())
            _sync(device)
            times.append(time.perf_counter() - start)
    return times


def stage1_report(args, precision: str, n_classes: int) -> float:
    """Stage-1 epochs without and with the feature cache; returns uncached / cached epoch time."""
    cfg1 = _config(args.size, args.batch, args.device, precision, False, stage1=True, n_images=args.stage1_images)
    cfg1.trainer.feature_cache = False
    _, uncached = stage1_epochs(cfg1)
    cfg1.trainer.feature_cache = True
    extract, cached = stage1_epochs(cfg1, epochs=8)  # sub-second epochs: more of them for a steadier median
    u, c = statistics.median(uncached), statistics.median(cached)
    n_train = int(round(args.stage1_images * 0.7))
    print(f"stage 1 epoch uncached     {' '.join(f'{t:.2f}' for t in uncached)} s  (median {u:.2f} s, "
          f"~{n_train} train images + validation)")
    print(f"stage 1 features computed  {extract:.2f} s  (once: train + validation images through the encoder)")
    print(f"stage 1 epoch cached       {' '.join(f'{t:.2f}' for t in cached)} s  (median {c:.3f} s)")
    speedup = u / c
    print(f"stage 1 cache speed-up     {speedup:.1f}x")
    pu = statistics.median(plain_stage1_epochs(cfg1, cached=False))
    pc = statistics.median(plain_stage1_epochs(cfg1, cached=True, epochs=8))
    print(f"stage 1 plain loop epoch   uncached {pu:.2f} s, cached {pc:.3f} s  (same work: head steps, validation, "
          f"checkpoint)")
    print(f"stage 1 ratio spft/plain time  uncached {u / pu:.3f}, cached {c / pc:.3f}")
    return speedup


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=[*SIZES, "raddino"], default="tiny")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of both loops; best one kept")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--precision", default=None, help="default: bf16-mixed on cuda, 32-true on cpu")
    parser.add_argument("--compile", action="store_true", help="torch.compile the encoder in both loops")
    parser.add_argument("--stage1-only", action="store_true", help="only the stage-1 cache comparison")
    parser.add_argument("--skip-stage1", action="store_true", help="only the stage-2 step comparison")
    parser.add_argument("--stage1-images", type=int, default=600,
                        help="phantom images for the stage-1 comparison (70%% train, 15%% validation)")
    parser.add_argument("--pipeline-workers", default=None,
                        help="worker counts for --pipeline full, comma-separated (default 0,1,2)")
    parser.add_argument("--pipeline", choices=["quick", "full", "off"], default="quick",
                        help="input-pipeline report: quick (1 configuration), full (benchmarks/pipeline.py), off")
    args = parser.parse_args(argv)
    precision = args.precision or ("bf16-mixed" if args.device == "cuda" else "32-true")
    # phantoms are generated once into a bench cache; the feature cache in it is emptied so features are computed
    bench_cache = Path(os.environ.get("SPFT_BENCH_CACHE") or Path(tempfile.gettempdir()) / "spft-bench-cache")
    os.environ["SPFT_CACHE"] = str(bench_cache)
    shutil.rmtree(bench_cache / "features", ignore_errors=True)
    n_classes = 8
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"device {name}, torch {torch.__version__}, model {args.size} {model_kwargs(args.size)}, "
          f"batch {args.batch}, precision {precision}, compile {args.compile}")
    ratio = None
    if not args.stage1_only:
        cfg = _config(args.size, args.batch, args.device, precision, args.compile)
        batches = _batches(cfg, n_classes, args.steps)
        runs = []  # alternate the two loops and keep each one's best round: less noise from the machine
        for _ in range(args.rounds):
            runs.append((plain_loop(cfg, batches, n_classes, args.device),
                         spft_loop(cfg, batches, n_classes, args.device)))
        (plain, plain_mem), (spft, spft_mem) = min(r[0] for r in runs), min(r[1] for r in runs)
        ratio = spft / plain
        mfu_text = _mfu_lines(args, cfg, plain, spft)
        for label, t, mem in (("plain loop", plain, plain_mem), ("spft", spft, spft_mem)):
            memory = f", peak {mem:.2f} GiB" if mem is not None else ""
            print(f"stage 2 step  {label:<11} {args.batch / t:9.1f} img/s  ({t * 1e3:.1f} ms/step{memory}"
                  f"{mfu_text.get(label, '')})")
        print(f"stage 2 ratio spft/plain time  {ratio:.3f}")

    speedup = None
    if not args.skip_stage1:
        speedup = stage1_report(args, precision, n_classes)
    pipe = _pipeline(args)
    print(f"BENCH stage2_ratio={'nan' if ratio is None else f'{ratio:.3f}'} "
          f"stage1_cache_speedup={'nan' if speedup is None else f'{speedup:.1f}'} pipeline_img_s={pipe:.0f}")
    return 0


def _mfu_lines(args, cfg, plain: float, spft: float) -> dict:
    """`` , MFU x%`` per loop on a GPU with a known bf16 peak (benchmarks/flops.py), else nothing."""
    if args.device != "cuda":
        return {}
    from flops import bf16_peak_flops, mfu, vit_train_flops_per_image

    m = model_kwargs(args.size)
    tokens = (m["image_size"] // m["patch_size"]) ** 2 + 1 + int(m.get("num_register_tokens", 0))
    flops = vit_train_flops_per_image(hidden=m["hidden_size"], layers=m["num_hidden_layers"],
                                      mlp_ratio=m.get("mlp_ratio", 4), tokens=tokens,
                                      trainable_layers=m["num_hidden_layers"])
    peak = bf16_peak_flops(torch.cuda.get_device_name(0))
    if peak is None:
        return {}
    return {"plain loop": f", MFU {100 * mfu(args.batch / plain, flops, peak):.1f}%",
            "spft": f", MFU {100 * mfu(args.batch / spft, flops, peak):.1f}%"}


def _pipeline(args) -> float:
    """Input-pipeline img/s: the best configuration of benchmarks/pipeline.py (full) or PNG + PIL, 2 workers."""
    if args.pipeline == "off":
        return float("nan")
    from pipeline import pipeline_report

    if args.pipeline == "full":
        workers = tuple(int(w) for w in args.pipeline_workers.split(",")) if args.pipeline_workers else (0, 1, 2)
        rows = pipeline_report(workers_list=workers)
    else:
        rows = pipeline_report(workers_list=(min(2, os.cpu_count() or 1),), n_images=128)
    for row in rows:
        print("pipeline  " + "  ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    return max(float(r.get("img_s", 0.0)) for r in rows)


if __name__ == "__main__":
    sys.exit(main())
