"""Bringing arbitrary image arrays to the HxWx3 uint8 RGB that the model takes."""

from __future__ import annotations

import numpy as np


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """HxW (grayscale), HxWx1, HxWx2 (gray + alpha), HxWx3 (RGB) or HxWx4 (RGBA) to HxWx3 uint8.

    Alpha is ignored: the colour channels are used as stored, as PIL's convert("RGB") does.
    uint16 data is scaled by 255/65535; bool becomes 0/255; floats must lie in [0, 1].
    Raises ValueError for anything else, naming what was found.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"expected an HxW or HxWxC image with C in 1..4, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image is empty: shape {image.shape}")
    channels = image.shape[2]
    if channels <= 2:
        image = np.repeat(image[..., :1], 3, axis=2)
    else:
        image = image[..., :3]
    return np.ascontiguousarray(_to_uint8(image))


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.bool_:
        return image.astype(np.uint8) * 255
    if image.dtype == np.uint16:
        return np.round(image.astype(np.float32) * (255.0 / 65535.0)).astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all():
            raise ValueError("float image contains NaN or infinite values")
        low, high = float(image.min()), float(image.max())
        if low < 0.0 or high > 1.0:
            raise ValueError(
                f"float image values must lie in [0, 1], found [{low:g}, {high:g}]; pass 0..255 data as uint8"
            )
        return np.round(image * 255.0).astype(np.uint8)
    if np.issubdtype(image.dtype, np.integer):
        low, high = int(image.min()), int(image.max())
        if low < 0 or high > 255:
            raise ValueError(f"{image.dtype} image values must lie in 0..255, found {low}..{high}")
        return image.astype(np.uint8)
    raise ValueError(f"unsupported image dtype {image.dtype}")
