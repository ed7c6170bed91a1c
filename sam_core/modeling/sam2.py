"""SAM 2.1's image path: the Hiera encoder, SAM's prompt encoder and SAM 2's mask decoder, with SAM 2's
pre- and post-processing, behind the same methods as `sam_core.modeling.sam.Sam`.

What differs from SAM 1 for a caller: images are resized to S x S whatever their aspect ratio (no
padding), so prompts are scaled per axis and low-resolution masks are resized straight to the
original size; a box enters the prompt encoder as two corner points (labels 2 and 3) before the
clicks; and `encode` returns SAM 2's three feature maps packed into one BxCxGxG tensor
(`pack_features`), so that everything holding one image embedding per image (the predictor, the
mask generator, the review app's cache) holds SAM 2's features the same way.

The official checkpoints also carry the video model's memory modules; `VIDEO_ONLY_KEYS` names them,
and loading drops exactly those (`image_path_state_dict`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sam_core.modeling.prompt_encoder import PromptEncoder
from sam_core.modeling.sam2_config import Sam2Config
from sam_core.modeling.sam2_image_encoder import build_sam2_image_encoder
from sam_core.modeling.sam2_mask_decoder import Sam2MaskDecoder

VIDEO_ONLY_KEYS = (
    "memory_attention.",
    "memory_encoder.",
    "maskmem_tpos_enc",
    "no_mem_pos_enc",
    "no_obj_ptr",
    "no_obj_embed_spatial",
    "obj_ptr_proj.",
    "obj_ptr_tpos_proj.",
    "mask_downsample.",
)
"""Prefixes of the official SAM 2.1 state-dict keys that only the video path (memory) uses."""
BOX_CORNER_LABELS = (2, 3)
"""Point labels of a box's top-left and bottom-right corners in SAM 2's prompt encoder."""


def image_path_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An official SAM 2.1 state dict without the video-only keys (`VIDEO_ONLY_KEYS`)."""
    return {key: value for key, value in state_dict.items() if not key.startswith(VIDEO_ONLY_KEYS)}


class Sam2(nn.Module):
    """SAM 2.1 for images, with the official state-dict layout (`image_encoder.*`, `sam_prompt_encoder.*`,
    `sam_mask_decoder.*`, `no_mem_embed`) less the video-only keys.

    Images enter as Bx3xHxW float RGB in 0..255 of any size; `preprocess` resizes them to S x S
    (bilinear, antialiased) and normalises them, as SAM 2's transforms do.
    """

    mask_threshold: float = 0.0

    def __init__(self, config: Sam2Config) -> None:
        super().__init__()
        self.config = config
        self.image_encoder = build_sam2_image_encoder(config.encoder)
        self.sam_prompt_encoder = PromptEncoder(config)
        self.sam_mask_decoder = Sam2MaskDecoder(
            dim=config.prompt_embed_dim,
            num_multimask_outputs=config.num_multimask_outputs,
            depth=config.decoder_depth,
            num_heads=config.decoder_num_heads,
            mlp_dim=config.decoder_mlp_dim,
            iou_head_depth=config.iou_head_depth,
            iou_head_hidden_dim=config.iou_head_hidden_dim,
            stability_delta=config.multimask_stability_delta,
            stability_thresh=config.multimask_stability_thresh,
        )
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, config.prompt_embed_dim))
        self.register_buffer("pixel_mean", torch.tensor(config.pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(config.pixel_std).view(-1, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def feature_shape(self) -> tuple[int, int, int]:
        """(C, G, G) of one image's packed features from `encode` (`pack_features`)."""
        grid = self.config.embedding_grid
        return (4 * self.config.prompt_embed_dim, grid, grid)

    def input_size(self, original_size: tuple[int, int]) -> tuple[int, int]:
        """(S, S): every image is resized to the full model input."""
        return (self.config.image_size, self.config.image_size)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Bx3xHxW RGB 0..255 to normalised Bx3xSxS: resized bilinearly with antialiasing (on values
        in 0..1, as SAM 2's transforms resize), then normalised."""
        size = (self.config.image_size, self.config.image_size)
        x = images / 255.0
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return (x * 255.0 - self.pixel_mean) / self.pixel_std

    def prepare_image(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """HxWx3 uint8 RGB to the 1x3xSxS model input on the model's device, and (S, S)."""
        tensor = torch.tensor(image, device=self.device).permute(2, 0, 1)[None].float()
        return self.preprocess(tensor), self.input_size(image.shape[:2])

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """Bx3xHxW RGB 0..255 images (any size) to their packed features (`preprocess`, then `encode`)."""
        return self.encode(self.preprocess(images))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Bx3xSxS model inputs to the packed BxCxGxG features `decode` takes (`pack_features`)."""
        return self.encode_with_tokens(images)[0]

    def encode_with_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`encode`'s features and BxG'xG'xC': the tokens of the trunk's last stage (stride 32),
        which `sam_core.pooled_embedding` pools into one vector per image."""
        fpn, levels = self.image_encoder.features(images)
        s0, s1 = self.sam_mask_decoder.project_high_res(fpn[0], fpn[1])
        embedding = fpn[-1] + self.no_mem_embed.reshape(1, -1, 1, 1)
        return pack_features(embedding, s0, s1), levels[-1].permute(0, 2, 3, 1)

    def decode(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-res logits BxMx4Gx4G and IoU estimates BxM for B prompts against 1 or B packed
        features (see `Sam.decode` for the prompts; `decode_with_object_scores` adds the object scores)."""
        low_res, iou, _ = self.decode_with_object_scores(
            image_embeddings, point_coords, point_labels, boxes, mask_input, multimask_output
        )
        return low_res, iou

    def decode_with_object_scores(
        self,
        image_embeddings: torch.Tensor,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`decode`'s outputs and Bx1 object score logits (> 0: an object is there).

        Boxes become two corner points (labels 2 and 3) placed before the clicks, and the prompt
        encoder gets no box, so a padding point follows, as SAM 2's predictor does. With multimask
        output off, an unstable single mask falls back to the best of the three (`Sam2MaskDecoder`).
        """
        points = None if point_coords is None else (point_coords, point_labels)
        if boxes is not None:
            corners = boxes.reshape(-1, 2, 2)
            corner_labels = torch.tensor(BOX_CORNER_LABELS, device=boxes.device).expand(len(corners), 2)
            if points is None:
                points = (corners, corner_labels)
            else:
                points = (torch.cat([corners, points[0]], dim=1), torch.cat([corner_labels, points[1]], dim=1))
        sparse, dense = self.sam_prompt_encoder(points, None, mask_input)
        embedding, s0, s1 = unpack_features(image_embeddings, self.config.prompt_embed_dim)
        return self.sam_mask_decoder(
            embedding, self.sam_prompt_encoder.get_dense_pe(), sparse, dense, (s0, s1), multimask_output
        )

    def postprocess_masks(
        self, low_res: torch.Tensor, input_size: tuple[int, int], original_size: tuple[int, int]
    ) -> torch.Tensor:
        """BxMxLxL logits to BxMxHxW logits at the original size (H, W), resized bilinearly in one
        step (the whole S x S input is image; `input_size` is (S, S) and only kept for `Sam`'s signature)."""
        return F.interpolate(low_res, original_size, mode="bilinear", align_corners=False)


def pack_features(embedding: torch.Tensor, s0: torch.Tensor, s1: torch.Tensor) -> torch.Tensor:
    """SAM 2's per-image features in one BxCxGxG tensor: the BxDxGxG image embedding, then the
    Bx(D/4)x2Gx2G and Bx(D/8)x4Gx4G high-resolution features with each 2x2 (4x4) block of cells moved
    into channels (pixel unshuffle): C = D + D + 2D. `unpack_features` is the exact inverse."""
    return torch.cat([embedding, F.pixel_unshuffle(s1, 2), F.pixel_unshuffle(s0, 4)], dim=1)


def unpack_features(packed: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(embedding BxDxGxG, s0 Bx(D/8)x4Gx4G, s1 Bx(D/4)x2Gx2G) from `pack_features`' output, D = `dim`."""
    embedding, s1, s0 = torch.split(packed, [dim, dim, 2 * dim], dim=1)
    return embedding, F.pixel_shuffle(s0, 4), F.pixel_shuffle(s1, 2)


def build_sam2(config: Sam2Config | str) -> Sam2:
    """A randomly initialised SAM 2.1 of a published type (`sam2.1_hiera_t`, ...) or a custom config."""
    if isinstance(config, str):
        config = Sam2Config.preset(config)
    return Sam2(config)
