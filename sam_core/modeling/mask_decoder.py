"""The mask decoder: prompt and image embeddings to mask logits and predicted IoUs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sam_core.modeling.config import SamConfig
from sam_core.modeling.layers import MLP, LayerNorm2d
from sam_core.modeling.transformer import TwoWayTransformer


class MaskDecoder(nn.Module):
    """Predicts 1 + `num_multimask_outputs` masks per prompt and an IoU estimate for each.

    Output token 0 is the single-mask output, trained for unambiguous prompts; tokens 1..3
    are the multimask outputs (whole, part, sub-part). Masks come out at 4x the embedding
    grid (256x256 for the published models).
    """

    def __init__(self, config: SamConfig) -> None:
        super().__init__()
        dim = config.prompt_embed_dim
        self.num_mask_tokens = config.num_multimask_outputs + 1
        self.transformer = TwoWayTransformer(
            config.decoder_depth, dim, config.decoder_num_heads, config.decoder_mlp_dim
        )
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.output_upscaling = mask_upscaling(dim)
        self.output_hypernetworks_mlps = nn.ModuleList(MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = MLP(dim, config.iou_head_hidden_dim, self.num_mask_tokens, config.iou_head_depth)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode B prompts.

        image_embeddings: 1xPxGxG (shared by all prompts) or BxPxGxG (one per prompt).
        image_pe: 1xPxGxG. sparse: BxKxP. dense: BxPxGxG, or 1xPxGxG when shared.
        Returns mask logits BxMx4Gx4G and IoU predictions BxM, M = 3 with multimask output, else 1.
        """
        outputs = list(range(1, self.num_mask_tokens)) if multimask_output else [0]
        return self.predict(image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings, outputs)

    def predict(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        outputs: list[int],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask logits BxMx4Gx4G and IoU predictions BxM for the output tokens listed in `outputs`."""
        batch = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        output_tokens = output_tokens[None].expand(batch, -1, -1).to(sparse_prompt_embeddings.dtype)
        tokens = torch.cat([output_tokens, sparse_prompt_embeddings], dim=1)

        image = image_embeddings + dense_prompt_embeddings
        grid = image.shape[-2:]
        tokens_out, image_out = self.transformer(image, image_pe, tokens)

        mask_tokens_out = tokens_out[:, 1 : 1 + self.num_mask_tokens]
        hyper = torch.stack([self.output_hypernetworks_mlps[i](mask_tokens_out[:, i]) for i in outputs], dim=1)
        masks = upscale_and_project(self.output_upscaling, image_out.reshape(batch, grid[0], grid[1], -1), hyper)
        iou_pred = self.iou_prediction_head(tokens_out[:, 0])
        return masks, iou_pred[:, outputs]


def mask_upscaling(dim: int) -> nn.Sequential:
    """The decoder's `output_upscaling`: two stride-2 transposed convolutions, dim to dim/4 to dim/8 channels."""
    return nn.Sequential(
        nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
        LayerNorm2d(dim // 4),
        nn.GELU(),
        nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
        nn.GELU(),
    )


def upscale_and_project(
    upscaling: nn.Sequential,
    image: torch.Tensor,
    hyper: torch.Tensor,
    skips: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """BxGxGxC image tokens and BxMxC' hypernetwork weights to BxMx4Gx4G mask logits.

    The two stride-2, kernel-2 transposed convolutions of `upscaling` (see `mask_upscaling`) touch
    no overlapping pixels, so each is one matrix product per pixel. They run channels-last on
    the pixels as they come, each pixel's 2x2 (then 4x4) sub-pixels kept in separate axes;
    only the M-channel result is reordered into image rows and columns. That keeps the
    large intermediate tensors out of any transpose.

    `skips` (SAM 2) are high-resolution features (s0, s1) in that sub-pixel layout (see
    `subpixel_layout`), batch 1 or B: s1 (B,G,G,2,2,C/4) is added to the first convolution's
    output before its norm, s0 (B,G,G,2,2,2,2,C/8) to the second's before its activation.
    """
    up1, norm, act1, up2, act2 = upscaling
    batch, gh, gw, _ = image.shape
    x = _transposed_conv2x2(image, up1)  # B,G,G,2,2,C/4
    if skips is not None:
        x = x + skips[1].to(x.dtype)
    x = act1(norm.channels_last(x))
    x = _transposed_conv2x2(x, up2)  # B,G,G,2,2,2,2,C/8
    if skips is not None:
        x = x + skips[0].to(x.dtype)
    x = act2(x)
    masks = x.reshape(batch, -1, x.shape[-1]) @ hyper.transpose(1, 2)  # B,(G*G*16),M
    masks = masks.reshape(batch, gh, gw, 2, 2, 2, 2, -1)
    # axes: b, i, j, di1, dj1, di2, dj2, m -> b, m, (i, di1, di2), (j, dj1, dj2)
    masks = masks.permute(0, 7, 1, 3, 5, 2, 4, 6)
    return masks.reshape(batch, -1, 4 * gh, 4 * gw)


def subpixel_layout(feature: torch.Tensor, levels: int) -> torch.Tensor:
    """A BxCx(G*2^L)x(G*2^L) feature map to the channels-last layout of `upscale_and_project`.

    Output axes: B, G, G, then (di, dj) for each of the L = `levels` doublings, C; i.e.
    [b, i, j, di1, dj1, ..., diL, djL, c] is pixel (i*2^L + di1*2^(L-1) + ... + diL, likewise
    for columns) of the input.
    """
    batch, channels, h, w = feature.shape
    scale = 2**levels
    x = feature.reshape(batch, channels, h // scale, *[2] * levels, w // scale, *[2] * levels)
    # axes: b, c, i, di1..diL, j, dj1..djL
    sub_rows = range(3, 3 + levels)
    sub_cols = range(4 + levels, 4 + 2 * levels)
    order = [0, 2, 3 + levels, *(axis for pair in zip(sub_rows, sub_cols, strict=True) for axis in pair), 1]
    return x.permute(order)


def _transposed_conv2x2(x: torch.Tensor, conv: nn.ConvTranspose2d) -> torch.Tensor:
    """A kernel-2, stride-2 ConvTranspose2d applied channels-last: ...xCin to ...x2x2xCout.

    Output [..., di, dj, :] is the sub-pixel (di, dj) of the input pixel, i.e. the output
    pixel (2i + di, 2j + dj) of the convolution.
    """
    cin, cout = conv.weight.shape[:2]
    weight = conv.weight.permute(2, 3, 1, 0).reshape(4 * cout, cin)  # rows ordered (di, dj, cout)
    out = F.linear(x, weight.to(x.dtype), conv.bias.to(x.dtype).repeat(4))
    return out.reshape(*x.shape[:-1], 2, 2, cout)
