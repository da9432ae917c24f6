"""The class-weighted RT-DETR loss equals Ultralytics' own with unit weights and follows the weights otherwise."""

from __future__ import annotations

import pytest
import torch
from ultralytics.models.utils.loss import RTDETRDetectionLoss

from spft.tasks.detection.losses import WeightedRTDETRLoss


@pytest.mark.parametrize("use_vfl, num_gts", [(True, 3), (False, 3), (True, 0)])
def test_unit_weights_match_ultralytics(use_vfl, num_gts):
    torch.manual_seed(0)
    pred = torch.randn(2, 5, 4)
    targets = torch.randint(0, 5, (2, 5))  # class 4 = "no object"
    gt_scores = torch.rand(2, 5)
    ref = RTDETRDetectionLoss(nc=4, use_vfl=use_vfl)._get_loss_class(pred, targets, gt_scores, num_gts)
    ours = WeightedRTDETRLoss(nc=4, use_vfl=use_vfl)._get_loss_class(pred, targets, gt_scores, num_gts)
    assert ours["loss_class"] == pytest.approx(float(ref["loss_class"]), rel=1e-5)


def test_weights_scale_the_class_term():
    torch.manual_seed(0)
    pred, targets, gt_scores = torch.randn(2, 5, 4), torch.randint(0, 5, (2, 5)), torch.rand(2, 5)
    loss = WeightedRTDETRLoss(nc=4, use_vfl=True)
    base = float(loss._get_loss_class(pred, targets, gt_scores, 3)["loss_class"])
    loss.class_weights = torch.full((4,), 2.0)
    assert float(loss._get_loss_class(pred, targets, gt_scores, 3)["loss_class"]) == pytest.approx(2 * base, rel=1e-5)
    loss.class_weights = torch.tensor([1.0, 0.0, 0.0, 0.0])
    assert float(loss._get_loss_class(pred, targets, gt_scores, 3)["loss_class"]) < base


def test_ultralytics_pil_patch_is_undone():
    # Ultralytics wraps PIL.Image.open to pip-install pi-heif on unreadable images; spft puts Pillow's back.
    from PIL import Image
    from ultralytics.utils import patches

    assert Image.open is patches._image_open
