"""The mask decoder: prompt and image embeddings to mask logits and predicted IoUs."""

from __future__ import annotations

import torch
from torch import nn

from sam_core.config import SamConfig
from sam_core.layers import MLP, LayerNorm2d
from sam_core.transformer import TwoWayTransformer


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
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, kernel_size=2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, kernel_size=2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens)
        )
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
        image_pe: 1xPxGxG. sparse: BxKxP. dense: BxPxGxG.
        Returns mask logits BxMx4Gx4G and IoU predictions BxM, M = 3 with multimask output, else 1.
        """
        masks, iou_pred = self.predict_all(image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings)
        chosen = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, chosen], iou_pred[:, chosen]

    def predict_all(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """All 1 + num_multimask_outputs masks (Bx4x4Gx4G) and IoU predictions (Bx4)."""
        batch = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        output_tokens = output_tokens[None].expand(batch, -1, -1).to(sparse_prompt_embeddings.dtype)
        tokens = torch.cat([output_tokens, sparse_prompt_embeddings], dim=1)

        image = image_embeddings.expand(batch, -1, -1, -1) if image_embeddings.shape[0] == 1 else image_embeddings
        image = image + dense_prompt_embeddings
        pe = image_pe.expand(batch, -1, -1, -1)
        _, channels, h, w = image.shape
        tokens_out, image_out = self.transformer(image, pe, tokens)

        iou_token_out = tokens_out[:, 0]
        mask_tokens_out = tokens_out[:, 1 : 1 + self.num_mask_tokens]
        upscaled = self.output_upscaling(image_out.transpose(1, 2).reshape(batch, channels, h, w))
        hyper = torch.stack(
            [mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)], dim=1
        )
        _, up_channels, up_h, up_w = upscaled.shape
        masks = (hyper @ upscaled.reshape(batch, up_channels, up_h * up_w)).reshape(batch, -1, up_h, up_w)
        return masks, self.iou_prediction_head(iou_token_out)
