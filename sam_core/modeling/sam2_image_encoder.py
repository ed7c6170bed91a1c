"""SAM 2.1's image encoder: the Hiera trunk, the FPN neck, and the scalp that drops the coarsest levels."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from sam_core.modeling.fpn_neck import FpnNeck
from sam_core.modeling.hiera import Hiera, HieraSpec


class Sam2ImageFeatures(NamedTuple):
    """The encoder's outputs, as sam2's `ImageEncoder` names them.

    backbone_fpn: Bxd_modelxHixWi feature maps, highest resolution first (stride 4, 8, 16 published).
    vision_pos_enc: their sine position encodings, same shapes.
    """

    backbone_fpn: list[torch.Tensor]
    vision_pos_enc: list[torch.Tensor]

    @property
    def vision_features(self) -> torch.Tensor:
        """The lowest-resolution feature map kept, the one the memory attention reads."""
        return self.backbone_fpn[-1]


class Sam2ImageEncoder(nn.Module):
    """Bx3xSxS normalised images to `Sam2ImageFeatures`; state-dict keys `trunk.*` and `neck.*`."""

    def __init__(self, trunk: Hiera, neck: FpnNeck, scalp: int) -> None:
        super().__init__()
        if trunk.channel_list != neck.backbone_channel_list:
            raise ValueError(f"trunk widths {trunk.channel_list} != neck inputs {neck.backbone_channel_list}")
        self.trunk = trunk
        self.neck = neck
        self.scalp = scalp

    def forward(self, images: torch.Tensor) -> Sam2ImageFeatures:
        features, _ = self.features(images)
        return Sam2ImageFeatures(features, self.neck.positions(features))

    def features(self, images: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The FPN levels kept after the scalp (highest resolution first), and the trunk's stage
        outputs they came from (BxC_ixH_ixW_i, highest resolution first); no position encodings."""
        levels = self.trunk(images)
        features = self.neck(levels)
        return features[: len(features) - self.scalp], levels


def build_sam2_image_encoder(spec: HieraSpec) -> Sam2ImageEncoder:
    """The encoder with `spec`'s numbers and default-initialised weights."""
    trunk = Hiera(
        embed_dim=spec.embed_dim,
        num_heads=spec.num_heads,
        stages=spec.stages,
        global_att_blocks=spec.global_att_blocks,
        window_pos_embed_bkg_spatial_size=spec.window_pos_embed_bkg_spatial_size,
        window_spec=spec.window_spec,
    )
    neck = FpnNeck(
        d_model=spec.d_model,
        backbone_channel_list=spec.backbone_channel_list,
        fpn_top_down_levels=spec.fpn_top_down_levels,
        fpn_interp_model=spec.fpn_interp_model,
    )
    return Sam2ImageEncoder(trunk, neck, spec.scalp)
