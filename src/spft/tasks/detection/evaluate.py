"""Evaluation of a detection run: mAP@50, mAP@50-95, precision, recall and per-class AP@50 on a split, plus mAP@40
(the VinBigData competition metric) for VinDr-CXR, through Ultralytics' own validator on the run's weights.

Used at the end of training (best EMA weights on the test split -> ``metrics.json``) and by
``spft evaluate RUN_DIR`` (``metrics_<split>_eval.json``, so the training record is never overwritten).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from spft.atomic import atomic_write_json
from spft.data.loading import resolve_workers
from spft.data.yolo_layout import read_dataset, split_image_list
from spft.devices import eval_device, ultralytics_device
from spft.errors import MissingFileError
from spft.experiments.checkpoints import newest_intact

log = logging.getLogger(__name__)


@dataclass
class DetectionEvaluation:
    """Detection metrics of one split."""

    split: str
    n: int
    map50: float
    map50_95: float
    precision: float
    recall: float
    per_class_ap50: dict[str, float | None]
    map40: float | None = None
    extra: dict = field(default_factory=dict)

    def metrics(self) -> dict:
        out = {"split": self.split, "n": self.n, "map50": self.map50, "map50_95": self.map50_95,
               "precision": self.precision, "recall": self.recall, "per_class_ap50": self.per_class_ap50}
        if self.map40 is not None:
            out["map40"] = self.map40
        return {**out, **self.extra}


def is_rtdetr(cfg) -> bool:
    """RT-DETR models are named so by Ultralytics (rtdetr-l.yaml, rtdetr-resnet50.yaml, our rtdetr-tiny.yaml)."""
    return "rtdetr" in Path(str(cfg.model.name)).name.lower()


def _iou40(base):
    """A validator class that scores at the single IoU threshold 0.4 (its "mAP50" is then mAP@40)."""

    class Iou40Validator(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.iouv = torch.tensor([0.4])
            self.niou = 1

    return Iou40Validator


def _val(model, cfg, dataset_yaml: Path, split: str, out: Path, validator=None):
    kwargs = {"data": str(dataset_yaml), "split": split, "imgsz": cfg.detection.imgsz, "plots": False,
              "batch": cfg.trainer.eval_batch_size or cfg.trainer.batch_size, "conf": cfg.detection.conf,
              "device": ultralytics_device(eval_device(cfg)), "workers": resolve_workers(cfg.data), "verbose": False,
              "project": str(out.parent), "name": out.name, "exist_ok": True}
    return model.val(validator=validator, **kwargs) if validator else model.val(**kwargs)


def evaluate_weights(weights: Path, cfg, dataset_yaml: Path, split: str, out: Path) -> DetectionEvaluation:
    """Score ``weights`` on ``split`` of ``dataset_yaml``; mAP@40 too when the data is VinDr-CXR."""
    from ultralytics import RTDETR, YOLO
    from ultralytics.models.rtdetr.val import RTDETRValidator
    from ultralytics.models.yolo.detect import DetectionValidator

    from spft.tasks.detection import restore_pil_open

    restore_pil_open()
    rtdetr = is_rtdetr(cfg)
    model = (RTDETR if rtdetr else YOLO)(str(weights))
    names = read_dataset(dataset_yaml)["names"]
    classes = [names[i] for i in sorted(names)]
    trained = [str(model.names[i]) for i in sorted(model.names)]
    if [str(c) for c in classes] != trained:
        from spft.errors import DataError

        raise DataError(f"{dataset_yaml}: classes {[str(c) for c in classes]} are not the {len(trained)} classes "
                        f"the model was trained on ({trained}, in this order); evaluate on data of the same classes "
                        "(csv: data.classes fixes the list and its order)")
    m = _val(model, cfg, dataset_yaml, split, out)
    ap50 = {int(c): float(v) for c, v in zip(m.box.ap_class_index, m.box.ap50)}
    map40 = None
    if cfg.data.name == "vindr_cxr":
        base = RTDETRValidator if rtdetr else DetectionValidator
        map40 = float(_val(model, cfg, dataset_yaml, split, out.with_name(out.name + "_iou40"), _iou40(base)).box.map50)
    return DetectionEvaluation(split=split, n=len(split_image_list(dataset_yaml, split)), map50=float(m.box.map50),
                               map50_95=float(m.box.map), precision=float(m.box.mp), recall=float(m.box.mr),
                               per_class_ap50={c: ap50.get(i) for i, c in enumerate(classes)}, map40=map40)


def format_table(ev: DetectionEvaluation) -> str:
    """Per-class AP@50 and the summary metrics, as printed by ``spft evaluate``."""
    width = max(len(c) for c in list(ev.per_class_ap50) + ["mAP@50-95"])
    lines = [f"{'class':<{width}}  AP@50", "-" * (width + 10)]
    for c, v in ev.per_class_ap50.items():
        lines.append(f"{c:<{width}}  {'  n/a' if v is None else f'{v:.4f}'}")
    lines.append("-" * (width + 10))
    for label, value in (("mAP@50", ev.map50), ("mAP@50-95", ev.map50_95), ("precision", ev.precision),
                         ("recall", ev.recall), ("mAP@40", ev.map40)):
        if value is not None:
            lines.append(f"{label:<{width}}  {value:.4f}")
    lines.append(f"({ev.split}, n={ev.n}; n/a = no box of that class in the split)")
    return "\n".join(lines)


@contextlib.contextmanager
def _quiet_ultralytics():
    """Ultralytics' INFO logging off and stray prints sent to stderr, restored afterwards."""
    ulog = logging.getLogger("ultralytics")
    level = ulog.level
    ulog.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        ulog.setLevel(level)


def evaluate_run(run_dir: str | Path, overrides: tuple[str, ...] = (), split: str = "test",
                 checkpoint: str = "best") -> DetectionEvaluation:
    """Re-evaluate a detection run directory's ``checkpoints/<checkpoint>.pt`` (EMA weights) on ``split``.

    Overrides such as ``detection.dataset_dir=/other/copy`` evaluate on another prepared copy (same classes).
    Writes ``metrics_<split>_eval.json``.
    """
    from spft.tasks.common.evaluation import open_evaluation
    from spft.tasks.detection.dataset import dataset_yaml_for

    req = open_evaluation(run_dir, overrides, split, checkpoint)
    run_dir, cfg, split = req.run_dir, req.cfg, req.split or "test"
    other = "last" if checkpoint == "best" else "best"
    # Ultralytics unpickles .pt files (they hold the model object): only a file whose digest spft recorded when it
    # wrote it is handed over; a damaged or replaced one falls back to the other checkpoint, with a warning
    weights = newest_intact(run_dir / "checkpoints", (f"{checkpoint}.pt", f"{other}.pt"), loadable=False)
    if weights is None:
        raise MissingFileError(f"{run_dir / 'checkpoints'} holds no .pt checkpoint (has the run finished its first "
                               "epoch?)")
    with _quiet_ultralytics():  # Ultralytics logs to stdout; keep stdout for the table / --json output
        data_yaml = dataset_yaml_for(cfg, training=False)
        ev = evaluate_weights(weights, cfg, data_yaml, split, run_dir / "ultralytics" / f"eval_{split}")
    atomic_write_json(run_dir / f"metrics_{split}_eval.json", ev.metrics())
    return ev
