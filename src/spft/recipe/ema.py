"""EMA of the model weights for evaluation, with the usual decay warm-up, on top of torch's ``AveragedModel``.

We use ``torch.optim.swa_utils.AveragedModel`` rather than our own copy loop (ARCHITECTURE rule 10). Torch's
``get_ema_multi_avg_fn`` has a fixed decay and no warm-up, so a custom, picklable ``avg_fn`` (:class:`EmaAvgFn`)
ramps the decay as ``min(decay, (1 + n) / (10 + n))``. ``AveragedModel`` copies the weights on its first update
(``n_averaged == 0``) and calls ``avg_fn`` from the second one on, with ``n`` = number of updates already averaged.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel


def ema_decay_at(num_updates: int, decay: float = 0.999, warmup: bool = True) -> float:
    """EMA decay after ``num_updates`` averaged updates.

    >>> ema_decay_at(0), ema_decay_at(1), ema_decay_at(10**6)
    (0.1, 0.18181818181818182, 0.999)
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay must be in [0, 1], got {decay}")
    if num_updates < 0:
        raise ValueError(f"num_updates must be >= 0, got {num_updates}")
    if not warmup:
        return decay
    return min(decay, (1 + num_updates) / (10 + num_updates))


class EmaAvgFn:
    """Picklable ``avg_fn`` for ``AveragedModel``: ``d * averaged + (1 - d) * current``, ``d = ema_decay_at(n)``."""

    def __init__(self, decay: float = 0.999, warmup: bool = True) -> None:
        ema_decay_at(0, decay, warmup)  # validates decay
        self.decay = decay
        self.warmup = warmup

    def __call__(self, averaged_param: Tensor, current_param: Tensor, num_averaged: Tensor | int) -> Tensor:
        # Integer buffers (e.g. BatchNorm's num_batches_tracked) cannot be averaged: follow the model.
        if not averaged_param.is_floating_point():
            return current_param
        d = ema_decay_at(int(num_averaged), self.decay, self.warmup)
        return averaged_param * d + current_param * (1.0 - d)

    def __repr__(self) -> str:
        return f"EmaAvgFn(decay={self.decay}, warmup={self.warmup})"


def build_ema(model: nn.Module, decay: float = 0.999, warmup: bool = True) -> AveragedModel:
    """``AveragedModel`` holding the EMA of ``model`` (buffers averaged too); its parameters never need grads.

    Call ``ema.update_parameters(model)`` after every optimizer step and evaluate ``ema.module``.
    """
    ema = AveragedModel(model, avg_fn=EmaAvgFn(decay, warmup), use_buffers=True)
    for p in ema.parameters():
        p.requires_grad_(False)
    return ema
