"""One vector per image from SAM's image encoder: the mean of the encoder's grid cells that cover
the image (the padding to a square left out), L2-normalised, stored as float16.

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
from sam_core.modeling.sam import Sam

POOLING = "mean over the image's cells of the full-image image-encoder output, L2-normalised"
"""How `pool_embeddings` makes a vector; recorded with every embeddings file."""


def covered_cells(input_size: tuple[int, int], grid: int, image_size: int) -> tuple[int, int]:
    """(rows, columns) of a `grid` x `grid` feature map that an image resized to `input_size`
    (h, w, longest side <= `image_size`) and zero-padded to `image_size` x `image_size` covers:
    every cell holding at least one image pixel."""
    h, w = input_size
    if not (0 < h <= image_size and 0 < w <= image_size):
        raise ValueError(f"input size {h}x{w} is not within the model input {image_size}x{image_size}")
    return math.ceil(h * grid / image_size), math.ceil(w * grid / image_size)


def pool_embeddings(features: torch.Tensor, input_sizes: Sequence[tuple[int, int]], image_size: int) -> np.ndarray:
    """BxD float16 unit vectors (see POOLING) from the image encoder's output.

    features: BxDxGxG (any float dtype, any device), image b resized to `input_sizes[b]` (h, w)
    and padded right/bottom to `image_size` x `image_size` before encoding. The mean and the
    normalisation are computed in float32; an all-zero mean stays zero.
    """
    if features.ndim != 4 or features.shape[-1] != features.shape[-2]:
        raise ValueError(f"features must be BxDxGxG, got shape {tuple(features.shape)}")
    if len(input_sizes) != features.shape[0]:
        raise ValueError(f"{features.shape[0]} feature maps but {len(input_sizes)} input sizes")
    grid = features.shape[-1]
    means = []
    for feature, size in zip(features, input_sizes):
        rows, columns = covered_cells(size, grid, image_size)
        means.append(feature[:, :rows, :columns].float().mean(dim=(1, 2)))
    if not means:
        return np.zeros((0, features.shape[1]), dtype=np.float16)
    pooled = torch.nn.functional.normalize(torch.stack(means), dim=1)
    return pooled.cpu().numpy().astype(np.float16)


@torch.inference_mode()
def embed_images(model: Sam, images: Sequence[np.ndarray], batch_size: int = 4) -> np.ndarray:
    """NxD float16 pooled embeddings (`pool_embeddings`) of N whole images (any sizes; see
    `as_rgb_uint8`), each resized to the model's input as the mask generator's full-image crop is,
    encoded in float32 `batch_size` at a time on the model's device."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model = model.eval()
    pooled = [np.zeros((0, model.config.prompt_embed_dim), dtype=np.float16)]
    for start in range(0, len(images), batch_size):
        prepared = [model.prepare_image(as_rgb_uint8(image)) for image in images[start : start + batch_size]]
        features = model.image_encoder(torch.cat([model_input for model_input, _ in prepared]))
        pooled.append(pool_embeddings(features, [size for _, size in prepared], model.config.image_size))
    return np.concatenate(pooled)
