"""Weighted BCE / CE against hand-written formulas, with NaN (unknown) labels masked."""

import math

import pytest
import torch
import torch.nn.functional as F

from spft.recipe import weighted_bce, weighted_ce

NAN = float("nan")


def _hand_bce(logits, targets, weights):
    total = 0.0
    for row_x, row_y in zip(logits.tolist(), targets.tolist()):
        for c, (x, y) in enumerate(zip(row_x, row_y)):
            if math.isnan(y):
                continue
            p = 1 / (1 + math.exp(-x))
            total -= weights[c] * (y * math.log(p) + (1 - y) * math.log(1 - p))
    return total / len(logits)


def test_weighted_bce_matches_formula_with_nan_masking():
    logits = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.0, -0.3], [-2.0, 0.7, 0.1]], requires_grad=True)
    targets = torch.tensor([[1.0, 0.0, NAN], [0.0, NAN, 1.0], [NAN, NAN, NAN]])
    weights = torch.tensor([0.5, 2.0, 1.5])
    loss = weighted_bce(logits, targets, weights)
    assert loss.item() == pytest.approx(_hand_bce(logits, targets, weights.tolist()))
    loss.backward()
    assert torch.all(logits.grad[torch.isnan(targets)] == 0)
    assert torch.isfinite(logits.grad).all()


def test_weighted_bce_weight_multiplies_both_terms():
    logits = torch.tensor([[0.3], [0.3]])
    one = weighted_bce(logits, torch.tensor([[1.0], [0.0]]), torch.tensor([1.0]))
    three = weighted_bce(logits, torch.tensor([[1.0], [0.0]]), torch.tensor([3.0]))
    assert float(three) == pytest.approx(3 * float(one))


def test_weighted_ce_matches_torch_and_skips_unknown_rows():
    logits = torch.tensor([[1.0, 0.0, -1.0], [0.2, 0.4, 0.1], [0.0, 3.0, 1.0], [5.0, 5.0, 5.0]])
    targets = torch.tensor([[1.0, 0, 0], [0, 0, 1.0], [0, 1.0, 0], [NAN, NAN, NAN]])
    weights = torch.tensor([0.5, 1.0, 2.0])
    per_row = F.cross_entropy(logits[:3], torch.tensor([0, 2, 1]), weight=weights, reduction="none")
    assert float(weighted_ce(logits, targets, weights)) == pytest.approx(float(per_row.sum() / 4))


def test_shape_errors():
    with pytest.raises(ValueError, match="weights"):
        weighted_bce(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2))
    with pytest.raises(ValueError, match="logits and targets"):
        weighted_ce(torch.zeros(2, 3), torch.zeros(2, 2), torch.ones(3))
