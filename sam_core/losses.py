"""The SAM training losses: focal and dice on mask logits (20:1), min over the multimask
outputs, and MSE between predicted and actual IoU (Kirillov et al. 2023, section 3 and appendix A)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

FOCAL_WEIGHT = 20.0
DICE_WEIGHT = 1.0


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0) -> torch.Tensor:
    """BxMxHxW logits, BxMxHxW (or broadcastable) 0/1 targets to the BxM mean focal loss per mask."""
    targets = targets.to(logits.dtype).expand_as(logits)
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    weight = alpha * targets + (1 - alpha) * (1 - targets)
    return (weight * ce * (1 - p_t) ** gamma).flatten(-2).mean(-1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """BxM soft dice loss per mask (1 - 2|P.T| / (|P| + |T|), smoothed by eps)."""
    targets = targets.to(logits.dtype).expand_as(logits)
    p = torch.sigmoid(logits).flatten(-2)
    t = targets.flatten(-2)
    return 1 - (2 * (p * t).sum(-1) + eps) / (p.sum(-1) + t.sum(-1) + eps)


def mask_iou(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """BxM IoU of the masks binarised at logit 0 with the targets (1 where both are empty)."""
    pred = (logits > 0).flatten(-2)
    target = targets.bool().expand_as(logits).flatten(-2)
    inter = (pred & target).sum(-1).float()
    union = (pred | target).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def sam_loss(
    logits: torch.Tensor,
    iou_pred: torch.Tensor,
    targets: torch.Tensor,
    focal_weight: float = FOCAL_WEIGHT,
    dice_weight: float = DICE_WEIGHT,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss of a batch of B prompts with M outputs each.

    logits: BxMxHxW, iou_pred: BxM, targets: Bx1xHxW 0/1 at the logits' resolution.
    Returns (the scalar loss, the BxM actual IoUs). Only the best of the M masks (lowest
    focal + dice) carries the mask loss, so the outputs may specialise; the IoU head is
    trained on every output. The weights default to the paper's 20:1.
    """
    mask_losses = focal_weight * focal_loss(logits, targets) + dice_weight * dice_loss(logits, targets)
    best = mask_losses.min(dim=1).values
    actual = mask_iou(logits.detach(), targets)
    return best.mean() + F.mse_loss(iou_pred, actual), actual
