"""Throughput of spft's training step against a plain PyTorch loop doing the same work, in one process.

Run: ``make bench`` (or ``python benchmarks/bench.py [--size tiny|small] [--steps 30]``). Prints img/s for
(a) a plain loop: forward, class-weighted BCE, backward, AdamW step, EMA update; (b) spft's stage-2 step through
Lightning (ClassificationModule + Trainer, the recipe's optimizer groups and scheduler, EMA); (c) the input
pipeline (PNG decode + resize + normalise in DataLoader workers) on the phantom set. In-memory batches feed (a)
and (b) so only the step differs. The last line is machine-readable:
``BENCH stage2_ratio=<spft/plain time> pipeline_img_s=<n>``. Not a test: nothing here asserts a wall-clock limit.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SIZES = {  # Dinov2 configs: "tiny" is the demo's encoder; "small" is closer to real work per image
    "tiny": dict(hidden_size=96, num_hidden_layers=4, num_attention_heads=4, mlp_ratio=2, patch_size=8, image_size=64),
    "small": dict(hidden_size=192, num_hidden_layers=6, num_attention_heads=6, mlp_ratio=4, patch_size=14,
                  image_size=112),
}


def _config(size: str, batch: int):
    from spft.config import load_config

    model = SIZES[size]
    flat = ", ".join(f"{k}: {v}" for k, v in model.items())
    return load_config(None, [
        f"model.config={{model_type: dinov2, {flat}}}", "data.name=phantom", "data.phantom.n_images=600",
        f"data.image_size={model['image_size']}", f"trainer.batch_size={batch}", "trainer.progress_bar=false",
        "recipe.stage1_epochs=0", "recipe.unfreeze.top_k=null", "recipe.unfreeze.blocks_per_epoch=100",
        "recipe.unfreeze.embeddings=true", "trainer.accelerator=cpu", "optim.lr_encoder=1e-4",
        "optim.lr_head=1e-4",
    ])


def _batches(cfg, n_classes: int, steps: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    size = cfg.data.image_size
    return [{"image": torch.randn(cfg.trainer.batch_size, 3, size, size, generator=g),
             "labels": (torch.rand(cfg.trainer.batch_size, n_classes, generator=g) < 0.2).float(),
             "id": ["x"] * cfg.trainer.batch_size, "group": ["g"] * cfg.trainer.batch_size} for _ in range(steps)]


def plain_loop(cfg, batches: list[dict], n_classes: int) -> float:
    """Seconds per step of the hand-written loop."""
    from spft.models.classifier import build_classifier
    from spft.recipe import build_ema, weighted_bce

    torch.manual_seed(0)
    model, _ = build_classifier(cfg.model, n_classes, cfg.data.image_size)
    ema = build_ema(model, 0.999)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
    weights = torch.ones(n_classes)
    model.train()
    start = None
    for i, batch in enumerate(batches):
        if i == 2:  # two warm-up steps
            start = time.perf_counter()
        loss = weighted_bce(model(batch["image"]), batch["labels"], weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.update_parameters(model)
    return (time.perf_counter() - start) / (len(batches) - 2)


class _Timer:
    """Batch-start timestamps: consecutive differences cover everything Lightning does per step (hooks, EMA)."""

    def __init__(self):
        self.starts: list[float] = []

    def on_train_batch_start(self, *args):
        self.starts.append(time.perf_counter())


def spft_loop(cfg, batches: list[dict], n_classes: int) -> float:
    """Seconds per step of spft's Lightning step (hooks, recipe optimizer/scheduler, EMA, logging)."""
    import lightning as L

    from spft.models.classifier import build_classifier
    from spft.recipe import ClassWeights
    from spft.tasks.classification.module import ClassificationModule

    torch.manual_seed(0)
    model, _ = build_classifier(cfg.model, n_classes, cfg.data.image_size)
    classes = [f"c{i}" for i in range(n_classes)]
    cw = ClassWeights(classes, torch.cat([b["labels"] for b in batches]), enabled=True)
    module = ClassificationModule(cfg, model, classes, cw, run_dir=None)
    timer = _Timer()

    class TimerCallback(L.Callback):
        def on_train_batch_start(self, *a):
            timer.on_train_batch_start()

    trainer = L.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        callbacks=[TimerCallback()], num_sanity_val_steps=0)
    loader = torch.utils.data.DataLoader(batches, batch_size=None)
    trainer.fit(module, train_dataloaders=loader)
    steps = timer.starts[2:]
    return (steps[-1] - steps[0]) / (len(steps) - 1)


def pipeline_img_s(cfg, workers: int) -> float:
    """Images per second out of the real input pipeline (decode, resize, normalise) with ``workers`` workers."""
    from spft.tasks.classification.train import build_run

    _, _, _, dm = build_run(cfg, None)
    dm.num_workers = workers
    loader = dm.train_dataloader()
    start, n = time.perf_counter(), 0
    for batch in loader:
        n += len(batch["image"])
    return n / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    cfg = _config(args.size, args.batch)
    n_classes = 8
    batches = _batches(cfg, n_classes, args.steps)
    print(f"device cpu ({torch.get_num_threads()} threads), model {args.size} {SIZES[args.size]}, batch {args.batch}, "
          f"{args.steps} steps (first 2 not timed)")
    plain = plain_loop(cfg, batches, n_classes)
    spft = spft_loop(cfg, batches, n_classes)
    print(f"stage 2 step  plain loop  {args.batch / plain:8.1f} img/s  ({plain * 1e3:.1f} ms/step)")
    print(f"stage 2 step  spft        {args.batch / spft:8.1f} img/s  ({spft * 1e3:.1f} ms/step)")
    print(f"ratio spft/plain time     {spft / plain:.3f}")
    pipe = pipeline_img_s(cfg, args.workers)
    print(f"input pipeline            {pipe:8.1f} img/s  ({args.workers} workers, phantom PNG 128 px -> "
          f"{cfg.data.image_size} px)")
    print(f"BENCH stage2_ratio={spft / plain:.3f} pipeline_img_s={pipe:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
