"""SA-1B records for released images: the image entry, and annotations moved to the release size.

The mask generator works on the image at the resolution its crops need (`model size`); the
release stores a smaller image (shorter side 1500 in the `sa1b` preset), so masks, boxes,
points and crop boxes are rescaled to it. Masks are area-resampled and cut at one half.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch

from sam_core.mask_ops import decode_rle, encode_rles, masks_to_boxes, record_bbox


def image_entry(image_id: int, size: tuple[int, int], extra: dict[str, Any]) -> dict[str, Any]:
    """The record's "image" object for a (height, width) release image, `extra` fields after the standard four."""
    height, width = size
    entry = {"image_id": image_id, "width": width, "height": height, "file_name": f"sa_{image_id}.jpg"}
    entry.update({k: v for k, v in extra.items() if k not in entry})
    return entry


def rescale_annotations(
    annotations: list[dict[str, Any]], model_size: tuple[int, int], release_size: tuple[int, int]
) -> list[dict[str, Any]]:
    """Generator records made on a (height, width) `model_size` image, moved to `release_size`.

    Masks that vanish at the smaller size are left out (they had fewer than about one release
    pixel); ids are renumbered 0..N-1 in the original order.
    """
    if model_size == release_size:
        return annotations
    sy, sx = release_size[0] / model_size[0], release_size[1] / model_size[1]
    moved = []
    for annotation in annotations:
        mask = _resample(decode_rle(annotation["segmentation"]), release_size)
        area = int(mask.sum())
        if area == 0:
            continue
        tensor = torch.from_numpy(mask)[None]
        x, y, w, h = annotation["crop_box"]
        moved.append(
            {
                **annotation,
                "id": len(moved),
                "segmentation": encode_rles(tensor)[0],
                "bbox": record_bbox(masks_to_boxes(tensor)[0].tolist()),
                "area": area,
                "crop_box": [x * sx, y * sy, w * sx, h * sy],
                "point_coords": [[px * sx, py * sy] for px, py in annotation["point_coords"]],
            }
        )
    return moved


def _resample(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """HxW bool to the (height, width) `size`: a pixel is in the mask when at least half of its area is."""
    coverage = cv2.resize(mask.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return coverage >= 0.5
