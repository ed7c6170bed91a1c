import pytest

from sam_core import SamConfig
from sam_core.modeling.config import PRESETS


@pytest.mark.parametrize(
    ("name", "width", "depth", "heads", "global_blocks"),
    [
        ("vit_h", 1280, 32, 16, (7, 15, 23, 31)),
        ("vit_l", 1024, 24, 16, (5, 11, 17, 23)),
        ("vit_b", 768, 12, 12, (2, 5, 8, 11)),
    ],
)
def test_published_sizes(name, width, depth, heads, global_blocks):
    config = SamConfig.preset(name)
    assert (config.encoder_embed_dim, config.encoder_depth, config.encoder_num_heads) == (width, depth, heads)
    assert config.encoder_global_attn_indexes == global_blocks
    assert (config.image_size, config.patch_size, config.encoder_window_size) == (1024, 16, 14)
    assert (config.prompt_embed_dim, config.embedding_grid, config.low_res_mask_size) == (256, 64, 256)


def test_unknown_preset_names_the_known_ones():
    with pytest.raises(ValueError, match="vit_h, vit_l, vit_b"):
        SamConfig.preset("vit_x")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"image_size": 1000}, "not a multiple of patch_size"),
        ({"encoder_embed_dim": 100}, "not divisible by encoder_num_heads"),
        ({"encoder_global_attn_indexes": (2, 12)}, r"\[12\] lie outside"),
        ({"prompt_embed_dim": 100}, "prompt_embed_dim"),
        ({"encoder_window_size": 0}, "encoder_window_size"),
        ({"decoder_depth": 0}, "decoder_depth must be >= 1"),
    ],
)
def test_invalid_configs_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        PRESETS["vit_b"].with_changes(**changes)


def test_dict_round_trip_and_unknown_fields():
    config = SamConfig.preset("vit_l")
    assert SamConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown SamConfig fields: depth"):
        SamConfig.from_dict({"depth": 3})
