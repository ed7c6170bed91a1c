import numpy as np
import pytest
import torch

from curation.filters import QualityFilters, apply_filters, image_coverage
from sam_core.mask_ops import encode_rles

SIZE = (10, 20)  # (height, width): 200 pixels


def _annotation(rows: slice, cols: slice, iou: float, stability: float) -> dict:
    mask = np.zeros(SIZE, bool)
    mask[rows, cols] = True
    return {
        "id": 99,
        "segmentation": encode_rles(torch.from_numpy(mask)[None])[0],
        "area": int(mask.sum()),
        "predicted_iou": iou,
        "stability_score": stability,
    }


ANNOTATIONS = [
    _annotation(slice(0, 10), slice(0, 20), 0.99, 0.99),  # 200 px: the whole image
    _annotation(slice(0, 5), slice(0, 4), 0.80, 0.99),  # 20 px, low IoU
    _annotation(slice(5, 10), slice(0, 4), 0.95, 0.70),  # 20 px, unstable
    _annotation(slice(0, 1), slice(0, 2), 0.97, 0.98),  # 2 px: tiny
    _annotation(slice(0, 5), slice(10, 20), 0.93, 0.96),  # 50 px
    _annotation(slice(5, 10), slice(10, 20), 0.91, 0.97),  # 50 px
]


def test_each_mask_counted_under_the_first_filter_that_removes_it():
    filters = QualityFilters(min_predicted_iou=0.85, min_stability_score=0.9, min_area_fraction=0.05,
                             max_area_fraction=0.9)  # fmt: skip
    result = apply_filters(ANNOTATIONS, SIZE, filters)
    assert result.masks_removed == {
        "max_area_fraction": 1,
        "min_predicted_iou": 1,
        "min_stability_score": 1,
        "min_area_fraction": 1,
    }
    assert [a["area"] for a in result.annotations] == [50, 50]
    assert [a["predicted_iou"] for a in result.annotations] == [0.93, 0.91] and result.image_dropped_by == ""


def test_no_filters_keep_everything():
    result = apply_filters(ANNOTATIONS, SIZE, QualityFilters())
    assert len(result.annotations) == len(ANNOTATIONS) and result.masks_removed == {}
    assert QualityFilters().active() == {}


def test_max_masks_keeps_the_highest_predicted_iou_in_their_order():
    result = apply_filters(ANNOTATIONS, SIZE, QualityFilters(max_masks_per_image=3))
    assert [a["predicted_iou"] for a in result.annotations] == [0.99, 0.95, 0.97]
    assert result.masks_removed == {"max_masks_per_image": 3}


def test_image_filters_drop_the_image_with_a_reason():
    few = apply_filters(ANNOTATIONS, SIZE, QualityFilters(min_predicted_iou=0.96, min_masks_per_image=3))
    assert few.image_dropped_by == "min_masks_per_image" and "2 masks left" in few.reason
    # The two 50 px masks and the two 20 px ones cover 140 of 200 pixels (the 2 px one lies inside one).
    coverage = apply_filters(ANNOTATIONS, SIZE, QualityFilters(max_area_fraction=0.5, min_image_coverage=0.75))
    assert coverage.image_dropped_by == "min_image_coverage" and "0.700" in coverage.reason
    enough = apply_filters(ANNOTATIONS, SIZE, QualityFilters(max_area_fraction=0.5, min_image_coverage=0.7))
    assert enough.image_dropped_by == ""


def test_image_coverage_counts_overlaps_once():
    assert image_coverage(ANNOTATIONS[:1] + ANNOTATIONS[4:], 200.0) == 1.0
    assert image_coverage(ANNOTATIONS[4:], 200.0) == 0.5
    assert image_coverage([], 200.0) == 0.0


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"min_predicted_iou": 1.5}, "min_predicted_iou must lie in [0, 1]"),
        ({"max_masks_per_image": -1}, "max_masks_per_image must be a whole number"),
        ({"min_area_fraction": 0.5, "max_area_fraction": 0.1}, "is above max_area_fraction"),
        ({"min_masks_per_image": 5, "max_masks_per_image": 2}, "is above max_masks_per_image"),
    ],
)
def test_bad_filters_are_refused(settings, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        QualityFilters(**settings)
