"""Weight averaging of checkpoints, on small random models saved as the trainer saves them."""

import pytest
import torch

from sam_core.checkpoints import CheckpointError, load_sam
from sam_core.modeling.config import SamConfig
from sam_core.modeling.sam import Sam
from sam_core.training import average_checkpoints, save_weights

SMALL = SamConfig.preset("sae_tiny", 64)


def _saved(tmp_path, seed: int, config: SamConfig = SMALL):
    torch.manual_seed(seed)
    model = Sam(config)
    return model, save_weights(model, tmp_path, f"run_step{seed}")


def test_every_tensor_is_the_mean_of_the_checkpoints(tmp_path):
    saved = [_saved(tmp_path, seed) for seed in (1, 2, 3)]
    averaged = average_checkpoints(SMALL, [path for _, path in saved])
    states = [model.state_dict() for model, _ in saved]
    for key, value in averaged.state_dict().items():
        expected = sum(state[key].double() for state in states) / 3
        torch.testing.assert_close(value.double(), expected, rtol=0, atol=1e-6)
    assert not torch.equal(
        averaged.state_dict()["mask_decoder.iou_token.weight"], states[0]["mask_decoder.iou_token.weight"]
    )


def test_the_saved_average_loads_back(tmp_path):
    paths = [_saved(tmp_path, seed)[1] for seed in (1, 2)]
    path = save_weights(average_checkpoints(SMALL, paths), tmp_path / "avg", "avg")
    assert load_sam(SMALL, path).config.image_size == 64


def test_one_checkpoint_or_another_architecture_is_refused(tmp_path):
    _, first = _saved(tmp_path, 1)
    with pytest.raises(ValueError, match="at least two checkpoints"):
        average_checkpoints(SMALL, [first])
    _, other = _saved(tmp_path / "other", 2, SamConfig.preset("sae_tiny", 128))
    with pytest.raises(CheckpointError, match="pos_embed"):
        average_checkpoints(SMALL, [first, other])
