"""The ViT image encoder of SAM (an MAE-pretrained ViT with windowed attention and a conv neck).

Tokens stay in a BxHxWxC layout between blocks. Most blocks attend inside non-overlapping
windows (14x14 patches for the published models, padded at the right and bottom edges); a few
blocks, named by `global_attn_indexes`, attend over the whole grid. Every attention adds a
decomposed relative position bias: one learned table for vertical and one for horizontal offsets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sam_core.modeling.config import SamConfig
from sam_core.modeling.layers import FeedForward, LayerNorm2d


def resample_offset_table(table: torch.Tensor, length: int) -> torch.Tensor:
    """A (2*S-1)xD table of learned offset embeddings resampled linearly to length x D."""
    if table.shape[0] == length:
        return table
    return F.interpolate(table.T[None], size=length, mode="linear")[0].T


def resample_position_grid(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """A 1xGxGxD absolute position embedding resampled bicubically to 1 x grid x grid x D."""
    if pos_embed.shape[1] == grid:
        return pos_embed
    resized = F.interpolate(pos_embed.permute(0, 3, 1, 2), size=(grid, grid), mode="bicubic", align_corners=False)
    return resized.permute(0, 2, 3, 1)


def relative_position_table(size: int, table: torch.Tensor) -> torch.Tensor:
    """Bias rows for every (query, key) offset along one axis.

    table: (2*S-1)xD learned embeddings of offsets -(S-1)..S-1, where S is the size the
    table was trained for; it is resampled linearly when `size` differs from S.
    Returns size x size x D: entry [i, j] embeds the offset i - j.
    """
    table = resample_offset_table(table, 2 * size - 1)
    offsets = torch.arange(size, device=table.device)
    index = offsets[:, None] - offsets[None, :] + (size - 1)
    return table[index]


def decomposed_position_bias(
    q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, grid: tuple[int, int]
) -> torch.Tensor:
    """Attention bias from decomposed relative positions (MViTv2, as used by SAM).

    q: BxNxHWxD queries (unscaled). Returns BxNxHWxHW, the sum of a term for the vertical and
    a term for the horizontal offset between each query and key position.
    """
    h, w = grid
    batch, heads, _, dim = q.shape
    grid_q = q.reshape(batch, heads, h, w, dim)
    bias_h = torch.einsum("bnhwc,hkc->bnhwk", grid_q, relative_position_table(h, rel_pos_h))
    bias_w = torch.einsum("bnhwc,wkc->bnhwk", grid_q, relative_position_table(w, rel_pos_w))
    bias = bias_h[..., :, None] + bias_w[..., None, :]
    return bias.reshape(batch, heads, h * w, h * w)


class EncoderAttention(nn.Module):
    """Multi-head self attention over a BxHxWxC grid with a relative position bias."""

    def __init__(self, dim: int, num_heads: int, grid: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * grid - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * grid - 1, head_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(batch, h * w, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        bias = decomposed_position_bias(q, self.rel_pos_h, self.rel_pos_w, (h, w))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
        return self.proj(out.transpose(1, 2).reshape(batch, h, w, -1))


def partition_windows(x: torch.Tensor, window: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Cut BxHxWxC into (B*nWin)x window x window xC, zero-padding H and W up to multiples of `window`.

    Returns the windows and the padded (H, W).
    """
    batch, h, w, channels = x.shape
    pad_h, pad_w = (-h) % window, (-w) % window
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(batch, hp // window, window, wp // window, window, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window, window, channels), (hp, wp)


def merge_windows(windows: torch.Tensor, window: int, padded: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Inverse of `partition_windows`: back to BxHxWxC with the padding cut off."""
    hp, wp = padded
    channels = windows.shape[-1]
    batch = windows.shape[0] // ((hp // window) * (wp // window))
    x = windows.view(batch, hp // window, wp // window, window, window, channels)
    x = x.permute(0, 1, 3, 2, 4, 5).reshape(batch, hp, wp, channels)
    return x[:, : size[0], : size[1], :]


class EncoderBlock(nn.Module):
    """Pre-norm transformer block; `window` 0 means global attention over the whole grid."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, window: int, grid: int) -> None:
        super().__init__()
        self.window = window
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = EncoderAttention(dim, num_heads, window if window else grid)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = FeedForward(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window:
            size = (x.shape[1], x.shape[2])
            windows, padded = partition_windows(x, self.window)
            x = merge_windows(self.attn(windows), self.window, padded, size)
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Non-overlapping patches to tokens: BxCxHxW image to Bx(H/p)x(W/p)xD."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class ImageEncoder(nn.Module):
    """Bx3xSxS normalised, padded images (S = config.image_size) to BxPxGxG embeddings.

    P is config.prompt_embed_dim (256 published) and G = S / patch_size (64 published).
    """

    def __init__(self, config: SamConfig) -> None:
        super().__init__()
        dim, grid = config.encoder_embed_dim, config.embedding_grid
        self.img_size = config.image_size
        self.patch_embed = PatchEmbed(config.patch_size, 3, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, dim))
        global_blocks = set(config.encoder_global_attn_indexes)
        self.blocks = nn.ModuleList(
            EncoderBlock(
                dim,
                config.encoder_num_heads,
                config.encoder_mlp_ratio,
                window=0 if i in global_blocks else config.encoder_window_size,
                grid=grid,
            )
            for i in range(config.encoder_depth)
        )
        out = config.prompt_embed_dim
        self.neck = nn.Sequential(
            nn.Conv2d(dim, out, kernel_size=1, bias=False),
            LayerNorm2d(out),
            nn.Conv2d(out, out, kernel_size=3, padding=1, bias=False),
            LayerNorm2d(out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_tokens(x)[0]

    def forward_with_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The BxPxGxG embeddings of `forward` and BxGxGxC: the last block's tokens, before the neck
        (C = config.encoder_embed_dim), which `sam_core.pooled_embedding` pools into image vectors."""
        x = self.patch_embed(x) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.neck(x.permute(0, 3, 1, 2)), x
