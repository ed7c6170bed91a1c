"""SAM 2.1 checkpoints and inputs that are not what they should be: the official file format (video
keys included) loads; another model's file, a truncated one and a wrong checksum are refused with the
reason; odd images still give masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from parity.sam2_models import SAM2_TINY, build_official
from sam_core.amg.generator import MaskGenerator
from sam_core.amg.settings import MaskGeneratorSettings
from sam_core.checkpoints import OFFICIAL_CHECKPOINTS, CheckpointError, bundled_checkpoint, load_sam
from sam_core.modeling.sam2 import image_path_state_dict
from sam_core.predictor import SamPredictor


@pytest.fixture(scope="module")
def official_file(tmp_path_factory):
    """An official-format checkpoint of SAM2_TINY: {"model": the whole SAM2Base state dict}."""
    path = tmp_path_factory.mktemp("sam2") / "sam2_tiny.pt"
    official = build_official(SAM2_TINY)
    torch.save({"model": official.state_dict()}, path)
    return path, official.state_dict()


def test_an_official_format_file_loads_without_its_video_keys(official_file):
    path, state_dict = official_file
    model = load_sam(SAM2_TINY, path)
    loaded = model.state_dict()
    expected = image_path_state_dict(state_dict)
    assert loaded.keys() == expected.keys() and len(expected) < len(state_dict)
    assert all(torch.equal(loaded[key], expected[key]) for key in expected)
    assert not model.training


def test_another_models_file_is_refused_naming_the_keys(official_file):
    with pytest.raises(CheckpointError, match=r"does not fit the sam2_tiny architecture: missing keys \(\d+\): "):
        load_sam(SAM2_TINY, bundled_checkpoint("sae_tiny"))  # a SAM 1 file
    with pytest.raises(CheckpointError, match=r"sam2.1_hiera_t architecture: .*shape mismatches"):
        load_sam("sam2.1_hiera_t", official_file[0])  # the reduced model's file for the published tiny


def test_a_truncated_file_and_a_wrong_checksum_are_refused(official_file, tmp_path):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(official_file[0].read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="cannot be read as a PyTorch state dict"):
        load_sam(SAM2_TINY, truncated)
    with pytest.raises(CheckpointError, match="does not match the expected 7402e0d8"):
        load_sam(SAM2_TINY, official_file[0], expected_sha256=OFFICIAL_CHECKPOINTS["sam2.1_hiera_t"].sha256)


@pytest.mark.parametrize(
    "image",
    [
        np.full((1, 1, 3), 200, np.uint8),
        np.linspace(0, 255, 3 * 900, dtype=np.uint8).reshape(3, 900),  # 3x900 grayscale
        np.random.default_rng(0).integers(0, 256, (40, 30, 4), dtype=np.uint8),  # RGBA
        np.random.default_rng(1).random((64, 48)).astype(np.float32),  # float in [0, 1]
    ],
    ids=["1x1", "3x900 gray", "rgba", "float"],
)
def test_odd_images_give_masks_in_their_own_frame(official_file, image):
    model = load_sam(SAM2_TINY, official_file[0])
    settings = MaskGeneratorSettings(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    records = MaskGenerator(model, settings).generate(image)
    assert records and all(r["segmentation"]["size"] == list(image.shape[:2]) for r in records)
    predictor = SamPredictor(model)
    predictor.set_image(image)
    prediction = predictor.predict(np.array([[0.0, 0.0]]), np.array([1]))
    assert prediction.masks.shape == (3, *image.shape[:2]) and prediction.low_res_logits.shape == (3, 128, 128)
