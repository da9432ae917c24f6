"""Metrics computed over a whole evaluated set: per-class ROC AUC and macro AUC (undefined classes excluded)."""

from spft.metrics.auc import AucResult, binary_auc, multilabel_auc

__all__ = ["AucResult", "binary_auc", "multilabel_auc"]
