"""The two-way transformer of the mask decoder: prompt tokens and image tokens attend to each other."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sam_core.modeling.layers import MLP, FeedForward


class TokenAttention(nn.Module):
    """Multi-head attention whose q/k/v projections may shrink the width by `downsample_rate`."""

    def __init__(self, dim: int, num_heads: int, downsample_rate: int = 1) -> None:
        super().__init__()
        inner = dim // downsample_rate
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, inner)
        self.k_proj = nn.Linear(dim, inner)
        self.v_proj = nn.Linear(dim, inner)
        self.out_proj = nn.Linear(inner, dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        return x.reshape(batch, tokens, self.num_heads, width // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Queries BqxNqxD, keys and values BkxNkxD to BxNqxD, B = max(Bq, Bk); a batch of 1 is shared.

        In the mask decoder many prompts attend to one image: with shared keys (Bk = 1) the
        prompts' queries are folded into one sequence, and shared queries (Bq = 1) are projected
        once, so nothing image-sized is computed per prompt that does not depend on the prompt.
        """
        batch, queries = max(q.shape[0], k.shape[0]), q.shape[1]
        q = self.q_proj(q)
        if k.shape[0] == 1 and batch > 1:
            q = q.reshape(1, batch * queries, -1)
        heads_q = self._heads(q)
        heads_k, heads_v = self._heads(self.k_proj(k)), self._heads(self.v_proj(v))
        if heads_q.shape[0] == 1 and heads_k.shape[0] > 1:
            heads_q = heads_q.expand(batch, -1, -1, -1)
        out = F.scaled_dot_product_attention(heads_q, heads_k, heads_v)
        width = out.shape[1] * out.shape[3]
        return self.out_proj(out.transpose(1, 2).reshape(batch, queries, width))


class TwoWayBlock(nn.Module):
    """Self attention of the tokens, tokens to image, an MLP on the tokens, image to tokens.

    Positional encodings are added to queries and keys at every attention (not to values);
    the first block of the stack skips them in the tokens' self attention. The token MLP's
    linears are named `mlp.lin1/lin2` (SAM 1) or, with `mlp_as_layers`, `mlp.layers.0/1`
    (SAM 2); both compute the same linear, ReLU, linear.
    """

    def __init__(
        self, dim: int, num_heads: int, mlp_dim: int, skip_first_layer_pe: bool, mlp_as_layers: bool = False
    ) -> None:
        super().__init__()
        self.skip_first_layer_pe = skip_first_layer_pe
        self.self_attn = TokenAttention(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = TokenAttention(dim, num_heads, downsample_rate=2)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, mlp_dim, dim, 2) if mlp_as_layers else FeedForward(dim, mlp_dim, activation=nn.ReLU)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = TokenAttention(dim, num_heads, downsample_rate=2)

    def forward(
        self, tokens: torch.Tensor, image: torch.Tensor, token_pe: torch.Tensor, image_pe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.skip_first_layer_pe:
            tokens = self.self_attn(tokens, tokens, tokens)
        else:
            q = tokens + token_pe
            tokens = tokens + self.self_attn(q, q, tokens)
        tokens = self.norm1(tokens)

        keys = image + image_pe
        tokens = self.norm2(tokens + self.cross_attn_token_to_image(tokens + token_pe, keys, image))
        tokens = self.norm3(tokens + self.mlp(tokens))
        image = self.norm4(image + self.cross_attn_image_to_token(keys, tokens + token_pe, tokens))
        return tokens, image


class TwoWayTransformer(nn.Module):
    """`depth` two-way blocks, then a last attention of the tokens to the image.

    `mlp_as_layers` gives the blocks' MLPs SAM 2's state-dict names (see `TwoWayBlock`).
    """

    def __init__(self, depth: int, dim: int, num_heads: int, mlp_dim: int, mlp_as_layers: bool = False) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            TwoWayBlock(dim, num_heads, mlp_dim, skip_first_layer_pe=(i == 0), mlp_as_layers=mlp_as_layers)
            for i in range(depth)
        )
        self.final_attn_token_to_image = TokenAttention(dim, num_heads, downsample_rate=2)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(
        self, image: torch.Tensor, image_pe: torch.Tensor, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Image embedding 1xDxHxW (shared by all prompts) or BxDxHxW, position encoding 1xDxHxW,
        prompt tokens BxNxD.

        Returns the updated BxNxD tokens and BxHWxD image tokens.
        """
        image = image.flatten(2).transpose(1, 2)
        image_pe = image_pe.flatten(2).transpose(1, 2)
        queries = tokens
        for layer in self.layers:
            queries, image = layer(queries, image, tokens, image_pe)
        attended = self.final_attn_token_to_image(queries + tokens, image + image_pe, image)
        return self.norm_final_attn(queries + attended), image
