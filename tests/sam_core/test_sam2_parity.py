"""SAM 2.1 against the public `sam2` package: the official state-dict layout for all four sizes, the
model's outputs through `SAM2ImagePredictor` and the automatic masks of `SAM2AutomaticMaskGenerator`,
with the same random weights (`parity.sam2_models`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from parity.agreement import compare_records
from parity.fast_path import fast_path_agreement, meets_the_bar
from parity.models import FLOW
from parity.sam2_models import SAM2_TINY, build_official, official_generator, official_predictor, paired_sam2_models
from sam_core.amg.generator import MaskGenerator
from sam_core.amg.settings import MaskGeneratorSettings
from sam_core.modeling.sam2 import VIDEO_ONLY_KEYS, Sam2, image_path_state_dict
from sam_core.modeling.sam2_config import PRESETS, Sam2Config
from sam_core.modeling.transforms import scale_boxes, scale_coords


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_state_dicts_have_the_official_keys_and_shapes(name):
    with torch.device("meta"):
        ours = Sam2(Sam2Config.preset(name))
    official = build_official(Sam2Config.preset(name))
    image_path = image_path_state_dict(official.state_dict())
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in image_path.items()}
    video = set(official.state_dict()) - set(image_path)
    assert video and all(key.startswith(VIDEO_ONLY_KEYS) for key in video)
    ours.load_state_dict(image_path, strict=True, assign=True)  # official -> ours
    missing, unexpected = official.load_state_dict(ours.state_dict(), strict=False)  # ours -> official
    assert not unexpected and set(missing) == video  # only the video part is left out


@pytest.fixture(scope="module")
def models():
    """Ours and sam2's SAM 2.1 at SAM2_TINY with the same random weights."""
    return paired_sam2_models(SAM2_TINY, seed=0)


def _official_outputs(predictor, **prompt):
    """`SAM2ImagePredictor.predict` (logits) and the object score logits its decoder computed on the way."""
    captured = {}
    hook = predictor.model.sam_mask_decoder.register_forward_hook(
        lambda module, args, output: captured.update(object_scores=output[3])
    )
    try:
        masks, iou, low_res = predictor.predict(**prompt, return_logits=True)
    finally:
        hook.remove()
    return masks, iou, low_res, captured["object_scores"].numpy()


@pytest.mark.parametrize("multimask", [True, False])
@pytest.mark.parametrize(
    "prompt",
    [
        {"point_coords": np.array([[300.0, 200.0]]), "point_labels": np.array([1])},
        {"point_coords": np.array([[300.0, 200.0], [520.0, 410.0], [90.0, 60.0]]), "point_labels": np.array([1, 0, 1])},
        {"box": np.array([120.0, 80.0, 610.0, 500.0])},
        {
            "box": np.array([120.0, 80.0, 610.0, 500.0]),
            "point_coords": np.array([[400.0, 300.0]]),
            "point_labels": np.array([0]),
        },
    ],
    ids=["point", "points", "box", "box and point"],
)
def test_masks_iou_and_object_scores_match_the_official_predictor(models, dog_photo, prompt, multimask):
    ours, official = models
    predictor = official_predictor(official)
    predictor.set_image(dog_photo)
    first_masks, first_iou, first_low_res, first_objects = _official_outputs(
        predictor, **prompt, multimask_output=multimask
    )
    # the best first mask fed back as a mask prompt, with the same prompt
    mask_input = first_low_res[[int(np.argmax(first_iou))]]
    masks, iou, low_res, objects = _official_outputs(
        predictor, **prompt, mask_input=mask_input, multimask_output=multimask
    )

    original = dog_photo.shape[:2]
    with torch.inference_mode():
        model_input, input_size = ours.prepare_image(dog_photo)
        features = ours.encode(model_input)
        coords = prompt.get("point_coords")
        box = prompt.get("box")
        for mask_prompt, expected in (
            (None, (first_masks, first_iou, first_low_res, first_objects)),
            (mask_input, (masks, iou, low_res, objects)),
        ):
            found_low_res, found_iou, found_objects = ours.decode_with_object_scores(
                features,
                None
                if coords is None
                else torch.tensor(scale_coords(coords, original, input_size)[None], dtype=torch.float32),
                None if coords is None else torch.tensor(prompt["point_labels"][None]),
                None
                if box is None
                else torch.tensor(scale_boxes(box, original, input_size)[None], dtype=torch.float32),
                None if mask_prompt is None else torch.tensor(mask_prompt[None]),
                multimask,
            )
            found_masks = ours.postprocess_masks(found_low_res, input_size, original)
            want_masks, want_iou, want_low_res, want_objects = expected
            assert found_low_res.shape[1] == (3 if multimask else 1)
            np.testing.assert_allclose(found_iou[0].numpy(), want_iou, atol=1e-4)
            np.testing.assert_allclose(found_objects.numpy(), want_objects, atol=1e-4)
            np.testing.assert_allclose(found_low_res[0].clamp(-32, 32).numpy(), want_low_res, atol=1e-3)
            np.testing.assert_allclose(found_masks[0].numpy(), want_masks, atol=1e-3)
            assert np.abs(want_low_res).max() > 1.0  # the comparison is not one of near-zero logits


@pytest.fixture(scope="module")
def speckled():
    """Ours and sam2's with speckled random masks (`paired_sam2_models`), for the automatic generator."""
    return paired_sam2_models(SAM2_TINY, seed=0, speckle=True)


@pytest.mark.parametrize(("use_m2m", "names"), [(False, ["picture1.jpg"]), (True, ["dog.jpg"])])
def test_records_match_the_official_sam2_generator(speckled, shared_image_paths, use_m2m, names):
    ours_model, official_model = speckled
    settings = {**FLOW, "points_per_side": 7 if use_m2m else 8}  # m2m decodes every mask twice
    ours = MaskGenerator(ours_model, MaskGeneratorSettings(**settings, use_m2m=use_m2m))
    official = official_generator(official_model, **settings, use_m2m=use_m2m)
    by_name = {path.name: path for path in shared_image_paths}
    for name in names:
        photo = np.asarray(Image.open(by_name[name]).convert("RGB"))
        agreement = compare_records(ours.generate(photo), official.generate(photo), score_window=1e-3)
        assert agreement.matched_a >= 0.99 and agreement.matched_b >= 0.99, f"{name}: {agreement}"
        assert agreement.max_iou_score_diff <= 1e-3 and agreement.max_stability_diff <= 1e-3, f"{name}: {agreement}"
        assert agreement.count_b >= 100, f"{name}: {agreement}"  # masks flowed through every stage


def test_the_fast_path_agrees_with_float32(dog_photo):
    """bfloat16 encoder (the Hiera trunk and the FPN neck under autocast) and float16 decoder (with the
    high-resolution skips) against float32 (`parity.fast_path`), at weights drawn at the ViT
    initialisation scale (std 0.02), whose logits are about 1e-3: hence the small stability offset.
    Crops sharing encoder batches are the same code for both families (`test_fast_path.py`)."""
    model, _ = paired_sam2_models(SAM2_TINY, seed=0, speckle=True, scale=0.02)
    settings = MaskGeneratorSettings(
        **{**FLOW, "points_per_side": 10, "stability_score_thresh": 0.6, "stability_score_offset": 1e-4}
    )
    agreement, count = fast_path_agreement(model, settings, dog_photo)
    assert count >= 100 and meets_the_bar(agreement), agreement
