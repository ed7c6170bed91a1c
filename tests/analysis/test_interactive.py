"""Simulated interactive segmentation: click placement by hand-computed answers, the protocol on a
recording wrapper around the real predictor, and the shipped model on a generated scene."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.interactive import first_click, mask_iou, next_click, simulate
from sam_core.checkpoints import load_sam
from sam_core.predictor import Prediction, SamPredictor
from synthetic.scenes import generate_scene


def square(size: int, top: int, left: int, side: int, shape: tuple[int, int] = (64, 64)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[top : top + side, left : left + side] = True
    return mask


def test_empty_prediction_clicks_at_the_square_centre() -> None:
    truth = square(0, 10, 10, 21)  # rows and columns 10..30: the centre (20, 20) is 11 px from outside
    assert next_click(truth, np.zeros_like(truth)) == (20, 20, 1)


def test_even_square_ties_break_to_the_first_pixel_in_row_major_order() -> None:
    # rows/columns 10..29: (19, 19), (20, 19), (19, 20), (20, 20) are all 10 px from outside
    truth = square(0, 10, 10, 20)
    assert next_click(truth, np.zeros_like(truth)) == (19, 19, 1)


def test_far_false_positive_blob_is_removed_at_its_centre() -> None:
    truth = square(0, 10, 10, 20)
    predicted = truth | square(0, 50, 50, 9)  # 9x9 blob, rows/columns 50..58, centre (54, 54) 5 px inside
    predicted[18:21, 18:21] = False  # a 3x3 hole: false negatives 2 px deep, shallower than the blob
    assert next_click(truth, predicted) == (54, 54, 0)


def test_deeper_false_negative_wins_over_a_shallow_false_positive() -> None:
    truth = square(0, 10, 10, 20)
    predicted = square(0, 50, 50, 5)  # FP 3 px deep; FN is the whole square, 10 px deep
    assert next_click(truth, predicted) == (19, 19, 1)


def test_equal_depths_give_the_false_positive_click_as_ritm() -> None:
    truth = square(0, 5, 5, 7)
    predicted = square(0, 40, 40, 7)  # both regions 4 px deep at their centres
    assert next_click(truth, predicted) == (43, 43, 0)


def test_two_equal_regions_tie_to_the_upper_then_left_one() -> None:
    truth = square(0, 30, 40, 5) | square(0, 30, 10, 5) | square(0, 50, 5, 5)
    assert next_click(truth, np.zeros_like(truth)) == (12, 32, 1)


def test_the_image_edge_counts_as_boundary() -> None:
    truth = np.zeros((20, 20), bool)
    truth[:, :10] = True  # pixel (x, y) is min(x + 1, 10 - x, y + 1, 20 - y) px from outside
    assert next_click(truth, np.zeros_like(truth)) == (4, 4, 1)


def test_no_error_and_mismatched_shapes_raise() -> None:
    truth = square(0, 10, 10, 20)
    with pytest.raises(ValueError, match="no error region"):
        next_click(truth, truth.copy())
    with pytest.raises(ValueError, match="same shape"):
        next_click(truth, truth[:32])


def test_first_click_is_inside_and_deterministic_per_seed() -> None:
    truth = np.zeros((48, 64), bool)
    truth[5:9, 3:60] = True
    truth[30:45, 50:52] = True
    clicks = [first_click(truth, np.random.default_rng(7)) for _ in range(3)]
    assert clicks[0] == clicks[1] == clicks[2]
    rng = np.random.default_rng(0)
    drawn = [first_click(truth, rng) for _ in range(300)]
    assert all(truth[y, x] for x, y in drawn)
    assert len(set(drawn)) > 100  # spread over the mask, not one point
    assert any(y >= 30 for _, y in drawn) and any(y < 9 for _, y in drawn)  # both pieces are sampled
    with pytest.raises(ValueError, match="empty"):
        first_click(np.zeros((8, 8), bool), rng)


def test_mask_iou() -> None:
    a, b = square(0, 0, 0, 4, (8, 8)), square(0, 0, 2, 4, (8, 8))
    assert mask_iou(a, b) == pytest.approx(8 / 24)
    assert mask_iou(np.zeros((4, 4), bool), np.zeros((4, 4), bool)) == 1.0


@pytest.fixture(scope="module")
def predictor() -> SamPredictor:
    return SamPredictor(load_sam("sae_tiny", "sae_tiny"))


class RecordingPredictor:
    """The real predictor, with every prompt it gets and every answer it gives recorded."""

    def __init__(self, predictor: SamPredictor) -> None:
        self.predictor, self.calls, self.answers = predictor, [], []

    def predict(self, point_coords, point_labels, mask_input=None, multimask_output=True) -> Prediction:
        self.calls.append((point_coords.copy(), point_labels.copy(), mask_input, multimask_output))
        self.answers.append(self.predictor.predict(point_coords, point_labels, None, mask_input, multimask_output))
        return self.answers[-1]


def test_protocol_keeps_the_models_choice_and_feeds_its_logits_back(predictor: SamPredictor) -> None:
    scene = generate_scene(2, 0)
    predictor.set_image(scene.image)
    truth = scene.masks[int(np.argmax(scene.masks.sum((1, 2))))]
    recording = RecordingPredictor(predictor)
    ious = simulate(recording, truth, 3, np.random.default_rng(0))
    assert len(recording.calls) == 3, "the shipped model is not perfect after 1 or 2 clicks on this object"
    (c1, l1, m1, multi1), (c2, l2, m2, multi2), (c3, l3, m3, multi3) = recording.calls
    first, second, third = recording.answers
    assert multi1 and not multi2 and not multi3 and m1 is None
    assert c1.shape == (1, 2) and l1.tolist() == [1] and truth[int(c1[0, 1]), int(c1[0, 0])]
    kept = int(np.argmax(first.iou_predictions))  # the model's own choice, not the oracle's
    assert ious[0] == mask_iou(first.masks[kept], truth)
    np.testing.assert_array_equal(m2, first.low_res_logits[kept : kept + 1])
    assert c2[:1].tolist() == c1.tolist() and c2[1].tolist() == list(next_click(truth, first.masks[kept])[:2])
    assert l2[1] == next_click(truth, first.masks[kept])[2]
    np.testing.assert_array_equal(m3, second.low_res_logits[:1])
    assert c3.shape == (3, 2) and c3[2].tolist() == list(next_click(truth, second.masks[0])[:2])
    assert l3[2] == next_click(truth, second.masks[0])[2]
    assert ious[1:] == [mask_iou(second.masks[0], truth), mask_iou(third.masks[0], truth)]


def test_simulate_needs_a_click(predictor: SamPredictor) -> None:
    with pytest.raises(ValueError, match="n_points"):
        simulate(predictor, square(0, 0, 0, 4), 0, np.random.default_rng(0))


def test_shipped_model_on_a_generated_scene(predictor: SamPredictor) -> None:
    scene = generate_scene(2, 0)
    predictor.set_image(scene.image)
    largest = np.argsort(-scene.masks.sum((1, 2)))[:3]
    for index in largest:
        ious = simulate(predictor, scene.masks[index], 3, np.random.default_rng([5, int(index)]))
        again = simulate(predictor, scene.masks[index], 3, np.random.default_rng([5, int(index)]))
        assert len(ious) == 3 and all(0.0 <= v <= 1.0 for v in ious)
        assert ious == again
    # a trained model should find most of a large object after three clicks
    assert max(simulate(predictor, scene.masks[i], 3, np.random.default_rng(0))[-1] for i in largest) > 0.3
