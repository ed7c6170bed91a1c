"""Crop geometry and mask operations against the public segment_anything utilities."""

import numpy as np
import pytest
import torch
from segment_anything.utils import amg as official

from sam_core.amg.crops import crop_boxes, layer_point_grids
from sam_core.mask_ops import (
    encode_rles,
    mask_runs,
    masks_to_boxes,
    near_crop_edge,
    rle_runs,
    rles_from_runs,
    runs_area,
    runs_in_frame,
    stability_scores,
)


@pytest.mark.parametrize("size", [(534, 800), (1500, 2250), (2250, 1500), (8, 8), (1, 1), (100, 37)])
@pytest.mark.parametrize("layers", [0, 1, 2, 3])
def test_crop_boxes_equal_the_public_geometry(size, layers):
    boxes, layer_ids = official.generate_crop_boxes(size, layers, 512 / 1500)
    ours = crop_boxes(size, layers, 512 / 1500)
    assert [list(b.xyxy) for b in ours] == boxes
    assert [b.layer for b in ours] == layer_ids


def test_sa1b_geometry_has_21_crops():
    boxes = crop_boxes((1500, 2250), 2, 512 / 1500)
    assert [sum(b.layer == i for b in boxes) for i in range(3)] == [1, 4, 16]


@pytest.mark.parametrize(("side", "layers", "factor"), [(32, 0, 1), (32, 2, 2), (16, 3, 2), (7, 1, 3)])
def test_point_grids_equal_the_public_ones(side, layers, factor):
    for ours, theirs in zip(
        layer_point_grids(side, layers, factor), official.build_all_layer_point_grids(side, layers, factor)
    ):
        np.testing.assert_allclose(ours, theirs, atol=1e-12)


def _random_masks(count=40, size=(60, 80), seed=0):
    """Blobby random masks: thresholded smoothed noise, with holes and islands of many sizes."""
    rng = np.random.default_rng(seed)
    noise = torch.from_numpy(rng.normal(size=(count, 1, size[0] // 4, size[1] // 4))).float()
    smooth = torch.nn.functional.interpolate(noise, size, mode="bilinear", align_corners=False)[:, 0]
    masks = smooth > torch.linspace(-1.5, 1.5, count)[:, None, None]
    masks[0] = False  # an empty mask
    return smooth, masks


def test_boxes_and_stability_equal_the_public_ones():
    logits, masks = _random_masks()
    assert torch.equal(masks_to_boxes(masks), official.batched_mask_to_box(masks))
    for offset in (0.5, 1.0):
        ours, theirs = stability_scores(logits, 0.0, offset), official.calculate_stability_score(logits, 0.0, offset)
        assert torch.equal(torch.isnan(ours), torch.isnan(theirs))
        torch.testing.assert_close(ours[~torch.isnan(ours)], theirs[~torch.isnan(theirs)])


def test_crop_edge_test_equals_the_public_one():
    rng = np.random.default_rng(1)
    boxes = torch.from_numpy(rng.integers(0, 800, (200, 4))).sort(dim=1).values[:, [0, 2, 1, 3]]
    crop, image = [300, 200, 800, 600], [0, 0, 800, 600]
    theirs = official.is_box_near_crop_edge(boxes - torch.tensor([300, 200, 300, 200]), crop, image)
    assert torch.equal(near_crop_edge(boxes, crop, image, 20.0), theirs)


@pytest.mark.parametrize(
    ("crop_hw", "offset", "frame_hw"),
    [
        ((5, 7), (3, 2), (11, 13)),
        ((11, 4), (6, 0), (11, 13)),
        ((1, 9), (0, 10), (11, 13)),
        ((11, 13), (0, 0), (11, 13)),
    ],
)
def test_runs_moved_into_a_frame_equal_the_mask_placed_there(crop_hw, offset, frame_hw):
    rng = np.random.default_rng(sum(crop_hw) + sum(offset))
    masks = rng.random((6, *crop_hw)) < 0.5
    masks[1] = True  # every pixel: runs that span all columns
    masks[2] = False
    masks[3, :, 0] = True  # the first column on, runs that cross column ends
    placed = np.zeros((len(masks), *frame_hw), bool)
    x0, y0 = offset
    placed[:, y0 : y0 + crop_hw[0], x0 : x0 + crop_hw[1]] = masks
    runs = [runs_in_frame(r, crop_hw, offset, frame_hw) for r in mask_runs(torch.from_numpy(masks))]
    assert rles_from_runs(runs, frame_hw) == encode_rles(torch.from_numpy(placed))
    assert [runs_area(r) for r in runs] == placed.sum(axis=(1, 2)).tolist()


@pytest.mark.parametrize("density", [0.0, 0.02, 0.5, 1.0])
def test_runs_read_from_an_rle_equal_the_masks_runs(density):
    """COCO's compressed counts (5-bit chunks, signed differences from the fourth count on),
    read without decoding, give the runs `mask_runs` finds in the pixels."""
    rng = np.random.default_rng(6)
    masks = torch.from_numpy(rng.random((6, 90, 70)) < density)
    masks[0] = torch.from_numpy(np.kron(rng.random((23, 18)) < 0.5, np.ones((4, 4), dtype=bool))[:90, :70])
    for rle, runs in zip(encode_rles(masks), mask_runs(masks)):
        assert np.array_equal(rle_runs(rle), runs)
