"""Our SAM 2.1 image encoder (Hiera trunk + FPN neck) computes what the public sam2 package computes."""

import inspect
from pathlib import Path

import pytest
import sam2
import torch
import yaml
from sam2.modeling.backbones.hieradet import Hiera as OfficialHiera
from sam2.modeling.backbones.image_encoder import FpnNeck as OfficialFpnNeck
from sam2.modeling.backbones.image_encoder import ImageEncoder as OfficialImageEncoder
from sam2.modeling.position_encoding import PositionEmbeddingSine

from sam_core.modeling.fpn_neck import FpnNeck
from sam_core.modeling.hiera import HIERA_SPECS, Hiera, HieraSpec
from sam_core.modeling.sam2_image_encoder import Sam2ImageEncoder, build_sam2_image_encoder

TOLERANCE = 1e-4
CONFIG_DIR = Path(sam2.__file__).parent / "configs" / "sam2.1"

# Small enough to run in a fraction of a second, yet with every feature of the published trunk:
# several blocks per stage, q-pooling at every transition, global blocks, windows that need
# padding (6 on a 16 grid, 3 on an 8 grid), a pooling block whose windows are padded (block 6),
# and a background position table resized from 7x7.
REDUCED = HieraSpec(
    embed_dim=32,
    num_heads=1,
    stages=(1, 2, 3, 2),
    global_att_blocks=(2, 5),
    window_pos_embed_bkg_spatial_size=(7, 7),
    window_spec=(8, 4, 6, 3),
    backbone_channel_list=(256, 128, 64, 32),
    d_model=64,
)


def _published_config(name: str) -> dict:
    """The image_encoder section of sam2's yaml config for `name`."""
    return yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())["model"]["image_encoder"]


def _strip_target(section: dict) -> dict:
    return {key: value for key, value in section.items() if key != "_target_"}


def _official_from_config(config: dict) -> OfficialImageEncoder:
    trunk = OfficialHiera(**_strip_target(config["trunk"]))
    neck_args = _strip_target(config["neck"])
    position_encoding = PositionEmbeddingSine(**_strip_target(neck_args.pop("position_encoding")))
    neck = OfficialFpnNeck(position_encoding=position_encoding, **neck_args)
    return OfficialImageEncoder(trunk, neck, scalp=config["scalp"])


def _official_from_spec(spec: HieraSpec) -> OfficialImageEncoder:
    trunk = OfficialHiera(
        embed_dim=spec.embed_dim,
        num_heads=spec.num_heads,
        stages=spec.stages,
        global_att_blocks=spec.global_att_blocks,
        window_pos_embed_bkg_spatial_size=spec.window_pos_embed_bkg_spatial_size,
        window_spec=spec.window_spec,
    )
    neck = OfficialFpnNeck(
        position_encoding=PositionEmbeddingSine(num_pos_feats=spec.d_model),
        d_model=spec.d_model,
        backbone_channel_list=list(spec.backbone_channel_list),
        fpn_top_down_levels=list(spec.fpn_top_down_levels),
        fpn_interp_model=spec.fpn_interp_model,
    )
    return OfficialImageEncoder(trunk, neck, scalp=spec.scalp)


def _randomised_official(spec: HieraSpec, seed: int) -> OfficialImageEncoder:
    """The official encoder with every parameter perturbed by normal noise (position tables included)."""
    torch.manual_seed(seed)
    official = _official_from_spec(spec).eval()
    with torch.no_grad():
        for name, param in official.named_parameters():
            scale = 0.5 if "pos_embed" in name else 0.02
            param.add_(torch.randn_like(param) * scale)
    return official


def _paired(spec: HieraSpec, seed: int) -> tuple[Sam2ImageEncoder, OfficialImageEncoder]:
    official = _randomised_official(spec, seed)
    ours = build_sam2_image_encoder(spec).eval()
    ours.load_state_dict(official.state_dict(), strict=True)
    return ours, official


def _assert_outputs_agree(ours: Sam2ImageEncoder, official: OfficialImageEncoder, images: torch.Tensor) -> None:
    with torch.inference_mode():
        expected = official(images)
        got = ours(images)
    assert len(got.backbone_fpn) == len(expected["backbone_fpn"]) == 3
    assert len(got.vision_pos_enc) == len(expected["vision_pos_enc"]) == 3
    assert torch.equal(got.vision_features, got.backbone_fpn[-1])
    for mine, theirs in zip(got.backbone_fpn, expected["backbone_fpn"], strict=True):
        assert mine.shape == theirs.shape
        assert theirs.abs().mean() > 0.05
        assert (mine - theirs).abs().max().item() <= TOLERANCE
    for mine, theirs in zip(got.vision_pos_enc, expected["vision_pos_enc"], strict=True):
        assert mine.shape == theirs.shape
        assert (mine - theirs).abs().max().item() <= TOLERANCE


@pytest.mark.parametrize("name", sorted(HIERA_SPECS))
def test_spec_matches_published_config(name):
    config = _published_config(name)
    trunk_defaults = {key: param.default for key, param in inspect.signature(OfficialHiera.__init__).parameters.items()}
    trunk = {**trunk_defaults, **_strip_target(config["trunk"])}
    neck = config["neck"]
    spec = HIERA_SPECS[name]
    assert spec.embed_dim == trunk["embed_dim"]
    assert spec.num_heads == trunk["num_heads"]
    assert spec.stages == tuple(trunk["stages"])
    assert spec.global_att_blocks == tuple(trunk["global_att_blocks"])
    assert spec.window_pos_embed_bkg_spatial_size == tuple(trunk["window_pos_embed_bkg_spatial_size"])
    assert spec.window_spec == tuple(trunk["window_spec"])
    # The trunk numbers that no config overrides are our constructor's defaults.
    ours_defaults = inspect.signature(Hiera.__init__).parameters
    for key in ("q_pool", "dim_mul", "head_mul"):
        assert ours_defaults[key].default == trunk[key]
    assert tuple(trunk["q_stride"]) == (ours_defaults["q_stride"].default,) * 2
    assert spec.backbone_channel_list == tuple(neck["backbone_channel_list"])
    assert spec.fpn_top_down_levels == tuple(neck["fpn_top_down_levels"])
    assert spec.fpn_interp_model == neck["fpn_interp_model"]
    assert spec.d_model == neck["d_model"] == neck["position_encoding"]["num_pos_feats"]
    assert neck["position_encoding"]["temperature"] == 10000
    assert neck["position_encoding"]["normalize"] is True
    assert neck["position_encoding"]["scale"] is None
    assert spec.scalp == config["scalp"]


@pytest.mark.parametrize("name", sorted(HIERA_SPECS))
def test_state_dict_matches_official(name):
    official = _official_from_config(_published_config(name))
    with torch.device("meta"):
        ours = build_sam2_image_encoder(HIERA_SPECS[name])
    official_shapes = {key: value.shape for key, value in official.state_dict().items()}
    assert {key: value.shape for key, value in ours.state_dict().items()} == official_shapes
    assert ours.trunk.channel_list == official.trunk.channel_list
    # assign=True swaps the official tensors in (shapes still checked), so nothing large is copied.
    ours.load_state_dict(official.state_dict(), strict=True, assign=True)
    official.load_state_dict(ours.state_dict(), strict=True)


@pytest.mark.parametrize(("batch", "size"), [(1, 256), (2, 256), (2, 320)])
def test_reduced_encoder_matches_official(batch, size):
    ours, official = _paired(REDUCED, seed=0)
    images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    _assert_outputs_agree(ours, official, images)


def test_published_tiny_encoder_matches_official_at_1024():
    ours, official = _paired(HIERA_SPECS["sam2.1_hiera_t"], seed=2)
    images = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(3))
    _assert_outputs_agree(ours, official, images)


def test_reduced_encoder_is_trainable():
    ours = build_sam2_image_encoder(REDUCED)
    with torch.no_grad():
        for param in ours.parameters():
            param.add_(torch.randn_like(param) * 0.02)
    features = ours(torch.randn(1, 3, 128, 128))
    sum(level.square().mean() for level in features.backbone_fpn).backward()
    for name, param in ours.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_rejects_a_grid_the_window_table_does_not_tile():
    encoder = build_sam2_image_encoder(REDUCED)
    with pytest.raises(ValueError, match="window"):
        encoder(torch.randn(1, 3, 80, 80))


def test_trunk_and_neck_widths_must_agree():
    trunk = build_sam2_image_encoder(REDUCED).trunk
    neck = FpnNeck(d_model=64, backbone_channel_list=(128, 64, 32, 16), fpn_top_down_levels=(2, 3))
    with pytest.raises(ValueError, match="widths"):
        Sam2ImageEncoder(trunk, neck, scalp=1)
