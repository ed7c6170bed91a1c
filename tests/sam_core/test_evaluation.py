"""The evaluation protocol on known answers: ground truth as proposals scores 1, nothing scores 0."""

import numpy as np
import pytest
import torch

from curation.scenes import generate_scene
from sam_core.evaluation import GroundTruthImage, proposal_recall
from sam_core.mask_ops import encode_rles


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


def test_no_proposals_recall_nothing_and_half_the_masks_recall_half():
    (image,) = _images(1)
    assert proposal_recall(_KnownProposals({}), [image]).ar_100 == 0.0
    half = list(image.masks[: len(image.masks) // 2])
    scores = proposal_recall(_KnownProposals({image.image.shape[:2]: half}), [image])
    assert scores.ar_100 == pytest.approx(len(half) / len(image.masks))


def test_eroded_masks_lose_recall_at_strict_thresholds():
    import cv2

    (image,) = _images(1)
    eroded = [cv2.erode(m.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) for m in image.masks]
    scores = proposal_recall(_KnownProposals({image.image.shape[:2]: eroded}), [image])
    assert 0.0 < scores.ar_100 < 1.0
