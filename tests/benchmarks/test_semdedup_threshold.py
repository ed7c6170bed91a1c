"""The threshold benchmark's variants and figures, on one small photo (its full run embeds ~900 images)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from benchmarks.semdedup_threshold import (
    KINDS,
    Sample,
    choose,
    distinct_pairs,
    duplicate_pairs,
    make_variants,
    sweep,
)
from curation.images import decode_image


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """scikit-image's astronaut at 160x240 (H x W): a real photo, small enough to be cheap."""
    return cv2.resize(skimage.data.astronaut(), (240, 160), interpolation=cv2.INTER_AREA)


def test_variants_are_seeded_and_of_the_stated_kinds(photo):
    variants = make_variants(photo, np.random.default_rng([0, 0]))
    again = make_variants(photo, np.random.default_rng([0, 0]))
    other = make_variants(photo, np.random.default_rng([1, 0]))
    roles = [role for role, _ in variants]
    assert roles == ["original", *[kind for kind in KINDS if kind != "viewpoint"], "viewpoint a", "viewpoint b"]
    assert variants == again
    assert [data for _, data in variants] != [data for _, data in other]

    images = {role: decode_image(data) for role, data in variants}
    area = photo.shape[0] * photo.shape[1]
    for kind, (low, high) in {"crop 10-25%": (0.75, 0.90), "crop 25-40%": (0.60, 0.75)}.items():
        kept = images[kind].shape[0] * images[kind].shape[1] / area
        assert low - 0.03 <= kept <= high + 0.03, (kind, kept)  # sides are rounded to whole pixels
    mirrored = images["original"][:, ::-1].astype(np.int16)
    assert np.abs(images["flip"].astype(np.int16) - mirrored).mean() < 3  # JPEG noise only
    assert images["colour"].shape == photo.shape and np.abs(images["colour"].astype(int) - photo).mean() > 5
    first, second = images["viewpoint a"].shape, images["viewpoint b"].shape
    assert abs(first[0] - second[0]) <= 1 and abs(first[1] - second[1]) <= 1  # windows of one size
    assert 0.6 * photo.shape[1] - 1 <= images["viewpoint a"].shape[1] <= 0.8 * photo.shape[1] + 1
    assert 0.5 * photo.shape[1] - 1 <= images["jpeg"].shape[1] <= photo.shape[1]


def test_pairs_name_each_kind_once_per_photo_and_every_cross_photo_pair():
    samples = [
        Sample(photo, role, b"") for photo in (0, 1) for role in ("original", *KINDS[:-1], "viewpoint a", "viewpoint b")
    ]
    pairs, kinds = duplicate_pairs(samples)
    assert sorted(kinds.tolist()) == sorted(list(range(len(KINDS))) * 2)
    assert all(samples[a].photo == samples[b].photo for a, b in pairs)
    viewpoint = pairs[kinds == KINDS.index("viewpoint")]
    assert {(samples[a].role, samples[b].role) for a, b in viewpoint} == {("viewpoint a", "viewpoint b")}
    distinct = distinct_pairs(np.array([sample.photo for sample in samples]))
    assert len(distinct) == 8 * 8 and all(samples[a].photo != samples[b].photo for a, b in distinct)


def test_sweep_and_choice_worked_by_hand():
    duplicate_scores = np.array([0.99, 0.95, 0.85, 0.97, 0.90, 0.80])
    duplicate_kinds = np.arange(len(KINDS))
    distinct_scores = np.array([0.96, 0.50, 0.10])
    rows = sweep(duplicate_scores, duplicate_kinds, distinct_scores, [0.9, 0.95, 0.97], closer_is_higher=True)
    assert [(row.precision, row.recall, row.false_pairs) for row in rows] == [
        (4 / 5, 4 / 6, 1),
        (3 / 4, 3 / 6, 1),
        (1.0, 2 / 6, 0),
    ]
    assert rows[2].recall_by_kind == (1.0, 0.0, 0.0, 1.0, 0.0, 0.0)
    assert rows[0].false_per_million == pytest.approx(1e6 / 3)
    assert choose(rows, 0.99, True) is rows[2]
    assert choose(rows, 0.75, True) is rows[0]
    assert choose(rows[:2], 0.99, True) is None
    hamming = sweep(np.array([2, 9, 12, 0, 4, 30]), duplicate_kinds, np.array([9, 40]), [9], closer_is_higher=False)
    assert (hamming[0].precision, hamming[0].recall) == (4 / 5, 4 / 6)
    tied = sweep(np.array([2, 3]), np.zeros(2, int), np.array([40]), [3, 4, 5], closer_is_higher=False)
    assert choose(tied, 0.99, False).threshold == 3  # equal figures: the stricter distance
