"""RT-DETR's loss with per-class weights on the classification term (Ultralytics' RT-DETR loss has none).

YOLOv8's ``v8DetectionLoss`` already multiplies its per-anchor BCE by ``model.class_weights``; the DETR loss in
``ultralytics.models.utils.loss`` reduces its varifocal / focal / BCE class loss internally, so this subclass
recomputes the same three variants elementwise and multiplies by the class weight before the same reduction.
With all weights 1 it equals the original loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from ultralytics.models.utils.loss import RTDETRDetectionLoss

from spft.tasks.detection import restore_pil_open

restore_pil_open()


class WeightedRTDETRLoss(RTDETRDetectionLoss):
    """``RTDETRDetectionLoss`` whose class term is weighted per class by ``self.class_weights`` (shape ``[nc]``)."""

    def __init__(self, nc: int, class_weights: torch.Tensor | None = None, **kwargs) -> None:
        super().__init__(nc=nc, **kwargs)
        self.class_weights = torch.ones(nc) if class_weights is None else torch.as_tensor(class_weights).float()

    def _get_loss_class(self, pred_scores: torch.Tensor, targets: torch.Tensor, gt_scores: torch.Tensor,
                        num_gts: int, postfix: str = "") -> dict[str, torch.Tensor]:  # spft.compat.PRIVATE_OVERRIDES
        bs, nq = pred_scores.shape[:2]
        one_hot = torch.zeros((bs, nq, self.nc + 1), dtype=torch.int64, device=targets.device)
        one_hot.scatter_(2, targets.unsqueeze(-1), 1)
        one_hot = one_hot[..., :-1]
        gt_scores = gt_scores.view(bs, nq, 1) * one_hot
        weights = self.class_weights.to(device=pred_scores.device, dtype=torch.float32).view(1, 1, -1)
        pred = pred_scores.float()
        bce = F.binary_cross_entropy_with_logits(pred, gt_scores.float(), reduction="none")
        if self.fl and num_gts and self.vfl:  # varifocal, as VarifocalLoss.forward
            label = one_hot.float()
            mod = self.vfl.alpha * pred.sigmoid().pow(self.vfl.gamma) * (1 - label) + gt_scores * label
            loss_cls = (bce * mod * weights).mean(1).sum() / (max(num_gts, 1) / nq)
        elif self.fl:  # focal, as FocalLoss.forward
            label = one_hot.float()
            bce = F.binary_cross_entropy_with_logits(pred, label, reduction="none")
            prob = pred.sigmoid()
            p_t = label * prob + (1 - label) * (1 - prob)
            loss = bce * (1.0 - p_t) ** self.fl.gamma
            alpha = torch.as_tensor(self.fl.alpha, device=pred.device, dtype=pred.dtype)
            if (alpha > 0).any():
                loss = loss * (label * alpha + (1 - label) * (1 - alpha))
            loss_cls = (loss * weights).mean(1).sum() / (max(num_gts, 1) / nq)
        else:
            loss_cls = (bce * weights).mean(1).sum()
        return {f"loss_class{postfix}": loss_cls.squeeze() * self.loss_gain["class"]}
