"""Mask properties on a release and on COCO files whose answers are worked out by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from analysis.accumulators import Histogram, StratifiedSample, seeded_hash
from analysis.mask_properties import (
    MASKS_PER_IMAGE_LABELS,
    RELATIVE_SIZE_EDGES,
    concavity,
    concavity_table,
    masks_per_image_table,
    overview_table,
    summarize_coco,
    summarize_release,
)
from analysis.release_index import ReleaseIndex
from tests.analysis.conftest import L_SHAPE_CONCAVITY, KnownRelease, l_shape, rectangle, write_coco


def test_concavity_of_known_shapes() -> None:
    assert concavity(rectangle(50, 50, 3, 4, 20, 7)) == 0.0
    assert concavity(l_shape(40, 40, 5, 5)) == pytest.approx(L_SHAPE_CONCAVITY)
    two_squares = rectangle(10, 30, 0, 0, 5, 5) | rectangle(10, 30, 25, 0, 5, 5)  # hull: the 30x5 band
    assert concavity(two_squares) == pytest.approx(1 - 50 / 150)
    with pytest.raises(ValueError, match="empty"):
        concavity(np.zeros((5, 5), bool))


def test_release_properties_match_hand_counts(known_release: KnownRelease) -> None:
    props = summarize_release(ReleaseIndex(known_release.uri), "known", concavity_sample=100, progress=None)
    assert (props.n_images, props.n_masks) == (3, 14)
    assert props.masks_per_image.tolist() == [2, 1, 0, 0, 0]  # 2 and 0 masks -> 0-10, 12 -> 11-50
    # relative sizes: twelve 4x4 squares sqrt(16/1e4)=0.04 (small), the L sqrt(300/2e4)=0.122 (medium),
    # the 100x50 rectangle sqrt(5000/2e4)=0.5 (large)
    assert props.size_classes.tolist() == [12, 1, 1]
    expected = np.zeros(len(RELATIVE_SIZE_EDGES) - 1, np.int64)
    expected[[1, 4, 20]] = [12, 1, 1]
    assert props.relative_size.counts.tolist() == expected.tolist()
    assert [c.tolist() for c in props.concavity] == [[0.0] * 12, [pytest.approx(L_SHAPE_CONCAVITY)], [0.0]]
    centers = [(0.05, 0.1), (0.75, 0.75)] + [((8 * k + 2) / 100, (8 * (k % 3) + 2) / 100) for k in range(12)]
    assert props.mean_center_distance == pytest.approx(np.mean([np.hypot(x - 0.5, y - 0.5) for x, y in centers]))
    grid = np.zeros((50, 50), np.int64)
    for x, y in centers:
        grid[int(y * 50), int(x * 50)] += 1
    assert props.centers.counts.tolist() == grid.tolist()
    assert props.predicted_iou is not None and props.predicted_iou.total == 14
    table = masks_per_image_table([props])
    assert table["known"].tolist() == pytest.approx([2 / 3, 1 / 3, 0, 0, 0])
    assert list(table.index) == list(MASKS_PER_IMAGE_LABELS)
    assert overview_table([props])["masks_per_image"].item() == pytest.approx(14 / 3)


@pytest.mark.parametrize("polygons", [False, True])
def test_coco_file_gives_the_same_properties(known_release: KnownRelease, tmp_path: Path, polygons: bool) -> None:
    release = summarize_release(ReleaseIndex(known_release.uri), "known", concavity_sample=100, progress=None)
    coco = summarize_coco(str(write_coco(tmp_path / "c.json", known_release, polygons)), "coco", 100, progress=None)
    assert (coco.n_images, coco.n_masks) == (release.n_images, release.n_masks)
    assert coco.masks_per_image.tolist() == release.masks_per_image.tolist()
    assert coco.relative_size.counts.tolist() == release.relative_size.counts.tolist()
    assert coco.centers.counts.tolist() == release.centers.counts.tolist()
    assert [sorted(c.round(6)) for c in coco.concavity] == [sorted(c.round(6)) for c in release.concavity]
    assert coco.predicted_iou is None  # a COCO file has no model scores
    table = concavity_table([release, coco])
    assert table.groupby("dataset")["masks"].sum().to_dict() == {"coco": 14, "known": 14}


def test_coco_file_with_many_masks(tmp_path: Path) -> None:
    """300 masks (pycocotools' own `area` fails from 256 on under numpy 2): all counted."""
    images = [{"id": 1, "height": 40, "width": 60}]
    annotations = [
        {"id": k + 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [k % 50, 3, 4, 5],
         "segmentation": [[k % 50, 3, k % 50 + 4, 3, k % 50 + 4, 8, k % 50, 8]], "area": 20.0}
        for k in range(300)
    ]  # fmt: skip
    path = tmp_path / "many.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "x"}]}))
    props = summarize_coco(str(path), "many", concavity_sample=10, progress=None)
    assert (props.n_masks, props.masks_per_image.tolist()) == (300, [0, 0, 0, 0, 1])
    assert props.relative_size.total == 300 and props.size_classes.sum() == 300


def test_coco_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not a readable COCO"):
        summarize_coco(str(bad), "bad", progress=None)
    no_annotations = tmp_path / "images_only.json"
    no_annotations.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="'images' and 'annotations'"):
        summarize_coco(str(no_annotations), "x", progress=None)


def test_stratified_sample_is_order_independent_and_bounded() -> None:
    keys = np.arange(5000, dtype=np.int64)
    strata = keys % 3
    whole = StratifiedSample(k=50, n_strata=3, seed=7)
    whole.add(keys, strata, lambda i: int(keys[i]))
    pieces = StratifiedSample(k=50, n_strata=3, seed=7)
    order = np.random.default_rng(0).permutation(len(keys))
    for chunk in np.array_split(order, 37):
        pieces.add(keys[chunk], strata[chunk], lambda i, chunk=chunk: int(keys[chunk][i]))
    for s in range(3):
        assert pieces.items(s) == whole.items(s)
        assert len(whole.items(s)) == 50 and all(k % 3 == s for k in whole.items(s))
        expected = keys[strata == s][np.argsort(seeded_hash(keys[strata == s], 7), kind="stable")[:50]]
        assert whole.items(s) == expected.tolist()
    assert whole.seen.tolist() == [1667, 1667, 1666]
    other_seed = StratifiedSample(k=50, n_strata=3, seed=8)
    other_seed.add(keys, strata, lambda i: int(keys[i]))
    assert other_seed.items(0) != whole.items(0)


def test_histogram_counts_and_errors() -> None:
    histogram = Histogram(np.array([0.0, 0.5, 1.0]))
    histogram.add(np.array([0.0, 0.49, 0.5, 1.0, 7.0, np.nan]))  # 1.0 and 7.0 clip into the last bin
    assert histogram.counts.tolist() == [2, 3]
    with pytest.raises(ValueError, match="increasing"):
        Histogram(np.array([1.0, 0.0]))
