"""Classification on Lightning: module (recipe hooks), datamodule, training entry point and evaluation.

:data:`TASK` is what :mod:`spft.tasks.registry` hands out; this module stays light (no torch, no Lightning).
"""

from __future__ import annotations

from pathlib import Path

from spft.tasks.base import Task

_LABELS = "classification labels; read by classification datasets only"
_HEAD = "classification head settings"
_IMAGE_CHECK = "the pre-training image check runs for classification only"
_IMAGE_CACHE = "`spft prepare cache` images feed classification runs only"


class ClassificationTask(Task):
    name = "classification"
    checkpoint_names = ("best.ckpt", "last.ckpt")
    primary_metric, primary_label = "macro_auc", "macro AUC"
    predict_module = "spft.tasks.classification.predict"
    export_module = "spft.tasks.classification.export"
    train_module, evaluate_module = "spft.tasks.classification.train", "spft.tasks.classification.evaluate"
    datasets = ("csv", "phantom", "chestxray14", "chexpert", "ham10000")
    own_keys = {
        "evaluation": "operating points and calibration are fitted for classification runs only",
        "trainer.feature_cache": "the stage-1 feature cache is a classification feature",
        "model.pooling": _HEAD,
        "model.head_hidden": _HEAD,
        "model.head_dropout": _HEAD,
        "data.label_columns": _LABELS,
        "data.views": _LABELS,
        "data.uncertain": _LABELS,
        "data.blank": _LABELS,
        "data.official_test": _LABELS,
        "data.train_subset": "the training subset is drawn by the classification datasets only",
        "data.image_cache": _IMAGE_CACHE,
        "data.image_cache_format": _IMAGE_CACHE,
        "data.check_images": _IMAGE_CHECK,
        "data.on_bad_image": _IMAGE_CHECK,
        "data.allow_outside_root": "a rule of the csv classification dataset",
    }

    def check_config(self, cfg) -> None:
        from spft.errors import ConfigError

        if cfg.data.name == "csv" and cfg.data.csv is None:
            raise ConfigError("'data.csv' must be set when data.name is csv (a CSV with one row per image)")

    def summary(self, metrics: dict) -> str:
        """Per-class test AUC from ``metrics.json`` (``spft train``, ``spft demo``)."""
        per_class = metrics["per_class_auc"]
        width = max(len(c) for c in list(per_class) + [self.primary_label])
        lines = [f"\nTest AUC per class ({metrics['n']} images, best epoch {metrics.get('best_epoch')}):"]
        lines += [f"  {c:<{width}}  {self.format_metric(v)}" for c, v in per_class.items()]
        lines.append(f"  {self.primary_label:<{width}}  {self.format_metric(metrics[self.primary_metric])}")
        if metrics["excluded_classes"]:
            lines.append(f"  excluded (no positive or no negative in test): {', '.join(metrics['excluded_classes'])}")
        return "\n".join(lines)

    def report(self, sweep_dir, out=None, n_boot=1000, seed=0) -> Path:
        from spft.reporting.report import build_classification_report

        return build_classification_report(Path(sweep_dir), out, n_boot=n_boot, seed=seed)

    def data_check(self, cfg, scan=False, workers=None, headers=False):
        from spft.data.check import check_data

        return check_data(cfg, scan=scan, workers=workers, headers=headers)

    def prepare_cache(self, cfg, workers=None) -> dict:
        from spft.data.cache import prepare_cache

        return prepare_cache(cfg, workers=workers)


TASK = ClassificationTask()
