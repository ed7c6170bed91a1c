"""The Hiera trunk of SAM 2.1's image encoder (a hierarchical ViT with mask-unit windows).

Tokens stay in a BxHxWxC layout between blocks. A 7x7 stride-4 convolution makes the first grid;
the blocks then run in stages, and the first block of each of the first `q_pool` later stages
halves the grid by max-pooling its queries (and its shortcut) while the width and the number of
heads double. Most blocks attend inside square windows whose size is set per stage; blocks named
in `global_att_blocks` attend over the whole grid. The trunk returns the last tokens of every
stage, highest resolution first.

The window size of a stage's first block is the previous stage's: it partitions the grid at the
old resolution and its pooled queries fill windows of half that size.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate

import torch
import torch.nn.functional as F
from torch import nn

from sam_core.modeling.image_encoder import merge_windows, partition_windows
from sam_core.modeling.layers import MLP


@dataclass(frozen=True)
class HieraSpec:
    """The published numbers of one SAM 2.1 image encoder (trunk and FPN neck).

    `backbone_channel_list` lists the trunk's stage widths lowest resolution first;
    `fpn_top_down_levels` and `scalp` count levels highest resolution first and from the
    low-resolution end respectively, as in sam2's configs.
    """

    embed_dim: int
    num_heads: int
    stages: tuple[int, ...]
    global_att_blocks: tuple[int, ...]
    window_pos_embed_bkg_spatial_size: tuple[int, int]
    window_spec: tuple[int, ...]
    backbone_channel_list: tuple[int, ...]
    fpn_top_down_levels: tuple[int, ...] = (2, 3)
    scalp: int = 1
    d_model: int = 256
    fpn_interp_model: str = "nearest"


# From sam2/configs/sam2.1/*.yaml; where a config leaves a trunk number out (window_spec
# everywhere, and all of b+'s stage layout), the value is the default of sam2's Hiera.
HIERA_SPECS: dict[str, HieraSpec] = {
    "sam2.1_hiera_t": HieraSpec(
        embed_dim=96,
        num_heads=1,
        stages=(1, 2, 7, 2),
        global_att_blocks=(5, 7, 9),
        window_pos_embed_bkg_spatial_size=(7, 7),
        window_spec=(8, 4, 14, 7),
        backbone_channel_list=(768, 384, 192, 96),
    ),
    "sam2.1_hiera_s": HieraSpec(
        embed_dim=96,
        num_heads=1,
        stages=(1, 2, 11, 2),
        global_att_blocks=(7, 10, 13),
        window_pos_embed_bkg_spatial_size=(7, 7),
        window_spec=(8, 4, 14, 7),
        backbone_channel_list=(768, 384, 192, 96),
    ),
    "sam2.1_hiera_b+": HieraSpec(
        embed_dim=112,
        num_heads=2,
        stages=(2, 3, 16, 3),
        global_att_blocks=(12, 16, 20),
        window_pos_embed_bkg_spatial_size=(14, 14),
        window_spec=(8, 4, 14, 7),
        backbone_channel_list=(896, 448, 224, 112),
    ),
    "sam2.1_hiera_l": HieraSpec(
        embed_dim=144,
        num_heads=2,
        stages=(2, 6, 36, 4),
        global_att_blocks=(23, 33, 43),
        window_pos_embed_bkg_spatial_size=(7, 7),
        window_spec=(8, 4, 16, 8),
        backbone_channel_list=(1152, 576, 288, 144),
    ),
}


def max_pool_grid(x: torch.Tensor, stride: int) -> torch.Tensor:
    """BxHxWxC to Bx(H/stride)x(W/stride)xC by max-pooling stride x stride cells (remainders dropped)."""
    return F.max_pool2d(x.permute(0, 3, 1, 2), kernel_size=stride, stride=stride).permute(0, 2, 3, 1)


class HieraPatchEmbed(nn.Module):
    """Bx3xHxW image to Bx(H/4)x(W/4)xD tokens with an overlapping 7x7 stride-4 convolution."""

    def __init__(self, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=7, stride=4, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class GeluMLP(MLP):
    """Two linear layers with an exact GELU between them (state-dict names layers.0, layers.1)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__(dim, hidden_dim, dim, num_layers=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers[1](F.gelu(self.layers[0](x)))


class PooledAttention(nn.Module):
    """Multi-head self attention over a BxHxWxC grid whose queries may be max-pooled by `q_stride`.

    Output: Bx(H/q_stride)x(W/q_stride)x`dim_out` (q_stride 1: the input grid).
    """

    def __init__(self, dim: int, dim_out: int, num_heads: int, q_stride: int = 1) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q_stride = q_stride
        self.qkv = nn.Linear(dim, dim_out * 3)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, h, w, _ = x.shape
        q, k, v = self.qkv(x).reshape(batch, h * w, 3, self.num_heads, -1).unbind(2)
        if self.q_stride > 1:
            q = max_pool_grid(q.reshape(batch, h, w, -1), self.q_stride)
            h, w = q.shape[1:3]
            q = q.reshape(batch, h * w, self.num_heads, -1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.proj(out.transpose(1, 2).reshape(batch, h, w, -1))


class HieraBlock(nn.Module):
    """Pre-norm transformer block from width `dim` to `dim_out`; `window` 0 means global attention.

    With `q_stride` > 1 the grid shrinks by that factor: the queries are pooled inside each window
    and the shortcut, projected to `dim_out` by `proj` from the normalised tokens, is pooled alike.
    """

    def __init__(
        self, dim: int, dim_out: int, num_heads: int, mlp_ratio: float, window: int, q_stride: int = 1
    ) -> None:
        super().__init__()
        self.window = window
        self.q_stride = q_stride
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = PooledAttention(dim, dim_out, num_heads, q_stride)
        self.norm2 = nn.LayerNorm(dim_out, eps=1e-6)
        self.mlp = GeluMLP(dim_out, int(dim_out * mlp_ratio))
        self.proj = nn.Linear(dim, dim_out) if dim != dim_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = self.norm1(x)
        shortcut = x if self.proj is None else self.proj(normed)
        if self.q_stride > 1:
            shortcut = max_pool_grid(shortcut, self.q_stride)
        if self.window:
            windows, (hp, wp) = partition_windows(normed, self.window)
            stride = self.q_stride
            out = merge_windows(
                self.attn(windows), self.window // stride, (hp // stride, wp // stride), shortcut.shape[1:3]
            )
        else:
            out = self.attn(normed)
        x = shortcut + out
        return x + self.mlp(self.norm2(x))


class Hiera(nn.Module):
    """Bx3xSxS normalised images to one BxC_ixH_ixW_i feature map per stage, highest resolution first.

    S must be a multiple of 4 * q_stride**q_pool (32 published) and 4 * window_spec[0]. Stage i has
    width embed_dim * dim_mul**i and grid S/4 / q_stride**i (for the stages that pool).
    `channel_list` holds the stage widths lowest resolution first (the FPN neck's `backbone_channel_list`).
    """

    def __init__(
        self,
        *,
        embed_dim: int,
        num_heads: int,
        stages: tuple[int, ...],
        global_att_blocks: tuple[int, ...],
        window_pos_embed_bkg_spatial_size: tuple[int, int],
        window_spec: tuple[int, ...],
        q_pool: int = 3,
        q_stride: int = 2,
        dim_mul: float = 2.0,
        head_mul: float = 2.0,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if len(stages) != len(window_spec):
            raise ValueError("window_spec needs one window size per stage")
        if not 0 <= q_pool < len(stages):
            raise ValueError("q_pool counts stage transitions: 0 to len(stages) - 1")
        stage_starts = [0, *accumulate(stages)][:-1]
        self.stage_ends = [start + count - 1 for start, count in zip(stage_starts, stages, strict=True)]
        pooling_blocks = set(stage_starts[1 : q_pool + 1])

        self.patch_embed = HieraPatchEmbed(embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, embed_dim, *window_pos_embed_bkg_spatial_size))
        self.pos_embed_window = nn.Parameter(torch.zeros(1, embed_dim, window_spec[0], window_spec[0]))

        blocks, widths = [], []
        dim = embed_dim
        for stage, (start, count) in enumerate(zip(stage_starts, stages, strict=True)):
            for i in range(start, start + count):
                dim_out, window = dim, window_spec[stage]
                if i == start and stage > 0:
                    dim_out, num_heads = int(dim * dim_mul), int(num_heads * head_mul)
                    window = window_spec[stage - 1]
                blocks.append(
                    HieraBlock(
                        dim,
                        dim_out,
                        num_heads,
                        mlp_ratio,
                        window=0 if i in global_att_blocks else window,
                        q_stride=q_stride if i in pooling_blocks else 1,
                    )
                )
                dim = dim_out
            widths.append(dim)
        self.blocks = nn.ModuleList(blocks)
        self.channel_list = widths[::-1]

    def position_embedding(self, h: int, w: int) -> torch.Tensor:
        """1xHxWxC: the background table resized bicubically to HxW plus the window table tiled over it."""
        tile = self.pos_embed_window
        if h % tile.shape[2] or w % tile.shape[3]:
            raise ValueError(f"token grid {h}x{w} is not a multiple of the {tile.shape[2]}x{tile.shape[3]} window")
        background = F.interpolate(self.pos_embed, size=(h, w), mode="bicubic", align_corners=False)
        return (background + tile.tile(1, 1, h // tile.shape[2], w // tile.shape[3])).permute(0, 2, 3, 1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.patch_embed(x)
        x = x + self.position_embedding(x.shape[1], x.shape[2])
        ends = set(self.stage_ends)
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in ends:
                outputs.append(x.permute(0, 3, 1, 2))
        return outputs
