"""Decoding untrusted image bytes into RGB arrays, with a decompression-bomb limit."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

MAX_PIXELS = 100_000_000  # larger images are refused before their pixels are decoded


class ImageDecodeError(ValueError):
    """Bytes that do not decode to a usable image; the message says why."""


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Encoded image bytes to HxWx3 uint8 RGB, EXIF orientation applied.

    The header's size is checked against `max_pixels` before decoding; anything PIL cannot
    read (empty, truncated, not an image) raises ImageDecodeError.
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
            image = ImageOps.exif_transpose(image)
            return np.asarray(image.convert("RGB"))
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise ImageDecodeError(f"image exceeds the limit of decodable pixels: {error}") from error
    except (OSError, ValueError, SyntaxError) as error:
        raise ImageDecodeError(f"cannot decode image: {error}") from error
