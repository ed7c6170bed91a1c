"""Prompted segmentation: embed images once, then decode any number of prompts against them."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

import numpy as np
import torch

from sam_core.image import as_rgb_uint8
from sam_core.inference import autocast
from sam_core.modeling.registry import SamModel
from sam_core.modeling.transforms import scale_boxes, scale_coords

_VALID_LABELS = (-1, 0, 1)


@dataclass(frozen=True)
class Prediction:
    """Masks for one prompt (leading axis C) or a batch of B prompts (leading axes BxC).

    masks: [B]xCxHxW bool at the original image size (logits when return_logits=True, float32).
    iou_predictions: [B]xC float32, the model's estimate of each mask's IoU.
    low_res_logits: [B]xCx4Gx4G float32 (256x256 for published models), usable as a mask prompt.
    C is 3 with multimask output, else 1.
    """

    masks: np.ndarray
    iou_predictions: np.ndarray
    low_res_logits: np.ndarray


@dataclass(frozen=True)
class _ImageState:
    original_size: tuple[int, int]
    input_size: tuple[int, int]


class SamPredictor:
    """Embed one image or a batch of images once (`set_image`, `set_images`), then `predict` often.

    precision: torch.float32 (reference) or torch.bfloat16/float16, which runs the model under
    autocast (meant for CUDA; on CPU it works but is slow).
    """

    def __init__(self, model: SamModel, precision: torch.dtype = torch.float32, encode_batch_size: int = 4) -> None:
        if encode_batch_size < 1:
            raise ValueError(f"encode_batch_size must be >= 1, got {encode_batch_size}")
        self.model = model.eval()
        self.precision = precision
        self.encode_batch_size = encode_batch_size
        self._embeddings: torch.Tensor | None = None
        self._images: list[_ImageState] = []

    @property
    def num_images(self) -> int:
        return len(self._images)

    def set_image(self, image: np.ndarray) -> None:
        """Embed one image: HxW, HxWx1..4, uint8/uint16/bool/float in [0, 1] (see `as_rgb_uint8`)."""
        self.set_images([image])

    def set_images(self, images: Sequence[np.ndarray]) -> None:
        """Embed a batch of images (any sizes); prompts then name one by `image_index`."""
        if len(images) == 0:
            raise ValueError("set_images needs at least one image")
        states, inputs = [], []
        for image in images:
            rgb = as_rgb_uint8(image)
            model_input, input_size = self.model.prepare_image(rgb)
            states.append(_ImageState(rgb.shape[:2], input_size))
            inputs.append(model_input)
        chunks = []
        with torch.inference_mode(), self._autocast():
            for start in range(0, len(inputs), self.encode_batch_size):
                batch = torch.cat(inputs[start : start + self.encode_batch_size])
                chunks.append(self.model.encode(batch).float())
        self._embeddings = torch.cat(chunks)
        self._images = states

    def set_embedding(
        self, embedding: torch.Tensor, original_size: tuple[int, int], input_size: tuple[int, int]
    ) -> None:
        """Use an embedding computed before (`image_embedding`, with `image_sizes`) instead of
        embedding the image again: 1xPxGxG float32 for an image of `original_size` (H, W) that was
        resized to `input_size` (H, W) before padding."""
        expected = (1, *self.model.feature_shape)
        if tuple(embedding.shape) != expected:
            raise ValueError(f"embedding shape {tuple(embedding.shape)} is not this model's {expected}")
        self._embeddings = embedding.to(self.model.device, torch.float32)
        self._images = [_ImageState(tuple(original_size), tuple(input_size))]

    def image_sizes(self, image_index: int = 0) -> tuple[tuple[int, int], tuple[int, int]]:
        """(original size, input size), each (H, W), of an image set before."""
        self._embeddings_for(image_index)
        state = self._images[image_index]
        return state.original_size, state.input_size

    def image_embedding(self, image_index: int = 0) -> torch.Tensor:
        """The 1xPxGxG embedding of an image set before."""
        return self._embeddings_for(image_index)[image_index : image_index + 1]

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        image_index: int = 0,
    ) -> Prediction:
        """Masks for one prompt or a batch of prompts, in the original image's pixel frame.

        One prompt: point_coords Nx2 (x, y) with point_labels N (1 foreground, 0 background),
        box 4 (XYXY), mask_input 1x4Gx4G low-res logits. A batch of B prompts: the same with a
        leading B axis (BxNx2, BxN, Bx4, Bx1x4Gx4G). Points must lie inside the image and boxes
        must be ordered and inside it; otherwise ValueError names the offending prompts.
        """
        self._embeddings_for(image_index)
        state = self._images[image_index]
        prompt = _Prompt.validate(
            point_coords, point_labels, box, mask_input, state.original_size, self.model.config.low_res_mask_size
        )
        device = self.model.device

        def tensor(array: np.ndarray | None, dtype: torch.dtype = torch.float32) -> torch.Tensor | None:
            return None if array is None else torch.as_tensor(array, dtype=dtype, device=device)

        coords = None if prompt.coords is None else scale_coords(prompt.coords, state.original_size, state.input_size)
        boxes = None if prompt.boxes is None else scale_boxes(prompt.boxes, state.original_size, state.input_size)
        with torch.inference_mode(), self._autocast():
            low_res, iou = self.model.decode(
                self.image_embedding(image_index),
                tensor(coords),
                tensor(prompt.labels, torch.int64),
                tensor(boxes),
                tensor(prompt.masks),
                multimask_output,
            )
            low_res, iou = low_res.float(), iou.float()
            masks = self.model.postprocess_masks(low_res, state.input_size, state.original_size)
        if not return_logits:
            masks = masks > self.model.mask_threshold
        out = Prediction(masks.cpu().numpy(), iou.cpu().numpy(), low_res.cpu().numpy())
        if prompt.batched:
            return out
        return Prediction(out.masks[0], out.iou_predictions[0], out.low_res_logits[0])

    def _embeddings_for(self, image_index: int) -> torch.Tensor:
        """The BxPxGxG embeddings of all images set, once `image_index` is known to name one of them."""
        if self._embeddings is None:
            raise RuntimeError("no image is set: call set_image or set_images before predict")
        if not 0 <= image_index < len(self._images):
            raise IndexError(f"image_index {image_index} is outside the {len(self._images)} image(s) set")
        return self._embeddings

    def _autocast(self) -> AbstractContextManager[object]:
        return autocast(self.model.device, self.precision)


@dataclass(frozen=True)
class _Prompt:
    """Prompts checked and brought to batched form (leading axis B)."""

    coords: np.ndarray | None  # BxNx2
    labels: np.ndarray | None  # BxN
    boxes: np.ndarray | None  # Bx4
    masks: np.ndarray | None  # Bx1xMxM
    batched: bool

    @classmethod
    def validate(
        cls,
        coords: np.ndarray | None,
        labels: np.ndarray | None,
        boxes: np.ndarray | None,
        masks: np.ndarray | None,
        image_size: tuple[int, int],
        mask_size: int,
    ) -> _Prompt:
        if (coords is None) != (labels is None):
            raise ValueError("point_coords and point_labels must be given together")
        batched_flags = []
        if coords is not None:
            coords, labels = np.asarray(coords, dtype=np.float64), np.asarray(labels)
            if coords.ndim not in (2, 3) or coords.shape[-1] != 2:
                raise ValueError(f"point_coords must be Nx2 or BxNx2, got shape {coords.shape}")
            if labels.shape != coords.shape[:-1]:
                raise ValueError(f"point_labels shape {labels.shape} does not match point_coords {coords.shape}")
            bad_labels = sorted(set(np.unique(labels).tolist()) - set(_VALID_LABELS))
            if bad_labels:
                raise ValueError(
                    f"point_labels must be 1 (foreground), 0 (background) or -1 (padding), got {bad_labels}"
                )
            batched_flags.append(coords.ndim == 3)
            coords, labels = coords.reshape(-1, *coords.shape[-2:]), labels.reshape(-1, labels.shape[-1])
            _check_points_inside(coords, image_size)
        if boxes is not None:
            boxes = np.asarray(boxes, dtype=np.float64)
            if boxes.ndim not in (1, 2) or boxes.shape[-1] != 4:
                raise ValueError(f"box must be 4 or Bx4 (XYXY), got shape {boxes.shape}")
            batched_flags.append(boxes.ndim == 2)
            boxes = boxes.reshape(-1, 4)
            _check_boxes(boxes, image_size)
        if masks is not None:
            masks = np.asarray(masks, dtype=np.float32)
            if masks.ndim not in (3, 4) or masks.shape[-3:] != (1, mask_size, mask_size):
                raise ValueError(
                    f"mask_input must be 1x{mask_size}x{mask_size} or Bx1x{mask_size}x{mask_size}, "
                    f"got shape {masks.shape}"
                )
            batched_flags.append(masks.ndim == 4)
            masks = masks.reshape(-1, 1, mask_size, mask_size)
        if len(set(batched_flags)) > 1:
            raise ValueError("prompts mix single and batched forms; give all with or all without the leading B axis")
        sizes = {len(a) for a in (coords, boxes, masks) if a is not None}
        if len(sizes) > 1:
            raise ValueError(f"prompt batches differ in size: {sorted(sizes)}")
        return cls(coords, labels, boxes, masks, batched=bool(batched_flags and batched_flags[0]))


def _check_points_inside(coords: np.ndarray, image_size: tuple[int, int]) -> None:
    h, w = image_size
    x, y = coords[..., 0], coords[..., 1]
    outside = ~((x >= 0) & (x <= w) & (y >= 0) & (y <= h))
    if outside.any():
        where = [tuple(np.round(c, 2).tolist()) for c in coords[outside][:5]]
        raise ValueError(f"{int(outside.sum())} point(s) lie outside the {w}x{h} (WxH) image, e.g. (x, y) {where}")


def _check_boxes(boxes: np.ndarray, image_size: tuple[int, int]) -> None:
    h, w = image_size
    x0, y0, x1, y1 = boxes.T
    unordered = (x1 < x0) | (y1 < y0)
    if unordered.any():
        raise ValueError(f"box(es) not in XYXY order (x1 < x0 or y1 < y0): {boxes[unordered][:5].tolist()}")
    outside = (x0 < 0) | (y0 < 0) | (x1 > w) | (y1 > h)
    if outside.any():
        raise ValueError(f"box(es) reach outside the {w}x{h} (WxH) image: {boxes[outside][:5].tolist()}")
