"""Simulated interactive prompts, as in SAM's training (paper section 3 and appendix A).

The first prompt of a mask is a point drawn uniformly from the ground truth or its box with
noise (std 10% of the side, at most 20 px). Each later point is drawn uniformly from the error
region of the previous prediction: positive where the ground truth was missed, negative where
the prediction spilled over. Coordinates are (x, y) pixels in the model frame.
"""

from __future__ import annotations

import torch

from sam_core.mask_ops import masks_to_boxes

FOREGROUND, BACKGROUND = 1, 0
BOX_NOISE_FRACTION, BOX_NOISE_MAX = 0.1, 20.0


def sample_pixels(weights: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One pixel per NxHxW non-negative weight map, drawn in proportion to it: Nx2 (x, y) float.

    Rows that are all zero draw uniformly over the whole map.
    """
    n, _, w = weights.shape
    flat = weights.reshape(n, -1).float()
    flat = torch.where(flat.sum(1, keepdim=True) > 0, flat, torch.ones_like(flat))
    # Gumbel-max: the argmax of log(weight) - log(-log(U)) is distributed as weight / sum(weight).
    uniform = torch.rand(flat.shape, generator=generator).clamp(min=1e-12)
    index = (flat.log() - (-uniform.log()).log()).argmax(1)
    return torch.stack([index % w, index // w], dim=1).float()


def first_points(targets: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A foreground point inside each NxSxS target: coords Nx1x2, labels Nx1."""
    points = sample_pixels(targets, generator)
    return points[:, None], torch.full((len(targets), 1), FOREGROUND, dtype=torch.int64)


def noisy_boxes(targets: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each target's box (XYXY) with every corner moved by N(0, (0.1 side)^2) px, at most 20 px."""
    boxes = masks_to_boxes(targets > 0.5).float()
    sides = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
    noise = torch.randn(boxes.shape, generator=generator) * BOX_NOISE_FRACTION * sides
    boxes = boxes + noise.clamp(-BOX_NOISE_MAX, BOX_NOISE_MAX)
    size = targets.shape[-1] - 1
    x0, y0, x1, y1 = boxes.clamp(0, size).unbind(1)
    return torch.stack([torch.minimum(x0, x1), torch.minimum(y0, y1), torch.maximum(x0, x1), torch.maximum(y0, y1)], 1)


def correction_points(
    predicted: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A point from each error region: NxSxS bool predictions vs 0/1 targets, Nx1xSxS valid.

    Returns coords Nx1x2 and labels Nx1: foreground on a missed pixel, background on a
    spilled one. A prediction without error gets another foreground point inside the target.
    """
    truth = targets > 0.5
    error = (predicted != truth) & (valid[:, 0] > 0)
    has_error = error.flatten(1).any(1)
    weights = torch.where(has_error[:, None, None], error, truth)
    points = sample_pixels(weights, generator)
    x, y = points[:, 0].long(), points[:, 1].long()
    on_truth = truth[torch.arange(len(truth)), y, x]
    labels = torch.where(on_truth, FOREGROUND, BACKGROUND).to(torch.int64)
    return points[:, None], labels[:, None]
