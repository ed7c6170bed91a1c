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
    # amax over the masks' bytes: the same as any(), and on a CPU tens of times faster (torch 2.14).
    pixels = masks.view(torch.uint8)
    rows, cols = pixels.amax(dim=-1), pixels.amax(dim=-2)
    boxes = torch.stack([_first(cols), _first(rows), _last(cols), _last(rows)], dim=1)
    return boxes * rows.amax(dim=-1, keepdim=True)


def _first(present: torch.Tensor) -> torch.Tensor:
    """Index of the first nonzero along the last axis of a uint8 tensor (0 when none)."""
    return present.argmax(dim=-1)


def _last(present: torch.Tensor) -> torch.Tensor:
    length = present.shape[-1]
    return length - 1 - present.flip(-1).argmax(dim=-1)


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

    Masks on the CPU go through pycocotools' own encoder (about twice as fast there as finding
    the runs with tensor operations). On another device the runs are found where the masks are
    (`mask_runs`): only the positions where a mask's column-major pixels change value travel to
    the host, not the masks.
    """
    n, h, w = masks.shape
    if masks.device.type != "cpu":
        return rles_from_runs(mask_runs(masks), (h, w))
    if n == 0:
        return []
    encoded = coco_mask.encode(np.asfortranarray(masks.permute(1, 2, 0).numpy().view(np.uint8)))
    return [{"size": [h, w], "counts": rle["counts"].decode("ascii")} for rle in encoded]


def mask_runs(masks: torch.Tensor) -> list[np.ndarray]:
    """NxHxW bool masks (on any device) to their runs of True: per mask, int32 column-major pixel
    positions [s0, e0, s1, e1, ...], each run from s (inclusive) to e (exclusive), in order.
    int32 halves what a generator holds for its candidates; images stay far below 2^31 pixels
    (`curation.images.MAX_PIXELS` is 10^8)."""
    n, h, w = masks.shape
    if n == 0:
        return []
    pixels = masks.transpose(1, 2).reshape(n, h * w)  # COCO counts run down columns
    rows, positions = torch.nonzero(pixels[:, 1:] != pixels[:, :-1], as_tuple=True)
    starts_on = pixels[:, 0].cpu().numpy()
    last_on = pixels[:, -1].cpu().numpy()
    rows, changes = rows.cpu().numpy(), positions.cpu().numpy() + 1
    runs = []
    for first, last, boundaries in zip(starts_on, last_on, np.split(changes, np.searchsorted(rows, np.arange(1, n)))):
        runs.append(np.concatenate([[0] if first else [], boundaries, [h * w] if last else []]).astype(np.int32))
    return runs


def runs_in_frame(
    runs: np.ndarray, size: tuple[int, int], offset: tuple[int, int], frame: tuple[int, int]
) -> np.ndarray:
    """Runs (`mask_runs`) of an HxW mask moved into a larger all-False (height, width) `frame`,
    the mask's top-left pixel at `offset` (x, y). A run that spans columns splits at each column
    end unless the mask is as tall as the frame (where columns stay contiguous)."""
    h, _ = size
    frame_h = frame[0]
    x0, y0 = offset
    if h == frame_h:
        return runs + x0 * frame_h
    starts, ends = runs[0::2], runs[1::2]
    first_col, last_col = starts // h, (ends - 1) // h
    pieces = last_col - first_col + 1
    run_of = np.repeat(np.arange(len(starts)), pieces)
    column = first_col[run_of] + np.arange(len(run_of)) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    piece_start = np.maximum(starts[run_of], column * h)
    piece_end = np.minimum(ends[run_of], (column + 1) * h)
    moved_start = (x0 + column) * frame_h + y0 + piece_start - column * h
    return np.stack([moved_start, moved_start + piece_end - piece_start], axis=1).reshape(-1)


def rles_from_runs(runs: list[np.ndarray], size: tuple[int, int]) -> list[dict[str, Any]]:
    """COCO compressed RLEs of (height, width) masks given by their runs (`mask_runs`)."""
    h, w = size
    if not runs:
        return []
    uncompressed = []
    for mask in runs:
        counts = np.diff(mask, prepend=0, append=h * w)
        if len(mask) and mask[-1] == h * w:
            counts = counts[:-1]  # the mask ends True: no closing run of False
        uncompressed.append({"size": [h, w], "counts": counts})  # an array: several times faster than a list
    rles = coco_mask.frPyObjects(uncompressed, h, w)
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def runs_area(runs: np.ndarray) -> int:
    """Pixels in the mask that `runs` (`mask_runs`) describe."""
    return int((runs[1::2] - runs[0::2]).sum())


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
    """Fill holes and remove islands of fewer than `min_area` pixels (8-connectivity), as the
    public code does on the whole image.

    mask: HxW bool. Returns the cleaned mask and whether it changed. When every island is
    small, the public code keeps the largest one; with drop_if_all_small (the paper's rule)
    the mask is dropped instead and None is returned. The components are labelled in the mask's
    box grown by a pixel where the image goes on (`_box_window`), which gives the whole image's
    answer at a fraction of the cost for all but the largest masks; the two cases the window
    cannot settle (the background beyond it is a small hole; small islands tie for the largest,
    where the whole image's label order decides) are labelled on the whole image.
    """
    window = _box_window(mask)
    if window is not None:
        cleaned = _remove_small_regions(mask[window], min_area, drop_if_all_small, mask.size - mask[window].size)
        if cleaned is not None:
            part, changed = cleaned
            if part is None or not changed:
                return (None if part is None else mask), changed
            whole = mask.copy()
            whole[window] = part
            return whole, True
    cleaned = _remove_small_regions(mask, min_area, drop_if_all_small, 0)
    assert cleaned is not None  # the whole image leaves nothing unsettled
    return cleaned


def _remove_small_regions(
    mask: np.ndarray, min_area: int, drop_if_all_small: bool, outside: int
) -> tuple[np.ndarray | None, bool] | None:
    """`remove_small_regions` on `mask`, a window of the image with `outside` pixels of background
    beyond it (0: the whole image); None when the window cannot settle the answer."""
    filled = _fill_small_holes(mask, min_area, outside)
    if filled is None:
        return None
    filled, holes_changed = filled
    labels_count, labels, stats, _ = cv2.connectedComponentsWithStats(filled.astype(np.uint8), connectivity=8)
    sizes = stats[1:, cv2.CC_STAT_AREA]
    small = sizes < min_area
    if not small.any():
        return filled, holes_changed
    if small.all():
        if drop_if_all_small:
            return None, True
        if outside and (sizes == sizes.max()).sum() > 1:
            return None
        keep = np.zeros(labels_count, dtype=bool)
        keep[int(np.argmax(sizes)) + 1] = True
    else:
        keep = np.concatenate([[False], ~small])
    return np.take(keep, labels), True


def _box_window(mask: np.ndarray) -> tuple[slice, slice] | None:
    """The rows and columns of the mask's box, grown by one pixel on each side where the image
    goes on; None (label the whole image) for an empty mask, or one whose box reaches two opposite
    edges of the image, around which the background may fall apart."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return None
    height, width = mask.shape
    y0, y1, x0, x1 = rows[0], rows[-1], cols[0], cols[-1]
    if (y0 == 0 and y1 == height - 1) or (x0 == 0 and x1 == width - 1):
        return None
    return slice(max(y0 - 1, 0), min(y1 + 2, height)), slice(max(x0 - 1, 0), min(x1 + 2, width))


def _fill_small_holes(mask: np.ndarray, min_area: int, outside: int) -> tuple[np.ndarray, bool] | None:
    """`mask` (a window of the image, `outside` pixels of background beyond it) with its holes
    under `min_area` filled, and whether any was; None when the background that reaches beyond the
    window is itself under `min_area` (only the whole image tells what then happens)."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats((~mask).astype(np.uint8), connectivity=8)
    sizes = stats[:, cv2.CC_STAT_AREA]
    if outside:
        # The window's rows and columns beyond the mask's box are background joined to the rest of
        # the image, so their component is larger by what lies outside the window. The box meets
        # at most one of the top and bottom edges, so the window's top or bottom row is such a row.
        border = labels[0, 0] if not mask[0].any() else labels[-1, 0]
        sizes = sizes.copy()
        sizes[border] += outside
        if sizes[border] < min_area:
            return None
    small = sizes[1:] < min_area
    if not small.any():
        return mask, False
    fill = np.concatenate([[True], small])  # label 0 is the mask itself
    return np.take(fill, labels), True  # np.take: twice as fast as fancy indexing here
