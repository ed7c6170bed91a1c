"""The prompt encoder: sparse embeddings for points and boxes, dense embeddings for mask prompts."""

from __future__ import annotations

import math

import torch
from torch import nn

from sam_core.modeling.config import SamConfig
from sam_core.modeling.layers import LayerNorm2d
from sam_core.modeling.sam2_config import Sam2Config

# Point labels as the model knows them.
PADDING_POINT = -1


class RandomFourierPositions(nn.Module):
    """Position encoding with random spatial frequencies (Tancik et al. 2020).

    A fixed 2xF Gaussian matrix maps (x, y) in [0, 1] to F frequencies; the encoding is
    [sin, cos] of them, 2F channels.
    """

    def __init__(self, num_frequencies: int) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, num_frequencies))

    def encode(self, unit_coords: torch.Tensor) -> torch.Tensor:
        """...x2 coordinates in [0, 1] (x, y) to ...x2F encodings."""
        projected = (2 * unit_coords - 1) @ self.positional_encoding_gaussian_matrix
        projected = 2 * math.pi * projected
        return torch.cat([torch.sin(projected), torch.cos(projected)], dim=-1)

    def grid(self, size: tuple[int, int]) -> torch.Tensor:
        """Encodings of the centres of an HxW grid of cells: 2FxHxW."""
        h, w = size
        device = self.positional_encoding_gaussian_matrix.device
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        coords = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)
        return self.encode(coords).permute(2, 0, 1)

    def points(self, coords: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """BxNx2 pixel coordinates (x, y) in an image of (H, W) to BxNx2F encodings."""
        scale = torch.tensor([image_size[1], image_size[0]], dtype=coords.dtype, device=coords.device)
        return self.encode((coords / scale).to(self.positional_encoding_gaussian_matrix.dtype))


class PromptEncoder(nn.Module):
    """Embeds prompts for the mask decoder.

    Sparse: each point is its position encoding plus a learned embedding for its label
    (0 background, 1 foreground, -1 padding, which has no position); a box is two points (its
    corners) with their own learned embeddings. Dense: a 1xMxM mask logit prompt (M = 4 x the
    embedding grid) downscaled by convolutions to the embedding grid, or a learned "no mask"
    embedding broadcast over it.
    """

    def __init__(self, config: SamConfig | Sam2Config) -> None:
        super().__init__()
        dim = config.prompt_embed_dim
        grid = config.embedding_grid
        self.embed_dim = dim
        self.image_embedding_size = (grid, grid)
        self.input_image_size = (config.image_size, config.image_size)
        self.mask_input_size = (4 * grid, 4 * grid)
        self.pe_layer = RandomFourierPositions(dim // 2)
        # 0: background point, 1: foreground point, 2: box top-left, 3: box bottom-right.
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, dim) for _ in range(4))
        self.not_a_point_embed = nn.Embedding(1, dim)
        hidden = config.mask_in_chans
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, hidden // 4, kernel_size=2, stride=2),
            LayerNorm2d(hidden // 4),
            nn.GELU(),
            nn.Conv2d(hidden // 4, hidden, kernel_size=2, stride=2),
            LayerNorm2d(hidden),
            nn.GELU(),
            nn.Conv2d(hidden, dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, dim)

    def get_dense_pe(self) -> torch.Tensor:
        """Position encoding of the image embedding grid: 1xPxGxG."""
        return self.pe_layer.grid(self.image_embedding_size)[None]

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        """BxNx2 coordinates in the model's input frame and BxN labels to BxNxP (BxN+1xP with pad).
        Labels: 0 background, 1 foreground, 2 and 3 a box's top-left and bottom-right corner (how
        SAM 2 passes boxes), -1 padding.

        With `pad`, a padding point is appended, as the model was trained to see when no box
        follows the points.
        """
        coords = coords + 0.5  # pixel centres
        if pad:
            coords = torch.cat([coords, torch.zeros_like(coords[:, :1])], dim=1)
            labels = torch.cat([labels, torch.full_like(labels[:, :1], PADDING_POINT)], dim=1)
        embedding = self.pe_layer.points(coords, self.input_image_size)
        labels = labels[..., None]
        embedding = torch.where(labels == PADDING_POINT, self.not_a_point_embed.weight, embedding)
        for label, kind in enumerate(self.point_embeddings):
            embedding = embedding + (labels == label) * kind.weight
        return embedding

    def embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        """Bx4 XYXY boxes in the model's input frame to Bx2xP corner embeddings."""
        corners = (boxes + 0.5).reshape(-1, 2, 2)
        embedding = self.pe_layer.points(corners, self.input_image_size)
        corner_kinds = torch.cat([self.point_embeddings[2].weight, self.point_embeddings[3].weight])
        return embedding + corner_kinds

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Sparse BxKxP and dense embeddings for a batch of B prompts.

        The dense embedding is BxPxGxG for mask prompts; without them it is the "no mask"
        embedding as one 1xPxGxG tensor that all prompts share.
        """
        batch = _batch_size(points, boxes, masks)
        device = self.no_mask_embed.weight.device
        parts = []
        if points is not None:
            parts.append(self.embed_points(points[0], points[1], pad=boxes is None))
        if boxes is not None:
            parts.append(self.embed_boxes(boxes))
        if parts:
            sparse = torch.cat(parts, dim=1)
        else:
            sparse = torch.empty((batch, 0, self.embed_dim), device=device)
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            grid = self.image_embedding_size
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, grid[0], grid[1])
        return sparse, dense


def _batch_size(
    points: tuple[torch.Tensor, torch.Tensor] | None, boxes: torch.Tensor | None, masks: torch.Tensor | None
) -> int:
    if points is not None:
        return points[0].shape[0]
    if boxes is not None:
        return boxes.shape[0]
    if masks is not None:
        return masks.shape[0]
    return 1
