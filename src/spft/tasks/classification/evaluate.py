"""Evaluation of a classifier over a whole split: predictions, per-class and macro AUC, the files that record them.

Used at the end of training (best EMA weights on the test split) and by ``spft evaluate RUN_DIR``. A plain torch
loop on purpose: evaluation must not depend on trainer state, and AUC is computed once over all predictions.

``spft evaluate`` on other data (an override that changes which data is read) scores every row of it unless a
split is asked for, says how many images of which file it scored, and writes files named after the data
(``metrics_<name>.json``, ``predictions_<name>.csv``) that never replace the training record or an earlier
evaluation (the opening and the files are every task's: :mod:`spft.tasks.common.evaluation`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from spft.errors import DataError
from spft.experiments.rundir import write_split_record
from spft.metrics import AucResult, multilabel_auc

log = logging.getLogger(__name__)


@dataclass
class ClassificationEvaluation:
    split: str
    ids: list[str]
    groups: list[str]
    probs: np.ndarray
    labels: np.ndarray
    auc: AucResult
    data_file: str = ""  # set by `spft evaluate`: where the rows came from
    checkpoint: str = ""
    logits: np.ndarray | None = None  # [N, C] float32 model outputs (probs = sigmoid/softmax of logits / T)
    extra: dict = field(default_factory=dict)  # operating points, AUPRC, ECE (spft.tasks.classification.operating)

    def metrics(self) -> dict:
        out = {"split": self.split, "n": len(self.ids), "macro_auc": self.auc.macro,
               "per_class_auc": self.auc.per_class, "excluded_classes": self.auc.excluded}
        if self.data_file:
            out.update(data_file=self.data_file, checkpoint=self.checkpoint)
        out.update(self.extra)
        return out


@torch.no_grad()
def evaluate_module(module, loader, split: str, device: torch.device | str = "cpu", *, limit: int | float | None = None,
                    world: int = 1) -> ClassificationEvaluation:
    """Predict ``loader`` with the module's evaluation weights (EMA when enabled) and score it (the first batches only
    under ``limit``: a smoke run's ``trainer.limit_test_batches``). Every task's ``evaluate_module`` takes
    ``(module, loader, split, device, *, limit, ...)``.

    With ``world > 1`` each rank predicts its shard and every rank gets the whole split back in dataset order
    (:func:`~spft.distributed.gather_by_index`), so the AUC equals a single-process evaluation.
    """
    from spft.distributed import gather_by_index, gather_objects
    from spft.tasks.common.limits import limited

    model = module.eval_model().to(device).eval()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if str(device).startswith("cuda") else _null()
    parts: dict[str, list] = {"probs": [], "labels": [], "index": [], "logits": []}
    names: dict[int, tuple[str, str]] = {}
    with autocast:
        for batch in limited(loader, limit):
            logits = model(batch["image"].to(device))
            parts["probs"].append(module.probabilities(logits).cpu())
            parts["logits"].append(logits.float().cpu())
            parts["labels"].append(batch["labels"])
            parts["index"].append(batch["index"])
            names.update(zip(batch["index"].tolist(), zip(batch["id"], batch["group"])))
    if world > 1:
        names = {k: v for shard in gather_objects(names, world) for k, v in shard.items()}
    merged = gather_by_index(parts, world)
    order = merged["index"].tolist()
    p, y = merged["probs"].numpy(), merged["labels"].numpy()
    return ClassificationEvaluation(split, [names[i][0] for i in order], [names[i][1] for i in order], p, y,
                                    multilabel_auc(p, y, module.classes), logits=merged["logits"].numpy())


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def write_evaluation(run_dir: Path, ev: ClassificationEvaluation, best_epoch: int | None = None,
                     suffix: str = "") -> None:
    """``metrics.json`` and ``predictions_<split>.csv``: columns id, group (patient/lesion, for bootstrap resampling
    by group), prob_<class>..., label_<class>... (blank = unknown label)."""
    write_split_record(run_dir, ev.split, prediction_rows(ev), ev.metrics(), best_epoch, suffix)


def prediction_rows(ev: ClassificationEvaluation) -> list[dict]:
    """The rows of a predictions CSV: id, group, prob_<class>..., label_<class>... (blank = unknown), then
    logit_<class>... when the evaluation kept its logits (prob = sigmoid(logit / T), softmax for ``loss: ce``)."""
    classes = ev.auc.classes
    rows = []
    for i, id_ in enumerate(ev.ids):
        row = {"id": id_, "group": ev.groups[i]}
        row.update({f"prob_{c}": float(ev.probs[i, j]) for j, c in enumerate(classes)})
        row.update({f"label_{c}": ("" if np.isnan(ev.labels[i, j]) else int(ev.labels[i, j]))
                    for j, c in enumerate(classes)})
        if ev.logits is not None:
            row.update({f"logit_{c}": float(ev.logits[i, j]) for j, c in enumerate(classes)})
        rows.append(row)
    return rows


def format_table(ev: ClassificationEvaluation) -> str:
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
    from spft.tasks.classification.operating import format_operating_points

    points = format_operating_points(ev)  # at the run's validation thresholds (none for older runs)
    return "\n".join(lines + (["", points] if points else []))


def refuse_unlabelled(labels: np.ndarray, data_file: str) -> None:
    """Rows without any label cannot be scored: one line naming the file and how many rows."""
    empty = np.isnan(labels).all(axis=1) if labels.size else np.zeros(len(labels), bool)
    if empty.any():
        raise DataError(f"{data_file}: {int(empty.sum())} of {len(labels)} row(s) to evaluate have no label (every "
                        f"label column blank); `spft evaluate` scores labelled images only: label them or leave them "
                        f"out (unlabelled images are for prediction, not evaluation)")


def evaluate_run(run_dir: str | Path, overrides: tuple[str, ...] = (), split: str | None = None,
                 checkpoint: str = "best", out: str | None = None, name: str | None = None) -> ClassificationEvaluation:
    """Re-evaluate a finished (or interrupted) run directory, on its own data or on other data via overrides.

    ``split``: the run's own data is scored on ``test`` unless another split is asked for. Overrides that change
    which data is read (``data.csv=/other/labels.csv``, ``data.root=...``, ``data.name=...``: the same classes)
    evaluate *every* row of that data unless ``split`` is given. Only the evaluated rows' images must exist (a
    missing training image does not block ``--split test``) and every evaluated row must have a label. How many
    images, from which file and which split are logged and recorded in the metrics (``n``, ``data_file``,
    ``split``); where the files go: :func:`spft.tasks.common.evaluation.output_paths` (the training record is never
    overwritten).
    """
    from spft.data.csv_dataset import check_missing, subset_table
    from spft.data.io import set_max_pixels
    from spft.data.registry import load_table
    from spft.devices import eval_device
    from spft.distributed import init_from_launcher
    from spft.tasks.classification.build import build_run
    from spft.tasks.classification.operating import apply_run_records
    from spft.tasks.common.evaluation import data_file_of, open_evaluation, write_evaluation_files
    from spft.tasks.lightning.trainer import load_checkpoint_into

    req = open_evaluation(run_dir, overrides, split, checkpoint, out, name)
    run_dir, cfg = req.run_dir, req.cfg
    set_max_pixels(cfg.data.max_image_pixels)
    full = load_table(cfg.data, cfg.seed)  # nothing refused yet: only the evaluated rows must be usable
    data_file = data_file_of(cfg, full.source)
    split, rows, what = req.rows(len(full.paths), full.indices)
    if split != "all":
        what += f" ({full.split_policy})"
    table = subset_table(full, rows, splits=["test"] * len(rows))  # the loaders read the "test" split
    check_missing(table, data_file)
    refuse_unlabelled(table.labels, data_file)
    log.info("evaluating %d image(s) of %s: %s", len(rows), data_file, what)
    rank, world = init_from_launcher()  # torchrun --nproc_per_node N -m spft.cli evaluate ...: one shard per rank
    _, _, module, dm = build_run(cfg, None, table=table)
    epoch = load_checkpoint_into(module, run_dir / "checkpoints" / f"{checkpoint}.ckpt")
    device = f"cuda:{torch.cuda.current_device()}" if eval_device(cfg) == "cuda" else "cpu"
    ev = evaluate_module(module, dm.loader("test", rank=rank, world=world), split, device, limit=req.limit,
                         world=world)
    req.record(ev, data_file)
    apply_run_records(run_dir, cfg, ev)  # the run's temperature and thresholds, never refitted
    if req.limit is None and len(ev.ids) != len(rows):  # data.on_bad_image=skip left some out
        log.warning("%d of %d image(s) were left out as unusable (data.on_bad_image=skip)", len(rows) - len(ev.ids),
                    len(rows))
    if rank == 0:
        metrics_path, predictions_path = req.output_paths(split, data_file)
        write_evaluation_files(metrics_path, predictions_path, prediction_rows(ev), ev.metrics(), epoch)
        log.info("%d image(s) of %s evaluated (%s): %s, %s", len(ev.ids), data_file, split, metrics_path,
                 predictions_path)
    return ev
