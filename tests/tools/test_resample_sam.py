"""The command line that writes weights made for one input size as weights for another."""

import json

import numpy as np
import pytest
import torch

from sam_core.checkpoints import load_sam
from sam_core.modeling.config import SamConfig
from sam_core.modeling.sam import Sam
from sam_core.predictor import SamPredictor
from sam_core.training import save_weights
from tools.resample_sam import main


def test_written_weights_are_the_model_resampled_on_load(tmp_path, capsys, dog_photo):
    torch.manual_seed(0)
    source = str(save_weights(Sam(SamConfig.preset("sae_tiny", 64)), tmp_path, "at64"))
    assert main([source, "--image-size", "96", "--output", str(tmp_path / "m96"), "--name", "at96"]) == 0
    (weights,) = (tmp_path / "m96").glob("at96_*.pth")
    larger = SamConfig.preset("sae_tiny", 96)
    sources = json.loads(weights.with_suffix(".json").read_text())
    assert sources["resampled_from"] == source and SamConfig.from_dict(sources["config"]) == larger
    written = SamPredictor(load_sam(larger, weights))
    on_load = SamPredictor(load_sam(larger, source, resample_positions=True))
    point, label = np.array([[300.0, 200.0]]), np.array([1])
    for predictor in (written, on_load):
        predictor.set_image(dog_photo)
    theirs = on_load.predict(point, label, multimask_output=True)
    ours = written.predict(point, label, multimask_output=True)
    np.testing.assert_array_equal(ours.low_res_logits, theirs.low_res_logits)
    assert "at 96 px input" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sae_tiny", "--image-size", "100"], "multiple"),  # not a whole number of 16 px patches
        (["sae_tiny", "--model", "vit_b", "--image-size", "64"], "does not fit the vit_b architecture"),
    ],
)
def test_bad_sizes_and_architectures_are_usage_errors(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--output", str(tmp_path)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
