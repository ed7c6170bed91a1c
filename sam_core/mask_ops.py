"""Operations on candidate masks: stability, boxes, NMS, crop-edge test, RLE, small-region clean-up."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np
import torch
from pycocotools import mask as coco_mask
from torchvision.ops import batched_nms


def stability_scores(logits: torch.Tensor, threshold: float, offset: float) -> torch.Tensor:
    """IoU of each mask binarised at threshold + offset and at threshold - offset.

    logits: NxHxW float. Returns N float32. The higher cut-off gives a subset of the lower, so
    the IoU is a ratio of pixel counts. A mask empty at the lower cut-off scores NaN, which no
    threshold keeps.
    """
    return _count_above(logits, threshold + offset).float() / _count_above(logits, threshold - offset).float()


def _count_above(logits: torch.Tensor, cut: float) -> torch.Tensor:
    """N int64 counts of pixels above `cut`; rows are summed in int16 first, which is several
    times faster on CPU than one reduction over both axes and cannot overflow below 32768 columns."""
    row_dtype = torch.int16 if logits.shape[-1] < 2**15 else torch.int32
    return (logits > cut).sum(-1, dtype=row_dtype).sum(-1, dtype=torch.int64)


def masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """NxHxW bool masks to Nx4 int64 boxes, XYXY with inclusive max (x1 = last column); empty: 0,0,0,0."""
    if masks.shape[0] == 0:
        return torch.zeros((0, 4), dtype=torch.int64, device=masks.device)
    rows, cols = masks.any(dim=-1), masks.any(dim=-2)
    boxes = torch.stack([_first(cols), _first(rows), _last(cols), _last(rows)], dim=1)
    return boxes * rows.any(dim=-1, keepdim=True)


def _first(present: torch.Tensor) -> torch.Tensor:
    """Index of the first True along the last axis (0 when none)."""
    return present.to(torch.uint8).argmax(dim=-1)


def _last(present: torch.Tensor) -> torch.Tensor:
    length = present.shape[-1]
    return length - 1 - present.flip(-1).to(torch.uint8).argmax(dim=-1)


def near_crop_edge(boxes: torch.Tensor, crop: Sequence[int], image: Sequence[int], tolerance: float) -> torch.Tensor:
    """Which Nx4 XYXY boxes (image frame) lie within `tolerance` px of an edge of the crop box
    that is not also an edge of the image box. Such masks are likely cut off by the crop."""
    crop_t = torch.as_tensor(crop, dtype=torch.float32, device=boxes.device)
    image_t = torch.as_tensor(image, dtype=torch.float32, device=boxes.device)
    boxes = boxes.float()
    at_crop = (boxes - crop_t).abs() <= tolerance
    at_image = (boxes - image_t).abs() <= tolerance
    return (at_crop & ~at_image).any(dim=1)


def box_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Indices kept by box NMS of Nx4 XYXY boxes, highest score first (int64, on the boxes' device)."""
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    categories = torch.zeros(len(boxes), dtype=torch.int64, device=boxes.device)
    return batched_nms(boxes.float(), scores.float(), categories, threshold)


def record_bbox(xyxy: Sequence[float]) -> list[float]:
    """An SA-1B record's "bbox" from an inclusive XYXY mask box: [x, y, w, h] with x, y the first
    mask pixel and w, h the distance to the last one (the public generator's convention)."""
    x0, y0, x1, y1 = xyxy
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


def interior_point(mask: np.ndarray) -> tuple[float, float]:
    """(x, y) of the pixel of an HxW bool mask farthest from its boundary (the first in row order
    on ties); pixels outside the image count as outside the mask."""
    distance = cv2.distanceTransform(np.pad(mask, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return float(x), float(y)


def encode_rles(masks: torch.Tensor) -> list[dict[str, Any]]:
    """NxHxW bool masks (on any device) to COCO compressed RLEs ({"size": [H, W], "counts": str}).

    The runs are found where the device holds the masks: only the positions where a mask's
    column-major pixel sequence changes value travel to the host, not the masks.
    """
    n, h, w = masks.shape
    if n == 0:
        return []
    pixels = masks.transpose(1, 2).reshape(n, h * w)  # COCO counts run down columns
    rows, positions = torch.nonzero(pixels[:, 1:] != pixels[:, :-1], as_tuple=True)
    starts_on = pixels[:, 0].cpu().numpy()
    rows, ends = rows.cpu().numpy(), positions.cpu().numpy() + 1
    per_mask = np.split(ends, np.searchsorted(rows, np.arange(1, n)))
    uncompressed = []
    for first, boundaries in zip(starts_on, per_mask):
        runs = np.diff(boundaries, prepend=0, append=h * w)
        counts = np.concatenate([[0], runs]) if first else runs  # counts start with a run of 0s
        uncompressed.append({"size": [h, w], "counts": counts.tolist()})
    rles = coco_mask.frPyObjects(uncompressed, h, w)
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def annotation_fields(masks: torch.Tensor) -> list[dict[str, Any]]:
    """The mask fields of SA-1B annotations for NxHxW bool masks: "segmentation" (COCO RLE),
    "bbox" (XYWH, `record_bbox`'s convention) and "area" (pixels)."""
    boxes = masks_to_boxes(masks).tolist()
    areas = masks.sum(dim=(1, 2), dtype=torch.int64).tolist()
    return [
        {"segmentation": rle, "bbox": record_bbox(box), "area": int(area)}
        for rle, box, area in zip(encode_rles(masks), boxes, areas)
    ]


def resample_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """HxW bool to the (height, width) `size`: a pixel is in the mask when at least half of its area is."""
    coverage = cv2.resize(mask.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return coverage >= 0.5


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """A COCO RLE (compressed, counts as str or bytes) to an HxW bool mask."""
    return coco_mask.decode(_coco_ready(rle)).astype(bool)


def _coco_ready(rle: dict[str, Any]) -> dict[str, Any]:
    counts = rle["counts"]
    return {"size": rle["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def remove_small_regions(mask: np.ndarray, min_area: int, drop_if_all_small: bool) -> tuple[np.ndarray | None, bool]:
    """Fill holes and remove islands of fewer than `min_area` pixels (8-connectivity).

    mask: HxW bool. Returns the cleaned mask and whether it changed. When every island is
    small, the public code keeps the largest one; with drop_if_all_small (the paper's rule)
    the mask is dropped instead and None is returned.
    """
    filled, holes_changed = _fill_small_holes(mask, min_area)
    labels_count, labels, stats, _ = cv2.connectedComponentsWithStats(filled.astype(np.uint8), connectivity=8)
    sizes = stats[1:, cv2.CC_STAT_AREA]
    small = sizes < min_area
    if not small.any():
        return filled, holes_changed
    if small.all():
        if drop_if_all_small:
            return None, True
        keep = np.zeros(labels_count, dtype=bool)
        keep[int(np.argmax(sizes)) + 1] = True
    else:
        keep = np.concatenate([[False], ~small])
    return keep[labels], True


def _fill_small_holes(mask: np.ndarray, min_area: int) -> tuple[np.ndarray, bool]:
    _, labels, stats, _ = cv2.connectedComponentsWithStats((~mask).astype(np.uint8), connectivity=8)
    small = stats[1:, cv2.CC_STAT_AREA] < min_area
    if not small.any():
        return mask, False
    fill = np.concatenate([[True], small])  # label 0 is the mask itself
    return fill[labels], True
