"""Metrics computed over a whole evaluated set: per-class ROC AUC and macro AUC (undefined classes excluded), Dice."""

from spft.metrics.auc import AucResult, binary_auc, multilabel_auc
from spft.metrics.dice import dice_score, hd95, mean_dice

__all__ = ["AucResult", "binary_auc", "dice_score", "hd95", "mean_dice", "multilabel_auc"]
