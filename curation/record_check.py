"""Whether one SA-1B record is well formed: what `sa-engine verify` checks in every record of a
release.

The image entry has the four standard fields (`file_name` is `sa_<id>.jpg`); each annotation's id
is `image_id * MASK_ID_STRIDE + i` for the image's `i`-th mask (so ids are unique across a release
whose image ids are); its RLE is well formed and covers exactly the image's height x width; its
`area` is the mask's pixel count and its `bbox` the mask's box in `sam_core.mask_ops.record_bbox`'s
convention ([x, y, w, h], w and h the distance from the first to the last mask pixel, all zeros for
an empty mask), both exact. Area and box come from pycocotools (`area`, `toBbox`), read off the RLE
without rasterising it, once the counts are known to cover the image, as pycocotools' decoder needs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as coco_mask

from curation.records import MASK_ID_STRIDE, STANDARD_IMAGE_FIELDS, image_file_name
from sam_core.mask_ops import rle_counts


def record_problems(record: Any) -> list[str]:
    """What is wrong with one SA-1B record ({"image": {...}, "annotations": [...]}), one short
    sentence each; empty when nothing is."""
    if not isinstance(record, dict) or not isinstance(record.get("image"), dict):
        return ["not an SA-1B record: no image object"]
    if not isinstance(record.get("annotations"), list):
        return ["not an SA-1B record: no annotations list"]
    image = record["image"]
    problems = [f"image entry lacks {name!r}" for name in STANDARD_IMAGE_FIELDS if name not in image]
    if problems:
        return problems
    image_id, height, width = image["image_id"], image["height"], image["width"]
    if not _is_count(image_id) or not _is_count(height) or not _is_count(width) or not height or not width:
        return [f"image entry has image_id {image_id!r}, height {height!r}, width {width!r}: not whole numbers > 0"]
    if image["file_name"] != image_file_name(image_id):
        problems.append(f"file_name {image['file_name']!r} is not {image_file_name(image_id)!r}")
    readable = []
    for position, annotation in enumerate(record["annotations"]):
        expected_id = image_id * MASK_ID_STRIDE + position
        found = annotation.get("id") if isinstance(annotation, dict) else None
        if found != expected_id:
            problems.append(
                f"annotation {position} has id {found!r}, not {expected_id} (image_id * {MASK_ID_STRIDE} + i)"
            )
        rle_problem = _rle_problem(annotation, height, width)
        if rle_problem:
            problems.append(f"annotation {found!r}: {rle_problem}")
        else:
            readable.append(annotation)
    return problems + _geometry_problems(readable)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _rle_problem(annotation: Any, height: int, width: int) -> str | None:
    """Why an annotation's RLE is not one of an image `height` x `width`, or None."""
    segmentation = annotation.get("segmentation") if isinstance(annotation, dict) else None
    if not isinstance(segmentation, dict) or not isinstance(segmentation.get("counts"), str):
        return "no compressed RLE segmentation (a size and a counts string)"
    if segmentation.get("size") != [height, width]:
        return f"RLE size {segmentation.get('size')!r} is not the image's [height, width] [{height}, {width}]"
    try:
        counts = rle_counts(segmentation)
    except ValueError as error:
        return str(error)
    if len(counts) and counts.min() < 0:
        return "RLE counts hold a negative run length"
    if int(counts.sum()) != height * width:
        return f"RLE counts cover {int(counts.sum())} pixels, not {height} x {width} = {height * width}"
    return None


def _geometry_problems(annotations: list[dict[str, Any]]) -> list[str]:
    """`area` and `bbox` of annotations whose RLEs are well formed, against the masks'."""
    if not annotations:
        return []
    rles = [
        {"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode("ascii")} for a in annotations
    ]
    areas = coco_mask.area(rles).tolist()
    boxes = coco_mask.toBbox(rles)  # [x, y, w, h], w and h counting both end pixels
    boxes[:, 2:] = np.where(boxes[:, 2:] > 0, boxes[:, 2:] - 1, 0)
    problems = []
    for annotation, area, box in zip(annotations, areas, boxes.tolist(), strict=True):
        if annotation.get("area") != area:
            problems.append(
                f"annotation {annotation.get('id')!r}: area {annotation.get('area')!r}, the mask has {area} pixels"
            )
        if annotation.get("bbox") != box:
            problems.append(
                f"annotation {annotation.get('id')!r}: bbox {annotation.get('bbox')!r}, the mask's is {box}"
            )
    return problems
