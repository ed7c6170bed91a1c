"""SAM 2.1's mask decoder for single images: SAM's decoder with high-resolution skips and an object score."""

from __future__ import annotations

import torch
from torch import nn

from sam_core.modeling.layers import MLP
from sam_core.modeling.mask_decoder import mask_upscaling, subpixel_layout, upscale_and_project
from sam_core.modeling.transformer import TwoWayTransformer


class Sam2MaskDecoder(nn.Module):
    """Predicts masks, their IoU estimates and an object score for each prompt (state-dict layout of
    SAM 2's `sam_mask_decoder.*`, fixed to the SAM 2.1 configuration).

    Output tokens, in order: the object-score token, the IoU token, then 1 + `num_multimask_outputs`
    mask tokens (token 0 the single-mask output, the rest the multimask outputs), followed by the
    prompt's sparse embeddings. Beyond SAM 1 it adds:

    - two high-resolution skips into the mask upscaling, from the image encoder's two finest FPN
      levels projected by `conv_s0` (to dim/8 channels, 4G x 4G) and `conv_s1` (dim/4, 2G x 2G).
      The caller applies these projections once per image (`project_high_res`), as SAM 2's
      `forward_image` does, and passes the results to `forward` for every prompt batch;
    - an object score logit per prompt from the object-score token (`pred_obj_score_head`);
    - IoU estimates through a sigmoid;
    - for single-mask output at inference (not in training mode), a fall-back to the multimask
      output with the highest IoU estimate when the single-mask logits are unstable: fewer than
      `stability_thresh` of the pixels above -`stability_delta` are above +`stability_delta`.
    """

    def __init__(
        self,
        *,
        dim: int = 256,
        num_multimask_outputs: int = 3,
        depth: int = 2,
        num_heads: int = 8,
        mlp_dim: int = 2048,
        iou_head_depth: int = 3,
        iou_head_hidden_dim: int = 256,
        stability_delta: float = 0.05,
        stability_thresh: float = 0.98,
    ) -> None:
        super().__init__()
        self.num_mask_tokens = num_multimask_outputs + 1
        self.stability_delta = stability_delta
        self.stability_thresh = stability_thresh
        self.transformer = TwoWayTransformer(depth, dim, num_heads, mlp_dim, mlp_as_layers=True)
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.obj_score_token = nn.Embedding(1, dim)
        self.output_upscaling = mask_upscaling(dim)
        self.conv_s0 = nn.Conv2d(dim, dim // 8, kernel_size=1)
        self.conv_s1 = nn.Conv2d(dim, dim // 4, kernel_size=1)
        self.output_hypernetworks_mlps = nn.ModuleList(MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens))
        self.iou_prediction_head = MLP(dim, iou_head_hidden_dim, self.num_mask_tokens, iou_head_depth)
        self.pred_obj_score_head = MLP(dim, dim, 1, 3)

    def project_high_res(self, fpn_s0: torch.Tensor, fpn_s1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The image encoder's two finest FPN levels, Bx`dim`x4Gx4G and Bx`dim`x2Gx2G, to the
        high-resolution features `forward` takes: Bx(dim/8)x4Gx4G and Bx(dim/4)x2Gx2G."""
        return self.conv_s0(fpn_s0), self.conv_s1(fpn_s1)

    def forward(
        self,
        image_embeddings: torch.Tensor,
        image_pe: torch.Tensor,
        sparse_prompt_embeddings: torch.Tensor,
        dense_prompt_embeddings: torch.Tensor,
        high_res_features: tuple[torch.Tensor, torch.Tensor],
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Decode B prompts.

        image_embeddings: 1xDxGxG (shared by all prompts) or BxDxGxG (one per prompt), with
        SAM 2's `no_mem_embed` already added. image_pe: 1xDxGxG. sparse: BxKxD. dense: BxDxGxG,
        or 1xDxGxG when shared. high_res_features: (s0, s1) from `project_high_res`, batch 1 or
        B like the image embeddings.

        Returns mask logits BxMx4Gx4G, IoU estimates BxM in [0, 1] (M = 3 with multimask output,
        else 1) and object score logits Bx1.
        """
        batch = sparse_prompt_embeddings.shape[0]
        output_tokens = torch.cat([self.obj_score_token.weight, self.iou_token.weight, self.mask_tokens.weight])
        output_tokens = output_tokens[None].expand(batch, -1, -1).to(sparse_prompt_embeddings.dtype)
        tokens = torch.cat([output_tokens, sparse_prompt_embeddings], dim=1)

        image = image_embeddings + dense_prompt_embeddings
        grid = image.shape[-2:]
        tokens_out, image_out = self.transformer(image, image_pe, tokens)

        if multimask_output:
            outputs = list(range(1, self.num_mask_tokens))
        elif self.training:
            outputs = [0]
        else:
            outputs = list(range(self.num_mask_tokens))  # all, for the stability fall-back
        mask_tokens_out = tokens_out[:, 2 : 2 + self.num_mask_tokens]
        hyper = torch.stack([self.output_hypernetworks_mlps[i](mask_tokens_out[:, i]) for i in outputs], dim=1)
        s0, s1 = high_res_features
        skips = (subpixel_layout(s0, levels=2), subpixel_layout(s1, levels=1))
        masks = upscale_and_project(self.output_upscaling, image_out.reshape(batch, grid[0], grid[1], -1), hyper, skips)
        iou_pred = torch.sigmoid(self.iou_prediction_head(tokens_out[:, 1]))[:, outputs]
        object_score_logits = self.pred_obj_score_head(tokens_out[:, 0])
        if not multimask_output and not self.training:
            masks, iou_pred = self._single_or_best_multimask(masks, iou_pred)
        return masks, iou_pred, object_score_logits

    def _single_or_best_multimask(
        self, masks: torch.Tensor, iou_pred: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Bx(1+N)xHxW logits and Bx(1+N) IoUs of all mask tokens to the Bx1xHxW and Bx1 of
        the single-mask output where it is stable, else of the multimask output with the
        highest IoU estimate."""
        logits = masks[:, 0].flatten(1)
        inner = (logits > self.stability_delta).sum(dim=-1).float()
        outer = (logits > -self.stability_delta).sum(dim=-1).float()
        stability = torch.where(outer > 0, inner / outer, 1.0)
        best_multimask = iou_pred[:, 1:].argmax(dim=-1) + 1
        chosen = torch.where(stability >= self.stability_thresh, 0, best_multimask)
        rows = torch.arange(masks.shape[0], device=masks.device)
        return masks[rows, chosen][:, None], iou_pred[rows, chosen][:, None]
