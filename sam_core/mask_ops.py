"""Operations on candidate masks: stability, boxes, NMS, crop-edge test, RLE, resampling."""

from __future__ import annotations

import re
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
    return _as_text(coco_mask.encode(np.asfortranarray(masks.permute(1, 2, 0).numpy().view(np.uint8))))


def _as_text(encoded: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """pycocotools' RLEs with their counts as str, as JSON and the records hold them."""
    return [{"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")} for rle in encoded]


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
    return _as_text(coco_mask.frPyObjects(uncompressed, h, w))


def rle_runs(rle: dict[str, Any]) -> np.ndarray:
    """A COCO RLE's runs of True (`mask_runs`' format, int64), read from its counts without
    decoding the mask."""
    bounds = np.cumsum(rle_counts(rle))
    starts, ends = bounds[0 : len(bounds) - 1 : 2], bounds[1::2]  # the counts alternate False, True
    present = ends > starts
    return np.stack([starts[present], ends[present]], axis=1).reshape(-1)


_WELL_FORMED_COUNTS = re.compile(rb"(?:[0-o]*[0-O])?")
"""Compressed counts: characters '0'..'o', the last one ending its value (no 0x20 chunk bit)."""


def rle_counts(rle: dict[str, Any]) -> np.ndarray:
    """A COCO RLE's run lengths (int64, column-major, alternately False and True from a run of
    False), read from its counts (compressed str or bytes, or a list) without decoding the mask.
    ValueError for compressed counts that are not well formed; the lengths themselves are not
    checked against the RLE's size."""
    counts = rle["counts"]
    text = counts.encode("ascii") if isinstance(counts, str) else counts  # UnicodeError: a ValueError
    if isinstance(text, bytes) and not _WELL_FORMED_COUNTS.fullmatch(text):
        raise ValueError(f"malformed compressed RLE counts {text[:40]!r}")
    return _compressed_counts(text)


def _compressed_counts(text: bytes | list[int]) -> np.ndarray:
    """The run lengths of COCO's compressed counts string (uncompressed counts pass through).

    Each count is written in 5-bit chunks, least significant first, as characters from 48 on;
    0x20 marks that another chunk follows and 0x10 in the last chunk a negative number. From the
    fourth count on, each is stored as its difference from the count two before it.
    """
    if isinstance(text, list):
        return np.asarray(text, dtype=np.int64)
    chunks = np.frombuffer(text, dtype=np.uint8).astype(np.int64) - 48
    if len(chunks) == 0:
        return chunks
    last = (chunks & 0x20) == 0
    first = np.flatnonzero(np.concatenate([[True], last[:-1]]))
    lengths = np.diff(np.append(first, len(chunks)))
    shift = 5 * (np.arange(len(chunks)) - np.repeat(first, lengths))
    values = np.add.reduceat((chunks & 0x1F) << shift, first)
    negative = (chunks[last] & 0x10) != 0
    values[negative] -= np.left_shift(1, 5 * lengths[negative])
    values[2::2] = np.cumsum(values[2::2])
    values[1::2] = np.cumsum(values[1::2])
    return values


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
    """A COCO RLE (compressed, counts as str or bytes) to an HxW bool mask, column-major
    (Fortran-ordered) as the RLE runs."""
    return coco_mask.decode(_coco_ready(rle)).view(bool)


def _coco_ready(rle: dict[str, Any]) -> dict[str, Any]:
    counts = rle["counts"]
    return {"size": rle["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
