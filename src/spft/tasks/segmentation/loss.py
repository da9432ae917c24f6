"""The segmentation loss: per-structure weighted Dice + BCE, structures absent from an image masked out.

Task-specific (the recipe's losses are for image-level labels); the structure weights come from the recipe's
:class:`~spft.recipe.ClassWeights`. Reduction mirrors :func:`spft.recipe.weighted_bce`: the sum of the known terms
divided by ``B * P``, so each structure's share of the gradient stays proportional to its weight.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def weighted_dice_bce(logits: Tensor, masks: Tensor, valid: Tensor, weights: Tensor, dice_weight: float = 1.0,
                      bce_weight: float = 1.0, eps: float = 1.0) -> Tensor:
    """``sum_{b,p} valid * w_p * (bce_weight * BCE_bp + dice_weight * (1 - softDice_bp)) / (B * P)``.

    Args:
        logits: ``[B, P, H, W]`` mask logits.
        masks: ``[B, P, H, W]`` targets in {0, 1}.
        valid: ``[B, P]`` bool, False where the structure is absent from the image.
        weights: ``[P]`` structure weights.
        dice_weight: Weight of the soft-Dice term.
        bce_weight: Weight of the pixel-mean BCE term.
        eps: Smoothing of the soft Dice.
    """
    if logits.shape != masks.shape or logits.ndim != 4:
        raise ValueError(f"logits and masks must both be [B, P, H, W], got {tuple(logits.shape)}, {tuple(masks.shape)}")
    if weights.shape != (logits.shape[1],) or valid.shape != logits.shape[:2]:
        raise ValueError(f"weights must be [P]={logits.shape[1]} and valid [B, P], got {tuple(weights.shape)}, "
                         f"{tuple(valid.shape)}")
    logits, masks = logits.float(), masks.float()
    bce = F.binary_cross_entropy_with_logits(logits, masks, reduction="none").mean((2, 3))
    prob = torch.sigmoid(logits)
    inter = (prob * masks).sum((2, 3))
    dice = 1.0 - (2.0 * inter + eps) / (prob.sum((2, 3)) + masks.sum((2, 3)) + eps)
    per = (bce_weight * bce + dice_weight * dice) * weights.to(logits.device, torch.float32)[None]
    per = torch.where(valid.to(logits.device), per, torch.zeros_like(per))
    return per.sum() / max(per.numel(), 1)
