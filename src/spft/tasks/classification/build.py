"""What a classification run is made of: its data table, model, class weights, module and datamodule
(:func:`build_run`, shared by training, resume and ``spft evaluate``) and its ``data.json`` (:func:`describe_data`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from spft.config import SpftConfig
from spft.data.augment import Augment
from spft.data.registry import build_table
from spft.data.transforms import ImageTransform
from spft.devices import trains_on_gpu
from spft.models.classifier import build_classifier
from spft.recipe import ClassWeights, stage_plan
from spft.tasks.classification.datamodule import ClassificationDataModule
from spft.tasks.classification.feature_cache import FeatureCache, cache_blocker
from spft.tasks.classification.module import ClassificationModule

log = logging.getLogger(__name__)

MONITOR = "val/auc"


def build_run(cfg: SpftConfig, run_dir: Path | None, table=None):
    """Data, model, class weights, module and datamodule for ``cfg`` (shared by train, resume and evaluate).

    ``table``: the rows to use (``spft evaluate`` passes only those it scores); default the whole dataset. Its
    images are checked first (``data.check_images``, ``data.on_bad_image``: :func:`spft.data.check.screen_images`).
    """
    from spft.data.check import refuse_untrainable, screen_images

    training = table is None and run_dir is not None  # train / resume; evaluate passes the rows it scores
    table = screen_images(cfg, build_table(cfg.data, cfg.seed) if table is None else table, run_dir)
    if training:
        refuse_untrainable(table, table.source or cfg.data.name)
    model, prep = build_classifier(cfg.model, len(table.classes), cfg.data.image_size)
    train_labels = torch.from_numpy(table.labels[table.indices("train")])
    cwc = cfg.recipe.class_weights
    weights = ClassWeights(table.classes, train_labels, heuristic=cwc.heuristic, enabled=cwc.enabled,
                           eta=cwc.eta, w_min=cwc.w_min, w_max=cwc.w_max)
    for name in weights.as_dict().get("undefined_classes", []) if run_dir is not None else []:
        log.warning("class %r has no positives (or no negatives) in the training split: it gets the mean weight",
                    name)
    module = ClassificationModule(cfg, model, table.classes, weights, run_dir)
    module.apply_speed_options()
    transform = ImageTransform(prep)  # the model's full preprocessing (resize, crop, filter, statistics)
    reading = table
    if cfg.data.image_cache:  # pre-resized copies from `spft prepare cache`: same pixels, much smaller files
        from spft.data.cache import image_cache_for

        reading = image_cache_for(cfg, prep).redirect(table)
    module.feature_cache_blocker = cache_blocker(cfg, model)
    if module.feature_cache_blocker is None and stage_plan(cfg).stage1_epochs > 0 and run_dir is not None:
        log.info("stage 1 trains the head on cached encoder features (computed once; trainer.feature_cache)")
    elif module.feature_cache_blocker is not None and cfg.recipe.stage1_epochs > 0 and run_dir is not None:
        log.info("stage-1 feature cache bypassed: %s", module.feature_cache_blocker)
    cache = FeatureCache(model, transform, cfg.data.color) if module.feature_cache_blocker is None else None
    dm = ClassificationDataModule(reading, transform, cfg.data.color, cfg.data, cfg.trainer.batch_size,
                                  cfg.trainer.eval_batch_size, cfg.seed, on_gpu=trains_on_gpu(cfg),
                                  feature_cache=cache,
                                  augment=Augment(cfg.data.augment, cfg.seed) if cfg.data.augment.enabled else None)
    return table, prep, module, dm


def describe_data(table, prep) -> dict:
    from spft.data.splits import split_method

    return {"classes": table.classes, "split_policy": table.split_policy,
            "split_method": split_method(table.split_policy), "label_policy": table.label_policy,
            **table.split_sizes(), "preprocessing": prep.record()}
