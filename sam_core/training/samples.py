"""Training images and the batches of (image, ground-truth mask) pairs drawn from them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from sam_core.mask_ops import decode_rle
from sam_core.modeling.transforms import resize_longest_side


@dataclass(frozen=True)
class TrainingImage:
    """image: hxwx3 uint8 RGB resized so that max(h, w) is the model's image size.
    rles: the ground-truth masks as COCO RLEs at the image's original size."""

    image: np.ndarray
    rles: tuple[dict[str, Any], ...]


def prepare_training_image(image: np.ndarray, rles: Sequence[dict[str, Any]], image_size: int) -> TrainingImage:
    """Resize an HxWx3 uint8 image to the model frame; images without masks are refused."""
    if not rles:
        raise ValueError("a training image needs at least one ground-truth mask")
    return TrainingImage(resize_longest_side(image, image_size), tuple(rles))


@dataclass(frozen=True)
class Batch:
    """images: Bx3xSxS normalised and padded model inputs. targets: NxSxS float 0/1 masks in the
    model frame (N = B x masks per image, grouped by image). valid: Nx1xSxS, 1 on image pixels,
    0 on padding. image_index: N, the image of each target."""

    images: torch.Tensor
    targets: torch.Tensor
    valid: torch.Tensor
    image_index: torch.Tensor


def _mask_in_frame(rle: dict[str, Any], shape: tuple[int, int], size: int) -> np.ndarray:
    mask = decode_rle(rle).astype(np.uint8)
    if mask.shape != shape:
        mask = cv2.resize(mask, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    framed = np.zeros((size, size), np.uint8)
    framed[: shape[0], : shape[1]] = mask
    return framed


def make_batch(
    images: Sequence[TrainingImage],
    masks_per_image: int,
    preprocess: Any,
    size: int,
    rng: np.random.Generator,
    flip: bool,
) -> Batch:
    """Draw `masks_per_image` non-empty masks of each image (without replacement where it has enough).

    preprocess: the model's `preprocess` (normalise and pad). With `flip`, each image and its
    masks are mirrored left-right with probability 1/2.
    """
    inputs, targets, valid, index = [], [], [], []
    for i, item in enumerate(images):
        h, w = item.image.shape[:2]
        choice = rng.choice(len(item.rles), masks_per_image, replace=len(item.rles) < masks_per_image)
        masks = np.stack([_mask_in_frame(item.rles[j], (h, w), size) for j in choice])
        image = item.image
        mirrored = flip and rng.random() < 0.5
        if mirrored:
            image = image[:, ::-1]
            masks[:, :, :w] = masks[:, :, :w][:, :, ::-1]
        tensor = torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float()
        inputs.append(preprocess(tensor))
        area = np.zeros((1, size, size), np.float32)
        area[:, :h, :w] = 1
        targets.append(torch.from_numpy(masks).float())
        valid.append(torch.from_numpy(area).expand(masks_per_image, 1, size, size))
        index.append(torch.full((masks_per_image,), i))
    return Batch(torch.cat(inputs), torch.cat(targets), torch.cat(valid), torch.cat(index))
