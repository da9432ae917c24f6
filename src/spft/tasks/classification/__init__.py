"""Classification on Lightning: module (recipe hooks), datamodule, training entry point and evaluation.

:data:`TASK` is what :mod:`spft.tasks.registry` hands out; this module stays light (no torch, no Lightning).
"""

from __future__ import annotations

from pathlib import Path

from spft.config.datasets import ChestXray14Data, ChexpertData, CsvData, FolderData, Ham10000Data, PhantomData
from spft.config.schema import ClassifierModelConfig, ClassifierTrainerConfig, EvaluationConfig
from spft.tasks.base import Task


class ClassificationTask(Task):
    name = "classification"
    checkpoint_names = ("best.ckpt", "last.ckpt")
    primary_metric, primary_label = "macro_auc", "macro AUC"
    predict_module = "spft.tasks.classification.predict"
    export_module = "spft.tasks.classification.export"
    train_module, evaluate_module = "spft.tasks.classification.train", "spft.tasks.classification.evaluate"
    datasets = {"csv": CsvData, "folder": FolderData, "phantom": PhantomData, "chestxray14": ChestXray14Data,
                "chexpert": ChexpertData, "ham10000": Ham10000Data}
    engine = "Lightning"
    sections = {"model": ClassifierModelConfig, "trainer": ClassifierTrainerConfig, "evaluation": EvaluationConfig}

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
