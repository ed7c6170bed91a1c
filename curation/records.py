"""The SA-1B record's image side: the `sa_<id>` naming and the standard image fields.

An SA-1B record is {"image": {...}, "annotations": [...]}; the image object starts with the
four standard fields below, then any extra ones (source, provenance, metadata). The mask side
of an annotation ("segmentation", "bbox", "area") comes from `sam_core.mask_ops.annotation_fields`.
"""

from __future__ import annotations

from typing import Any

STANDARD_IMAGE_FIELDS = ("image_id", "width", "height", "file_name")
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
