"""The training command line on a small generated release: it writes weights that load again,
it starts a model of another input size from weights made for the shipped one, and it fine-tunes
on the corrected masks of a review corrections folder."""

import json
from typing import Any

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from curation.corrections import CorrectionsFolder, ReviewedMask, corrected_record
from curation.release import ReleaseError, iter_release
from sam_core.checkpoints import load_sam
from sam_core.mask_ops import decode_rle
from sam_core.modeling.config import SamConfig
from tests.tools.conftest import SCENE_COUNT
from tools.release_samples import ReleaseSamples
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


def _rle(mask: np.ndarray) -> dict[str, Any]:
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(encoded["size"]), "counts": encoded["counts"].decode()}


@pytest.fixture(scope="module")
def corrections(scene_release: str, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[int, list[Any]]]:
    """A corrections folder over the scene release: image 0 with the upper half of its first mask cut off, its
    second accepted, the rest rejected, and a box added; image 2 with its first mask accepted and
    the rest undecided; image 1 not saved. Returns the folder and the masks each saved image keeps."""
    uri = str(tmp_path_factory.mktemp("corrections") / "corrections")
    records = {item.record["image"]["image_id"]: item.record for item in iter_release(scene_release)}
    folder = CorrectionsFolder(uri, release=scene_release, model={"name": "sae_tiny", "sha256": "-"})
    first, second, *rest = records[0]["annotations"]
    half = decode_rle(first["segmentation"]).copy()
    rows = np.nonzero(half.any(1))[0]
    half[: (rows[0] + rows[-1] + 1) // 2] = False  # its upper half gone
    added = np.zeros_like(half)
    added[2:12, 3:15] = True
    masks = [
        ReviewedMask(first["id"], "edited", _rle(half)),
        ReviewedMask(second["id"], "accepted", second["segmentation"]),
        *(ReviewedMask(ann["id"], "rejected") for ann in rest),
        ReviewedMask(None, "added", _rle(added), predicted_iou=0.9),
    ]
    folder.save(0, corrected_record(records[0], masks, 30.0, scene_release), 0)
    accepted = records[2]["annotations"][0]
    masks = [ReviewedMask(accepted["id"], "accepted", accepted["segmentation"])]
    folder.save(2, corrected_record(records[2], masks, 5.0, scene_release), 0)
    kept = {0: [_rle(half), second["segmentation"], _rle(added)], 2: [accepted["segmentation"]]}
    assert rest and len(records[2]["annotations"]) > 1  # rejected and undecided masks are left out
    return uri, kept


def test_the_samples_are_the_saved_images_with_their_corrected_masks(scene_release, corrections):
    uri, kept = corrections
    samples = ReleaseSamples(scene_release, 320, corrections=uri)
    seen = [[decode_rle(rle) for rle in image.rles] for image in samples]
    expected = [[decode_rle(rle) for rle in kept[image_id]] for image_id in (0, 2)]  # release order
    assert [len(masks) for masks in seen] == [len(masks) for masks in expected] == [3, 1]
    assert all(np.array_equal(a, b) for masks, wanted in zip(seen, expected) for a, b in zip(masks, wanted))
    assert samples.first_pass["used"] == 2
    automatic = next(iter(ReleaseSamples(scene_release, 320)))  # image 0 as released: its masks, not these
    assert not np.array_equal(decode_rle(automatic.rles[0]), seen[0][0])


def test_fine_tunes_the_shipped_weights_on_the_corrected_images(scene_release, corrections, tmp_path, capsys):
    uri, _ = corrections
    out = tmp_path / "models"
    args = ["--release", scene_release, "--corrections", uri, "--output", str(out), "--checkpoint", "sae_tiny"]
    assert main([*args, "--image-size", "320", "--trainable", "mask_decoder", *SHORT_RUN]) == 0
    (weights,) = out.glob("sae_tiny_*.pth")
    saved = json.loads(weights.with_suffix(".json").read_text())
    assert (saved["step"], saved["images"], saved["corrections"]) == (2, 2, uri)
    assert "2 training images per pass" in capsys.readouterr().err


def test_corrections_of_images_the_release_lacks_are_refused(scene_release, tmp_path, capsys):
    other = str(tmp_path / "other")
    record = next(iter_release(scene_release)).record
    record = {**record, "image": {**record["image"], "image_id": 99}}
    CorrectionsFolder(other, release=scene_release).save(99, corrected_record(record, [], 0.0, scene_release), 0)
    with pytest.raises(ReleaseError, match=r"does not hold the saved images \[99\]"):
        list(ReleaseSamples(scene_release, 320, corrections=other))
    args = ["--release", scene_release, "--output", str(tmp_path / "m"), "--checkpoint", "sae_tiny", *SHORT_RUN]
    assert main([*args, "--corrections", str(tmp_path / "nothing")]) == 2
    assert "holds no saved image" in capsys.readouterr().err
