"""EMA of the model weights for evaluation, with the usual decay warm-up, on top of torch's ``AveragedModel``.

We keep torch's ``AveragedModel`` (its ``module`` copy, ``n_averaged`` buffer and state-dict layout, docs/decisions.md
rule 10) but replace its update: torch's ``get_ema_multi_avg_fn`` has a fixed decay and no warm-up, and a per-tensor
``avg_fn`` costs a Python call and two temporaries per tensor. :class:`EmaModel` ramps the decay as
``min(decay, (1 + n) / (10 + n))`` (``n`` = updates already averaged; the first update copies) and applies it with one
``torch._foreach_lerp_`` per device/dtype group, to the parameters that currently train plus the float buffers.
Skipping frozen parameters is exact, not an approximation: a frozen parameter has not moved since the first update
copied it, and ``lerp(a, a, w) == a`` bit for bit, so the EMA copy of every frozen part stays equal to the model's
(which also lets stage 1 serve the EMA model from the same cached features). The decay is computed from a Python
counter mirrored in ``n_averaged``, so an update never waits on the GPU.
"""

from __future__ import annotations

import weakref

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from spft.compat import foreach_lerp_, group_tensors_by_device_and_dtype
from spft.errors import ConfigError


def ema_decay_at(num_updates: int, decay: float = 0.999, warmup: bool = True) -> float:
    """EMA decay after ``num_updates`` averaged updates.

    >>> ema_decay_at(0), ema_decay_at(1), ema_decay_at(10**6)
    (0.1, 0.18181818181818182, 0.999)
    """
    if not 0.0 <= decay <= 1.0:
        raise ConfigError(f"decay must be in [0, 1], got {decay}")
    if num_updates < 0:
        raise ConfigError(f"num_updates must be >= 0, got {num_updates}")
    if not warmup:
        return decay
    return min(decay, (1 + num_updates) / (10 + num_updates))


class EmaModel(AveragedModel):
    """``AveragedModel`` whose :meth:`update_parameters` is the warm-up EMA over trainable parameters and buffers.

    Call ``ema.update_parameters(model)`` after every optimizer step and evaluate ``ema.module``.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True):
        ema_decay_at(0, decay, warmup)  # validates decay
        super().__init__(model, use_buffers=True)
        self.decay = decay
        self.warmup = warmup
        self._count: int | None = None  # Python mirror of n_averaged (None: read it at the next update)
        for p in self.parameters():
            p.requires_grad_(False)

    def _load_from_state_dict(self, *args, **kwargs):  # torch private: spft.compat.PRIVATE_OVERRIDES
        self._count = None  # n_averaged is being replaced: re-read it
        return super()._load_from_state_dict(*args, **kwargs)

    def _pairs(self, model: nn.Module) -> tuple[list, list]:
        """(parameter pairs, buffer pairs) of (EMA copy, model), listed once per model: walking the module tree
        on every step costs more than the update itself on small models."""
        ref = getattr(self, "_pairs_of", None)
        if ref is None or ref() is not model:  # a weak reference: assigning a Module would register it
            self._param_pairs = list(zip(self.module.parameters(), model.parameters(), strict=True))
            self._buffer_pairs = list(zip(self.module.buffers(), model.buffers(), strict=True))
            self._pairs_of = weakref.ref(model)
        return self._param_pairs, self._buffer_pairs

    def __getstate__(self):
        state = super().__getstate__()
        for key in ("_pairs_of", "_param_pairs", "_buffer_pairs"):
            state.pop(key, None)
        return state

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        if self._count is None:
            self._count = int(self.n_averaged)
        params, buffers = self._pairs(model)
        if self._count == 0:
            for mine, theirs in params + buffers:
                mine.copy_(theirs.detach().to(mine.device))
        else:
            weight = 1.0 - ema_decay_at(self._count, self.decay, self.warmup)
            moving = [(e, m) for e, m in params if m.requires_grad]
            moving += [(e, m) for e, m in buffers if e.is_floating_point()]
            for e, m in buffers:
                if not e.is_floating_point():  # e.g. BatchNorm's num_batches_tracked: follow the model
                    e.copy_(m)
            if moving:
                grouped = group_tensors_by_device_and_dtype([[e for e, _ in moving],
                                                              [m.detach().to(e.device) for e, m in moving]])
                for (ema_list, model_list), _ in grouped.values():
                    foreach_lerp_(ema_list, model_list, weight)
        self.n_averaged += 1
        self._count += 1


def build_ema(model: nn.Module, decay: float = 0.999, warmup: bool = True) -> EmaModel:
    """The :class:`EmaModel` of ``model`` (its parameters never need grads)."""
    return EmaModel(model, decay, warmup)
