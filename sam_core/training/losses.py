"""The SAM training losses, per mask: focal, dice, and the IoU that the IoU head learns to predict.

All take logits and 0/1 targets of shape Nx...xHxW with a `valid` weight broadcastable to them
(1 on image pixels, 0 on padding) and return one value per mask (shape Nx...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def focal_loss(
    logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, alpha: float | None = 0.25, gamma: float = 2.0
) -> torch.Tensor:
    """Mean over valid pixels of the sigmoid focal loss (Lin et al. 2017), as SAM uses it.

    alpha weighs foreground pixels (1 - alpha the background); None weighs both alike.
    """
    targets = targets.expand_as(logits)
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma * valid
    if alpha is not None:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return loss.sum((-2, -1)) / valid.sum((-2, -1)).clamp(min=1)


def dice_loss(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice coefficient over valid pixels, with +1 smoothing."""
    targets = targets.expand_as(logits)
    prob = logits.sigmoid() * valid
    inter = (prob * targets).sum((-2, -1))
    return 1 - (2 * inter + 1) / (prob.sum((-2, -1)) + (targets * valid).sum((-2, -1)) + 1)


def mask_iou(logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """IoU of the masks logits > 0 with the targets over valid pixels (1 when both are empty)."""
    pred = (logits > 0) & (valid > 0)
    truth = targets > 0.5
    inter = (pred & truth).sum((-2, -1)).float()
    union = (pred | truth).sum((-2, -1)).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
