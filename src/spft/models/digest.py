"""One digest of a model's weights, :func:`weights_digest`: the stage-1 feature cache keys its entries by it (every
tensor of the encoder) and DDP runs compare it across ranks after each epoch (parameters only)."""

from __future__ import annotations

import hashlib

import torch
from torch import nn


def weights_digest(module: nn.Module, buffers: bool = True) -> str:
    """SHA-256 over each tensor's name, dtype, shape and bytes: every tensor of ``module.state_dict()``, or with
    ``buffers=False`` the parameters only (what DDP keeps equal across ranks; batch-norm statistics are each rank's
    own between broadcasts). Equal exactly when the weights are."""
    tensors = module.state_dict().items() if buffers else module.named_parameters()
    h = hashlib.sha256()
    for name, tensor in tensors:
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
