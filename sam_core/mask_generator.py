"""Automatic mask generation: SAM prompted with point grids over the image and its crops.

For each crop (the whole image first), the crop is cut from the original image and embedded,
its grid points are decoded `points_per_batch` at a time, and each batch is filtered as cheaply
as possible: by predicted IoU on the low-resolution output, and only the survivors are brought
to full resolution — `upsample_batch` masks at a time, never all of a batch — for the
stability score, their boxes and the crop-edge test, then stored as compressed RLE. Box NMS
runs within each crop, then across crops (smaller crops win); masks of inner crops are moved
into the image's frame only once they survive it. Optional small-region clean-up and the
coverage filter come last.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torchvision.ops import batched_nms

from sam_core.amg_settings import MaskGeneratorSettings
from sam_core.crops import CropBox, crop_boxes, layer_point_grids
from sam_core.image import as_rgb_uint8
from sam_core.mask_ops import (
    decode_rle,
    encode_rles,
    masks_to_boxes,
    near_crop_edge,
    place_in_image,
    remove_small_regions,
    rle_area,
    stability_scores,
)
from sam_core.sam import Sam
from sam_core.transforms import scale_coords


@dataclass(frozen=True)
class _Candidates:
    """Masks kept so far. boxes: Nx4 int64 XYXY (inclusive max) and points: Nx2 float64 (x, y),
    both in the image frame; rles in the frame of their crop until `_to_image_frame`."""

    rles: list[dict[str, Any]]
    boxes: torch.Tensor
    iou: torch.Tensor
    stability: torch.Tensor
    points: torch.Tensor
    crop: torch.Tensor  # N int64: index into the image's crop list

    def __len__(self) -> int:
        return len(self.rles)

    def select(self, keep: torch.Tensor) -> _Candidates:
        """The candidates at indices `keep` (int64), in that order."""
        index = keep.tolist()
        return _Candidates(
            [self.rles[i] for i in index],
            self.boxes[keep],
            self.iou[keep],
            self.stability[keep],
            self.points[keep],
            self.crop[keep],
        )

    @staticmethod
    def concat(parts: list[_Candidates]) -> _Candidates:
        if not parts:
            return _EMPTY
        return _Candidates(
            [rle for part in parts for rle in part.rles],
            torch.cat([p.boxes for p in parts]),
            torch.cat([p.iou for p in parts]),
            torch.cat([p.stability for p in parts]),
            torch.cat([p.points for p in parts]),
            torch.cat([p.crop for p in parts]),
        )


_EMPTY = _Candidates(
    [],
    torch.zeros((0, 4), dtype=torch.int64),
    torch.zeros(0),
    torch.zeros(0),
    torch.zeros((0, 2), dtype=torch.float64),
    torch.zeros(0, dtype=torch.int64),
)


class MaskGenerator:
    """SA-1B-style automatic masks for whole images.

    `generate(image)` returns SA-1B annotation records:
    {"id", "segmentation": {"size": [H, W], "counts": str} (COCO RLE), "bbox": [x, y, w, h],
    "area", "predicted_iou", "stability_score", "crop_box": [x, y, w, h], "point_coords": [[x, y]]}.
    Boxes follow the public generator: x, y of the first mask pixel, w, h = last - first pixel.
    """

    def __init__(self, model: Sam, settings: MaskGeneratorSettings | None = None) -> None:
        self.model = model.eval()
        self.settings = settings or MaskGeneratorSettings()
        s = self.settings
        self._grids = layer_point_grids(s.points_per_side, s.crop_n_layers, s.crop_n_points_downscale_factor)

    @torch.inference_mode()
    def generate(self, image: np.ndarray, with_masks: bool = False) -> list[dict[str, Any]]:
        """Records for an HxW / HxWxC image (see `as_rgb_uint8`); `with_masks` adds "mask": HxW bool."""
        image = as_rgb_uint8(image)
        size = (image.shape[0], image.shape[1])
        crops = crop_boxes(size, self.settings.crop_n_layers, self.settings.crop_overlap_ratio)
        found = _Candidates.concat(
            [self._process_crop(image, crop, index) for index, crop in enumerate(crops) if crop.area > 0]
        )
        if len(crops) > 1 and len(found):
            areas = torch.tensor([float(crops[i].area) for i in found.crop.tolist()])
            found = found.select(self._nms(found.boxes, 1.0 / areas, self.settings.crop_nms_thresh))
        found = _to_image_frame(found, crops, size)
        if self.settings.min_mask_region_area > 0:
            found = self._clean_small_regions(found)
        areas = [rle_area(rle) for rle in found.rles]
        if self.settings.max_mask_coverage is not None:
            limit = self.settings.max_mask_coverage * size[0] * size[1]
            kept = [i for i, area in enumerate(areas) if area < limit]
            found, areas = found.select(torch.tensor(kept, dtype=torch.int64)), [areas[i] for i in kept]
        return _records(found, areas, crops, with_masks)

    def _process_crop(self, image: np.ndarray, crop: CropBox, crop_index: int) -> _Candidates:
        crop_image = image[crop.y0 : crop.y1, crop.x0 : crop.x1]
        model_input, input_size = self.model.prepare_image(crop_image)
        embedding = self.model.image_encoder(model_input)
        points = self._grids[crop.layer] * np.array([crop.size[1], crop.size[0]])
        model_points = scale_coords(points, crop.size, self.model.config.image_size)
        step = self.settings.points_per_batch
        found = _Candidates.concat(
            [
                self._process_batch(
                    embedding,
                    input_size,
                    points[i : i + step],
                    model_points[i : i + step],
                    crop,
                    crop_index,
                    image.shape[:2],
                )
                for i in range(0, len(points), step)
            ]
        )
        return found.select(self._nms(found.boxes, found.iou, self.settings.box_nms_thresh))

    def _process_batch(
        self,
        embedding: torch.Tensor,
        input_size: tuple[int, int],
        points: np.ndarray,
        model_points: np.ndarray,
        crop: CropBox,
        crop_index: int,
        image_size: tuple[int, int],
    ) -> _Candidates:
        s = self.settings
        device = self.model.device
        coords = torch.as_tensor(model_points, dtype=torch.float32, device=device)[:, None]
        labels = torch.ones((len(points), 1), dtype=torch.int64, device=device)
        low_res, iou = self.model.decode(embedding, coords, labels, multimask_output=True)
        outputs = low_res.shape[1]
        low_res, iou = low_res.flatten(0, 1), iou.flatten(0, 1)
        keep = (
            torch.nonzero(iou > s.pred_iou_thresh).flatten()
            if s.pred_iou_thresh > 0
            else torch.arange(len(iou), device=iou.device)
        )

        offset = torch.tensor([crop.x0, crop.y0, crop.x0, crop.y0], device=device)
        image_box = (0, 0, image_size[1], image_size[0])
        parts = []
        for start in range(0, len(keep), s.upsample_batch):
            index = keep[start : start + s.upsample_batch]
            logits = self.model.postprocess_masks(low_res[index][:, None], input_size, crop.size)[:, 0]
            stability = stability_scores(logits, s.mask_threshold, s.stability_score_offset)
            stable = (
                stability >= s.stability_score_thresh
                if s.stability_score_thresh > 0
                else torch.ones_like(stability, dtype=torch.bool)
            )
            masks = logits[stable] > s.mask_threshold
            del logits
            boxes = masks_to_boxes(masks) + offset
            inside = ~near_crop_edge(boxes, crop.xyxy, image_box, s.crop_edge_tolerance)
            index, stability = index[stable][inside], stability[stable][inside]
            parts.append(
                _Candidates(
                    encode_rles(masks[inside]),
                    boxes[inside].cpu(),
                    iou[index].float().cpu(),
                    stability.cpu(),
                    torch.as_tensor(points[(index // outputs).cpu().numpy()] + [crop.x0, crop.y0]),
                    torch.full((len(index),), crop_index, dtype=torch.int64),
                )
            )
        return _Candidates.concat(parts)

    @staticmethod
    def _nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
        """Indices kept by box NMS, highest score first."""
        if len(boxes) == 0:
            return torch.zeros(0, dtype=torch.int64)
        return batched_nms(boxes.float(), scores.float(), torch.zeros(len(boxes), dtype=torch.int64), threshold)

    def _clean_small_regions(self, found: _Candidates) -> _Candidates:
        """Remove small holes and islands; masks the clean-up changed lose NMS ties to unchanged ones."""
        s = self.settings
        rles, boxes, unchanged, survivors = [], [], [], []
        for i, rle in enumerate(found.rles):
            cleaned, changed = remove_small_regions(
                decode_rle(rle), s.min_mask_region_area, s.small_region_mode == "paper"
            )
            if cleaned is None:
                continue
            tensor = torch.from_numpy(cleaned)[None]
            survivors.append(i)
            rles.append(encode_rles(tensor)[0] if changed else rle)
            boxes.append(masks_to_boxes(tensor)[0] if changed else found.boxes[i])
            unchanged.append(0.0 if changed else 1.0)
        if not survivors:
            return _EMPTY
        found = found.select(torch.tensor(survivors, dtype=torch.int64))
        found = replace(found, rles=rles, boxes=torch.stack(boxes))
        threshold = max(s.box_nms_thresh, s.crop_nms_thresh)
        return found.select(self._nms(found.boxes, torch.tensor(unchanged), threshold))


def _to_image_frame(found: _Candidates, crops: list[CropBox], size: tuple[int, int]) -> _Candidates:
    """Re-encode the RLEs of masks found in inner crops in the frame of the whole image."""
    rles = [
        rle if crops[c].layer == 0 else place_in_image(rle, (crops[c].x0, crops[c].y0), size)
        for rle, c in zip(found.rles, found.crop.tolist())
    ]
    return replace(found, rles=rles)


def _records(found: _Candidates, areas: list[int], crops: list[CropBox], with_masks: bool) -> list[dict[str, Any]]:
    records = []
    for i, rle in enumerate(found.rles):
        x0, y0, x1, y1 = found.boxes[i].tolist()
        record = {
            "id": i,
            "segmentation": rle,
            "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
            "area": areas[i],
            "predicted_iou": float(found.iou[i]),
            "stability_score": float(found.stability[i]),
            "crop_box": [float(v) for v in crops[int(found.crop[i])].xywh],
            "point_coords": [found.points[i].tolist()],
        }
        if with_masks:
            record["mask"] = decode_rle(rle)
        records.append(record)
    return records
