"""What a detection run records beside Ultralytics' own files: history.csv, class_weights.json, and the class
weights object itself (instance-count initial weights on top of the recipe's :class:`~spft.recipe.ClassWeights`).

history.csv has one row per epoch: stage, trainable parameters, open backbone modules, the backbone and head
learning rates, train losses, validation metrics, and how far the raw backbone weights moved during the epoch
(``backbone_change``, ``changed_blocks``), which is what shows that stage 1 really leaves the backbone alone.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from spft.atomic import atomic_write_csv, atomic_write_json
from spft.csvsafe import read_rows
from spft.errors import ConfigError
from spft.recipe import ClassWeights, LayerGroups, apply_heuristics, detection_initial_weights

log = logging.getLogger(__name__)

METRIC_KEYS = {"metrics/mAP50(B)": "val_map50", "metrics/mAP50-95(B)": "val_map50_95",
               "metrics/precision(B)": "val_precision", "metrics/recall(B)": "val_recall"}


class DetectionClassWeights(ClassWeights):
    """:class:`~spft.recipe.ClassWeights` whose initial weights are ``(N_total - n_c) / n_c`` over box counts.

    Refinement, heuristics, clipping, ``as_dict`` and ``state_dict`` are the recipe's; only the initial weights
    differ (docs/design.md#detection). Refinement takes per-class validation AP@50 where classification takes AUC.
    """

    def __init__(self, classes, instance_counts, heuristic=None, enabled=True, eta=1.0, w_min=0.1,
                 w_max=10.0) -> None:
        super().__init__(classes, None, heuristic=heuristic, enabled=False, eta=eta, w_min=w_min, w_max=w_max)
        self.enabled = enabled
        self.instance_counts = [int(c) for c in instance_counts]
        if enabled:
            self.undefined = [i for i, c in enumerate(self.instance_counts) if c == 0]
            for name in self.undefined_classes:
                log.warning("class %r has no boxes in the training split: it gets the mean weight", name)
            self.initial = detection_initial_weights(self.instance_counts)
            self.after_heuristics = apply_heuristics(self.initial, self.classes, self.heuristic)
            self.current = self.after_heuristics.clone()

    def as_dict(self) -> dict:
        return {**super().as_dict(), "instance_counts": dict(zip(self.classes, self.instance_counts)),
                "refined_from": "per-class validation AP@50"}


class RunRecorder:
    """history.csv and class_weights.json of one detection run, restored on resume."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.rows: list[dict] = []
        self._snapshot: list[torch.Tensor] = []

    def snapshot(self, groups: LayerGroups) -> None:
        """Copy the raw backbone weights at the start of an epoch."""
        self._snapshot = [_flat(block) for block in groups.blocks]

    def _backbone_change(self, groups: LayerGroups) -> tuple[float, int]:
        deltas = [float((_flat(b) - s).norm()) for b, s in zip(groups.blocks, self._snapshot)]
        return sum(d * d for d in deltas) ** 0.5, sum(d > 0 for d in deltas)

    @staticmethod
    def group_lrs(optimizer, n_blocks: int) -> dict[str, float]:
        """Current LR of the top backbone block's and of the head's weight groups."""
        lrs = {}
        for group in optimizer.param_groups:
            if group["name"] == f"block{n_blocks - 1}/decay":
                lrs["lr_backbone"] = group["lr"]
            elif group["name"] == "head/decay":
                lrs["lr_head"] = group["lr"]
        return lrs

    def add_epoch(self, epoch: int, stage: int, trainable: int, open_blocks: int, lrs: dict, metrics: dict,
                  groups: LayerGroups) -> None:
        change, changed = self._backbone_change(groups)
        row = {"epoch": epoch, "stage": stage, "trainable_params": trainable, "open_backbone_modules": open_blocks,
               **lrs, "backbone_change": change, "changed_blocks": changed}
        row.update({k.replace("train/", "train_"): v for k, v in metrics.items() if k.startswith("train/")})
        row.update({new: metrics[old] for old, new in METRIC_KEYS.items() if old in metrics})
        self.rows = [r for r in self.rows if int(r["epoch"]) < epoch] + [row]
        atomic_write_csv(self.run_dir / "history.csv", self.rows)

    def write_class_weights(self, weights: ClassWeights, in_loss: list[float] | None) -> None:
        atomic_write_json(self.run_dir / "class_weights.json", {**weights.as_dict(), "in_loss": in_loss})

    def restore(self, start_epoch: int, weights: ClassWeights | None) -> None:
        """On resume: keep history rows and class-weight refinements of epochs before ``start_epoch``."""
        history = self.run_dir / "history.csv"
        if history.is_file():
            with open(history, newline="") as fh:
                self.rows = [r for r in read_rows(fh) if int(r["epoch"]) < start_epoch]
        saved = self.run_dir / "class_weights.json"
        if weights is None or start_epoch == 0 or not saved.is_file():
            return
        state = json.loads(saved.read_text())
        if state["classes"] != weights.classes:
            raise ConfigError(f"{saved}: classes {state['classes']} differ from the data's {weights.classes}")
        weights.refinements = [r for r in state["refinements"] if r["epoch"] < start_epoch]
        if weights.refinements:
            last = weights.refinements[-1]["weights"]
            weights.current = torch.tensor([last[c] for c in weights.classes], dtype=torch.float32)
        log.info("resumed class weights with %d refinement(s)", len(weights.refinements))


def _flat(module: torch.nn.Module) -> torch.Tensor:
    params = [p.detach().float().flatten() for p in module.parameters()]
    return torch.cat(params).cpu().clone() if params else torch.zeros(0)
