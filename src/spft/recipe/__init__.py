"""The task-agnostic SPFT recipe: stages, freezing, optimizer groups, schedule, EMA, class weights, losses.

Imports only torch and the standard library, so every engine (Lightning for classification and segmentation,
Ultralytics for detection) calls the same math instead of re-implementing it (docs/decisions.md, "the one rule").
An engine describes its model as a :class:`LayerGroups` (embeddings + blocks bottom -> top + final norm + head)
and drives everything else from the epoch and the optimizer step.
"""

from spft.recipe.class_weights import (
    ClassWeights,
    apply_heuristics,
    detection_initial_weights,
    initial_weights,
    normalise,
    refine,
)
from spft.recipe.ema import EmaModel, build_ema, ema_decay_at
from spft.recipe.freezing import apply_trainable, count_trainable, frozen_prefix_length
from spft.recipe.layers import EMBEDDINGS, FINAL_NORM, HEAD, LayerGroups, block_part
from spft.recipe.loss import weighted_bce, weighted_ce
from spft.recipe.optim import build_optimizer, build_param_groups
from spft.recipe.schedule import GroupLrFactor, build_scheduler, lr_factor_at, open_steps
from spft.recipe.stages import (
    StagePlan,
    TrainableState,
    describe,
    opening_epoch,
    part_opening_epoch,
    stage_at,
    stage_plan,
    trainable_at,
)

__all__ = [
    "EMBEDDINGS",
    "FINAL_NORM",
    "HEAD",
    "ClassWeights",
    "EmaModel",
    "GroupLrFactor",
    "LayerGroups",
    "StagePlan",
    "TrainableState",
    "apply_heuristics",
    "apply_trainable",
    "block_part",
    "build_ema",
    "build_optimizer",
    "build_param_groups",
    "build_scheduler",
    "count_trainable",
    "describe",
    "detection_initial_weights",
    "ema_decay_at",
    "frozen_prefix_length",
    "initial_weights",
    "lr_factor_at",
    "normalise",
    "open_steps",
    "opening_epoch",
    "part_opening_epoch",
    "refine",
    "stage_at",
    "stage_plan",
    "trainable_at",
    "weighted_bce",
    "weighted_ce",
]
