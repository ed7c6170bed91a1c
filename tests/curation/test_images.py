import io

import numpy as np
import pytest
from PIL import Image

from curation.images import ImageDecodeError, decode_image, fit_long_side, fit_short_side
from tests.image_zoo import awkward_files, png_claiming


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


@pytest.mark.parametrize(("size", "limit"), [((50000, 50000), None), ((12000, 10000), 100_000_000)])
def test_a_huge_header_is_refused_before_decoding(size, limit):
    data = png_claiming(*size)
    with pytest.raises(ImageDecodeError, match="exceeds the limit"):
        decode_image(data) if limit is None else decode_image(data, max_pixels=limit)


def test_awkward_but_valid_files_decode_to_rgb():
    files = {name: decode_image(data) for name, data in awkward_files().items()}
    assert all(image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 for image in files.values())
    rgba, cmyk = files["rgba.png"].astype(int), files["cmyk.jpg"].astype(int)
    assert np.abs(cmyk - rgba).mean() < 12  # CMYK comes back as the same colours, up to JPEG loss
    gray = files["gray16.png"]
    assert gray.max() > 200 and gray.min() < 40 and (gray[..., 0] == gray[..., 2]).all()  # scaled, not clipped
    assert files["rotated.jpg"].shape[:2] == rgba.shape[1::-1]


def test_images_below_the_minimum_side_are_refused():
    tiny = _encoded(Image.new("RGB", (8, 8)), "PNG")
    assert decode_image(tiny).shape == (8, 8, 3)
    with pytest.raises(ImageDecodeError, match="smaller than the minimum side of 32"):
        decode_image(tiny, min_side=32)


def test_fitting_sizes_never_enlarges():
    assert fit_short_side((3000, 4500), 1500) == (1500, 2250)
    assert fit_short_side((600, 800), 1500) == (600, 800)
    assert fit_long_side((3000, 4500), 1024) == (683, 1024)
    assert fit_long_side((600, 800), 1024) == (600, 800)
