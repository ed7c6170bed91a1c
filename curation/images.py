"""Decoding untrusted image bytes into RGB arrays, with size limits, and resizing for release."""

from __future__ import annotations

import io
import warnings

import cv2
import numpy as np
from PIL import Image, ImageOps

from sam_core.image import as_rgb_uint8

MAX_PIXELS = 100_000_000  # larger images are refused before their pixels are decoded
MIN_SIDE = 32  # smaller images are refused: too few pixels for a meaningful mask
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class ImageDecodeError(ValueError):
    """Bytes that do not decode to a usable image; the message says why."""


def decode_image(
    data: bytes, max_pixels: int = MAX_PIXELS, min_side: int = 1, draft_side: int | None = None
) -> np.ndarray:
    """Encoded image bytes to HxWx3 uint8 RGB, EXIF orientation applied.

    Grayscale, palette, RGBA (alpha ignored), CMYK and 16-bit grayscale (scaled by 255/65535)
    become RGB. The header's size is checked against `max_pixels` and `min_side` before the
    pixels are decoded; anything PIL cannot read (empty, truncated, not an image) raises
    ImageDecodeError. With `draft_side`, for callers that need only a thumbnail, a JPEG is decoded
    at the smallest of 1, 1/2, 1/4 and 1/8 scale whose sides stay at least `draft_side` (the
    decoder's DCT scaling: several times faster); other formats decode at full size.
    """
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageDecodeError(f"{width}x{height} image exceeds the limit of {max_pixels} pixels")
            if min(width, height) < min_side:
                raise ImageDecodeError(f"{width}x{height} image is smaller than the minimum side of {min_side} px")
            if draft_side is not None:
                image.draft(None, (draft_side, draft_side))
            image = ImageOps.exif_transpose(image)
            if image.mode in _SIXTEEN_BIT_MODES:
                return as_rgb_uint8(np.clip(np.asarray(image), 0, 65535).astype(np.uint16))
            return np.asarray(image.convert("RGB"))
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageDecodeError(f"image exceeds the limit of decodable pixels: {error}") from error
    except (OSError, ValueError, SyntaxError) as error:
        raise ImageDecodeError(f"cannot decode image: {error}") from error


def fit_short_side(size: tuple[int, int], short_side: int) -> tuple[int, int]:
    """(height, width) scaled so that the shorter side is `short_side`; never enlarged."""
    return _scaled(size, short_side / min(size))


def fit_long_side(size: tuple[int, int], long_side: int) -> tuple[int, int]:
    """(height, width) scaled so that the longer side is at most `long_side`; never enlarged."""
    return _scaled(size, long_side / max(size))


def _scaled(size: tuple[int, int], scale: float) -> tuple[int, int]:
    height, width = size
    scale = min(1.0, scale)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """HxWxC uint8 to the (height, width) `size` with area averaging (the image itself if unchanged)."""
    if image.shape[:2] == tuple(size):
        return image
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    """HxWx3 uint8 RGB to JPEG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
