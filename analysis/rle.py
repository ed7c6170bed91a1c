"""Compressed COCO RLE strings read with numpy: run lengths without rasterising the mask, and the
concavity of a mask from its runs alone (a 1500x2250 mask never has to be decoded to pixels)."""

from __future__ import annotations

import cv2
import numpy as np


def rle_runs(counts: str) -> np.ndarray | None:
    """The run lengths (int64, column-major, starting with a run of 0s) of a compressed COCO RLE
    `counts` string, decoded as pycocotools' rleFrString does; None if the string is malformed."""
    try:
        chars = np.frombuffer(counts.encode("ascii"), np.uint8).astype(np.int64) - 48
    except UnicodeEncodeError:
        return None
    if len(chars) == 0 or chars.min() < 0 or chars.max() > 63 or chars[-1] & 0x20:
        return None
    ends = np.flatnonzero((chars & 0x20) == 0)  # the last character of each value
    starts = np.r_[0, ends[:-1] + 1]
    lengths = ends - starts + 1
    if lengths.max() > 12:  # more than 60 bits
        return None
    shift = 5 * (np.arange(len(chars)) - np.repeat(starts, lengths))
    values = np.add.reduceat((chars & 0x1F) << shift, starts)
    values = np.where(chars[ends] & 0x10, values - (np.int64(1) << (5 * lengths)), values)
    runs = values.copy()  # from the fourth run on, each value is a difference to the run two before
    runs[3::2] = np.cumsum(values[1::2])[1:]
    runs[4::2] = np.cumsum(values[2::2])[1:]
    return runs


def concavity_of_runs(height: int, runs: np.ndarray) -> float:
    """1 - area / convex-hull area of the mask with column-major `runs` in images `height` pixels tall.

    The hull is that of the foreground pixel centres, rasterised on the same grid (pixels whose
    centres lie in it), so a convex mask scores exactly 0. Only the first and last pixel of each
    foreground run can be hull vertices, plus, for a run that wraps into later columns, the ends
    of the columns it covers; the hull is built from those few points. An empty mask raises ValueError.
    """
    ends = np.cumsum(runs)
    first = (ends - runs)[1::2]
    last = ends[1::2] - 1
    present = runs[1::2] > 0
    first, last = first[present], last[present]
    if len(first) == 0:
        raise ValueError("concavity of an empty mask is undefined")
    area = int(runs[1::2].sum())
    col0, row0 = np.divmod(first, height)
    col1, row1 = np.divmod(last, height)
    wraps = col1 > col0  # the run goes down to the bottom of col0 and starts col1 at the top
    inner = col1 - col0 >= 2  # ... and covers whole columns in between
    xs = [col0, col1, col0[wraps], col1[wraps], col0[inner] + 1, col0[inner] + 1, col1[inner] - 1, col1[inner] - 1]
    bottom = height - 1
    ys = [row0, row1, np.full(wraps.sum(), bottom), np.zeros(wraps.sum(), np.int64)]
    ys += [np.zeros(inner.sum(), np.int64), np.full(inner.sum(), bottom)] * 2
    points = np.stack([np.concatenate(xs), np.concatenate(ys)], axis=1)
    origin = points.min(axis=0)
    points = (points - origin).astype(np.int32)
    x_extent, y_extent = points.max(axis=0) + 1
    filled = np.zeros((y_extent, x_extent), np.uint8)
    cv2.fillConvexPoly(filled, cv2.convexHull(points), 1)
    return 1.0 - area / max(int(filled.sum()), area)
