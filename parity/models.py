"""Parity tooling for tests and benchmarks: the public segment_anything model built to one of our
configurations, and seeded random weights shared by both.

segment_anything is a test/benchmark dependency (the `test` extra), imported only here.
"""

from __future__ import annotations

from functools import partial

import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, TwoWayTransformer
from segment_anything.modeling import Sam as OfficialSam

from sam_core.amg.settings import MaskGeneratorSettings
from sam_core.modeling.config import SamConfig
from sam_core.modeling.sam import Sam

# A reduced encoder at 256 px input with the published decoder: quick on a CPU. Window 5 does not
# divide the 16x16 grid, so window padding is exercised.
TINY = SamConfig(
    image_size=256,
    encoder_embed_dim=64,
    encoder_depth=4,
    encoder_num_heads=4,
    encoder_window_size=5,
    encoder_global_attn_indexes=(1, 3),
    name="tiny",
)

# The settings that SamAutomaticMaskGenerator shares with MaskGeneratorSettings, by the same names.
SHARED_GENERATOR_SETTINGS = (
    "points_per_side",
    "points_per_batch",
    "pred_iou_thresh",
    "stability_score_thresh",
    "stability_score_offset",
    "box_nms_thresh",
    "crop_n_layers",
    "crop_nms_thresh",
    "crop_overlap_ratio",
    "crop_n_points_downscale_factor",
    "min_mask_region_area",
)


def official_generator_kwargs(settings: MaskGeneratorSettings) -> dict[str, float | int]:
    """Arguments for the public generator equal to `settings` (it has no paper rule, no coverage filter)."""
    return {name: getattr(settings, name) for name in SHARED_GENERATOR_SETTINGS}


def build_official(config: SamConfig) -> OfficialSam:
    """segment_anything's Sam with the architecture `config` describes."""
    grid = config.embedding_grid
    return OfficialSam(
        image_encoder=ImageEncoderViT(
            depth=config.encoder_depth,
            embed_dim=config.encoder_embed_dim,
            img_size=config.image_size,
            mlp_ratio=config.encoder_mlp_ratio,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=config.encoder_num_heads,
            patch_size=config.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=config.encoder_global_attn_indexes,
            window_size=config.encoder_window_size,
            out_chans=config.prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=config.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(config.image_size, config.image_size),
            mask_in_chans=config.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=config.num_multimask_outputs,
            transformer=TwoWayTransformer(
                depth=config.decoder_depth,
                embedding_dim=config.prompt_embed_dim,
                mlp_dim=config.decoder_mlp_dim,
                num_heads=config.decoder_num_heads,
            ),
            transformer_dim=config.prompt_embed_dim,
            iou_head_depth=config.iou_head_depth,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
        ),
        pixel_mean=list(config.pixel_mean),
        pixel_std=list(config.pixel_std),
    ).eval()


# Random weights give speckled masks: periodic patterns with small logits, low predicted IoU and
# low stability. Thresholds are lowered, and the stability offset shrunk to the logits' scale, so
# that hundreds of masks flow through every stage while the filters still drop many. Box NMS at
# 1.0 keeps them flowing (speckle boxes all cover the image, so any lower NMS keeps one of them);
# NMS itself is compared in its own case.
FLOW = {
    "points_per_side": 10,
    "pred_iou_thresh": 0.0,
    "stability_score_thresh": 0.75,
    "stability_score_offset": 0.03,
    "box_nms_thresh": 1.0,
}

# The trained sae_tiny at thresholds that let most of its masks through (predicted IoU 0, stability
# 0.2): agreement checks then count hundreds of masks per photo, where its shipped thresholds
# (checkpoints.BUNDLED_GENERATOR_OVERRIDES) keep a few dozen and one mask is several percent.
PERMISSIVE = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.2}


def randomize(model: torch.nn.Module, seed: int, scale: float = 0.1) -> None:
    """Overwrite every parameter and buffer with seeded noise, so that no term is zero or one by init.

    Zero-initialised tables (relative and absolute positions) would otherwise leave code paths
    untested. Layer-norm weights are kept near 1 so activations stay in a sane range.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            noise = torch.randn(tensor.shape, generator=generator) * scale
            if name.endswith("weight") and ("norm" in name or name.endswith(("neck.1.weight", "neck.3.weight"))):
                noise += 1.0
            if "positional_encoding_gaussian_matrix" in name:
                noise = noise / scale
            tensor.copy_(noise)


def random_model(config: SamConfig, seed: int = 0, speckle: bool = False, scale: float = 0.1) -> Sam:
    """Our model with seeded random weights (see `randomize` for `scale`).

    With `speckle`, the decoder's output biases are zeroed: random masks are then partial
    speckle patterns with varied area and stability, instead of all of the image or none of it
    (which the biases otherwise decide), so that automatic-mask filters have work to do.
    """
    model = Sam(config).eval()
    randomize(model, seed, scale)
    if speckle:
        with torch.no_grad():
            for name, tensor in model.state_dict().items():
                if name.startswith("mask_decoder.output_") and name.endswith("bias"):
                    tensor.zero_()
    return model


def paired_models(
    config: SamConfig, seed: int = 0, speckle: bool = False, scale: float = 0.1
) -> tuple[Sam, OfficialSam]:
    """Our model and the official one holding the same random weights (see `random_model`)."""
    ours = random_model(config, seed, speckle, scale)
    official = build_official(config)
    official.load_state_dict(ours.state_dict(), strict=True)
    return ours, official
