"""One vector per image from SAM's image encoder, for finding near-duplicate photos.

The vector pools the tokens of the encoder's last block (before the neck, C channels; for SAM 2.1 the
Hiera trunk's last stage, at stride 32) over the grid cells that cover the image (the padding to a
square left out; SAM 2.1 pads nothing): their mean and their standard
deviation per channel, each L2-normalised, concatenated (2C) and L2-normalised again, stored as
float16. `benchmarks/semdedup_threshold.py` chose this pooling on real photos: the mean of the
neck's output, which the first releases stored, puts almost every pair of photos above cosine 0.97
(docs/curation.md has both tables).

The automatic mask generator embeds the whole image anyway (its first crop), so the release gets
this vector without a second encoder pass; `tools/embed_release.py` computes the same vector for a
release made before embeddings existed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from sam_core.image import as_rgb_uint8
from sam_core.modeling.registry import ModelConfig, SamModel

POOLING = (
    "mean and standard deviation over the image's cells of the full-image encoder's last-block tokens "
    "(before the neck), each L2-normalised, concatenated, L2-normalised"
)
"""How `pool_embeddings` makes a vector; recorded with every embeddings file."""


def embedding_dim(config: ModelConfig) -> int:
    """D of the pooled vectors of a model of `config`: the mean and the deviation of each channel."""
    return 2 * config.encoder_embed_dim


def covered_cells(input_size: tuple[int, int], grid: int, image_size: int) -> tuple[int, int]:
    """(rows, columns) of a `grid` x `grid` feature map that an image resized to `input_size`
    (h, w, longest side <= `image_size`) and zero-padded to `image_size` x `image_size` covers:
    every cell holding at least one image pixel."""
    h, w = input_size
    if not (0 < h <= image_size and 0 < w <= image_size):
        raise ValueError(f"input size {h}x{w} is not within the model input {image_size}x{image_size}")
    return math.ceil(h * grid / image_size), math.ceil(w * grid / image_size)


def pool_embeddings(tokens: torch.Tensor, input_sizes: Sequence[tuple[int, int]], image_size: int) -> np.ndarray:
    """Bx2C float16 unit vectors (see POOLING) from the encoder's last-block tokens.

    tokens: BxGxGxC (any float dtype, any device; `ImageEncoder.forward_with_tokens`), image b
    resized to `input_sizes[b]` (h, w) and padded right/bottom to `image_size` x `image_size`
    before encoding. Computed in float32; a part that is all zero stays zero.
    """
    if tokens.ndim != 4 or tokens.shape[1] != tokens.shape[2]:
        raise ValueError(f"tokens must be BxGxGxC, got shape {tuple(tokens.shape)}")
    if len(input_sizes) != tokens.shape[0]:
        raise ValueError(f"{tokens.shape[0]} token grids but {len(input_sizes)} input sizes")
    grid, channels = tokens.shape[1], tokens.shape[3]
    if not input_sizes:
        return np.zeros((0, 2 * channels), dtype=np.float16)
    parts = []
    for cells_of_image, size in zip(tokens, input_sizes):
        rows, columns = covered_cells(size, grid, image_size)
        cells = cells_of_image[:rows, :columns].reshape(-1, channels).float()
        mean = cells.mean(dim=0)
        deviation = (cells - mean).square().mean(dim=0).sqrt()
        parts.append(torch.cat([torch.nn.functional.normalize(part, dim=0) for part in (mean, deviation)]))
    pooled = torch.nn.functional.normalize(torch.stack(parts), dim=1)
    return pooled.cpu().numpy().astype(np.float16)


@torch.inference_mode()
def embed_images(model: SamModel, images: Sequence[np.ndarray], batch_size: int = 4) -> np.ndarray:
    """NxD float16 pooled embeddings (`pool_embeddings`) of N whole images (any sizes; see
    `as_rgb_uint8`), each resized to the model's input as the mask generator's full-image crop is,
    encoded in float32 `batch_size` at a time on the model's device."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model = model.eval()
    pooled = [np.zeros((0, embedding_dim(model.config)), dtype=np.float16)]
    for start in range(0, len(images), batch_size):
        prepared = [model.prepare_image(as_rgb_uint8(image)) for image in images[start : start + batch_size]]
        _, tokens = model.encode_with_tokens(torch.cat([model_input for model_input, _ in prepared]))
        pooled.append(pool_embeddings(tokens, [size for _, size in prepared], model.config.image_size))
    return np.concatenate(pooled)
