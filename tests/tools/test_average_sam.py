"""The weight-averaging command line."""

import json

import pytest
import torch

from sam_core.checkpoints import load_sam
from sam_core.modeling.config import SamConfig
from sam_core.modeling.sam import Sam
from sam_core.training import save_weights
from tools.average_sam import main


def test_writes_loadable_weights_and_names_their_sources(tmp_path, capsys):
    config = SamConfig.preset("sae_tiny", 64)
    paths = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        paths.append(str(save_weights(Sam(config), tmp_path, f"step{seed}")))
    assert main([*paths, "--image-size", "64", "--output", str(tmp_path / "avg"), "--name", "soup"]) == 0
    (weights,) = (tmp_path / "avg").glob("soup_*.pth")
    sources = json.loads(weights.with_suffix(".json").read_text())
    assert sources["averaged"] == paths and SamConfig.from_dict(sources["config"]) == config
    load_sam(config, weights)
    assert "the mean of 2 checkpoints" in capsys.readouterr().err


def test_weights_of_another_input_size_are_a_usage_error(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main(["sae_tiny", "sae_tiny", "--image-size", "64", "--output", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "pos_embed" in capsys.readouterr().err
