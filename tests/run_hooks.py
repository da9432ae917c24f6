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
