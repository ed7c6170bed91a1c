"""Quality filters on an image's automatic masks, applied after the generator, with tallies.

The generator's own thresholds (predicted IoU, stability) decide what it proposes; these filters
are the release's curation on top, each off unless set. They run in this order, and every removed
mask or image is counted under the first filter that removed it:

    mask filters    min_predicted_iou, min_stability_score, min_area_fraction, max_area_fraction
    truncation      max_masks_per_image (keeps the masks with the highest predicted IoU)
    image filters   min_masks_per_image, min_image_coverage (the image is not released; the job
                    records it in the failures table with stage "filter" and the reason)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from pycocotools import mask as mask_utils

MASKS_REMOVED = "masks_removed."
IMAGES_REMOVED = "images_removed."
"""Prefixes of the shard tallies that count, per filter name, the masks and images it removed."""

Annotation = dict[str, Any]
"""One SA-1B annotation: segmentation (COCO RLE), bbox, area, predicted_iou, stability_score, ..."""


@dataclass(frozen=True)
class QualityFilters:
    """Which masks and images a release keeps; None switches a filter off. Fractions are of the image area."""

    min_predicted_iou: float | None = None
    """Masks whose predicted IoU is below this are removed."""
    min_stability_score: float | None = None
    """Masks whose stability score is below this are removed."""
    min_area_fraction: float | None = None
    """Masks smaller than this fraction of the image are removed."""
    max_area_fraction: float | None = None
    """Masks larger than this fraction of the image are removed."""
    max_masks_per_image: int | None = None
    """At most this many masks per image: those with the highest predicted IoU."""
    min_masks_per_image: int | None = None
    """Images left with fewer masks are not released."""
    min_image_coverage: float | None = None
    """Images whose masks together cover less than this fraction of the image are not released."""

    def __post_init__(self) -> None:
        problems = []
        for name in ("min_predicted_iou", "min_stability_score", "min_area_fraction", "max_area_fraction",
                     "min_image_coverage"):  # fmt: skip
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                problems.append(f"{name} must lie in [0, 1], got {value}")
        for name in ("max_masks_per_image", "min_masks_per_image"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                problems.append(f"{name} must be a whole number >= 0, got {value!r}")
        low, high = self.min_area_fraction, self.max_area_fraction
        if low is not None and high is not None and low > high:
            problems.append(f"min_area_fraction {low} is above max_area_fraction {high}")
        low, high = self.min_masks_per_image, self.max_masks_per_image
        if low is not None and high is not None and low > high:
            problems.append(f"min_masks_per_image {low} is above max_masks_per_image {high}")
        if problems:
            raise ValueError("invalid quality filters: " + "; ".join(problems))

    def active(self) -> dict[str, Any]:
        """The filters that are switched on, with their values."""
        return {name: value for name, value in asdict(self).items() if value is not None}


@dataclass(frozen=True)
class FilterResult:
    """What the filters left of one image: the kept annotations (in their order, ids untouched), the
    number of masks each filter removed, and why the whole image is dropped ("" when it is kept)."""

    annotations: list[Annotation]
    masks_removed: dict[str, int] = field(default_factory=dict)
    image_dropped_by: str = ""
    reason: str = ""

    def tallies(self) -> dict[str, int]:
        """This image's part of the shard tallies: masks removed per filter (MASKS_REMOVED + name)
        and, when an image filter dropped it, one image removed (IMAGES_REMOVED + name)."""
        counts = {MASKS_REMOVED + name: n for name, n in self.masks_removed.items()}
        if self.image_dropped_by:
            counts[IMAGES_REMOVED + self.image_dropped_by] = 1
        return counts


MaskTest = Callable[[Annotation, float, QualityFilters], bool]
"""(annotation, image area in pixels, filters) -> True when the mask stays."""

_MASK_TESTS: dict[str, MaskTest] = {
    "min_predicted_iou": lambda a, _, f: a["predicted_iou"] >= f.min_predicted_iou,
    "min_stability_score": lambda a, _, f: a["stability_score"] >= f.min_stability_score,
    "min_area_fraction": lambda a, area, f: a["area"] >= f.min_area_fraction * area,
    "max_area_fraction": lambda a, area, f: a["area"] <= f.max_area_fraction * area,
}


def apply_filters(annotations: list[Annotation], image_size: tuple[int, int], filters: QualityFilters) -> FilterResult:
    """Run `filters` over the annotations of a (height, width) image."""
    image_area = float(image_size[0] * image_size[1])
    removed: Counter[str] = Counter()
    kept = []
    for annotation in annotations:
        failed = next(
            (name for name, test in _MASK_TESTS.items()
             if getattr(filters, name) is not None and not test(annotation, image_area, filters)),
            None,
        )  # fmt: skip
        if failed is None:
            kept.append(annotation)
        else:
            removed[failed] += 1
    if filters.max_masks_per_image is not None and len(kept) > filters.max_masks_per_image:
        removed["max_masks_per_image"] += len(kept) - filters.max_masks_per_image
        best = sorted(range(len(kept)), key=lambda i: -kept[i]["predicted_iou"])[: filters.max_masks_per_image]
        kept = [kept[i] for i in sorted(best)]
    dropped_by, reason = _image_verdict(kept, image_area, filters)
    return FilterResult(kept, dict(removed), dropped_by, reason)


def _image_verdict(kept: list[Annotation], image_area: float, filters: QualityFilters) -> tuple[str, str]:
    """(the image filter that drops the image, its reason), or ("", "") when the image stays."""
    if filters.min_masks_per_image is not None and len(kept) < filters.min_masks_per_image:
        return (
            "min_masks_per_image",
            f"{len(kept)} masks left, fewer than min_masks_per_image {filters.min_masks_per_image}",
        )
    if filters.min_image_coverage is not None:
        coverage = image_coverage(kept, image_area)
        if coverage < filters.min_image_coverage:
            return "min_image_coverage", f"masks cover {coverage:.3f} of the image, below {filters.min_image_coverage}"
    return "", ""


def image_coverage(annotations: list[Annotation], image_area: float) -> float:
    """The fraction of the image inside at least one of the masks."""
    if not annotations:
        return 0.0
    union = mask_utils.merge([a["segmentation"] for a in annotations])
    return float(mask_utils.area(union)) / image_area
