"""Per-group learning-rate factors: cosine over the whole run, linear warm-up after each group opens.

Every group follows the same cosine curve over the run (``schedule="constant"``: a factor of 1 instead, as a plain
fine-tune without a schedule has; ``optim.schedule``); a group that opens mid-run (an encoder block in stage 2)
gets a short linear warm-up from its opening step and a factor of 0 before it (it is frozen then anyway). All
factors are pure functions of the optimizer step, so a resumed scheduler recomputes them exactly.
"""

from __future__ import annotations

import math

import torch

from spft.errors import ConfigError
from spft.recipe.stages import StagePlan, part_opening_epoch

SCHEDULES = ("cosine", "constant")


def lr_factor_at(step: int, total_steps: int, open_step: int | None, warmup_steps: int,
                 min_factor: float = 0.0, schedule: str = "cosine") -> float:
    """LR multiplier of one group at an optimizer step.

    ``min_factor + (1 - min_factor) * 0.5 * (1 + cos(pi * step / total_steps))`` (``schedule="constant"``: 1), times
    ``min(1, (step - open_step + 1) / warmup_steps)`` when warming up; 0 before ``open_step`` or if it is None.

    >>> lr_factor_at(0, 100, 0, 0), lr_factor_at(50, 100, 0, 0), lr_factor_at(0, 100, 0, 4)
    (1.0, 0.5, 0.25)
    >>> lr_factor_at(50, 100, 0, 0, schedule="constant"), lr_factor_at(50, 100, 60, 0, schedule="constant")
    (1.0, 0.0)
    """
    if total_steps < 1:
        raise ConfigError(f"total_steps must be >= 1, got {total_steps}")
    if warmup_steps < 0:
        raise ConfigError(f"warmup_steps must be >= 0, got {warmup_steps}")
    _check_schedule(schedule)
    if open_step is None or step < open_step:
        return 0.0
    if schedule == "constant":
        factor = 1.0
    else:
        progress = min(step, total_steps) / total_steps
        factor = min_factor + (1.0 - min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if warmup_steps > 0:
        factor *= min(1.0, (step - open_step + 1) / warmup_steps)
    return factor


def _check_schedule(schedule: str) -> None:
    if schedule not in SCHEDULES:
        raise ConfigError(f"'optim.schedule': expected one of {', '.join(SCHEDULES)}, got {schedule!r}")


def open_steps(param_groups: list[dict], plan: StagePlan, n_blocks: int, steps_per_epoch: int) -> list[int | None]:
    """Optimizer step at which each group opens (None: never), read from each group's ``"part"`` key."""
    if steps_per_epoch < 1:
        raise ConfigError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    steps: list[int | None] = []
    for group in param_groups:
        if "part" not in group:
            raise ConfigError("param group has no 'part' key; build groups with spft.recipe.build_param_groups")
        epoch = part_opening_epoch(plan, group["part"], n_blocks)
        steps.append(None if epoch is None else epoch * steps_per_epoch)
    return steps


class GroupLrFactor:
    """Picklable LR lambda for one group; LambdaLR saves its ``__dict__`` in ``state_dict``."""

    def __init__(self, total_steps: int, open_step: int | None, warmup_steps: int, min_factor: float,
                 schedule: str = "cosine") -> None:
        self.total_steps = total_steps
        self.open_step = open_step
        self.warmup_steps = warmup_steps
        self.min_factor = min_factor
        self.schedule = schedule  # a checkpoint from before optim.schedule has no such key: it keeps "cosine"

    def __call__(self, step: int) -> float:
        return lr_factor_at(step, self.total_steps, self.open_step, self.warmup_steps, self.min_factor, self.schedule)

    def __repr__(self) -> str:
        return (f"GroupLrFactor(total_steps={self.total_steps}, open_step={self.open_step}, "
                f"warmup_steps={self.warmup_steps}, min_factor={self.min_factor}, schedule={self.schedule!r})")


def build_scheduler(optimizer: torch.optim.Optimizer, plan: StagePlan, n_blocks: int, steps_per_epoch: int,
                    total_steps: int, warmup_steps: int = 0, min_factor: float = 0.0,
                    schedule: str = "cosine") -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR with one :class:`GroupLrFactor` per optimizer group; step it once per optimizer step.

    Args:
        optimizer: Built by :func:`spft.recipe.build_optimizer` (groups need a ``"part"`` key).
        plan: The stage plan; encoder groups open at ``opening_epoch * steps_per_epoch``, the head at step 0.
        n_blocks: Number of encoder blocks.
        steps_per_epoch: Optimizer steps per epoch.
        total_steps: Optimizer steps in the whole run (the cosine's period).
        warmup_steps: Linear warm-up length after each opening step (0: none).
        min_factor: Floor of the cosine, as a fraction of each group's LR.
        schedule: ``"cosine"`` (the recipe) or ``"constant"`` (factor 1 once a group is open; warm-up still applies).
    """
    if not 0.0 <= min_factor <= 1.0:
        raise ConfigError(f"min_factor must be in [0, 1], got {min_factor}")
    if total_steps < 1:
        raise ConfigError(f"total_steps must be >= 1, got {total_steps}")
    if warmup_steps < 0:
        raise ConfigError(f"warmup_steps must be >= 0, got {warmup_steps}")
    _check_schedule(schedule)
    steps = open_steps(optimizer.param_groups, plan, n_blocks, steps_per_epoch)
    lambdas = [GroupLrFactor(total_steps, s, warmup_steps, min_factor, schedule) for s in steps]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=lambdas)
