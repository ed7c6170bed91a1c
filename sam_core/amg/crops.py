"""Point grids and the multi-layer overlapping crops of automatic mask generation.

The geometry is that of the public segment_anything generator: crop layer 0 is the whole
image; layer i >= 1 has 2^i x 2^i crops whose neighbours overlap by
`overlap_ratio * short_side * 2 / 2^i` pixels; layer i is prompted with a grid of
`points_per_side / downscale^i` points per side, spread over each crop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import product

import numpy as np


@dataclass(frozen=True)
class CropBox:
    """A window of the original image: XYXY pixel bounds (x1, y1 exclusive) and its crop layer."""

    x0: int
    y0: int
    x1: int
    y1: int
    layer: int

    @property
    def xyxy(self) -> tuple[int, int, int, int]:
        return (self.x0, self.y0, self.x1, self.y1)

    @property
    def xywh(self) -> list[int]:
        return [self.x0, self.y0, self.x1 - self.x0, self.y1 - self.y0]

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return (self.y1 - self.y0, self.x1 - self.x0)

    @property
    def area(self) -> int:
        """Pixels covered; 0 for the empty crops that tiny images give in deep layers."""
        return max(0, self.x1 - self.x0) * max(0, self.y1 - self.y0)


def point_grid(points_per_side: int) -> np.ndarray:
    """(n*n)x2 float64 points (x, y) at the centres of an n x n grid of cells over [0, 1]^2, row by row."""
    if points_per_side < 1:
        raise ValueError(f"a point grid needs at least 1 point per side, got {points_per_side}")
    offset = 1 / (2 * points_per_side)
    side = np.linspace(offset, 1 - offset, points_per_side)
    xs, ys = np.meshgrid(side, side)
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def layer_point_grids(points_per_side: int, n_layers: int, downscale: int) -> list[np.ndarray]:
    """One grid per crop layer 0..n_layers, with points_per_side // downscale^i points per side."""
    return [point_grid(int(points_per_side / downscale**i)) for i in range(n_layers + 1)]


def crop_boxes(image_size: tuple[int, int], n_layers: int, overlap_ratio: float) -> list[CropBox]:
    """The whole image, then the crops of layers 1..n_layers, for an image of (height, width).

    Within a layer, crops are listed column by column (x outer, y inner), as in the public code.
    """
    height, width = image_size
    boxes = [CropBox(0, 0, width, height, 0)]
    short_side = min(height, width)
    for layer in range(1, n_layers + 1):
        per_side = 2**layer
        overlap = int(overlap_ratio * short_side * (2 / per_side))
        crop_w = _crop_length(width, per_side, overlap)
        crop_h = _crop_length(height, per_side, overlap)
        xs = [int((crop_w - overlap) * i) for i in range(per_side)]
        ys = [int((crop_h - overlap) * i) for i in range(per_side)]
        for x0, y0 in product(xs, ys):
            boxes.append(CropBox(x0, y0, min(x0 + crop_w, width), min(y0 + crop_h, height), layer))
    return boxes


def _crop_length(length: int, n_crops: int, overlap: int) -> int:
    return math.ceil((overlap * (n_crops - 1) + length) / n_crops)


def useful_long_side(model_input_side: int, n_layers: int) -> int:
    """The longest image side the crop layout can use: each crop of the deepest layer spans about
    1/2^n_layers of the image and is resized to the model's `model_input_side` px, so detail
    beyond `model_input_side * 2^n_layers` px is never seen by the model."""
    return model_input_side * 2**n_layers
