"""The full Segment Anything Model: encoder, prompt encoder, decoder, and its image pre/post-processing."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sam_core.modeling.config import SamConfig
from sam_core.modeling.image_encoder import ImageEncoder
from sam_core.modeling.mask_decoder import MaskDecoder
from sam_core.modeling.prompt_encoder import PromptEncoder
from sam_core.modeling.transforms import resize_longest_side, resized_shape


class Sam(nn.Module):
    """SAM with the official state-dict layout (`image_encoder.*`, `prompt_encoder.*`, `mask_decoder.*`).

    Images enter as Bx3xHxW float RGB in 0..255, already resized so that the longest side
    equals `config.image_size` (see `sam_core.modeling.transforms`); `preprocess` normalises and pads
    them, `postprocess_masks` maps low-resolution logits back to an original image size.
    """

    mask_threshold: float = 0.0

    def __init__(self, config: SamConfig) -> None:
        super().__init__()
        self.config = config
        self.image_encoder = ImageEncoder(config)
        self.prompt_encoder = PromptEncoder(config)
        self.mask_decoder = MaskDecoder(config)
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(-1, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Bx3xhxw RGB 0..255 (longest side <= image_size) to normalised Bx3xSxS, zero-padded right/bottom."""
        size = self.config.image_size
        h, w = images.shape[-2:]
        if h > size or w > size:
            raise ValueError(f"image of {h}x{w} is larger than the model input {size}x{size}; resize it first")
        x = (images - self.pixel_mean) / self.pixel_std
        return F.pad(x, (0, size - w, 0, size - h))

    def prepare_image(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """HxWx3 uint8 RGB to the 1x3xSxS model input on the model's device, and the (h, w) it
        was resized to (longest side S) before padding."""
        resized = resize_longest_side(image, self.config.image_size)
        tensor = torch.tensor(resized, device=self.device).permute(2, 0, 1)[None].float()
        return self.preprocess(tensor), (resized.shape[0], resized.shape[1])

    @property
    def feature_shape(self) -> tuple[int, int, int]:
        """(P, G, G) of one image's features from `encode`."""
        grid = self.config.embedding_grid
        return (self.config.prompt_embed_dim, grid, grid)

    def input_size(self, original_size: tuple[int, int]) -> tuple[int, int]:
        """(h, w) that an image of `original_size` (H, W) is resized to before padding (`prepare_image`)."""
        return resized_shape(original_size[0], original_size[1], self.config.image_size)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Bx3xSxS model inputs (`preprocess`) to BxPxGxG image features, what `decode` takes."""
        return self.image_encoder(images)

    def encode_with_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`encode`'s features and BxGxGxC: the encoder's last-block tokens, which
        `sam_core.pooled_embedding` pools into one vector per image."""
        return self.image_encoder.forward_with_tokens(images)

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """Bx3xhxw RGB 0..255 resized images to BxPxGxG image embeddings."""
        return self.image_encoder(self.preprocess(images))

    def decode(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode B prompts against 1 or B image embeddings (1xPxGxG or BxPxGxG).

        point_coords: BxNx2 (x, y) and point_labels BxN, boxes Bx4 XYXY, all in the resized
        input frame; mask_input: Bx1x4Gx4G logits. Returns low-res logits BxMx4Gx4G and
        IoU predictions BxM (M = 3 with multimask output, else 1).
        """
        points = None if point_coords is None else (point_coords, point_labels)
        sparse, dense = self.prompt_encoder(points, boxes, mask_input)
        return self.mask_decoder(image_embeddings, self.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output)

    def postprocess_masks(
        self, low_res: torch.Tensor, input_size: tuple[int, int], original_size: tuple[int, int]
    ) -> torch.Tensor:
        """BxMxLxL logits to BxMxHxW logits at the original image size (H, W).

        input_size is the (h, w) of the resized image before padding. The logits are upsampled
        bilinearly to the padded input frame (S = image_size), cropped to input_size, and
        upsampled to (H, W). Only the low-res rows and columns that the crop can reach are
        upsampled: with align_corners=False and an integer factor f = S / L, output row i < h
        reads low-res rows floor((i + 0.5) / f - 0.5) and the next, so rows up to ceil(h / f)
        suffice and the result is the same as upsampling everything.
        """
        size, low = self.config.image_size, low_res.shape[-1]
        factor, exact = divmod(size, low)
        if exact == 0:
            rows = min(low, -(-input_size[0] // factor) + 1)
            cols = min(low, -(-input_size[1] // factor) + 1)
            low_res, size_hw = low_res[..., :rows, :cols], (rows * factor, cols * factor)
        else:
            size_hw = (size, size)
        masks = F.interpolate(low_res, size_hw, mode="bilinear", align_corners=False)
        masks = masks[..., : input_size[0], : input_size[1]]
        return F.interpolate(masks, original_size, mode="bilinear", align_corners=False)


def build_sam(config: SamConfig | str) -> Sam:
    """A randomly initialised SAM of a published type (`vit_h`, `vit_l`, `vit_b`) or a custom config."""
    if isinstance(config, str):
        config = SamConfig.preset(config)
    return Sam(config)
