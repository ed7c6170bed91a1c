"""The clean-up of one mask: holes and islands under a minimum area removed as the public code
removes them, computed on the mask's runs instead of its pixels.

The public code labels the connected components (8-connectivity) of the whole image twice per
mask, background then foreground. Here the mask stays what its RLE holds, runs down the columns:
each run (of either value) is cut at the column ends into segments, a segment touches the
segments of its value in the next column whose rows reach within one row of its own, and the
components are those of that graph. Its size is the number of runs, not of pixels, so the
cost follows the mask's outline instead of the image's area, and the mask is never decoded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.sparse import csr_array
from scipy.sparse.csgraph import connected_components

_EMPTY_BOX = (0, 0, 0, 0)


@dataclass(frozen=True)
class CleanedMask:
    """A mask after the clean-up."""

    runs: np.ndarray | None
    """Its runs of True (`mask_ops.mask_runs`' format, int64): the input itself when nothing
    changed; None when the paper's rule drops the mask."""
    changed: bool
    box: tuple[int, int, int, int]
    """XYXY of the cleaned mask, inclusive (x1 = last column), as `mask_ops.masks_to_boxes`
    gives it; 0, 0, 0, 0 for an empty or dropped mask."""
    area: int
    """Pixels of the cleaned mask."""


@dataclass(frozen=True)
class _Segments:
    """Pieces of runs, none crossing a column end, in column-major order: [start, end) positions
    in the column-major pixel order of an image `height` rows tall."""

    start: np.ndarray
    end: np.ndarray
    height: int

    def __len__(self) -> int:
        return len(self.start)

    def select(self, which: np.ndarray) -> _Segments:
        return _Segments(self.start[which], self.end[which], self.height)

    @property
    def column(self) -> np.ndarray:
        return self.start // self.height

    @property
    def top(self) -> np.ndarray:
        return self.start % self.height

    @property
    def bottom(self) -> np.ndarray:
        """The last row of each segment (inclusive)."""
        return (self.end - 1) % self.height

    def sizes(self, labels: np.ndarray, count: int) -> np.ndarray:
        """Pixels of each of `count` components, given each segment's label."""
        return np.bincount(labels, weights=self.end - self.start, minlength=count).astype(np.int64)


def remove_small_regions(
    runs: np.ndarray, size: tuple[int, int], min_area: int, drop_if_all_small: bool
) -> CleanedMask:
    """The (height, width) `size` mask given by its `runs` (`mask_ops.mask_runs`, `rle_runs`)
    with holes and islands of fewer than `min_area` pixels (8-connectivity) removed: holes are
    filled first, then islands removed, as the public code does. When every island is small, the
    public code keeps the largest one (the first in row order on ties); with `drop_if_all_small`
    (the paper's rule) the mask is dropped instead.
    """
    height, width = size
    pieces, is_mask = _split_at_columns(np.asarray(runs, dtype=np.int64), height, width)
    background = pieces.select(~is_mask)
    labels, count = _components(background)
    small_holes = background.sizes(labels, count) < min_area
    holes_changed = bool(small_holes.any())
    if holes_changed:
        is_mask = is_mask.copy()
        is_mask[np.flatnonzero(~is_mask)[small_holes[labels]]] = True
    mask = pieces.select(is_mask)
    labels, count = _components(mask)
    sizes = mask.sizes(labels, count)
    small = sizes < min_area
    if not small.any():
        if not holes_changed:
            return CleanedMask(runs, False, _box(mask), int(sizes.sum()))
        return CleanedMask(_joined(mask), True, _box(mask), int(sizes.sum()))
    if small.all():
        if drop_if_all_small:
            return CleanedMask(None, True, _EMPTY_BOX, 0)
        keep = np.zeros(count, dtype=bool)
        keep[_largest_first_in_row_order(mask, labels, sizes, width)] = True
    else:
        keep = ~small
    kept = mask.select(keep[labels])
    return CleanedMask(_joined(kept), True, _box(kept), int(sizes[keep].sum()))


def _split_at_columns(runs: np.ndarray, height: int, width: int) -> tuple[_Segments, np.ndarray]:
    """The runs of both values of the mask cut at every column end, and which are the mask's."""
    cuts = np.sort(np.concatenate([runs, np.arange(0, height * width + 1, height)]))
    cuts = cuts[np.concatenate([[True], cuts[1:] != cuts[:-1]])]  # np.unique hashes: several times slower
    pieces = _Segments(cuts[:-1], cuts[1:], height)
    # a piece is the mask's when an odd number of run bounds lies at or before its start
    return pieces, np.searchsorted(runs, pieces.start, side="right") % 2 == 1


def _components(segments: _Segments) -> tuple[np.ndarray, int]:
    """(label of each segment, number of components): the 8-connected components of segments
    of one value. Two segments touch when they are in neighbouring columns with rows within one
    of each other's, or follow each other in the same column."""
    n = len(segments)
    if n == 0:
        return np.zeros(0, dtype=np.int64), 0
    column, top, bottom = segments.column, segments.top, segments.bottom
    stride = segments.height + 2  # keys of different columns are at least two rows apart
    top_key, bottom_key = column * stride + top, column * stride + bottom
    previous = (column - 1) * stride
    # in the previous column: the first segment ending at or below the row above this one's
    # top, up to the last starting at or above the row below this one's bottom
    first = np.searchsorted(bottom_key, previous + top - 1, side="left")
    stop = np.searchsorted(top_key, previous + bottom + 1, side="right")
    in_previous = np.maximum(stop - first, 0)
    # and the segment just above in the same column (not across a column end), which happens
    # only where holes were filled
    above = np.zeros(n, dtype=np.int64)
    above[1:] = (segments.start[1:] == segments.end[:-1]) & (segments.start[1:] % segments.height != 0)
    # the graph in compressed rows, built as it is: each segment's row lists the touching
    # segments of the previous column, then the one above it
    per_row = in_previous + above
    row_starts = np.concatenate([[0], np.cumsum(per_row)])
    row = np.repeat(np.arange(n), per_row)
    place = np.arange(row_starts[-1]) - row_starts[row]
    neighbours = np.where(place < in_previous[row], first[row] + place, row - 1)
    graph = csr_array((np.ones(len(neighbours)), neighbours, row_starts), shape=(n, n))
    count, labels = connected_components(graph, directed=False)
    return labels.astype(np.int64), int(count)


def _largest_first_in_row_order(segments: _Segments, labels: np.ndarray, sizes: np.ndarray, width: int) -> int:
    """The largest component; on ties the one whose first pixel in row-major order comes first
    (the public code's choice: OpenCV numbers components in that order)."""
    tied = np.flatnonzero(sizes == sizes.max())
    if len(tied) == 1:
        return int(tied[0])
    first_pixel = np.full(len(sizes), np.iinfo(np.int64).max)
    np.minimum.at(first_pixel, labels, segments.top * width + segments.column)
    return int(tied[np.argmin(first_pixel[tied])])


def _joined(segments: _Segments) -> np.ndarray:
    """Runs (`mask_runs`' format) of the mask the segments make: segments that meet are joined."""
    start, end = segments.start, segments.end
    opens = np.concatenate([[True], start[1:] != end[:-1]])
    closes = np.concatenate([end[:-1] != start[1:], [True]])
    return np.stack([start[opens], end[closes]], axis=1).reshape(-1)


def _box(segments: _Segments) -> tuple[int, int, int, int]:
    if len(segments) == 0:
        return _EMPTY_BOX
    column = segments.column
    return (int(column[0]), int(segments.top.min()), int(column[-1]), int(segments.bottom.max()))
