"""A record's sizes against its JPEG's header, on real SA-1B records and images."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from curation.images import ImageDecodeError, decode_image
from curation.record_size import RecordSizeError, conform, encoded_size
from curation.release import ReleaseImage
from sam_core.mask_ops import decode_rle, record_bbox
from tests.sa1b_real import RECORD_SIZE, WIDER_IMAGE, real_image, real_record, real_sa1b_item, with_width


def test_a_real_record_with_an_image_of_its_size_passes_as_it_is() -> None:
    item = real_sa1b_item()
    assert encoded_size(item.image_bytes) == RECORD_SIZE == decode_image(item.image_bytes).shape[:2]
    assert conform(item) is item
    assert conform(item, rescale=True) is item


def test_a_rewritten_width_is_an_error_naming_the_image_and_both_sizes() -> None:
    with pytest.raises(RecordSizeError) as error:
        conform(with_width(real_sa1b_item(), 1800))
    assert str(error.value) == "image 226381: its record says 1800x1500 (width x height), but its image is 2000x1500"


def test_rescaling_a_rewritten_width_only_fixes_the_record() -> None:
    item = with_width(real_sa1b_item(n_masks=3), 1800)
    fixed = conform(item, rescale=True)
    assert fixed.record["image"]["width"] == 2000
    assert fixed.record["annotations"] == item.record["annotations"]  # the masks were already at the JPEG's size


def test_masks_of_another_size_are_named_and_rescaled_to_the_image() -> None:
    original = real_record(n_masks=4)
    item = ReleaseImage(original, real_image(WIDER_IMAGE))  # a 2250x1500 JPEG under masks of 2000x1500
    with pytest.raises(RecordSizeError, match=r"2000x1500, 4 of its 4 masks are 2000x1500 .* its image is 2250x1500"):
        conform(item)

    fixed = conform(item, rescale=True).record
    assert (fixed["image"]["width"], fixed["image"]["height"]) == (2250, 1500)
    for before, after in zip(original["annotations"], fixed["annotations"], strict=True):
        mask = decode_rle(after["segmentation"])
        assert after["segmentation"]["size"] == [1500, 2250]
        expected = cv2.resize(
            decode_rle(before["segmentation"]).astype(np.uint8), (2250, 1500), interpolation=cv2.INTER_NEAREST
        )
        assert np.array_equal(mask, expected.astype(bool))
        ys, xs = np.nonzero(mask)
        assert after["area"] == int(mask.sum())
        assert after["bbox"] == record_bbox((xs.min(), ys.min(), xs.max(), ys.max()))
        assert after["point_coords"] == [[x * 2250 / 2000, y] for x, y in before["point_coords"]]
        assert after["crop_box"][2] == pytest.approx(before["crop_box"][2] * 2250 / 2000)
        assert (after["id"], after["predicted_iou"]) == (before["id"], before["predicted_iou"])


def test_the_size_is_the_decoded_one_under_an_exif_rotation() -> None:
    small = Image.open(io.BytesIO(real_image("sa_10039.jpg"))).resize((200, 150))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored pixels turned a quarter: decoded 150 wide, 200 high
    buffer = io.BytesIO()
    small.save(buffer, "JPEG", exif=exif.tobytes())
    assert encoded_size(buffer.getvalue()) == (200, 150) == decode_image(buffer.getvalue()).shape[:2]


def test_bytes_that_are_not_an_image_are_a_decode_error() -> None:
    with pytest.raises(ImageDecodeError, match="cannot read the image header"):
        encoded_size(real_image("sa_10039.jpg")[100:])
