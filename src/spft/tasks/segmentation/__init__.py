"""SPFT for segmentation: SAM2 with box prompts on Lightning (``task: segmentation``).

:data:`TASK` is what :mod:`spft.tasks.registry` hands out; this module stays light (no torch, no Lightning).
"""

from __future__ import annotations

from pathlib import Path

from spft.tasks.base import Task

_CHEXMASK = "CheXmask segmentation data, used by task: segmentation only"
_NO_HEAD = "classification head settings; SAM2 has its own mask decoder"


class SegmentationTask(Task):
    name = "segmentation"
    checkpoint_names = ("best.ckpt", "last.ckpt")
    primary_metric, primary_label = "mean_dice", "mean Dice"
    predict_module = "spft.tasks.segmentation.predict"
    export_module = "spft.tasks.segmentation.export"
    train_module, evaluate_module = "spft.tasks.segmentation.train", "spft.tasks.segmentation.evaluate"
    datasets = ("phantom_segment", "mask_folder", "chexmask")
    own_keys = {
        "segmentation": "segmentation settings, used by task: segmentation only",
        "data.masks_csv": _CHEXMASK,
        "data.images_root": _CHEXMASK,
        "data.source": _CHEXMASK,
        "data.min_rca": _CHEXMASK,
    }
    not_applicable = {
        "loss": "segmentation trains Dice + BCE per structure (segmentation.dice_weight, segmentation.bce_weight)",
        "model.pooling": _NO_HEAD,
        "model.head_hidden": _NO_HEAD,
        "model.head_dropout": _NO_HEAD,
        "data.image_size": "SAM2's prompt encoder fixes the input size",
        "data.augment": "segmentation augments only the box prompts (segmentation.box_jitter)",
        "data.val_fraction": "segmentation splits come from data.split_column or data.split_fractions",
        "recipe.class_weights.apply": "a structure weight multiplies the structure's whole Dice + BCE loss; there "
                                      "is no positive term to weigh on its own",
    }

    def check_config(self, cfg) -> None:
        from spft.errors import ConfigError

        if cfg.data.name not in self.datasets:
            raise ConfigError(f"data.name: {cfg.data.name!r} is not a segmentation dataset "
                              f"({', '.join(self.datasets)})")

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
