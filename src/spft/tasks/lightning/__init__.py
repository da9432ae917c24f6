"""The Lightning engine that classification and segmentation share (heavy: imports torch and Lightning).

* :mod:`.trainer` — the ``Trainer`` spft builds (precision, devices, loggers, checkpoints, early stopping) and the
  evaluation device/checkpoint helpers;
* :mod:`.recipe` — :class:`~spft.tasks.lightning.recipe.RecipeModule`, the LightningModule base of the recipe
  (optimizer groups, schedule, EMA, class weights, stage plan);
* :mod:`.callbacks` — the recipe's concerns, one callback each (unfreezing, reseeding, EMA, weight refinement,
  history, divergence);
* :mod:`.data` — the split DataModule base (loaders, workers, DDP sharding);
* :mod:`.run` — fit / resume of a Lightning run under :mod:`spft.tasks.lifecycle`;
* :mod:`.progress` — what a fit prints (the progress bar, Lightning's banners dropped).

Detection runs on Ultralytics instead (:mod:`spft.tasks.detection`).
"""
