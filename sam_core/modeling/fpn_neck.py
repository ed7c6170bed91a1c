"""The FPN neck of SAM 2.1's image encoder and the sine position encoding of its outputs.

Each trunk level is projected to `d_model` channels by a 1x1 convolution. Going from the lowest
resolution up, the levels named in `fpn_top_down_levels` (highest resolution = level 0) add the
2x-upsampled output of the level below them; the others keep their projection alone. There is
no output convolution.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


class SinePositionEncoding(nn.Module):
    """Parameter-free position encoding of a BxCxHxW map's grid: Bx`dim`xHxW.

    Rows and columns are numbered 1..H and 1..W and normalised to (0, 2*pi]; each takes `dim`/2
    channels of interleaved sin/cos at geometrically spaced frequencies (base `temperature`),
    the row channels first.
    """

    def __init__(self, dim: int, temperature: float = 10000.0) -> None:
        super().__init__()
        if dim % 4:
            raise ValueError("the sine position encoding needs a width divisible by 4")
        self.dim = dim
        self.temperature = temperature

    def _axis(self, length: int, device: torch.device) -> torch.Tensor:
        """length x dim/2: the encoding of positions 1..length along one axis."""
        half = self.dim // 2
        position = torch.arange(1, length + 1, dtype=torch.float32, device=device)
        position = position / (length + 1e-6) * (2 * math.pi)
        exponent = 2 * (torch.arange(half, dtype=torch.float32, device=device) // 2) / half
        angles = position[:, None] / self.temperature**exponent
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, h, w = x.shape
        rows, cols = self._axis(h, x.device), self._axis(w, x.device)
        grid = torch.cat((rows[:, None, :].expand(h, w, -1), cols[None, :, :].expand(h, w, -1)), dim=2)
        return grid.permute(2, 0, 1)[None].expand(batch, -1, -1, -1)


class FpnNeck(nn.Module):
    """Trunk levels (highest resolution first) to `d_model`-channel features and their encodings.

    `backbone_channel_list` gives the trunk widths lowest resolution first; `convs.N` projects the
    level of width backbone_channel_list[N].
    """

    def __init__(
        self,
        *,
        d_model: int,
        backbone_channel_list: tuple[int, ...] | list[int],
        fpn_top_down_levels: tuple[int, ...] | list[int],
        fpn_interp_model: str = "nearest",
    ) -> None:
        super().__init__()
        self.backbone_channel_list = list(backbone_channel_list)
        self.fpn_top_down_levels = set(fpn_top_down_levels)
        self.fpn_interp_model = fpn_interp_model
        self.position_encoding = SinePositionEncoding(d_model)
        self.convs = nn.ModuleList(
            nn.Sequential(OrderedDict(conv=nn.Conv2d(dim, d_model, kernel_size=1))) for dim in backbone_channel_list
        )

    def forward(self, levels: list[torch.Tensor]) -> list[torch.Tensor]:
        """Per level, highest resolution first: the Bxd_modelxHxW features (`positions` gives their encodings)."""
        if len(levels) != len(self.convs):
            raise ValueError(f"expected {len(self.convs)} trunk levels, got {len(levels)}")
        last = len(levels) - 1
        top_down: list[torch.Tensor] = []
        for i in range(last, -1, -1):
            lateral = self.convs[last - i](levels[i])
            if i in self.fpn_top_down_levels and top_down:
                # Upsampled in float32, as sam2 does: under autocast the sum is float32 too.
                upsampled = F.interpolate(
                    top_down[-1].float(),
                    scale_factor=2.0,
                    mode=self.fpn_interp_model,
                    align_corners=None if self.fpn_interp_model == "nearest" else False,
                )
                lateral = lateral + upsampled
            top_down.append(lateral)
        return top_down[::-1]

    def positions(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """The sine position encoding of each feature map (only SAM 2's video memory reads them)."""
        return [self.position_encoding(f).to(f.dtype) for f in features]
