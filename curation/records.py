"""The SA-1B record's identity: the `sa_<id>` naming, the standard image fields and the
annotation ids.

An SA-1B record is {"image": {...}, "annotations": [...]}; the image object starts with the
four standard fields below, then any extra ones (source, provenance, metadata). The mask side
of an annotation ("segmentation", "bbox", "area") comes from `sam_core.mask_ops.annotation_fields`.

Annotation ids are unique across a release, as SA-1B's are across the dataset:
`image_id * MASK_ID_STRIDE + i` for the image's i-th released mask. They follow from the image id
(fixed by the job's saved plan) and the mask's place in the record, so a resumed job or a rerun
with the same plan and settings gives every mask the same id, and `id // MASK_ID_STRIDE` names
its image.
"""

from __future__ import annotations

from typing import Any

STANDARD_IMAGE_FIELDS = ("image_id", "width", "height", "file_name")
MASK_ID_STRIDE = 1_000_000
"""Annotation ids of image `k` are `k * MASK_ID_STRIDE + i`: room for a million masks per image."""
MAX_SAFE_ID = 2**53 - 1
"""The largest id every JSON reader keeps exactly (JavaScript's numbers are doubles)."""
"""The image object's own fields, first in every record; an input's metadata may not use them."""


def image_key(image_id: int) -> str:
    """The file stem of an image in shards: `sa_<id>` as in SA-1B."""
    return f"sa_{image_id}"


def image_file_name(image_id: int) -> str:
    """The image's JPEG in shards and in COCO exports: `sa_<id>.jpg`."""
    return f"{image_key(image_id)}.jpg"


def image_entry(image_id: int, size: tuple[int, int], extra: dict[str, Any]) -> dict[str, Any]:
    """The record's "image" object for a (height, width) image, `extra` fields after the standard four."""
    height, width = size
    entry = {"image_id": image_id, "width": width, "height": height, "file_name": image_file_name(image_id)}
    entry.update({k: v for k, v in extra.items() if k not in entry})
    return entry


def with_annotation_ids(image_id: int, annotations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`annotations` (the image's released masks, in order) with their release-wide ids;
    ValueError when the image has too many masks or too large an id for the scheme."""
    if len(annotations) > MASK_ID_STRIDE:
        raise ValueError(
            f"image {image_id} has {len(annotations)} masks, more than the {MASK_ID_STRIDE} ids it can hold"
        )
    if image_id < 0 or (image_id + 1) * MASK_ID_STRIDE - 1 > MAX_SAFE_ID:
        raise ValueError(
            f"image id {image_id} is outside 0..{MAX_SAFE_ID // MASK_ID_STRIDE - 1}, the ids masks can follow"
        )
    first = image_id * MASK_ID_STRIDE
    return [{**annotation, "id": first + i} for i, annotation in enumerate(annotations)]
