"""Architecture configurations of SAM: the three published sizes and custom small ones."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class SamConfig:
    """Every number that fixes a SAM architecture.

    The defaults are those shared by all published models (image size 1024, patch 16,
    prompt dimension 256, a two-layer two-way transformer in the decoder). The encoder
    width, depth, head count and global-attention block indexes differ per size; use
    `SamConfig.preset("vit_h")` for a published one, or build a small one directly:
    `SamConfig(image_size=256, encoder_embed_dim=64, encoder_depth=4, ...)`.
    """

    encoder_embed_dim: int = 768
    encoder_depth: int = 12
    encoder_num_heads: int = 12
    encoder_global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    encoder_window_size: int = 14
    encoder_mlp_ratio: float = 4.0
    image_size: int = 1024
    patch_size: int = 16
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_num_heads: int = 8
    decoder_mlp_dim: int = 2048
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        problems = []
        if self.image_size % self.patch_size:
            problems.append(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")
        if self.encoder_embed_dim % self.encoder_num_heads:
            problems.append(
                f"encoder_embed_dim {self.encoder_embed_dim} is not divisible by "
                f"encoder_num_heads {self.encoder_num_heads}"
            )
        if self.prompt_embed_dim % (2 * self.decoder_num_heads):
            problems.append(
                f"prompt_embed_dim {self.prompt_embed_dim} is not divisible by 2 x decoder_num_heads "
                f"({2 * self.decoder_num_heads}); the decoder's cross attention halves the width"
            )
        if self.prompt_embed_dim % 8:
            problems.append(f"prompt_embed_dim {self.prompt_embed_dim} is not a multiple of 8 (mask upscaling)")
        bad = [i for i in self.encoder_global_attn_indexes if not 0 <= i < self.encoder_depth]
        if bad:
            problems.append(f"encoder_global_attn_indexes {bad} lie outside 0..{self.encoder_depth - 1}")
        if self.decoder_depth < 1:
            problems.append(f"decoder_depth must be >= 1, got {self.decoder_depth}")
        if self.encoder_window_size < 1:
            problems.append(f"encoder_window_size must be >= 1, got {self.encoder_window_size}")
        if problems:
            raise ValueError("invalid SamConfig: " + "; ".join(problems))

    @property
    def embedding_grid(self) -> int:
        """Side of the image embedding in patches (64 for the published models)."""
        return self.image_size // self.patch_size

    @property
    def low_res_mask_size(self) -> int:
        """Side of the low-resolution mask logits and of the mask prompt (256 when published)."""
        return 4 * self.embedding_grid

    @classmethod
    def preset(cls, name: str, image_size: int | None = None) -> SamConfig:
        """A named configuration: published `vit_h`, `vit_l`, `vit_b`, or the project's own `sae_tiny`.

        image_size: another input side in pixels (None: the preset's); weights made for the
        preset's size then load with `load_sam(..., resample_positions=True)`.
        """
        try:
            config = PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown SAM model type {name!r}; known: {', '.join(PRESETS)}") from None
        return config if image_size is None else replace(config, image_size=image_size)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> SamConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown SamConfig fields: {', '.join(unknown)}")
        fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**fixed)

    def with_changes(self, **changes: Any) -> SamConfig:
        """A copy with some fields changed; it is named "custom" unless `name` is among the changes."""
        return replace(self, **{"name": "custom", **changes})


# Published sizes (Kirillov et al. 2023; the public checkpoints' shapes).
PRESETS: dict[str, SamConfig] = {
    "vit_h": SamConfig(
        name="vit_h",
        encoder_embed_dim=1280,
        encoder_depth=32,
        encoder_num_heads=16,
        encoder_global_attn_indexes=(7, 15, 23, 31),
    ),
    "vit_l": SamConfig(
        name="vit_l",
        encoder_embed_dim=1024,
        encoder_depth=24,
        encoder_num_heads=16,
        encoder_global_attn_indexes=(5, 11, 17, 23),
    ),
    "vit_b": SamConfig(
        name="vit_b",
        encoder_embed_dim=768,
        encoder_depth=12,
        encoder_num_heads=12,
        encoder_global_attn_indexes=(2, 5, 8, 11),
    ),
    # sa-engine's own small model (sam_core/weights, MODEL_CARD.md): 512 px input, 32x32 embedding,
    # 128x128 low-res masks, 4.0 M parameters.
    "sae_tiny": SamConfig(
        name="sae_tiny",
        image_size=512,
        encoder_embed_dim=192,
        encoder_depth=6,
        encoder_num_heads=6,
        encoder_window_size=8,
        encoder_global_attn_indexes=(2, 5),
        prompt_embed_dim=128,
        decoder_num_heads=4,
        decoder_mlp_dim=512,
        iou_head_hidden_dim=128,
    ),
}
