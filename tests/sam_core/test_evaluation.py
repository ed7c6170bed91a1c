"""The evaluation protocol on known answers: ground truth as proposals scores 1, nothing scores 0,
and the low-res round trip loses exactly the pixels that bilinear upsampling of a coverage grid must."""

import numpy as np
import pytest
import torch

from parity.models import TINY
from sam_core.mask_ops import encode_rles
from sam_core.modeling.sam import build_sam
from sam_core.training.evaluation import GroundTruthImage, low_res_round_trip_iou, proposal_recall
from synthetic.scenes import generate_scene


class _KnownProposals:
    """Stands where a MaskGenerator goes, returning fixed records: the input whose AR is known."""

    def __init__(self, by_size: dict[tuple[int, int], list[np.ndarray]]) -> None:
        self.by_size = by_size

    def generate(self, image: np.ndarray) -> list[dict]:
        masks = self.by_size.get(image.shape[:2], [])
        rles = encode_rles(torch.from_numpy(np.stack(masks))) if masks else []
        return [{"segmentation": rle, "predicted_iou": 1.0 - 0.01 * i} for i, rle in enumerate(rles)]


def _images(count: int) -> list[GroundTruthImage]:
    scenes = [generate_scene(31, i) for i in range(count)]
    return [GroundTruthImage(i, s.image, s.masks) for i, s in enumerate(scenes)]


def test_ground_truth_as_proposals_recalls_everything():
    (image,) = _images(1)
    scores = proposal_recall(_KnownProposals({image.image.shape[:2]: list(image.masks)}), [image])
    assert scores.ar_100 == pytest.approx(1.0) and scores.ar_1000 == pytest.approx(1.0)
    assert scores.n_masks == len(image.masks) and scores.mean_proposals == len(image.masks)
    assert scores.precision_50 == 1.0


def test_no_proposals_recall_nothing_and_half_the_masks_recall_half():
    (image,) = _images(1)
    assert proposal_recall(_KnownProposals({}), [image]).ar_100 == 0.0
    half = list(image.masks[: len(image.masks) // 2])
    scores = proposal_recall(_KnownProposals({image.image.shape[:2]: half}), [image])
    assert scores.ar_100 == pytest.approx(len(half) / len(image.masks)) and scores.precision_50 == 1.0


def test_precision_counts_the_proposals_that_cover_no_ground_truth():
    (image,) = _images(1)
    specks = []
    for i in range(3):  # one pixel each: IoU <= 1/24 with any annotated mask (min_visible_area 24)
        speck = np.zeros(image.masks.shape[1:], bool)
        speck[i, 0] = True
        specks.append(speck)
    proposals = list(image.masks[:3]) + specks
    scores = proposal_recall(_KnownProposals({image.image.shape[:2]: proposals}), [image])
    assert scores.precision_50 == pytest.approx(0.5) and scores.mean_proposals == 6


def test_eroded_masks_lose_recall_at_strict_thresholds():
    import cv2

    (image,) = _images(1)
    eroded = [cv2.erode(m.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) for m in image.masks]
    scores = proposal_recall(_KnownProposals({image.image.shape[:2]: eroded}), [image])
    assert 0.0 < scores.ar_100 < 1.0


def test_low_res_round_trip_keeps_grid_aligned_masks_but_their_corner_pixels():
    # TINY: 256 px input, 64x64 low-res grid, so one low-res cell is 4x4 px here.
    model = build_sam(TINY)
    masks = np.zeros((3, 256, 256), bool)
    masks[0, 16:48, 32:64] = True  # 8x8 whole cells
    masks[1, 8:12, 8:12] = True  # one whole cell
    masks[2, 101:104, 101:104] = True  # 3x3 px across four cells, none of them half covered
    ious = low_res_round_trip_iou(model, masks)
    # Bilinear weights of a whole cell reach 0.625 on each border pixel, so a corner pixel has
    # 0.625^2 < 0.5 and is lost, every other pixel is kept.
    assert ious == pytest.approx([1020 / 1024, 12 / 16, 0.0])


def test_low_res_round_trip_follows_the_image_resize():
    # 100x128 is resized to 200x256 before the grid: a half-image mask survives exactly.
    masks = np.zeros((1, 100, 128), bool)
    masks[0, :50] = True
    assert low_res_round_trip_iou(build_sam(TINY), masks) == pytest.approx([1.0])
