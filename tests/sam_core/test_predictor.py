"""The predictor against the official SamPredictor on a real photo, batching, and bad input."""

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor as OfficialPredictor

from parity.models import TINY, paired_models
from sam_core import SamPredictor


@pytest.fixture(scope="module")
def predictors(dog_photo):
    ours_model, official_model = paired_models(TINY, seed=7)
    ours, official = SamPredictor(ours_model), OfficialPredictor(official_model)
    ours.set_image(dog_photo)
    official.set_image(dog_photo)
    return ours, official


PROMPTS = {
    "one point": {"point_coords": np.array([[400.0, 260.0]]), "point_labels": np.array([1])},
    "two points": {"point_coords": np.array([[400.0, 260.0], [100.0, 80.0]]), "point_labels": np.array([1, 0])},
    "box": {"box": np.array([250.0, 120.0, 620.0, 480.0])},
    "point and box": {
        "point_coords": np.array([[400.0, 260.0]]),
        "point_labels": np.array([1]),
        "box": np.array([250.0, 120.0, 620.0, 480.0]),
    },
}


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize("name", sorted(PROMPTS))
def test_predictor_agrees_with_official_on_a_real_photo(predictors, dog_photo, name, multimask):
    ours, official = predictors
    result = ours.predict(**PROMPTS[name], multimask_output=multimask)
    masks, iou, low_res = official.predict(**PROMPTS[name], multimask_output=multimask)

    outputs = 3 if multimask else 1
    assert result.masks.shape == masks.shape == (outputs, *dog_photo.shape[:2])
    assert result.masks.dtype == np.bool_
    assert np.abs(result.low_res_logits - low_res).max() <= 1e-4
    assert np.abs(result.iou_predictions - iou).max() <= 1e-4
    assert (result.masks != masks).mean() < 1e-4
    assert 0 < masks.mean() < 1  # both labels present: the comparison is not between empty masks


def test_mask_prompt_from_a_previous_prediction_agrees(predictors):
    ours, official = predictors
    first = ours.predict(**PROMPTS["one point"])
    best = first.low_res_logits[np.argmax(first.iou_predictions)][None]
    refined = ours.predict(**PROMPTS["two points"], mask_input=best, multimask_output=False)
    _, iou, low_res = official.predict(**PROMPTS["two points"], mask_input=best, multimask_output=False)
    assert np.abs(refined.low_res_logits - low_res).max() <= 1e-4
    assert np.abs(refined.iou_predictions - iou).max() <= 1e-4


def test_logits_on_request(predictors):
    ours, _ = predictors
    result = ours.predict(**PROMPTS["box"], return_logits=True)
    assert result.masks.dtype == np.float32
    assert np.array_equal(result.masks > 0, ours.predict(**PROMPTS["box"]).masks)


def test_batched_prompts_equal_single_prompts(predictors):
    ours, _ = predictors
    coords = np.array([[[400.0, 260.0]], [[100.0, 80.0]], [[700.0, 500.0]]])
    labels = np.ones((3, 1), dtype=np.int64)
    boxes = np.array([[250.0, 120.0, 620.0, 480.0], [0, 0, 300, 200], [500, 300, 800, 534]])
    batch = ours.predict(coords, labels, boxes)
    assert batch.masks.shape == (3, 3, 534, 800)
    for i in range(3):
        single = ours.predict(coords[i], labels[i], boxes[i])
        assert np.abs(single.low_res_logits - batch.low_res_logits[i]).max() <= 1e-4
        assert (single.masks != batch.masks[i]).mean() < 1e-4


def test_batch_of_images_equals_one_at_a_time(predictors, shared_image_paths, dog_photo):
    from PIL import Image

    ours, _ = predictors
    other = np.asarray(Image.open(shared_image_paths[1]).convert("RGB"))
    batched = SamPredictor(ours.model, encode_batch_size=2)
    batched.set_images([dog_photo, other, dog_photo[:300, :200]])
    assert batched.num_images == 3
    for index, image in enumerate([dog_photo, other, dog_photo[:300, :200]]):
        ours.set_image(image)
        h, w = image.shape[:2]
        prompt = {"point_coords": np.array([[w / 3, h / 2]]), "point_labels": np.array([1])}
        alone, together = ours.predict(**prompt), batched.predict(**prompt, image_index=index)
        assert together.masks.shape[1:] == (h, w)
        assert np.abs(alone.low_res_logits - together.low_res_logits).max() <= 1e-4
    ours.set_image(dog_photo)
    with pytest.raises(IndexError, match="image_index 3 is outside the 3 image"):
        batched.predict(**PROMPTS["one point"], image_index=3)


def _grayscale(rgb):
    return rgb.mean(axis=2).round().astype(np.uint8)


@pytest.mark.parametrize(
    ("kind", "convert", "expected"),
    [
        ("grayscale", _grayscale, lambda rgb: np.repeat(_grayscale(rgb)[..., None], 3, axis=2)),
        ("rgba", lambda rgb: np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)]), lambda rgb: rgb),
        ("16-bit", lambda rgb: rgb.astype(np.uint16) * 257, lambda rgb: rgb),
        ("float", lambda rgb: rgb.astype(np.float32) / 255, lambda rgb: rgb),
    ],
)
def test_other_image_kinds_match_their_rgb_equivalent(predictors, dog_photo, kind, convert, expected):
    model = predictors[0].model
    crop = dog_photo[100:300, 200:500]
    given, reference = SamPredictor(model), SamPredictor(model)
    given.set_image(convert(crop))
    reference.set_image(expected(crop))
    prompt = {"point_coords": np.array([[150.0, 100.0]]), "point_labels": np.array([1])}
    a, b = given.predict(**prompt), reference.predict(**prompt)
    assert a.masks.shape == (3, 200, 300)
    assert np.array_equal(a.low_res_logits, b.low_res_logits)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((0, 10, 3), np.uint8), "empty"),
        (np.zeros((10, 10, 5), np.uint8), "C in 1..4"),
        (np.full((10, 10, 3), 300, np.int32), r"0\.\.255"),
        (np.full((10, 10, 3), 2.0, np.float32), r"\[0, 1\]"),
        (np.full((10, 10, 3), np.nan, np.float32), "NaN"),
        (np.zeros((10, 10, 3), np.complex64), "unsupported image dtype"),
    ],
)
def test_unusable_images_are_refused(predictors, image, message):
    with pytest.raises(ValueError, match=message):
        SamPredictor(predictors[0].model).set_image(image)


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ({"point_coords": np.array([[900.0, 10.0]]), "point_labels": np.array([1])}, r"outside the 800x534"),
        ({"point_coords": np.array([[-1.0, 10.0]]), "point_labels": np.array([1])}, "outside"),
        ({"box": np.array([10.0, 10.0, 900.0, 100.0])}, "reach outside"),
        ({"box": np.array([300.0, 10.0, 100.0, 100.0])}, "XYXY order"),
        ({"point_coords": np.array([[1.0, 1.0]])}, "given together"),
        ({"point_coords": np.array([[1.0, 1.0]]), "point_labels": np.array([1, 1])}, "does not match"),
        ({"point_coords": np.array([[1.0, 1.0]]), "point_labels": np.array([2])}, "must be 1"),
        ({"mask_input": np.zeros((1, 64, 32))}, "mask_input must be"),
        (
            {"point_coords": np.zeros((2, 1, 2)), "point_labels": np.ones((2, 1)), "box": np.zeros(4)},
            "mix single and batched",
        ),
        (
            {"point_coords": np.zeros((2, 1, 2)), "point_labels": np.ones((2, 1)), "box": np.zeros((3, 4))},
            "differ in size",
        ),
    ],
)
def test_bad_prompts_are_refused(predictors, prompt, message):
    with pytest.raises(ValueError, match=message):
        predictors[0].predict(**prompt)


def test_predict_before_set_image_is_refused(predictors):
    with pytest.raises(RuntimeError, match="call set_image"):
        SamPredictor(predictors[0].model).predict(**PROMPTS["one point"])


def test_bfloat16_autocast_stays_close_to_float32(predictors, dog_photo):
    model = predictors[0].model
    reference, low = SamPredictor(model), SamPredictor(model, precision=torch.bfloat16)
    crop = dog_photo[:256, :256]
    reference.set_image(crop)
    low.set_image(crop)
    box = np.array([20.0, 20.0, 200.0, 200.0])
    a, b = reference.predict(box=box), low.predict(box=box)
    assert b.low_res_logits.dtype == np.float32
    # bfloat16 keeps 8 significant bits; through random weights that is several percent of error.
    assert np.corrcoef(a.low_res_logits.ravel(), b.low_res_logits.ravel())[0, 1] > 0.99
    assert (np.abs(a.iou_predictions - b.iou_predictions) <= 0.15 * np.maximum(1, np.abs(a.iou_predictions))).all()
    assert (a.masks == b.masks).mean() > 0.95
