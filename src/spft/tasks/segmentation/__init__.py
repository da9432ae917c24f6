"""SPFT for segmentation: SAM2 with box prompts on Lightning (``task: segmentation``).

:data:`TASK` is what :mod:`spft.tasks.registry` hands out; this module stays light (no torch, no Lightning).
"""

from __future__ import annotations

from pathlib import Path

from spft.config.datasets import ChexmaskData, MaskFolderData, PhantomSegmentData
from spft.config.schema import EncoderModelConfig, LightningTrainerConfig, SegmentationConfig
from spft.tasks.base import Task


class SegmentationTask(Task):
    name = "segmentation"
    checkpoint_names = ("best.ckpt", "last.ckpt")
    primary_metric, primary_label = "mean_dice", "mean Dice"
    predict_module = "spft.tasks.segmentation.predict"
    export_module = "spft.tasks.segmentation.export"
    train_module, evaluate_module = "spft.tasks.segmentation.train", "spft.tasks.segmentation.evaluate"
    datasets = {"phantom_segment": PhantomSegmentData, "mask_folder": MaskFolderData, "chexmask": ChexmaskData}
    engine = "Lightning"
    sections = {"model": EncoderModelConfig, "trainer": LightningTrainerConfig, "segmentation": SegmentationConfig}
    not_applicable = {
        "loss": "segmentation trains Dice + BCE per structure (segmentation.dice_weight, segmentation.bce_weight)",
        "recipe.class_weights.apply": "a structure weight multiplies the structure's whole Dice + BCE loss; there "
                                      "is no positive term to weigh on its own",
    }

    def report(self, sweep_dir, out=None, n_boot=1000, seed=0) -> Path:
        from spft.reporting.segmentation import build_segmentation_report

        return build_segmentation_report(sweep_dir, out)

    def data_check(self, cfg, scan=False, workers=None, headers=False):
        """Images and patients per split, images with each structure, leaked patients, missing images and mask
        files (``--headers`` / ``--scan``: unreadable images)."""
        from spft.data.check import rows_report
        from spft.data.io import set_max_pixels
        from spft.data.masks import load_mask_table

        set_max_pixels(cfg.data.max_image_pixels)
        table = load_mask_table(cfg.data, list(cfg.segmentation.structures), cfg.seed)
        report = rows_report(cfg, table.source, table.structures, table.splits, table.groups, table.paths,
                             [[m is not None for m in row] for row in table.masks], group_kind="patient",
                             split_policy=table.split_policy, label_policy="one mask per structure (none: absent)",
                             other_files=[m for row in table.masks for m in row if isinstance(m, str)],
                             scan=scan, workers=workers, headers=headers)
        report.warnings += list(table.warnings)
        return report


TASK = SegmentationTask()
