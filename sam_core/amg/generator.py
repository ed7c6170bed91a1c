"""Automatic mask generation: SAM prompted with point grids over the image and its crops.

The crops of every image given (the whole image first) are cut from the original image and
embedded `encoder_batch_size` at a time. Each crop's grid points are decoded `points_per_batch`
at a time and filtered as cheaply as possible: by predicted IoU on the low-resolution output,
then only the survivors are brought to full resolution, `upsample_batch` masks at a time, for
the stability score, their boxes and the crop-edge test. The masks that pass are kept as their
runs (`mask_ops.mask_runs`: where each mask's column-major pixels change value, found on the
device), so a GPU sends the host run positions, not masks, and no mask is upsampled twice.
Scores and boxes stay on the model's device; box NMS runs there within each crop, then across
crops (smaller crops win). The runs of the masks that survive NMS are moved from their crop into
the image's frame and compressed to COCO RLE. The optional small-region clean-up and the coverage filter (`finish_records`) work on
the records on the CPU; a pipeline may run them in a separate CPU stage. The encoder pass of
each image's full-image crop (its last block's tokens) also gives the image's pooled embedding
(`propose_with_embeddings`, `sam_core.pooled_embedding`), at no extra encoder pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch.profiler import record_function

from sam_core.amg.cleanup import finish_records
from sam_core.amg.crops import CropBox, crop_boxes, layer_point_grids
from sam_core.amg.settings import MaskGeneratorSettings
from sam_core.image import as_rgb_uint8
from sam_core.inference import InferenceOptions, autocast
from sam_core.mask_ops import (
    box_nms,
    mask_runs,
    masks_to_boxes,
    near_crop_edge,
    record_bbox,
    rles_from_runs,
    runs_area,
    runs_in_frame,
    stability_scores,
)
from sam_core.modeling.registry import SamModel
from sam_core.modeling.transforms import scale_coords
from sam_core.pooled_embedding import embedding_dim, pool_embeddings

M2M_LOGIT_LIMIT = 32.0
"""Low-res logits fed back by the mask-to-mask refinement are clamped to +-this (SAM 2's predictor)."""


@dataclass(frozen=True)
class _Candidates:
    """Masks kept so far, as rows of equal length N: tensors on the model's device, and the masks
    themselves on the host as runs.

    boxes: Nx4 int64 XYXY (inclusive max) and points: Nx2 float64 (x, y), both in the image
    frame; iou, stability: N float32; crop: N int64 index into the image's crop list; runs: N
    int32 arrays, each mask's runs of True in its crop's frame (`mask_ops.mask_runs`).
    """

    boxes: torch.Tensor
    iou: torch.Tensor
    stability: torch.Tensor
    points: torch.Tensor
    crop: torch.Tensor
    runs: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.iou)

    def select(self, keep: torch.Tensor) -> _Candidates:
        """The candidates at indices `keep` (int64), in that order."""
        tensors = (getattr(self, f.name)[keep] for f in fields(self) if f.name != "runs")
        return _Candidates(*tensors, [self.runs[i] for i in keep.tolist()])

    @staticmethod
    def concat(parts: list[_Candidates]) -> _Candidates:
        """The rows of `parts` (at least one) in order."""
        names = [f.name for f in fields(_Candidates) if f.name != "runs"]
        return _Candidates(
            *(torch.cat([getattr(p, n) for p in parts]) for n in names), [r for p in parts for r in p.runs]
        )


class MaskGenerator:
    """SA-1B-style automatic masks for whole images.

    `generate(image)` returns SA-1B annotation records:
    {"id", "segmentation": {"size": [H, W], "counts": str} (COCO RLE), "bbox": [x, y, w, h],
    "area", "predicted_iou", "stability_score", "crop_box": [x, y, w, h], "point_coords": [[x, y]]}.
    Boxes follow the public generator: x, y of the first mask pixel, w, h = last - first pixel.
    `options` choose precision, compilation and the encoder batch (see `InferenceOptions`).
    """

    def __init__(
        self, model: SamModel, settings: MaskGeneratorSettings | None = None, options: InferenceOptions | None = None
    ) -> None:
        self.model = model.eval()
        self.settings = settings or MaskGeneratorSettings()
        self.options = options or InferenceOptions()
        self.encoder_dtype = self.options.encoder_dtype(model.device)
        self.decoder_dtype = self.options.decoder_dtype(model.device)
        encoder = model.encode_with_tokens
        self._encoder = torch.compile(encoder) if self.options.compile else encoder
        s = self.settings
        self._grids = layer_point_grids(s.points_per_side, s.crop_n_layers, s.crop_n_points_downscale_factor)
        self._upsample_batch = s.upsample_batch or (4 if model.device.type == "cpu" else 16)

    def generate(self, image: np.ndarray, with_masks: bool = False) -> list[dict[str, Any]]:
        """Records for an HxW / HxWxC image (see `as_rgb_uint8`); `with_masks` adds "mask": HxW bool."""
        return self.generate_batch([image], with_masks)[0]

    def generate_batch(self, images: Sequence[np.ndarray], with_masks: bool = False) -> list[list[dict[str, Any]]]:
        """Records for each image; the crops of all of them share encoder batches."""
        threads = self.options.cleanup_threads
        return [finish_records(found, self.settings, with_masks, threads=threads) for found in self.propose(images)]

    def propose(self, images: Sequence[np.ndarray]) -> list[list[dict[str, Any]]]:
        """Records of each image before the clean-up and coverage filter of `finish_records`."""
        return self.propose_with_embeddings(images)[0]

    @torch.inference_mode()
    def propose_with_embeddings(self, images: Sequence[np.ndarray]) -> tuple[list[list[dict[str, Any]]], np.ndarray]:
        """`propose`'s records of each image, and BxD float16: each image's pooled embedding
        (`sam_core.pooled_embedding`), from the encoder pass of its full-image crop (crop 0) that
        the masks are decoded from anyway."""
        s = self.settings
        rgb = [as_rgb_uint8(image) for image in images]
        crops = [crop_boxes(image.shape[:2], s.crop_n_layers, s.crop_overlap_ratio) for image in rgb]
        jobs = [(n, i) for n, boxes in enumerate(crops) for i, crop in enumerate(boxes) if crop.area > 0]
        found: list[list[_Candidates]] = [[] for _ in rgb]
        pooled = np.zeros((len(rgb), embedding_dim(self.model.config)), dtype=np.float16)
        step = self.options.encoder_batch_size
        for start in range(0, len(jobs), step):
            chunk = jobs[start : start + step]
            prepared = [self.model.prepare_image(_cut(rgb[n], crops[n][i])) for n, i in chunk]
            with record_function("amg.encode"), autocast(self.model.device, self.encoder_dtype):
                embeddings, tokens = self._encoder(torch.cat([model_input for model_input, _ in prepared]))
            full = [k for k, (_, i) in enumerate(chunk) if i == 0]
            if full:
                sizes = [prepared[k][1] for k in full]
                pooled[[chunk[k][0] for k in full]] = pool_embeddings(tokens[full], sizes, self.model.config.image_size)
            for (n, i), embedding, (_, input_size) in zip(chunk, embeddings, prepared):
                found[n].append(self._process_crop(embedding[None], input_size, crops[n][i], i, rgb[n].shape[:2]))
        records = [
            self._render(self._across_crops(found[n], crops[n]), crops[n], rgb[n].shape[:2]) for n in range(len(rgb))
        ]
        return records, pooled

    def _process_crop(
        self,
        embedding: torch.Tensor,
        input_size: tuple[int, int],
        crop: CropBox,
        crop_index: int,
        image_size: tuple[int, int],
    ) -> _Candidates:
        points = self._grids[crop.layer] * np.array([crop.size[1], crop.size[0]])
        model_points = scale_coords(points, crop.size, input_size)
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
                    image_size,
                )
                for i in range(0, len(points), step)
            ]
        )
        with record_function("amg.nms"):
            return found.select(box_nms(found.boxes, found.iou, self.settings.box_nms_thresh))

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
        with record_function("amg.decode"), autocast(device, self.decoder_dtype):
            low_res, iou = self.model.decode(embedding, coords, labels, multimask_output=True)
            if s.use_m2m:
                low_res, iou = self._refined(embedding, coords, labels, low_res)
        outputs = low_res.shape[1]
        low_res, iou = low_res.flatten(0, 1).float(), iou.flatten(0, 1).float()
        keep = (
            torch.nonzero(iou > s.pred_iou_thresh).flatten()
            if s.pred_iou_thresh > 0
            else torch.arange(len(iou), device=device)
        )

        offset = torch.tensor([crop.x0, crop.y0, crop.x0, crop.y0], device=device)
        image_box = (0, 0, image_size[1], image_size[0])
        kept = [keep[:0]]
        boxes = [torch.zeros((0, 4), dtype=torch.int64, device=device)]
        stabilities = [torch.zeros(0, device=device)]
        runs: list[np.ndarray] = []
        for start in range(0, len(keep), self._upsample_batch):
            with record_function("amg.filter"):
                index = keep[start : start + self._upsample_batch]
                logits = self.model.postprocess_masks(low_res[index][:, None], input_size, crop.size)[:, 0]
                stability = stability_scores(logits, s.mask_threshold, s.stability_score_offset)
                stable = (
                    stability >= s.stability_score_thresh
                    if s.stability_score_thresh > 0
                    else torch.ones_like(stability, dtype=torch.bool)
                )
                masks = (logits > s.mask_threshold)[stable]  # bytes, not float logits, are copied
                del logits
                box = masks_to_boxes(masks) + offset
                inside = ~near_crop_edge(box, crop.xyxy, image_box, s.crop_edge_tolerance)
                kept.append(index[stable][inside])
                boxes.append(box[inside])
                stabilities.append(stability[stable][inside])
            with record_function("amg.rle"):
                runs.extend(mask_runs(masks[inside]))
        index = torch.cat(kept)
        grid_points = torch.as_tensor(points + [crop.x0, crop.y0], dtype=torch.float64, device=device)
        return _Candidates(
            torch.cat(boxes),
            iou[index],
            torch.cat(stabilities),
            grid_points[index // outputs],
            torch.full((len(index),), crop_index, dtype=torch.int64, device=device),
            runs,
        )

    def _refined(
        self, embedding: torch.Tensor, coords: torch.Tensor, labels: torch.Tensor, low_res: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM 2's mask-to-mask refinement (`use_m2m`): each of the NxM low-res masks of N points
        (NxMxLxL logits) decoded once more as a mask prompt with its point, one output each, giving
        NxMxLxL logits and NxM IoU estimates in the same order. The masks are fed back clamped to
        +-M2M_LOGIT_LIMIT, as SAM 2's predictor hands them back; `points_per_batch` at a time."""
        n, m = low_res.shape[:2]
        prompts = low_res.flatten(0, 1)[:, None].clamp(-M2M_LOGIT_LIMIT, M2M_LOGIT_LIMIT)
        coords, labels = coords.repeat_interleave(m, dim=0), labels.repeat_interleave(m, dim=0)
        step = self.settings.points_per_batch
        decoded = [
            self.model.decode(embedding, coords[i : i + step], labels[i : i + step], None, prompts[i : i + step], False)
            for i in range(0, n * m, step)
        ]
        refined = torch.cat([masks for masks, _ in decoded]).reshape(low_res.shape)
        return refined, torch.cat([iou for _, iou in decoded]).reshape(n, m)

    def _across_crops(self, parts: list[_Candidates], crops: list[CropBox]) -> _Candidates:
        """The candidates of all crops of an image, after NMS across crops that prefers smaller crops."""
        found = _Candidates.concat(parts)
        if len(crops) > 1 and len(found):
            areas = torch.tensor([float(crop.area) for crop in crops], device=found.crop.device)[found.crop]
            with record_function("amg.nms"):
                found = found.select(box_nms(found.boxes, 1.0 / areas, self.settings.crop_nms_thresh))
        return found

    @record_function("amg.render")
    def _render(self, found: _Candidates, crops: list[CropBox], image_size: tuple[int, int]) -> list[dict[str, Any]]:
        """The surviving masks' runs moved from their crops into the image's frame, RLE-encoded."""
        crop_of = found.crop.tolist()
        runs = [
            runs_in_frame(mask, crops[c].size, (crops[c].x0, crops[c].y0), image_size)
            for mask, c in zip(found.runs, crop_of)
        ]
        return _records(found, rles_from_runs(runs, image_size), [runs_area(r) for r in runs], crops)


def _cut(image: np.ndarray, crop: CropBox) -> np.ndarray:
    return image[crop.y0 : crop.y1, crop.x0 : crop.x1]


def _records(
    found: _Candidates, rles: list[dict[str, Any]], areas: list[int], crops: list[CropBox]
) -> list[dict[str, Any]]:
    boxes, iou, stability = found.boxes.tolist(), found.iou.tolist(), found.stability.tolist()
    points, crop = found.points.tolist(), found.crop.tolist()
    records = []
    for i, rle in enumerate(rles):
        records.append(
            {
                "id": i,
                "segmentation": rle,
                "bbox": record_bbox(boxes[i]),
                "area": areas[i],
                "predicted_iou": iou[i],
                "stability_score": stability[i],
                "crop_box": [float(v) for v in crops[crop[i]].xywh],
                "point_coords": [points[i]],
            }
        )
    return records
