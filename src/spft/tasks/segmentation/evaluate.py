"""Evaluation of a SAM2 segmenter over a whole split: Dice at each image's own size, masks and overlay figures.

Predicted logits are upsampled from the model's input size back to the image's size before thresholding, then
scored against the full-resolution ground truth with exact box prompts. Writes ``metrics.json`` (``split, n,
mean_dice, per_structure_dice``, plus HD95 in pixels), ``predictions_<split>.csv`` (per-image Dice and HD95, with the
patient group for bootstrap) and ``predictions_<split>/`` (predicted masks and prediction-vs-truth overlays).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from spft.experiments.rundir import write_split_record
from spft.metrics import dice_score, hd95, mean_dice

log = logging.getLogger(__name__)


@dataclass
class SegmentationEvaluation:
    split: str
    ids: list[str]
    groups: list[str]
    structures: list[str]
    dice: list[list[float | None]]  # [image][structure]
    hd95: list[list[float | None]]  # [image][structure], pixels at the image's size; None: an empty mask
    data_file: str = ""  # set by `spft evaluate`: where the rows came from
    checkpoint: str = ""
    extra: dict = field(default_factory=dict)  # "limited": a smoke run's limits (common.limits)

    def metrics(self) -> dict:
        mean, per = mean_dice(self.dice, self.structures)
        mean_hd, per_hd = mean_dice(self.hd95, self.structures)  # the same per-image averaging
        out = {"split": self.split, "n": len(self.ids), "mean_dice": mean, "per_structure_dice": per,
               "mean_hd95": mean_hd, "per_structure_hd95": per_hd}
        if self.data_file:
            out.update(data_file=self.data_file, checkpoint=self.checkpoint)
        out.update(self.extra)
        return out


def _predict_original(logits: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """``[P, S, S]`` logits -> ``[P, H, W]`` boolean masks at the image's size."""
    up = F.interpolate(logits[None].float(), size=shape, mode="bilinear", align_corners=False)[0]
    return (up > 0).cpu().numpy()


@torch.no_grad()
def evaluate_module(module, loader, split: str, device="cpu", *, limit: int | float | None = None,
                    out_dir: Path | None = None, n_overlays: int = 0) -> SegmentationEvaluation:
    """Predict ``loader`` (of a :class:`~spft.tasks.segmentation.datamodule.MaskDataset`, in order: see
    :func:`eval_loader`) with the evaluation (EMA) weights and score Dice at each image's size (the first batches
    only under ``limit``: a smoke run's ``trainer.limit_test_batches``); the first ``n_overlays`` images' masks and
    overlays go to ``out_dir``. Every task's ``evaluate_module`` takes ``(module, loader, split, device, *, limit,
    ...)``."""
    from spft.tasks.common.limits import limited

    model = module.eval_model().to(device).eval()
    dataset = loader.dataset
    ids, groups, dice, hd = [], [], [], []
    for batch in limited(loader, limit):
        logits = model(batch["image"].to(device), batch["boxes"].to(device)).cpu()
        for b, i in enumerate(batch["index"].tolist()):
            image, truth = dataset.original(i)
            pred = _predict_original(logits[b], truth.shape[1:])
            dice.append([dice_score(p, t) for p, t in zip(pred, truth)])
            hd.append([hd95(p, t) for p, t in zip(pred, truth)])
            ids.append(batch["id"][b])
            groups.append(batch["group"][b])
            if out_dir is not None and len(ids) <= n_overlays:
                _save_prediction(out_dir, batch["id"][b], image, pred, truth, module.structures)
    return SegmentationEvaluation(split, ids, groups, list(module.structures), dice, hd)


def eval_loader(dataset, batch_size: int = 8):
    """The in-order loader :func:`evaluate_module` reads (one process, no shuffling)."""
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)


def _save_prediction(out_dir: Path, image_id: str, image, pred: np.ndarray, truth: np.ndarray,
                     structures: list[str]) -> None:
    """``<id>_<structure>.png`` (0/255) and ``<id>_overlay.png``: truth filled, prediction outlined (paper Fig. 4)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    safe = str(image_id).replace("/", "_")
    for name, mask in zip(structures, pred):
        Image.fromarray(mask.astype(np.uint8) * 255).save(out_dir / f"{safe}_{name}.png")
    colours = ["tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple"]
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.3))
    for ax, title, masks in ((axes[0], "ground truth", truth), (axes[1], "prediction", pred)):
        ax.imshow(np.asarray(image.convert("L")), cmap="gray")
        for j, mask in enumerate(masks):
            colour = colours[j % len(colours)]
            ax.contourf(mask.astype(float), levels=[0.5, 1.5], colors=[colour], alpha=0.3)
            ax.contour(mask.astype(float), levels=[0.5], colors=[colour], linewidths=1.0)
        ax.set_title(title)
        ax.axis("off")
    handles = [plt.Line2D([0], [0], color=colours[j % len(colours)], label=s) for j, s in enumerate(structures)]
    fig.legend(handles=handles, loc="lower center", ncol=len(structures), frameon=False)
    fig.savefig(out_dir / f"{safe}_overlay.png", dpi=80, bbox_inches="tight")
    plt.close(fig)


def write_evaluation(run_dir: Path, ev: SegmentationEvaluation, best_epoch: int | None = None,
                     suffix: str = "") -> None:
    """``metrics.json`` (or ``metrics_<split><suffix>.json``) and ``predictions_<split><suffix>.csv``."""
    write_split_record(run_dir, ev.split, prediction_rows(ev), ev.metrics(), best_epoch, suffix)


def prediction_rows(ev: SegmentationEvaluation) -> list[dict]:
    """Per image: id, group, dice_<structure>..., hd95_<structure>... (blank: undefined)."""
    rows = []
    for i, g, row, hd_row in zip(ev.ids, ev.groups, ev.dice, ev.hd95):
        cells = {f"dice_{s}": ("" if d is None else d) for s, d in zip(ev.structures, row)}
        cells.update({f"hd95_{s}": ("" if h is None else h) for s, h in zip(ev.structures, hd_row)})
        rows.append({"id": i, "group": g, **cells})
    return rows


def format_table(ev: SegmentationEvaluation) -> str:
    """Per-structure Dice table printed by ``spft evaluate``."""
    m = ev.metrics()
    width = max(len(s) for s in ev.structures + ["mean Dice"])
    lines = [f"{'structure':<{width}}  Dice    images", "-" * (width + 18)]
    for j, s in enumerate(ev.structures):
        d = m["per_structure_dice"][s]
        n = sum(row[j] is not None for row in ev.dice)
        lines.append(f"{s:<{width}}  {'n/a   ' if d is None else f'{d:.4f}'}  {n}")
    lines.append("-" * (width + 18))
    mean = m["mean_dice"]
    lines.append(f"{'mean Dice':<{width}}  {'n/a' if mean is None else f'{mean:.4f}'}  ({ev.split}, n={len(ev.ids)})")
    return "\n".join(lines)


def evaluate_run(run_dir: str | Path, overrides: tuple[str, ...] = (), split: str | None = None,
                 checkpoint: str = "best", out: str | None = None, name: str | None = None) -> SegmentationEvaluation:
    """Re-evaluate a run directory, on its own data (``test`` unless ``split`` says otherwise) or on other data via
    overrides (every row unless ``split`` is given). Records ``n``, ``data_file`` and ``split`` in the metrics;
    file names as every task's (:func:`spft.tasks.common.evaluation.output_paths`): the training
    record and earlier evaluations of other data are never overwritten."""
    import dataclasses

    from spft.data.masks import MaskDataset, load_mask_table
    from spft.devices import eval_device
    from spft.tasks.common.evaluation import data_file_of, open_evaluation, write_evaluation_files
    from spft.tasks.lightning.trainer import load_checkpoint_into
    from spft.tasks.segmentation.build import build_run

    req = open_evaluation(run_dir, overrides, split, checkpoint, out, name)
    run_dir, cfg = req.run_dir, req.cfg
    table = load_mask_table(cfg.data, list(cfg.segmentation.structures), cfg.seed)  # only the scored rows must exist
    data_file = data_file_of(cfg, table.source)
    split, rows, _ = req.rows(len(table.paths), table.indices)
    table.check_files(rows)
    _, prep, module, dm = build_run(cfg, None, table=table)
    if split == "all":
        dataset = MaskDataset(dataclasses.replace(table, splits=["test"] * len(table.paths)), "test", prep,
                              cfg.data.color)
        log.info("evaluating %d image(s) of %s: every row", len(dataset), data_file)
    else:
        dataset = dm.datasets[split]
        log.info("evaluating %d image(s) of %s: the %s split", len(dataset), data_file, split)
    epoch = load_checkpoint_into(module, run_dir / "checkpoints" / f"{checkpoint}.ckpt")
    batch_size = cfg.trainer.eval_batch_size or cfg.trainer.batch_size
    ev = evaluate_module(module, eval_loader(dataset, batch_size), split, eval_device(cfg), limit=req.limit)
    req.record(ev, data_file)
    metrics_path, predictions_path = req.output_paths(split, data_file)
    write_evaluation_files(metrics_path, predictions_path, prediction_rows(ev), ev.metrics(), epoch)
    log.info("%d image(s) of %s evaluated (%s): %s, %s", len(ev.ids), data_file, split, metrics_path,
             predictions_path)
    return ev
