"""How far two sets of mask records agree: one-to-one matching by mask IoU, and score differences."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools import mask as coco_mask


@dataclass(frozen=True)
class Agreement:
    """Matching of records `a` to records `b` (each matched at most once, at IoU >= threshold).

    matched_a / matched_b: shares of a's and of b's masks that found a partner (1.0 when a
    side is empty and so is the other). max_iou_score_diff and max_stability_diff: the largest
    difference of predicted_iou and stability_score over matched pairs (0 with no pairs).
    """

    count_a: int
    count_b: int
    matched: int
    min_matched_iou: float
    max_iou_score_diff: float
    max_stability_diff: float

    @property
    def matched_a(self) -> float:
        return self.matched / self.count_a if self.count_a else float(self.count_b == 0)

    @property
    def matched_b(self) -> float:
        return self.matched / self.count_b if self.count_b else float(self.count_a == 0)

    def __str__(self) -> str:
        return (
            f"{self.count_a} vs {self.count_b} masks, {self.matched} matched "
            f"({self.matched_a:.2%} / {self.matched_b:.2%}), max |d pred IoU| {self.max_iou_score_diff:.2e}, "
            f"max |d stability| {self.max_stability_diff:.2e}"
        )


def compare_records(
    a: Sequence[dict[str, Any]],
    b: Sequence[dict[str, Any]],
    iou_threshold: float = 0.95,
    score_window: float | None = None,
) -> Agreement:
    """Greedy one-to-one matching, highest mask IoU first, of SA-1B records with COCO RLE segmentations.

    Only pairs whose areas could reach `iou_threshold` (smaller / larger >= threshold) have
    their mask IoU computed; that bound is exact, so the matching is the same as over all pairs.

    score_window: consider only pairs whose predicted_iou differ by at most this much. Two
    implementations of the same model on the same prompt agree to far less than 1e-3, so a
    small window finds every true pair while skipping almost all mask IoUs, which is what
    matching hundreds of speckled masks would otherwise spend its time on. None compares all.
    """
    if not a or not b:
        return Agreement(len(a), len(b), 0, float("nan"), 0.0, 0.0)
    rles_a, rles_b = _rles(a), _rles(b)
    # area() of a whole list overflows a uint8 count in pycocotools 2.0.11 under numpy 2: one at a time.
    areas_a = np.array([coco_mask.area(rle) for rle in rles_a], dtype=np.float64)
    areas_b = np.array([coco_mask.area(rle) for rle in rles_b], dtype=np.float64)
    scores_b = np.array([record["predicted_iou"] for record in b])
    candidates: list[tuple[float, int, int]] = []
    for i, record in enumerate(a):
        # IoU <= smaller area / larger area, so partners outside that area ratio cannot match.
        plausible = (areas_b >= iou_threshold * areas_a[i]) & (iou_threshold * areas_b <= areas_a[i])
        if score_window is not None:
            plausible &= np.abs(scores_b - record["predicted_iou"]) <= score_window
        partners = np.flatnonzero(plausible)
        if len(partners) == 0:
            continue
        ious = np.asarray(coco_mask.iou([rles_a[i]], [rles_b[j] for j in partners], [0] * len(partners))).ravel()
        if areas_a[i] == 0:
            ious = np.where(areas_b[partners] == 0, 1.0, ious)  # two empty masks are the same mask
        candidates.extend((float(iou), i, int(j)) for iou, j in zip(ious, partners) if iou >= iou_threshold)
    pairs: list[tuple[int, int, float]] = []
    used_a, used_b = set(), set()
    for iou, i, j in sorted(candidates, key=lambda c: -c[0]):
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            pairs.append((i, j, iou))
    if not pairs:
        return Agreement(len(a), len(b), 0, float("nan"), 0.0, 0.0)
    iou_diff = max(_difference(a[i]["predicted_iou"], b[j]["predicted_iou"]) for i, j, _ in pairs)
    stability_diff = max(_difference(a[i]["stability_score"], b[j]["stability_score"]) for i, j, _ in pairs)
    return Agreement(len(a), len(b), len(pairs), min(p[2] for p in pairs), iou_diff, stability_diff)


def _difference(x: float, y: float) -> float:
    """|x - y|, with two NaNs (the stability of an empty mask) counting as equal."""
    if np.isnan(x) and np.isnan(y):
        return 0.0
    return abs(x - y) if not (np.isnan(x) or np.isnan(y)) else float("inf")


def _rles(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for record in records:
        rle = record["segmentation"]
        counts = rle["counts"]
        out.append({"size": rle["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts})
    return out
