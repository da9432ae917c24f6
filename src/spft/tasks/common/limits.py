"""``trainer.limit_train_batches`` / ``limit_val_batches`` / ``limit_test_batches``: a smoke run that limits every
pass, not only Lightning's training and validation loops.

With a limit set, every pass over a split reads only the batches the limited run uses: the stage-1 feature
extraction (only the rows of the batches the limited stage-1 epochs train and validate on:
:class:`spft.tasks.classification.datamodule.ClassificationDataModule`), training and validation (Lightning), the
end-of-run test scoring (``limit_test_batches``) and the validation predictions the operating points and the
calibration are fitted on (``limit_val_batches``). The run logs one warning at its start and records the limits in
``metrics.json`` (``"limited": {"train": 20, "val": 10, "test": 5}``): its metrics come from a subset and are not
for reporting. ``spft evaluate`` scores every row unless ``trainer.limit_test_batches`` is given on its own command
line (a run's recorded limits do not apply to it).

An int is that many batches, a float in (0, 1] that fraction of them (rounded down, as Lightning does), null all.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def batches_under(limit: int | float | None, n_batches: int) -> int:
    """How many of ``n_batches`` a pass reads under ``limit`` (Lightning's rule: an int caps, a float scales and
    rounds down; ``None`` and ``1.0`` read all)."""
    if limit is None or (isinstance(limit, float) and limit >= 1.0):
        return n_batches
    if isinstance(limit, int) and not isinstance(limit, bool):
        return min(n_batches, limit)
    return int(n_batches * float(limit))


def limits_of(cfg) -> dict[str, int | float]:
    """The active limits of ``cfg`` by split (``{"train": 20, "val": 10}``); empty when every pass reads all."""
    out = {}
    for split in SPLITS:
        value = getattr(cfg.trainer, f"limit_{split}_batches", None)
        if value is not None and not (isinstance(value, float) and value >= 1.0):
            out[split] = value
    return out


def warn_if_limited(cfg) -> dict[str, int | float]:
    """Log the one warning line of a limited run (at its start); returns :func:`limits_of`."""
    limits = limits_of(cfg)
    if limits:
        what = ", ".join(f"{split}={value}" for split, value in limits.items())
        log.warning("trainer.limit_*_batches is set (%s batches): every pass (stage-1 features, training, validation, "
                    "test scoring, thresholds and calibration) reads a SUBSET; the metrics are smoke-run numbers, "
                    "not results (recorded as \"limited\" in metrics.json)", what)
    return limits


def limited(loader, limit: int | float | None) -> Iterable:
    """The first batches of ``loader`` that ``limit`` allows (the loader itself when it reads all)."""
    n = len(loader)
    k = batches_under(limit, n)
    return loader if k >= n else itertools.islice(loader, k)


def given_test_limit(cfg, overrides) -> int | float | None:
    """``trainer.limit_test_batches`` for ``spft evaluate``: only when given among its own ``overrides`` (a run's
    recorded limits are its smoke run's, not the evaluation's: ``spft evaluate`` scores every row by default)."""
    keys = {str(text).split("=", 1)[0].strip().lstrip("-") for text in overrides or ()}
    return cfg.trainer.limit_test_batches if "trainer.limit_test_batches" in keys else None
