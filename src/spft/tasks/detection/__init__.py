"""Detection with SPFT on Ultralytics (YOLOv8, RT-DETR); needs the optional `detect` extra (AGPL-3.0).

Importing Ultralytics replaces ``PIL.Image.open`` process-wide with a wrapper that pip-installs ``pi-heif`` the
first time any unreadable image is opened (``ultralytics/utils/patches.py``); that turns spft's "cannot decode
image" errors into install attempts. Every module here that imports Ultralytics calls :func:`restore_pil_open`.

:data:`TASK` is what :mod:`spft.tasks.registry` hands out; this module imports neither Ultralytics nor torch.
"""

from __future__ import annotations

from pathlib import Path

from spft.compat import ultralytics_image_open
from spft.config.datasets import CocoData, DetectionCsvData, PhantomDetectData, Tbx11kData, VindrCxrData, YoloData
from spft.config.schema import DetectionConfig, ModelConfig, TrainerConfig
from spft.tasks.base import Evaluation, Task


def restore_pil_open() -> None:
    """Put Pillow's own ``Image.open`` back if Ultralytics has patched it (HEIC files then stay unsupported)."""
    pair = ultralytics_image_open()
    if pair is None:
        return
    from PIL import Image

    wrapper, original = pair
    if Image.open is wrapper and original is not None:
        Image.open = original


class DetectionTask(Task):
    name = "detection"
    checkpoint_names = ("best.pt", "last.pt")
    primary_metric, primary_label = "map50_95", "mAP@50-95"
    extra = "detect"
    predict_module = "spft.tasks.detection.predict"
    export_module = "spft.tasks.detection.export"
    train_module, evaluate_module = "spft.tasks.detection.train", "spft.tasks.detection.evaluate"
    datasets = {"phantom_detect": PhantomDetectData, "vindr_cxr": VindrCxrData, "tbx11k": Tbx11kData,
                "yolo": YoloData, "coco": CocoData, "csv": DetectionCsvData}
    engine = "Ultralytics"
    sections = {"model": ModelConfig, "trainer": TrainerConfig, "detection": DetectionConfig}
    not_applicable = {
        "loss": "Ultralytics' own detection loss is used (class-weighted by recipe.class_weights)",
        "recipe.unfreeze.embeddings": "the plan opens backbone modules; Ultralytics models have no embeddings part",
        "recipe.class_weights.apply": "a class weight multiplies the whole per-anchor classification BCE inside "
                                      "Ultralytics' loss (both terms, the paper's rule); there is no positive-only "
                                      "variant for detection",
    }

    def check_config(self, cfg) -> None:
        """The ``detection`` keys (no Ultralytics import)."""
        from spft.config.schema import value_at
        from spft.errors import ConfigError

        det = cfg.detection
        if not cfg.model.name:
            raise ConfigError("'model.name': detection needs an Ultralytics model YAML or weights (e.g. yolov8n.yaml)")
        checks = [("detection.imgsz", det.imgsz >= 32, "an integer >= 32"),
                  ("detection.long_side", det.long_side >= 32, "an integer >= 32"),
                  ("detection.iou_thr", 0.0 < det.iou_thr < 1.0, "a value in (0, 1)"),
                  ("detection.no_finding_share", 0.0 <= det.no_finding_share <= 1.0, "a value in [0, 1]"),
                  ("detection.figures", det.figures >= 0, "an integer >= 0")]
        for key, ok, expected in checks:
            if not ok:
                raise ConfigError(f"'{key}': expected {expected}, got {value_at(cfg, key)!r}")

    def evaluate(self, run_dir, overrides=(), split=None, checkpoint="best", out=None, name=None) -> Evaluation:
        from spft.errors import ConfigError

        if out or name:  # Ultralytics writes its own files: the run's metrics_<split>_eval.json only
            raise ConfigError("--out/--name are not supported for detection runs")
        mod = self.module(self.evaluate_module)
        ev = mod.evaluate_run(run_dir, tuple(overrides), split=split or "test", checkpoint=checkpoint)
        return Evaluation(ev.metrics(), self.primary_metric, mod.format_table(ev), [], ev)

    def report(self, sweep_dir, out=None, n_boot=1000, seed=0) -> Path:
        from spft.reporting.detection import build_detection_report

        return build_detection_report(sweep_dir, out)

    def data_check(self, cfg, scan=False, workers=None, headers=False):
        """Images per split, images with boxes of each class, boxes per class, images without boxes, images (or
        patients) in more than one split, missing images and the box-level problems (unknown class, zero-size box,
        box outside the image, malformed label line) of the prepared Ultralytics dataset, or of your own data
        (``data.name`` yolo, coco, csv: read where it lies, nothing converted); ``--headers`` / ``--scan``:
        unreadable images too."""
        from spft.data.check import box_report
        from spft.data.own_detection import read_own, read_yolo
        from spft.tasks.detection.checks import check_detection_config
        from spft.tasks.detection.dataset import OWN_DATASETS, dataset_yaml_for

        check_detection_config(cfg)
        if cfg.data.name in OWN_DATASETS:
            boxset = read_own(cfg)
        else:
            boxset = read_yolo(dataset_yaml_for(cfg), cfg.data.name, group_by="stem")[0]
        return box_report(cfg, boxset, scan=scan, workers=workers, headers=headers)


TASK = DetectionTask()
