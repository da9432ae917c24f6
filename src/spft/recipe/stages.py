"""The SPFT stage plan: which encoder parts train at which epoch, as a pure function of the epoch.

Stage 1 trains the head only; stage 2 opens the top blocks progressively (``blocks_per_epoch`` per epoch, up to
``top_k``), the final norm with the top block, and optionally the embeddings once every block is open. Because the
trainable state depends on nothing but the epoch, resuming a run recomputes it exactly (docs/decisions.md, rule 2).
"""

from __future__ import annotations

from dataclasses import dataclass

from spft.errors import ConfigError
from spft.recipe.layers import EMBEDDINGS, FINAL_NORM, HEAD


@dataclass(frozen=True)
class StagePlan:
    """When each encoder part starts training.

    Attributes:
        stage1_epochs: Epochs of stage 1 (head only).
        unfreeze: False keeps the encoder frozen for the whole run (the "head only" ablation).
        top_k: Number of top blocks opened in stage 2; None opens all blocks.
        blocks_per_epoch: Blocks opened per stage-2 epoch.
        embeddings: Also open the embeddings once all blocks are open (from-scratch demo).
    """

    stage1_epochs: int = 2
    unfreeze: bool = True
    top_k: int | None = 10
    blocks_per_epoch: int = 2
    embeddings: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.stage1_epochs, int) or self.stage1_epochs < 0:
            raise ConfigError(f"stage1_epochs must be an integer >= 0, got {self.stage1_epochs!r}")
        if not isinstance(self.blocks_per_epoch, int) or self.blocks_per_epoch < 1:
            raise ConfigError(f"blocks_per_epoch must be an integer >= 1, got {self.blocks_per_epoch!r}")
        if self.top_k is not None and (not isinstance(self.top_k, int) or self.top_k < 1):
            raise ConfigError(f"top_k must be None or an integer >= 1, got {self.top_k!r}")


def stage_plan(cfg) -> StagePlan:
    """The stage plan of an spft config: ``cfg.recipe.stage1_epochs`` and ``cfg.recipe.unfreeze`` (``enabled``,
    ``top_k``, ``blocks_per_epoch``, ``embeddings``), read by attribute (the recipe imports no config module).
    Every engine calls this one function."""
    r = cfg.recipe
    u = r.unfreeze
    return StagePlan(stage1_epochs=r.stage1_epochs, unfreeze=u.enabled, top_k=u.top_k,
                     blocks_per_epoch=u.blocks_per_epoch, embeddings=u.embeddings)


@dataclass(frozen=True)
class TrainableState:
    """Which encoder parts train at one epoch (the head always trains).

    Attributes:
        stage: 1 (head only) or 2 (progressive unfreezing).
        open_blocks: Sorted indices into ``LayerGroups.blocks`` that train.
        final_norm: Whether the encoder's final norm trains.
        embeddings: Whether the embeddings train.
    """

    stage: int
    open_blocks: tuple[int, ...]
    final_norm: bool
    embeddings: bool


def _check_epoch(epoch: int) -> None:
    if epoch < 0:
        raise ConfigError(f"epoch must be >= 0, got {epoch}")


def _check_n_blocks(n_blocks: int) -> None:
    if n_blocks < 0:
        raise ConfigError(f"n_blocks must be >= 0, got {n_blocks}")


def _k(plan: StagePlan, n_blocks: int) -> int:
    """Number of blocks stage 2 eventually opens."""
    return min(plan.top_k if plan.top_k is not None else n_blocks, n_blocks)


def stage_at(plan: StagePlan, epoch: int) -> int:
    """Stage (1 or 2) at a 0-based epoch.

    >>> stage_at(StagePlan(stage1_epochs=2), 1), stage_at(StagePlan(stage1_epochs=2), 2)
    (1, 2)
    """
    _check_epoch(epoch)
    return 2 if plan.unfreeze and epoch >= plan.stage1_epochs else 1


def trainable_at(plan: StagePlan, epoch: int, n_blocks: int) -> TrainableState:
    """Trainable encoder parts at a 0-based epoch.

    Stage-2 epoch ``j`` opens the top ``min(k, blocks_per_epoch * (j + 1))`` blocks.

    >>> trainable_at(StagePlan(), 3, 12).open_blocks
    (8, 9, 10, 11)
    """
    _check_n_blocks(n_blocks)
    if stage_at(plan, epoch) == 1:
        return TrainableState(stage=1, open_blocks=(), final_norm=False, embeddings=False)
    j = epoch - plan.stage1_epochs
    n_open = min(_k(plan, n_blocks), plan.blocks_per_epoch * (j + 1))
    return TrainableState(
        stage=2,
        open_blocks=tuple(range(n_blocks - n_open, n_blocks)),
        final_norm=True,  # opens with the top block, i.e. at the first stage-2 epoch
        embeddings=plan.embeddings and n_open == n_blocks,
    )


def opening_epoch(plan: StagePlan, block_index: int, n_blocks: int) -> int | None:
    """First epoch at which block ``block_index`` trains, or None if it never does.

    >>> opening_epoch(StagePlan(), 11, 12), opening_epoch(StagePlan(), 8, 12), opening_epoch(StagePlan(), 1, 12)
    (2, 3, None)
    """
    _check_n_blocks(n_blocks)
    if not 0 <= block_index < n_blocks:
        raise ConfigError(f"block_index must be in [0, {n_blocks}), got {block_index}")
    rank_from_top = n_blocks - 1 - block_index
    if not plan.unfreeze or rank_from_top >= _k(plan, n_blocks):
        return None
    return plan.stage1_epochs + rank_from_top // plan.blocks_per_epoch


def part_opening_epoch(plan: StagePlan, part: str, n_blocks: int) -> int | None:
    """First epoch at which a named part (``"head"``, ``"block{i}"``, ``"final_norm"``, ``"embeddings"``) trains."""
    if part == HEAD:
        return 0
    if part == FINAL_NORM:
        return plan.stage1_epochs if plan.unfreeze else None
    if part == EMBEDDINGS:
        if not (plan.unfreeze and plan.embeddings) or _k(plan, n_blocks) < n_blocks:
            return None
        return opening_epoch(plan, 0, n_blocks) if n_blocks else plan.stage1_epochs
    if part.startswith("block") and part[5:].isdigit():
        return opening_epoch(plan, int(part[5:]), n_blocks)
    raise ConfigError(f"unknown part {part!r}; expected 'head', 'final_norm', 'embeddings' or 'block<i>'")


def describe(state: TrainableState, n_blocks: int) -> str:
    """One-line summary for logs, e.g. ``"stage 2: top 4/12 blocks + final norm trainable"``."""
    if state.stage == 1:
        return "stage 1: head only (encoder frozen)"
    parts = [f"top {len(state.open_blocks)}/{n_blocks} blocks"]
    if state.final_norm:
        parts.append("final norm")
    if state.embeddings:
        parts.append("embeddings")
    return f"stage 2: {' + '.join(parts)} trainable"
