import math

import numpy as np
import pytest
import torch

from sam_core.checkpoints import load_sam
from sam_core.mask_ops import encode_rles
from sam_core.modeling.config import SamConfig
from sam_core.modeling.sam import Sam
from sam_core.training import Trainer, TrainSettings, prepare_training_image, save_weights
from sam_core.training.losses import dice_loss, focal_loss, mask_iou
from sam_core.training.prompts import correction_points, noisy_boxes, sample_pixels
from synthetic.scenes import generate_scene

# Small enough that a CPU takes a fraction of a second per step.
MICRO = SamConfig(
    image_size=64,
    patch_size=8,
    encoder_embed_dim=32,
    encoder_depth=2,
    encoder_num_heads=2,
    encoder_window_size=4,
    encoder_global_attn_indexes=(1,),
    prompt_embed_dim=32,
    decoder_num_heads=2,
    decoder_mlp_dim=64,
    iou_head_hidden_dim=32,
    name="micro",
)


def _scenes(count: int, size: int):
    images = []
    for i in range(count):
        scene = generate_scene(21, i)
        images.append(prepare_training_image(scene.image, encode_rles(torch.from_numpy(scene.masks)), size))
    return images


def test_focal_and_dice_match_their_formulas():
    logits = torch.tensor([[[2.0, -1.0], [0.5, -3.0]]])
    targets = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    valid = torch.ones(1, 2, 2)
    p = torch.sigmoid(logits)
    p_t = torch.where(targets > 0, p, 1 - p)
    alpha_t = torch.where(targets > 0, 0.25, 0.75)
    expected_focal = (-alpha_t * (1 - p_t) ** 2 * torch.log(p_t)).mean()
    assert math.isclose(float(focal_loss(logits, targets, valid)[0]), float(expected_focal), rel_tol=1e-5)
    expected_plain = (-((1 - p_t) ** 2) * torch.log(p_t)).mean()
    assert math.isclose(float(focal_loss(logits, targets, valid, alpha=None)[0]), float(expected_plain), rel_tol=1e-5)
    expected_dice = 1 - (2 * (p * targets).sum() + 1) / (p.sum() + targets.sum() + 1)
    assert math.isclose(float(dice_loss(logits, targets, valid)[0]), float(expected_dice), rel_tol=1e-5)
    assert math.isclose(float(mask_iou(logits, targets, valid)[0]), 1 / 3, rel_tol=1e-6)


def test_padding_pixels_do_not_count():
    logits = torch.full((1, 2, 2), 5.0)
    targets = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    valid = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])  # right column is padding
    assert float(mask_iou(logits, targets, valid)[0]) == 1.0
    assert float(dice_loss(logits, targets, valid)[0]) < 0.01


def test_prompts_come_from_the_right_pixels():
    generator = torch.Generator().manual_seed(0)
    weights = torch.zeros(3, 8, 8)
    weights[0, 2, 5] = 1
    weights[1, 6:, :2] = 1
    points = sample_pixels(weights, generator)
    assert points[0].tolist() == [5.0, 2.0]
    assert points[1, 0] < 2 and points[1, 1] >= 6
    target = torch.zeros(2, 8, 8)
    target[:, 2:6, 2:6] = 1
    predicted = torch.zeros(2, 8, 8, dtype=torch.bool)
    predicted[1] = True  # spills everywhere outside the target
    valid = torch.ones(2, 1, 8, 8)
    coords, labels = correction_points(predicted, target, valid, generator)
    assert labels[:, 0].tolist() == [1, 0]  # first: missed pixels (foreground); second: spill (background)
    x, y = coords[1, 0].long().tolist()
    assert target[1, y, x] == 0
    boxes = noisy_boxes(target, generator)
    assert ((boxes >= 0) & (boxes <= 7)).all() and (boxes[:, :2] <= boxes[:, 2:]).all()


# bfloat16 autocasts on the CPU here: the mixed-precision path the trainer takes on CUDA, less the device.
@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_a_short_training_run_lowers_the_loss(precision):
    torch.manual_seed(0)
    model = Sam(MICRO)
    settings = TrainSettings(
        steps=40, images_per_step=2, masks_per_image=4, rounds=2, warmup_steps=5, log_every=40, precision=precision
    )
    results = Trainer(model, _scenes(6, MICRO.image_size), settings).train()
    assert len(results) == 40
    first, last = np.mean([r.loss for r in results[:5]]), np.mean([r.loss for r in results[-5:]])
    assert last < 0.7 * first, (first, last)
    assert all(math.isfinite(r.loss) for r in results)


@pytest.mark.parametrize("trainable", ["mask_decoder", "mask_decoder.iou_prediction_head"])
def test_fine_tuning_a_part_leaves_the_rest_alone(trainable):
    torch.manual_seed(1)
    model = Sam(MICRO)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    settings = TrainSettings(steps=3, images_per_step=2, masks_per_image=2, trainable=(trainable,), log_every=3)
    Trainer(model, _scenes(3, MICRO.image_size), settings).train()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(trainable + ".") for k in changed)


def test_a_module_the_model_lacks_is_refused():
    settings = TrainSettings(steps=1, trainable=("mask_decoder.no_such_head",))
    with pytest.raises(ValueError, match="mask_decoder.no_such_head"):
        Trainer(Sam(MICRO), _scenes(1, MICRO.image_size), settings)


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"steps": 0}, "steps"), ({"trainable": ("neck",)}, "trainable"), ({"precision": "fp8"}, "precision")],
)
def test_bad_settings_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainSettings(**changes)


def test_saved_weights_carry_their_checksum_and_load_in_both_implementations(tmp_path):
    from parity.models import build_official

    torch.manual_seed(2)
    model = Sam(MICRO)
    path = save_weights(model, tmp_path, "micro")
    assert path.name.startswith("micro_") and path.suffix == ".pth"
    loaded = load_sam(MICRO, path)  # verifies the checksum prefix in the name
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    official = build_official(MICRO)
    official.load_state_dict(torch.load(path, weights_only=True), strict=True)
