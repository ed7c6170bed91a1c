"""Our published-size models have exactly the official state-dict layout."""

import pytest
import segment_anything
import torch

from sam_core import build_sam


@pytest.mark.parametrize("model_type", ["vit_b", "vit_l", "vit_h"])
def test_state_dict_matches_official_both_ways(model_type):
    torch.manual_seed(0)
    ours = build_sam(model_type)
    official = segment_anything.sam_model_registry[model_type](checkpoint=None)
    ours_sd, official_sd = ours.state_dict(), official.state_dict()

    assert list(ours_sd) == list(official_sd)
    assert {k: v.shape for k, v in ours_sd.items()} == {k: v.shape for k, v in official_sd.items()}
    assert sum(v.numel() for v in ours_sd.values()) == sum(v.numel() for v in official_sd.values())

    ours.load_state_dict(official_sd, strict=True)
    assert all(torch.equal(ours_sd[k], official_sd[k]) for k in official_sd)
    del official_sd, ours_sd
    official_again = segment_anything.sam_model_registry[model_type](checkpoint=None)
    official_again.load_state_dict(ours.state_dict(), strict=True)
    key = "image_encoder.blocks.0.attn.qkv.weight"
    assert torch.equal(official_again.state_dict()[key], ours.state_dict()[key])
