"""Released images record what de-identification blurred: the regions' boxes are where the
released JPEG differs from the same image unblurred, on a real photo of people."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
from PIL import Image

from curation.release_images import ReleaseImagePolicy, prepare_image, provenance_fields
from tests.conftest import COCO_PEOPLE

POLICY = ReleaseImagePolicy(short_side=770, jpeg_quality=90, deidentify=True, min_side=32, max_pixels=10**8)
MCU = 16
"""JPEG codes 16x16 blocks on their own (the decoder's chroma upsampling reaches one pixel into the next)."""


def _decoded(jpeg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")).astype(np.int16)


def test_blurred_regions_are_where_the_release_image_was_blurred() -> None:
    data = COCO_PEOPLE.read_bytes()
    blurred = prepare_image(data, POLICY, model_long_side=1024)
    plain = prepare_image(data, replace(POLICY, deidentify=False), model_long_side=1024)
    height, width = blurred.release_size
    assert blurred.blurred_regions and plain.blurred_regions == []
    assert blurred.blurred == {"face": len(blurred.blurred_regions), "plate": 0}
    near = np.zeros((height, width), bool)
    difference = np.abs(_decoded(blurred.release_jpeg) - _decoded(plain.release_jpeg)).max(axis=2)
    for region in blurred.blurred_regions:
        x, y, w, h = region["bbox"]
        assert region["kind"] == "face" and 0 <= x < x + w <= width and 0 <= y < y + h <= height
        assert difference[y : y + h, x : x + w].mean() > 5  # blurred inside
        x0, y0 = (x // MCU - 1) * MCU, (y // MCU - 1) * MCU
        x1, y1 = (-(-(x + w) // MCU) + 1) * MCU, (-(-(y + h) // MCU) + 1) * MCU
        near[max(0, y0) : y1, max(0, x0) : x1] = True
    assert difference[~near].max() == 0  # and nowhere else


def test_provenance_fields_keep_the_regions_and_their_counts() -> None:
    regions = [{"kind": "face", "bbox": [1, 2, 30, 30]}, {"kind": "plate", "bbox": [50, 60, 90, 30]}]
    regions.append({"kind": "face", "bbox": [100, 2, 30, 30]})
    fields = provenance_fields("s3://photos/a.jpg", "ab" * 32, (480, 640), regions)
    assert fields["blurred_faces"] == 2 and fields["blurred_plates"] == 1
    assert fields["blurred_regions"] == regions
    assert fields["source_width"] == 640 and fields["source_height"] == 480
    nothing = provenance_fields("a.jpg", "ab" * 32, (480, 640), [])
    assert (nothing["blurred_faces"], nothing["blurred_plates"], nothing["blurred_regions"]) == (0, 0, [])
