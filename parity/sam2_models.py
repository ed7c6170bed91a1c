"""Parity tooling for SAM 2.1: the public `sam2` package's model built to one of our configurations, and
seeded random weights shared by both.

`sam2` is a test/benchmark dependency (Makefile `setup`, built without its CUDA extension), imported
only here. Its `SAM2ImagePredictor` assumes a 1024 px input (its `_bb_feat_sizes`); `official_predictor`
sets them from the configuration so that reduced inputs run too.
"""

from __future__ import annotations

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator
from sam2.modeling.sam2_base import SAM2Base
from sam2.sam2_image_predictor import SAM2ImagePredictor

from parity.models import randomize
from sam_core.modeling.hiera import HieraSpec
from sam_core.modeling.sam2 import Sam2, image_path_state_dict
from sam_core.modeling.sam2_config import Sam2Config

SAM2_TINY = Sam2Config(
    encoder=HieraSpec(
        embed_dim=32,
        num_heads=1,
        stages=(1, 2, 2, 1),
        global_att_blocks=(2, 4),
        window_pos_embed_bkg_spatial_size=(7, 7),
        window_spec=(8, 4, 6, 4),
        backbone_channel_list=(256, 128, 64, 32),
    ),
    image_size=512,
    name="sam2_tiny",
)
"""A reduced Hiera (a global block in stages 2 and 3, windows that pad) at 512 px with the published
prompt encoder and decoder: quick on a CPU."""

_YAML = {
    "sam2.1_hiera_t": "sam2.1_hiera_t",
    "sam2.1_hiera_s": "sam2.1_hiera_s",
    "sam2.1_hiera_b+": "sam2.1_hiera_b+",
    "sam2.1_hiera_l": "sam2.1_hiera_l",
}


def _listed(values: tuple[int, ...]) -> str:
    return "[" + ",".join(str(v) for v in values) + "]"


def official_config_overrides(config: Sam2Config) -> list[str]:
    """Hydra overrides that make sam2's `sam2.1_hiera_t` yaml describe `config`'s image path."""
    spec = config.encoder
    trunk, neck = "++model.image_encoder.trunk", "++model.image_encoder.neck"
    return [
        f"++model.image_size={config.image_size}",
        f"{trunk}.embed_dim={spec.embed_dim}",
        f"{trunk}.num_heads={spec.num_heads}",
        f"{trunk}.stages={_listed(spec.stages)}",
        f"{trunk}.global_att_blocks={_listed(spec.global_att_blocks)}",
        f"{trunk}.window_pos_embed_bkg_spatial_size={_listed(spec.window_pos_embed_bkg_spatial_size)}",
        f"{trunk}.window_spec={_listed(spec.window_spec)}",
        f"{neck}.backbone_channel_list={_listed(spec.backbone_channel_list)}",
        f"{neck}.fpn_top_down_levels={_listed(spec.fpn_top_down_levels)}",
        f"++model.image_encoder.scalp={spec.scalp}",
    ]


def build_official(config: Sam2Config) -> SAM2Base:
    """sam2's SAM2Base (image and video parts) on the CPU for `config`: a published name's own yaml,
    else the tiny yaml with `official_config_overrides`."""
    name = _YAML.get(config.name)
    overrides = [] if name else official_config_overrides(config)
    GlobalHydra.instance().clear()
    with initialize_config_module("sam2", version_base="1.2"):
        cfg = compose(config_name=f"configs/sam2.1/{name or 'sam2.1_hiera_t'}.yaml", overrides=overrides)
    return instantiate(cfg.model, _recursive_=True).eval()


def official_predictor(model: SAM2Base) -> SAM2ImagePredictor:
    """SAM2ImagePredictor over `model` (`with_feature_sizes`)."""
    return with_feature_sizes(SAM2ImagePredictor(model))


def official_generator(model: SAM2Base, **settings: object) -> SAM2AutomaticMaskGenerator:
    """SAM2AutomaticMaskGenerator over `model` with COCO RLE output and `settings`, its predictor's
    feature sizes set from the model's input size (`with_feature_sizes`)."""
    generator = SAM2AutomaticMaskGenerator(model, output_mode="coco_rle", **settings)
    with_feature_sizes(generator.predictor)
    return generator


def with_feature_sizes(predictor: SAM2ImagePredictor) -> SAM2ImagePredictor:
    """`predictor` with the FPN sizes it reshapes features to (fixed for 1024 px there) set from its
    model's input size."""
    size = predictor.model.image_size
    predictor._bb_feat_sizes = [(size // 4, size // 4), (size // 8, size // 8), (size // 16, size // 16)]
    return predictor


def paired_sam2_models(
    config: Sam2Config, seed: int = 0, speckle: bool = False, scale: float = 0.1
) -> tuple[Sam2, SAM2Base]:
    """Our SAM 2.1 and sam2's with the same seeded random image-path weights (`parity.models.randomize`
    with `scale`). With `speckle`, the decoder's output biases are zeroed, as `parity.models.random_model` does."""
    import torch

    ours = Sam2(config).eval()
    randomize(ours, seed, scale)
    if speckle:
        with torch.no_grad():
            for name, tensor in ours.state_dict().items():
                if name.startswith("sam_mask_decoder.output_") and name.endswith("bias"):
                    tensor.zero_()
    official = build_official(config)
    missing, unexpected = official.load_state_dict(ours.state_dict(), strict=False)
    if unexpected or image_path_state_dict(dict.fromkeys(missing)):
        raise AssertionError(f"state dicts differ beyond the video-only keys: {unexpected} {missing}")
    return ours, official
