"""SIGTERM (SLURM, Kubernetes) and SIGINT (Ctrl+C) during a Lightning ``spft train``: :class:`SignalGuard` turns
either into a clean stop at the end of the current step (``last.ckpt`` keeps the last complete epoch) and one
:class:`~spft.errors.RunInterrupted`; :class:`SignalStop` is what it raises outside the training loop.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import lightning as L

log = logging.getLogger(__name__)


_LIGHTNING_SIGNALS = "lightning.pytorch.trainer.connectors.signal_connector"


def _drop_lightning_notice(record: logging.LogRecord) -> bool:
    """Lightning's ``[rank: 0] Received SIGTERM: 15``: spft says itself which signal came and what it keeps (and
    after Ctrl+C, which spft turns into Lightning's SIGTERM path, the line named the wrong signal)."""
    return "Received SIGTERM" not in record.getMessage()


class SignalStop(BaseException):
    """Raised by :class:`SignalGuard` outside the training loop (not an Exception: nothing may swallow it)."""


class SignalGuard(L.Callback):
    """SIGTERM (SLURM, Kubernetes) and SIGINT (Ctrl+C) during ``spft train``: stop cleanly, keep the last epoch.

    While the training loop runs, a signal goes through Lightning's own SIGTERM path (SIGINT is turned into it):
    the current step finishes, no checkpoint of the partial epoch is written, and ``trainer.fit`` stops — so
    ``last.ckpt`` stays the end of the last complete epoch, from which ``--resume`` equals an uninterrupted run.
    Before and after the loop (setup, feature extraction, test evaluation) the signal stops the run at once (every
    file is written atomically). Either way :meth:`~spft.tasks.lightning.run.LightningEngine.guarded` raises
    :class:`~spft.errors.RunInterrupted` (exit 128 + signal) and ``DONE`` is not written. A second Ctrl+C interrupts
    immediately.
    """

    def __init__(self):
        self.signum: int | None = None
        self.in_loop = False
        self.trainer = None  # the run's trainer once built (the interruption message names its epoch)
        self._previous: dict = {}

    def __enter__(self) -> SignalGuard:
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._previous[sig] = signal.signal(sig, self._handle)
        logging.getLogger(_LIGHTNING_SIGNALS).addFilter(_drop_lightning_notice)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
        logging.getLogger(_LIGHTNING_SIGNALS).removeFilter(_drop_lightning_notice)

    def _handle(self, signum, frame) -> None:
        first = self.signum is None
        if first:
            self.signum = signum
            log.info("%s received: stopping (checkpoints/last.ckpt keeps the last complete epoch)",
                     signal.Signals(signum).name)
        if not self.in_loop:
            raise SignalStop()
        if signum == signal.SIGINT:
            if not first:
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGTERM)  # Lightning's handler (which also calls this one) stops the loop

    def on_train_start(self, trainer, pl_module) -> None:
        self.in_loop = True  # Lightning's SIGTERM handler is installed from here on

    def on_train_end(self, trainer, pl_module) -> None:
        self.in_loop = False

    def interrupted(self, run_dir: Path, epoch: int, fresh: bool):
        from spft.errors import RunInterrupted

        signum = self.signum or signal.SIGTERM
        if fresh and not (run_dir / "checkpoints" / "last.ckpt").is_file():
            return RunInterrupted(f"interrupted at epoch {epoch} before the first checkpoint; nothing to resume — "
                                  "start the run again", signum)
        return RunInterrupted(f"interrupted at epoch {epoch}; resume with spft train --resume {run_dir}", signum)
