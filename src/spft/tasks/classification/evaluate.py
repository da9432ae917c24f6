"""Evaluation of a classifier over a whole split: predictions, per-class and macro AUC, the files that record them.

Used at the end of training (best EMA weights on the test split) and by ``spft evaluate RUN_DIR``. A plain torch
loop on purpose: evaluation must not depend on trainer state, and AUC is computed once over all predictions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from spft.experiments.rundir import write_split_record
from spft.metrics import AucResult, multilabel_auc

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    split: str
    ids: list[str]
    groups: list[str]
    probs: np.ndarray
    labels: np.ndarray
    auc: AucResult

    def metrics(self) -> dict:
        return {"split": self.split, "n": len(self.ids), "macro_auc": self.auc.macro,
                "per_class_auc": self.auc.per_class, "excluded_classes": self.auc.excluded}


@torch.no_grad()
def evaluate_module(module, loader, split: str, device: torch.device | str = "cpu", world: int = 1) -> Evaluation:
    """Predict ``loader`` with the module's evaluation weights (EMA when enabled) and score it.

    With ``world > 1`` each rank predicts its shard and every rank gets the whole split back in dataset order
    (:func:`~spft.tasks.lightning_recipe.gather_by_index`), so the AUC equals a single-process evaluation.
    """
    from spft.tasks.lightning_recipe import gather_by_index

    model = module.eval_model().to(device).eval()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if str(device).startswith("cuda") else _null()
    parts: dict[str, list] = {"probs": [], "labels": [], "index": []}
    names: dict[int, tuple[str, str]] = {}
    with autocast:
        for batch in loader:
            logits = model(batch["image"].to(device))
            parts["probs"].append(module.probabilities(logits).cpu())
            parts["labels"].append(batch["labels"])
            parts["index"].append(batch["index"])
            names.update(zip(batch["index"].tolist(), zip(batch["id"], batch["group"])))
    if world > 1:
        shards: list = [None] * world
        torch.distributed.all_gather_object(shards, names)
        names = {k: v for shard in shards for k, v in shard.items()}
    merged = gather_by_index(parts, world)
    order = merged["index"].tolist()
    p, y = merged["probs"].numpy(), merged["labels"].numpy()
    return Evaluation(split, [names[i][0] for i in order], [names[i][1] for i in order], p, y,
                      multilabel_auc(p, y, module.classes))


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def write_evaluation(run_dir: Path, ev: Evaluation, best_epoch: int | None = None, suffix: str = "") -> None:
    """``metrics.json`` and ``predictions_<split>.csv``: columns id, group (patient/lesion, for bootstrap resampling
    by group), prob_<class>..., label_<class>... (blank = unknown label)."""
    classes = ev.auc.classes
    rows = []
    for i, id_ in enumerate(ev.ids):
        row = {"id": id_, "group": ev.groups[i]}
        row.update({f"prob_{c}": float(ev.probs[i, j]) for j, c in enumerate(classes)})
        row.update({f"label_{c}": ("" if np.isnan(ev.labels[i, j]) else int(ev.labels[i, j]))
                    for j, c in enumerate(classes)})
        rows.append(row)
    write_split_record(run_dir, ev.split, rows, ev.metrics(), best_epoch, suffix)


def format_table(ev: Evaluation) -> str:
    """The per-class AUC table printed by ``train``, ``demo`` and ``evaluate``."""
    width = max(len(c) for c in ev.auc.classes + ["macro AUC"])
    lines = [f"{'class':<{width}}  AUC     positives", "-" * (width + 20)]
    for j, c in enumerate(ev.auc.classes):
        auc = ev.auc.per_class[c]
        npos = int(np.nansum(ev.labels[:, j]))
        lines.append(f"{c:<{width}}  {'  n/a ' if auc is None else f'{auc:.4f}'}  {npos}")
    lines.append("-" * (width + 20))
    macro = ev.auc.macro
    lines.append(f"{'macro AUC':<{width}}  {'n/a' if macro is None else f'{macro:.4f}'}  ({ev.split}, n={len(ev.ids)})")
    if ev.auc.excluded:
        lines.append(f"excluded (no positive or no negative): {', '.join(ev.auc.excluded)}")
    return "\n".join(lines)


def evaluate_run(run_dir: str | Path, overrides: tuple[str, ...] = (), split: str = "test",
                 checkpoint: str = "best") -> Evaluation:
    """Re-evaluate a finished (or interrupted) run directory on ``split``, optionally on other data via overrides.

    Overrides such as ``data.csv=/other/labels.csv`` evaluate the run's model on another dataset (same classes).
    Results are written as ``metrics_<split>_eval.json`` and ``predictions_<split>_eval.csv`` so the training
    record (``metrics.json``, ``predictions_test.csv``) is never overwritten.
    """
    from spft.experiments.rundir import checked_split, load_run_config
    from spft.tasks.classification.train import build_run
    from spft.tasks.lightning_data import init_from_launcher
    from spft.tasks.lightning_recipe import eval_device, load_checkpoint_into

    run_dir = Path(run_dir)
    split = checked_split(split)
    cfg = load_run_config(run_dir, overrides)
    rank, world = init_from_launcher()  # torchrun --nproc_per_node N -m spft.cli evaluate ...: one shard per rank
    _, _, module, dm = build_run(cfg, None)
    epoch = load_checkpoint_into(module, run_dir / "checkpoints" / f"{checkpoint}.ckpt")
    device = f"cuda:{torch.cuda.current_device()}" if eval_device(cfg) == "cuda" else "cpu"
    ev = evaluate_module(module, dm.loader(split, rank=rank, world=world), split, device, world)
    if rank == 0:
        write_evaluation(run_dir, ev, epoch, suffix="_eval")
    return ev
