"""Compressed RLE read with numpy: runs equal to pycocotools', concavity from runs equal to the pixel hull."""

from __future__ import annotations

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from analysis.rle import concavity_of_runs, rle_runs


def rle(mask: np.ndarray) -> dict:
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": encoded["size"], "counts": encoded["counts"].decode()}


def test_rle_runs_match_pycocotools() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        h, w = rng.integers(1, 120, 2)
        mask = rng.random((h, w)) < rng.random()
        flat = mask.T.ravel()
        edges = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
        runs = np.diff(np.r_[0, edges, flat.size])
        expected = np.r_[0, runs] if flat[0] else runs
        assert rle_runs(rle(mask)["counts"]).tolist() == expected.tolist()
    assert rle_runs("") is None and rle_runs("zzzz") is None and rle_runs("é") is None


def _pixel_hull_concavity(mask: np.ndarray) -> float:
    """The definition, on every foreground pixel: hull of all pixel centres, rasterised."""
    points = cv2.findNonZero(mask.astype(np.uint8))
    filled = np.zeros(mask.shape, np.uint8)
    cv2.fillConvexPoly(filled, cv2.convexHull(points), 1)
    return 1 - mask.sum() / max(int(filled.sum()), int(mask.sum()))


def test_concavity_from_runs_equals_the_pixel_hull() -> None:
    rng = np.random.default_rng(5)
    for trial in range(60):
        h, w = (int(v) for v in rng.integers(1, 90, 2))
        if trial % 3 == 0:  # scattered pixels: runs that wrap over columns, whole columns
            mask = rng.random((h, w)) < rng.uniform(0.05, 0.95)
        else:  # a few filled ellipses and rectangles
            mask = np.zeros((h, w), np.uint8)
            for _ in range(int(rng.integers(1, 4))):
                cv2.ellipse(
                    mask,
                    (int(rng.integers(0, w)), int(rng.integers(0, h))),
                    (int(rng.integers(1, 40)), int(rng.integers(1, 40))),
                    float(rng.uniform(0, 180)),
                    0,
                    360,
                    1,
                    -1,
                )
            mask = mask.astype(bool)
        if not mask.any():
            continue
        runs = rle_runs(rle(mask)["counts"])
        assert concavity_of_runs(h, runs) == _pixel_hull_concavity(mask)
    full = np.ones((7, 5), bool)
    assert concavity_of_runs(7, rle_runs(rle(full)["counts"])) == 0.0
