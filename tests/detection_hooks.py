"""An Ultralytics-side hook the detection tests inject into a `spft train` subprocess through
``SPFT_TEST_CALLBACK=detection_hooks:RecordNormModes`` (with ``tests/`` on ``PYTHONPATH``): test-only code."""

from __future__ import annotations

import json
import os
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def record_norm_modes(log: Path) -> dict:
    """The environment of an ``spft train`` that appends one JSON line per epoch to ``log``
    (:class:`RecordNormModes`)."""
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path, "SPFT_TEST_CALLBACK": "detection_hooks:RecordNormModes", "SPFT_NORM_LOG": str(log)}


class RecordNormModes:
    """``SPFT_NORM_LOG=FILE``: at the first batch of each epoch (after the epoch's trainable state is applied), one
    JSON line ``{"epoch", "modules": [{"trains", "norms_in_train_mode"}, ...]}`` over the backbone modules, bottom
    to top: whether the module's weights train and whether all its batch norms run in train mode."""

    def __init__(self) -> None:
        self.log = Path(os.environ["SPFT_NORM_LOG"])
        self.epoch: int | None = None

    def ultralytics_callbacks(self) -> dict:
        return {"on_train_batch_start": self._record}

    def _record(self, trainer) -> None:
        if trainer.epoch == self.epoch:
            return
        self.epoch = trainer.epoch
        from torch import nn

        modules = []
        for block in trainer.groups.blocks:
            norms = [m for m in block.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
            modules.append({"trains": any(p.requires_grad for p in block.parameters()),
                            "norms_in_train_mode": bool(norms) and all(m.training for m in norms)})
        with open(self.log, "a") as fh:
            fh.write(json.dumps({"epoch": trainer.epoch, "modules": modules}) + "\n")
