"""What a Lightning fit prints: the progress bar (:class:`StderrProgressBar`) and which of Lightning's messages are
dropped (:func:`quiet_device_banners`).

On a terminal the bar is Lightning's tqdm bar, on stderr (stdout holds spft's results and, as its last line, the
run directory). Anywhere else — a sweep's ``logs/<row>-seed<k>.log``, a SLURM log, a pipe — a tqdm bar would
write a carriage-return frame per refresh into the file, so there the bars draw nowhere and each epoch ends with
one plain line instead::

    Epoch 3: 12/12 batches in 00:04, train/loss=0.412, val/auc=0.781

Lightning's ``v_num`` (the logger version: ``_tb``, spft's TensorBoard folder) is never shown, and neither are its
device banners (``GPU available: ...``, ``TPU available: ...``): the accelerator spft uses is in ``env.json``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys

from lightning.pytorch.callbacks import TQDMProgressBar

from spft.console import is_terminal

# Lightning's INFO lines at every fit that say which accelerators exist (not which one is used: see env.json)
DEVICE_BANNERS = ("GPU available:", "TPU available:", "HPU available:", "IPU available:",
                  "Loading `train_dataloader` to estimate number of stepping batches")  # the schedule's step count
RANK_ZERO_LOGGER = "lightning.pytorch.utilities.rank_zero"


def _not_a_banner(record: logging.LogRecord) -> bool:
    return not str(record.getMessage()).startswith(DEVICE_BANNERS)


def quiet_device_banners() -> None:
    """Drop Lightning's device banners (:data:`DEVICE_BANNERS`) from its rank-zero logger; every other message of
    it stays. Idempotent (the same filter object is added once)."""
    logging.getLogger(RANK_ZERO_LOGGER).addFilter(_not_a_banner)


class _Discard(io.TextIOBase):
    """A text stream that keeps nothing (where the tqdm bars draw when stderr is not a terminal)."""

    def write(self, text: str) -> int:
        return len(text)

    def isatty(self) -> bool:
        return False


class StderrProgressBar(TQDMProgressBar):
    """Lightning's tqdm bars on stderr when it is a terminal; otherwise one line per epoch and no ``\\r`` frames
    (see the module docstring). ``v_num`` is never shown.

    Args:
        stream: where the bars / lines go (default: ``sys.stderr`` at the time of writing).
    """

    def __init__(self, *args, stream=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._stream = stream

    def _out(self):
        return self._stream if self._stream is not None else sys.stderr

    def _to_stderr(self, make):
        target = self._out() if is_terminal(self._out()) else _Discard()
        with contextlib.redirect_stdout(target):  # Lightning passes file=sys.stdout, read at call time
            return make()

    def init_sanity_tqdm(self):
        return self._to_stderr(super().init_sanity_tqdm)

    def init_train_tqdm(self):
        return self._to_stderr(super().init_train_tqdm)

    def init_validation_tqdm(self):
        return self._to_stderr(super().init_validation_tqdm)

    def init_test_tqdm(self):
        return self._to_stderr(super().init_test_tqdm)

    def init_predict_tqdm(self):
        return self._to_stderr(super().init_predict_tqdm)

    def get_metrics(self, trainer, pl_module) -> dict:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items

    def epoch_line(self, trainer, pl_module) -> str:
        """The line that ends an epoch when the output is not a terminal."""
        from tqdm import tqdm

        bar = self.train_progress_bar
        done, total = bar.n, bar.total
        elapsed = tqdm.format_interval(bar.format_dict.get("elapsed", 0.0))
        metrics = ", ".join(f"{k}={_fmt(v)}" for k, v in self.get_metrics(trainer, pl_module).items())
        batches = f"{done}/{total}" if total not in (None, float("inf")) else f"{done}"
        return f"Epoch {trainer.current_epoch}: {batches} batches in {elapsed}" + (f", {metrics}" if metrics else "")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)  # validation has run: its metrics are in
        if not self.is_disabled and not is_terminal(self._out()):
            print(self.epoch_line(trainer, pl_module), file=self._out(), flush=True)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    try:
        return f"{float(value):.4g}" if hasattr(value, "item") else str(value)
    except (TypeError, ValueError):
        return str(value)
