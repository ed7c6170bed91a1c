"""Resizing to SAM's input frame (longest side = image size) and mapping prompts into a resized frame."""

from __future__ import annotations

import numpy as np
from PIL import Image


def resized_shape(height: int, width: int, longest_side: int) -> tuple[int, int]:
    """(h, w) after scaling so that the longer side equals `longest_side`, rounded half up."""
    scale = longest_side / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def resize_longest_side(image: np.ndarray, longest_side: int) -> np.ndarray:
    """HxWx3 uint8 RGB to hxwx3 uint8 with max(h, w) = longest_side (bilinear, antialiased like PIL)."""
    h, w = resized_shape(image.shape[0], image.shape[1], longest_side)
    if (h, w) == image.shape[:2]:
        return image
    return np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR))


def scale_coords(coords: np.ndarray, original_size: tuple[int, int], input_size: tuple[int, int]) -> np.ndarray:
    """...x2 pixel coordinates (x, y) in an image of (H, W) to the frame it was resized to for the
    model, (h, w) = `input_size` (each axis scaled by its own ratio); float64."""
    h, w = original_size
    new_h, new_w = input_size
    out = np.array(coords, dtype=np.float64, copy=True)
    out[..., 0] *= new_w / w
    out[..., 1] *= new_h / h
    return out


def scale_boxes(boxes: np.ndarray, original_size: tuple[int, int], input_size: tuple[int, int]) -> np.ndarray:
    """...x4 XYXY boxes in an image of (H, W) to the frame of `input_size` (see scale_coords); float64."""
    boxes = np.asarray(boxes, dtype=np.float64)
    corners = scale_coords(boxes.reshape(*boxes.shape[:-1], 2, 2), original_size, input_size)
    return corners.reshape(boxes.shape)
