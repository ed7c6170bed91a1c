import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from curation.images import ImageDecodeError, decode_image


def _encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def test_decodes_to_rgb_and_applies_exif_orientation(dog_photo):
    image = Image.fromarray(dog_photo)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: the viewer turns it 90 degrees clockwise
    decoded = decode_image(_encoded(image, "JPEG", exif=exif.tobytes()))
    assert decoded.dtype == np.uint8 and decoded.shape == (dog_photo.shape[1], dog_photo.shape[0], 3)
    gray = decode_image(_encoded(image.convert("L"), "PNG"))
    assert gray.shape == (*dog_photo.shape[:2], 3)


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"", "empty file"), (b"hello, not an image", "cannot decode"), (None, "cannot decode")],
)
def test_bad_bytes_raise_a_clear_error(dog_photo, data, message):
    if data is None:  # a JPEG cut in half
        data = _encoded(Image.fromarray(dog_photo), "JPEG")[:2000]
    with pytest.raises(ImageDecodeError, match=message):
        decode_image(data)


def _png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header says width x height (a decompression bomb's first bytes)."""
    data = bytearray(_encoded(Image.new("L", (8, 8)), "PNG"))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr : ihdr + 17])))
    return bytes(data)


@pytest.mark.parametrize(("size", "limit"), [((50000, 50000), None), ((12000, 10000), 100_000_000)])
def test_a_huge_header_is_refused_before_decoding(size, limit):
    data = _png_claiming(*size)
    with pytest.raises(ImageDecodeError, match="exceeds the limit"):
        decode_image(data) if limit is None else decode_image(data, max_pixels=limit)
