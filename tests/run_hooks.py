"""Lightning callbacks the tests inject into a `spft train` subprocess through ``SPFT_TEST_CALLBACK=run_hooks:Name``
(with ``tests/`` on ``PYTHONPATH``): test-only behaviour lives here, not in spft."""

from __future__ import annotations

import os
import time
from pathlib import Path

import lightning as L


class HoldUntilReleased(L.Callback):
    """At the start of epoch 1, wait (up to 5 minutes) until the file ``$SPFT_RELEASE_FILE`` exists, after touching
    ``$SPFT_HELD_FILE``: keeps a run alive, holding its lock, while a test tries a second writer."""

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch != 1:
            return
        Path(os.environ["SPFT_HELD_FILE"]).touch()
        release = Path(os.environ["SPFT_RELEASE_FILE"])
        deadline = time.time() + 300
        while not release.exists() and time.time() < deadline:
            time.sleep(0.1)


TESTS = Path(__file__).resolve().parent


def crash_after_epoch(epoch: int) -> dict:
    """The environment of an ``spft train`` that kills itself (exit 17) once epoch ``epoch``'s checkpoint is
    written: :class:`CrashAfterEpoch` injected, with this folder on ``PYTHONPATH``."""
    path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": path, "SPFT_TEST_CALLBACK": "run_hooks:CrashAfterEpoch", "SPFT_CRASH_AFTER_EPOCH": str(epoch)}


class CrashAfterEpoch(L.Callback):
    """``SPFT_CRASH_AFTER_EPOCH=k`` kills the process (``os._exit(17)``) once epoch k's checkpoint is written, as a
    power cut would. Lightning: at the start of epoch k+1, i.e. after ``last.ckpt`` for epoch k exists. Detection:
    Ultralytics' ``on_model_save`` of epoch k (after the ``.pt`` files and their digests are in place)."""

    def __init__(self):
        self.epoch = int(os.environ["SPFT_CRASH_AFTER_EPOCH"])

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch + 1:
            os._exit(17)

    def ultralytics_callbacks(self) -> dict:
        return {"on_model_save": self._saved}

    def _saved(self, trainer) -> None:
        if trainer.epoch == self.epoch:
            os._exit(17)


class SaveInitialWeights(L.Callback):
    """``SPFT_INIT_WEIGHTS=FILE``: the model's weights as training starts (before the first step), saved with
    ``torch.save`` — what a plain loop must start from to be compared with the run (tests/test_plain_loop.py)."""

    def on_train_start(self, trainer, pl_module) -> None:
        import torch

        state = {k: v.detach().cpu().clone() for k, v in pl_module.model.state_dict().items()}
        torch.save(state, os.environ["SPFT_INIT_WEIGHTS"])
