"""The training command line on a small generated release: it writes weights that load again,
and it starts a model of another input size from weights made for the shipped one."""

import json

import pytest
import torch

from sam_core.checkpoints import load_sam
from sam_core.modeling.config import SamConfig
from tests.tools.conftest import SCENE_COUNT
from tools.train_sam import main

SHORT_RUN = ["--steps", "2", "--images-per-step", "2", "--masks-per-image", "2", "--log-every", "1"]


def test_fine_tunes_the_shipped_weights_at_another_input_size(scene_release, tmp_path, capsys):
    out = tmp_path / "models"
    args = [
        "--release",
        scene_release,
        "--output",
        str(out),
        "--checkpoint",
        "sae_tiny",
        "--image-size",
        "320",
        *SHORT_RUN,
    ]
    assert main([*args, "--trainable", "mask_decoder"]) == 0

    (weights,) = out.glob("sae_tiny_*.pth")
    saved = json.loads(weights.with_suffix(".json").read_text())
    assert saved["step"] == 2 and saved["images"] == SCENE_COUNT and saved["start"] == "sae_tiny"
    config = SamConfig.from_dict(saved["config"])
    assert config.image_size == 320 and config.embedding_grid == 20
    model = load_sam(config, weights)
    assert model.image_encoder.pos_embed.shape == (1, 20, 20, config.encoder_embed_dim)

    # Only the decoder was trained: the encoder is the shipped one, its position tables resampled.
    start = load_sam(config, "sae_tiny", resample_positions=True).state_dict()
    encoder = {k: v for k, v in model.state_dict().items() if k.startswith("image_encoder.")}
    assert all(torch.equal(v, start[k]) for k, v in encoder.items())
    assert "saved" in capsys.readouterr().err


def test_an_image_size_the_patches_do_not_divide_is_a_usage_error(scene_release, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--release", scene_release, "--output", str(tmp_path), "--image-size", "300", *SHORT_RUN])
    assert exit_info.value.code == 2
    assert "image_size 300 is not a multiple of patch_size 16" in capsys.readouterr().err


def test_a_trainable_module_the_model_lacks_is_a_usage_error(scene_release, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--release", scene_release, "--output", str(tmp_path), "--trainable", "mask_decoder.nope", *SHORT_RUN])
    assert exit_info.value.code == 2
    assert "trainable names no module of the model: mask_decoder.nope" in capsys.readouterr().err
