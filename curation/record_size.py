"""Whether an SA-1B record's sizes agree with its image, read from the image's header alone.

A record states its image's size twice: `image.width` / `image.height`, and every annotation's
`segmentation.size` ([height, width] of its RLE). A record that disagrees with its JPEG cannot be
used as it is: an export would write the wrong size beside the image, training would stretch the
masks over it. Every reader that uses records with their images goes through `conform`, which
fails with a `RecordSizeError` naming the image and every size, or, where the reader was asked
to, rescales the record to its image (`rescale_record`).
"""

from __future__ import annotations

import io
import warnings
from collections import Counter
from typing import Any

import cv2
import numpy as np
import torch
from PIL import ExifTags, Image

from curation.images import ImageDecodeError
from curation.release import ReleaseError, ReleaseImage
from sam_core.mask_ops import annotation_fields, decode_rle

_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)
"""EXIF orientations that turn the stored pixels by a quarter (width and height swap)."""


class RecordSizeError(ReleaseError):
    """A record whose width/height or mask sizes disagree with its image; the message names the
    image id, the record's sizes and the image's."""


def encoded_size(data: bytes) -> tuple[int, int]:
    """(height, width) in pixels of the image `curation.images.decode_image` makes of `data`
    (EXIF orientation applied), read from the header: no pixel is decoded.

    ImageDecodeError for bytes whose header PIL cannot read."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise ImageDecodeError(f"cannot read the image header: {error}") from error
    return (width, height) if orientation in _TRANSPOSING_ORIENTATIONS else (height, width)


def _wxh(height: int, width: int) -> str:
    return f"{width}x{height}"


def size_disagreement(record: dict[str, Any], size: tuple[int, int]) -> str | None:
    """What in `record` disagrees with an image of (height, width) `size`, as a sentence naming
    the image id and every size; None when the record and all its masks agree."""
    image = record["image"]
    stated = (image["height"], image["width"])
    masks = Counter(tuple(ann["segmentation"]["size"]) for ann in record["annotations"])
    wrong_masks = {mask_size: n for mask_size, n in masks.items() if mask_size != size}
    if stated == size and not wrong_masks:
        return None
    parts = [f"its record says {_wxh(*stated)}"]
    parts += [
        f"{n} of its {len(record['annotations'])} masks are {_wxh(*mask_size)}"
        for mask_size, n in sorted(wrong_masks.items())
    ]
    return f"image {image['image_id']}: {', '.join(parts)} (width x height), but its image is {_wxh(*size)}"


def rescale_record(record: dict[str, Any], size: tuple[int, int]) -> dict[str, Any]:
    """`record` for its image of (height, width) `size`: the image's width and height set, every
    mask of another size resized to it (nearest neighbour) with its area and bbox recomputed and its
    point_coords and crop_box scaled by the same factors; masks already at `size` are kept as they are."""
    height, width = size
    annotations = []
    for ann in record["annotations"]:
        mask_height, mask_width = ann["segmentation"]["size"]
        if (mask_height, mask_width) == size:
            annotations.append(ann)
            continue
        mask = np.ascontiguousarray(decode_rle(ann["segmentation"]), dtype=np.uint8)
        resized = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)
        (fields,) = annotation_fields(torch.from_numpy(resized)[None])
        sx, sy = width / mask_width, height / mask_height
        scaled = {**ann, **fields}
        if ann.get("point_coords") is not None:
            scaled["point_coords"] = [[x * sx, y * sy] for x, y in ann["point_coords"]]
        if ann.get("crop_box") is not None:
            x, y, w, h = ann["crop_box"]
            scaled["crop_box"] = [x * sx, y * sy, w * sx, h * sy]
        annotations.append(scaled)
    return {**record, "image": {**record["image"], "height": height, "width": width}, "annotations": annotations}


def conform(item: ReleaseImage, rescale: bool = False) -> ReleaseImage:
    """`item` when its record agrees with its image's header size; otherwise RecordSizeError or,
    with `rescale`, the item with its record rescaled to the image (`rescale_record`).

    ImageDecodeError when the image's header does not read."""
    size = encoded_size(item.image_bytes)
    problem = size_disagreement(item.record, size)
    if problem is None:
        return item
    if not rescale:
        raise RecordSizeError(problem)
    return ReleaseImage(rescale_record(item.record, size), item.image_bytes)
