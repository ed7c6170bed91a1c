"""The clean-up of small holes and islands against the public segment_anything code."""

import numpy as np
import pytest
import torch
from segment_anything.utils import amg as official

from sam_core.amg.small_regions import remove_small_regions
from sam_core.mask_ops import decode_rle, mask_runs, masks_to_boxes, rles_from_runs


def _blobby_masks(seed: int, count: int = 40, size: tuple[int, int] = (60, 80)) -> list[np.ndarray]:
    """Thresholded smoothed noise with holes and islands of many sizes, over the whole image
    and confined to a box inside it, and the empty mask."""
    rng = np.random.default_rng(seed)
    noise = torch.from_numpy(rng.normal(size=(count, 1, size[0] // 4, size[1] // 4))).float()
    smooth = torch.nn.functional.interpolate(noise, size, mode="bilinear", align_corners=False)[:, 0]
    masks = (smooth > torch.linspace(-1.5, 1.5, count)[:, None, None]).numpy()
    inner = np.zeros_like(masks)
    inner[:, 10:45, 20:70] = masks[:, 10:45, 20:70]
    return [*masks, *inner, np.zeros(size, dtype=bool)]


def _public(mask: np.ndarray, min_area: int) -> tuple[np.ndarray, bool]:
    holes, holes_changed = official.remove_small_regions(mask, min_area, "holes")
    islands, islands_changed = official.remove_small_regions(holes, min_area, "islands")
    return islands, holes_changed or islands_changed


def _cleaned(mask: np.ndarray, min_area: int, drop_if_all_small: bool):
    """Our clean-up of a pixel mask: the result and its pixels (None when dropped)."""
    cleaned = remove_small_regions(mask_runs(torch.from_numpy(mask)[None])[0], mask.shape, min_area, drop_if_all_small)
    pixels = None if cleaned.runs is None else decode_rle(rles_from_runs([cleaned.runs], mask.shape)[0])
    return cleaned, pixels


@pytest.mark.parametrize("min_area", [1, 5, 30, 200, 4800])
def test_public_clean_up_equals_the_public_code(min_area):
    for mask in _blobby_masks(seed=2):
        expected, expected_changed = _public(mask, min_area)
        cleaned, pixels = _cleaned(mask, min_area, drop_if_all_small=False)
        assert np.array_equal(pixels, expected)
        assert cleaned.changed == expected_changed
        assert cleaned.area == expected.sum()
        assert cleaned.box == tuple(masks_to_boxes(torch.from_numpy(expected)[None])[0].tolist())


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (3, 3)])
def test_tiny_images_equal_the_public_code(shape):
    rng = np.random.default_rng(4)
    for _ in range(30):
        mask = rng.random(shape) < 0.5
        expected, expected_changed = _public(mask, 2)
        cleaned, pixels = _cleaned(mask, 2, drop_if_all_small=False)
        assert np.array_equal(pixels, expected) and cleaned.changed == expected_changed


def test_equally_large_small_islands_keep_the_first_in_row_order():
    mask = np.zeros((40, 40), dtype=bool)
    mask[2:4, 30:32] = True  # first in row order
    mask[20:22, 1:3] = True  # first in column order, as the runs go
    expected, _ = _public(mask, 10)
    cleaned, pixels = _cleaned(mask, 10, drop_if_all_small=False)
    assert np.array_equal(pixels, expected) and pixels[2:4, 30:32].all()
    assert cleaned.box == (30, 2, 31, 3) and cleaned.area == 4


def test_paper_clean_up_drops_a_mask_whose_largest_island_is_small():
    mask = np.zeros((50, 50), dtype=bool)
    mask[5:10, 5:10] = True  # 25 px
    mask[30:38, 30:38] = True  # 64 px
    kept, pixels = _cleaned(mask, 50, drop_if_all_small=True)
    assert kept.changed and pixels.sum() == kept.area == 64 and pixels[30:38, 30:38].all()
    assert kept.box == (30, 30, 37, 37)
    dropped, _ = _cleaned(mask, 100, drop_if_all_small=True)
    assert dropped.runs is None and dropped.changed
    _, public = _cleaned(mask, 100, drop_if_all_small=False)
    assert public.sum() == 64  # the public code keeps the largest island instead
    hole = np.ones((20, 20), dtype=bool)
    hole[8:10, 8:10] = False
    filled, pixels = _cleaned(hole, 10, drop_if_all_small=True)
    assert filled.changed and pixels.all() and filled.area == 400


def test_an_unchanged_mask_keeps_its_runs():
    mask = np.zeros((30, 30), dtype=bool)
    mask[5:20, 5:25] = True
    runs = mask_runs(torch.from_numpy(mask)[None])[0]
    cleaned = remove_small_regions(runs, mask.shape, 10, drop_if_all_small=True)
    assert cleaned.runs is runs and not cleaned.changed
    assert cleaned.box == (5, 5, 24, 19) and cleaned.area == 300
