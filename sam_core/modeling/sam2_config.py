"""Architecture configurations of SAM 2.1's image path: the four published sizes and reduced ones."""

from __future__ import annotations

from dataclasses import dataclass, replace

from sam_core.modeling.hiera import HIERA_SPECS, HieraSpec

BACKBONE_STRIDE = 16
"""Pixels per cell of the image embedding (the FPN level the decoder attends to)."""


@dataclass(frozen=True)
class Sam2Config:
    """Every number that fixes a SAM 2.1 image model: the Hiera trunk and FPN neck (`encoder`), the
    prompt encoder and the mask decoder, and the input size.

    The decoder numbers and the input size are those of all four published models; use
    `Sam2Config.preset("sam2.1_hiera_l")` for one of them, or `Sam2Config(name=..., encoder=HieraSpec(...))`
    for a reduced one. The prompt encoder reads `image_size`, `embedding_grid`, `prompt_embed_dim`
    and `mask_in_chans`, as it does from a `SamConfig`.
    """

    encoder: HieraSpec
    image_size: int = 1024
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_num_heads: int = 8
    decoder_mlp_dim: int = 2048
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    multimask_stability_delta: float = 0.05
    multimask_stability_thresh: float = 0.98
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    name: str = "custom"

    def __post_init__(self) -> None:
        problems = []
        total_stride = 4 * 2 ** (len(self.encoder.stages) - 1)
        if self.image_size % total_stride:
            problems.append(f"image_size {self.image_size} is not a multiple of the trunk's stride {total_stride}")
        if self.encoder.d_model != self.prompt_embed_dim:
            problems.append(
                f"the neck's width {self.encoder.d_model} differs from prompt_embed_dim {self.prompt_embed_dim}"
            )
        if self.prompt_embed_dim % (2 * self.decoder_num_heads) or self.prompt_embed_dim % 8:
            problems.append(
                f"prompt_embed_dim {self.prompt_embed_dim} must be a multiple of 8 and of 2 x decoder_num_heads"
            )
        if problems:
            raise ValueError("invalid SAM 2 config: " + "; ".join(problems))

    @property
    def embedding_grid(self) -> int:
        """G: cells per side of the image embedding (64 published)."""
        return self.image_size // BACKBONE_STRIDE

    @property
    def low_res_mask_size(self) -> int:
        """Side of the decoder's low-resolution masks: 4G (256 published)."""
        return 4 * self.embedding_grid

    @property
    def encoder_embed_dim(self) -> int:
        """Width of the trunk's last (coarsest) stage, whose tokens the pooled image embedding uses."""
        return self.encoder.backbone_channel_list[0]

    @classmethod
    def preset(cls, name: str, image_size: int | None = None) -> Sam2Config:
        """A published configuration (`sam2.1_hiera_t`, `_s`, `_b+`, `_l`), optionally at another input size."""
        try:
            config = PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown SAM 2 model type {name!r}; known: {', '.join(PRESETS)}") from None
        return config if image_size is None else replace(config, image_size=image_size)


PRESETS: dict[str, Sam2Config] = {name: Sam2Config(encoder=spec, name=name) for name, spec in HIERA_SPECS.items()}
