"""Applies a :class:`TrainableState` to a model by flipping ``requires_grad``, nothing else.

Freezing never touches the optimizer (its groups exist from the start, docs/decisions.md rule 1) and never touches
train/eval mode: whether frozen parts run with dropout or frozen batch-norm statistics is an engine decision, so
it stays in the engine. Applying the same state twice changes nothing, which makes resume correct by construction.
"""

from __future__ import annotations

from collections.abc import Iterable

from torch import nn

from spft.errors import ConfigError
from spft.recipe.layers import LayerGroups
from spft.recipe.stages import TrainableState


def count_trainable(module: nn.Module) -> int:
    """Number of parameter elements of ``module`` with ``requires_grad`` set (shared parameters counted once)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _set_requires_grad(module: nn.Module | None, flag: bool) -> None:
    if module is None:
        return
    for p in module.parameters():
        if p.requires_grad != flag:
            p.requires_grad_(flag)


def _count_unique_trainable(modules: Iterable[nn.Module]) -> int:
    seen: set[int] = set()
    total = 0
    for module in modules:
        for p in module.parameters():
            if id(p) not in seen and p.requires_grad:
                seen.add(id(p))
                total += p.numel()
    return total


def apply_trainable(groups: LayerGroups, state: TrainableState) -> int:
    """Set ``requires_grad`` on every encoder part per ``state``; the head always trains.

    Parameters outside ``groups`` (e.g. an unused pooler) are left as they are. Idempotent.

    Args:
        groups: The model's parts.
        state: The trainable state, usually ``trainable_at(plan, epoch, groups.n_blocks)``.

    Returns:
        Number of trainable parameter elements over all parts (each shared parameter counted once).
    """
    n_blocks = len(groups.blocks)
    bad = [i for i in state.open_blocks if not 0 <= i < n_blocks]
    if bad:
        raise ConfigError(f"open_blocks {bad} out of range for {n_blocks} blocks")
    open_set = set(state.open_blocks)
    _set_requires_grad(groups.embeddings, state.embeddings)
    for i, block in enumerate(groups.blocks):
        _set_requires_grad(block, i in open_set)
    _set_requires_grad(groups.final_norm, state.final_norm)
    # The head last, so a parameter accidentally shared with a frozen part still ends up trainable.
    _set_requires_grad(groups.head, True)
    return _count_unique_trainable(m for _, m, _ in groups.named_parts())


def frozen_prefix_length(state: TrainableState, n_blocks: int) -> int:
    """Number of bottom blocks that are frozen.

    Engines can run these blocks under ``torch.no_grad()`` to skip their backward pass.

    >>> frozen_prefix_length(TrainableState(2, (8, 9, 10, 11), True, False), 12)
    8
    """
    return min(state.open_blocks) if state.open_blocks else n_blocks
