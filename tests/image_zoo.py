"""Real photos and a zoo of awkward or broken image files, written by the tests that need them."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image

TEST_LONG_SIDE = 320
"""Photos are shrunk to this long side: the job's path is the same and CPU tests stay quick."""


def _small(image: Image.Image, long_side: int = TEST_LONG_SIDE) -> Image.Image:
    scale = long_side / max(image.size)
    return image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS)


def _encoded(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A small PNG whose header says width x height (a decompression bomb's first bytes)."""
    data = bytearray(_encoded(Image.new("L", (8, 8)), "PNG"))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr : ihdr + 17])))
    return bytes(data)


def photo_files(shared_photos: list[Path]) -> dict[str, bytes]:
    """Name -> JPEG bytes of small copies of ../shared's photos and scikit-image's astronaut and coffee."""
    photos = {p.name: Image.open(p).convert("RGB") for p in shared_photos}
    photos["astronaut.jpg"] = Image.fromarray(skimage.data.astronaut())
    photos["coffee.jpg"] = Image.fromarray(skimage.data.coffee())
    return {name: _encoded(_small(image), "JPEG", quality=90) for name, image in photos.items()}


def awkward_files() -> dict[str, bytes]:
    """Files that decode with care: CMYK JPEG, 16-bit grayscale PNG, RGBA PNG, EXIF-rotated JPEG."""
    chelsea = _small(Image.fromarray(skimage.data.chelsea()))
    camera16 = np.asarray(_small(Image.fromarray(skimage.data.camera()))).astype(np.uint16) * 257
    rotated = Image.Exif()
    rotated[0x0112] = 6  # the viewer turns it 90 degrees clockwise
    return {
        "cmyk.jpg": _encoded(chelsea.convert("CMYK"), "JPEG", quality=90),
        "gray16.png": _encoded(Image.fromarray(camera16), "PNG"),
        "rgba.png": _encoded(chelsea.convert("RGBA"), "PNG"),
        "rotated.jpg": _encoded(chelsea, "JPEG", exif=rotated.tobytes()),
    }


BAD_FILES_AND_REASONS = {
    "truncated.jpg": "decode",
    "empty.jpg": "decode",
    "text.jpg": "decode",
    "bomb.png": "decode",
    "tiny.png": "decode",
}


def bad_files(photo: bytes) -> dict[str, bytes]:
    """Files that must fail (see BAD_FILES_AND_REASONS): cut short, empty, text, a bomb header, 8x8."""
    return {
        "truncated.jpg": photo[: len(photo) // 3],
        "empty.jpg": b"",
        "text.jpg": b"this is a text file, not a JPEG\n",
        "bomb.png": png_claiming(60_000, 60_000),
        "tiny.png": _encoded(Image.new("RGB", (8, 8), (200, 30, 30)), "PNG"),
    }


def write_files(folder: Path, files: dict[str, bytes]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return [folder / name for name in files]
