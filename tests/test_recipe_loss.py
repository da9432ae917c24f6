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


def test_positive_variant_is_bce_pos_weight_summed_over_classes():
    torch.manual_seed(0)
    logits = torch.randn(6, 3, dtype=torch.float64)
    targets = (torch.rand(6, 3) < 0.4).to(torch.float64)
    weights = torch.tensor([0.33, 1.9, 0.77], dtype=torch.float64)
    expected = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=weights, reduction="sum") / len(logits)
    assert float(weighted_bce(logits, targets, weights, apply="positive")) == pytest.approx(float(expected), rel=1e-12)
    # spft's reduction: sum over classes, mean over samples = C x torch's "mean"
    mean = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=weights)
    assert float(weighted_bce(logits, targets, weights, apply="positive")) == pytest.approx(3 * float(mean), rel=1e-12)
    ones = torch.ones(3, dtype=torch.float64)  # with weights 1 the two variants are plain BCE
    assert float(weighted_bce(logits, targets, ones, apply="positive")) == pytest.approx(
        float(weighted_bce(logits, targets, ones)), rel=1e-12)


def test_positive_variant_weights_only_the_positive_term():
    logits = torch.tensor([[0.3], [0.3]])
    pos, neg, w = torch.tensor([[1.0], [NAN]]), torch.tensor([[NAN], [0.0]]), torch.tensor([3.0])
    assert float(weighted_bce(logits, pos, w, apply="positive")) == pytest.approx(3 * float(weighted_bce(
        logits, pos, torch.tensor([1.0]))))
    assert float(weighted_bce(logits, neg, w, apply="positive")) == pytest.approx(float(weighted_bce(
        logits, neg, torch.tensor([1.0]))))
    assert float(weighted_bce(logits, neg, w)) == pytest.approx(3 * float(weighted_bce(logits, neg,
                                                                                       torch.tensor([1.0]))))


def test_positive_variant_masks_unknown_labels():
    logits = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.0, -0.3], [-2.0, 0.7, 0.1]], requires_grad=True)
    targets = torch.tensor([[1.0, 0.0, NAN], [0.0, NAN, 1.0], [NAN, NAN, NAN]])
    weights = [0.5, 2.0, 1.5]
    loss = weighted_bce(logits, targets, torch.tensor(weights), apply="positive")
    hand = 0.0
    for row_x, row_y in zip(logits.tolist(), targets.tolist()):
        for c, (x, y) in enumerate(zip(row_x, row_y)):
            if not math.isnan(y):
                p = 1 / (1 + math.exp(-x))
                hand -= weights[c] * y * math.log(p) + (1 - y) * math.log(1 - p)
    assert loss.item() == pytest.approx(hand / 3)
    loss.backward()
    assert torch.all(logits.grad[torch.isnan(targets)] == 0) and torch.isfinite(logits.grad).all()


def test_unknown_apply_is_refused():
    from spft.errors import ConfigError

    with pytest.raises(ConfigError, match="recipe.class_weights.apply"):
        weighted_bce(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1), apply="negative")


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


@pytest.mark.parametrize("apply", ["both", "positive"])
def test_classification_loss_follows_recipe_class_weights_apply(spft_cache, tmp_path, apply):
    from pathlib import Path

    from conftest import tiny_overrides

    from spft.config import load_config
    from spft.tasks.classification.train import build_run

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "phantom_cxr.yaml",
                      [*tiny_overrides(tmp_path, n_images=60), f"recipe.class_weights.apply={apply}"])
    module = build_run(cfg, None)[2]
    weights = module.cw.current.float()
    assert not torch.allclose(weights, torch.ones_like(weights))  # the phantoms' prevalences differ
    torch.manual_seed(0)
    logits = torch.randn(5, len(weights))
    labels = (torch.rand(5, len(weights)) < 0.3).float()
    labels[0, 0] = NAN
    other = {"both": "positive", "positive": "both"}[apply]
    loss = float(module.loss_fn(logits, labels))
    assert loss == pytest.approx(float(weighted_bce(logits, labels, weights, apply)))
    assert loss != pytest.approx(float(weighted_bce(logits, labels, weights, other)))
