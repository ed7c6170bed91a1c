"""Evaluating a SAM against ground-truth masks: single-point mIoU and automatic-mask proposal recall.

Single point: each ground-truth mask is prompted with one foreground point, the mask pixel
farthest from its boundary (the point SAM's paper uses for its single-point evaluations). With
multimask output the model gives three masks; "top" scores the one it ranks first by predicted
IoU, "best" the one closest to the ground truth (the oracle of the paper's figures). The best of
three is also split by mask area with COCO's bounds (small < 32^2 px, medium < 96^2, large).
Beside it stands the same split for the ground truth sent through the model's low-res mask grid
(`low_res_round_trip_iou`): how much of what is lost on small masks is output resolution alone.

Proposals: the automatic mask generator's masks, ranked by predicted IoU, scored by pycocotools'
COCOeval (segm, category-agnostic) as average recall over IoU thresholds 0.50:0.05:0.95 with at
most 100 and 1000 proposals per image (AR@100, AR@1000), also split by object size; and the
other way round, the share of all proposals that cover some ground-truth mask at IoU >= 0.5
(precision: what a mask generator's quality filters buy, since recall alone favours keeping all).
Ignore regions (COCO's crowds) enter COCOeval as `iscrowd` annotations: a proposal on one is
neither a hit nor a miss.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as coco_mask
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from sam_core.amg.generator import MaskGenerator
from sam_core.amg.settings import MaskGeneratorSettings
from sam_core.mask_ops import encode_rles, interior_point, masks_to_boxes
from sam_core.modeling.sam import Sam
from sam_core.modeling.transforms import resized_shape
from sam_core.predictor import SamPredictor

PROPOSAL_LIMITS = (10, 100, 1000)
# Proposals for recall: every mask of the official 32x32 grid, de-duplicated by box NMS at 0.7 and
# ranked by predicted IoU; the quality filters are off, since recall at N proposals is a question
# of ranking (the paper's proposal evaluation also relaxed its automatic pipeline).
PROPOSAL_SETTINGS = MaskGeneratorSettings(pred_iou_thresh=0.0, stability_score_thresh=0.0)
# COCO's object-size bounds in px of mask area, as COCOeval's areaRng uses them.
AREA_BOUNDS = {"small": (0, 32**2), "medium": (32**2, 96**2), "large": (96**2, float("inf"))}


@dataclass(frozen=True)
class GroundTruthImage:
    """image: HxWx3 uint8 RGB; masks: NxHxW bool ground-truth masks; ignore: MxHxW bool regions
    that are neither objects nor background (COCO's crowd regions): proposals on them are not
    counted either way, and they are never prompted."""

    image_id: int
    image: np.ndarray
    masks: np.ndarray
    ignore: np.ndarray | None = None


@dataclass(frozen=True)
class PointScores:
    miou_top: float
    miou_best: float
    n_masks: int
    miou_best_by_size: dict[str, float]
    """Best-of-three mIoU per AREA_BOUNDS class that has masks."""
    masks_by_size: dict[str, int]
    round_trip_by_size: dict[str, float]
    """Per AREA_BOUNDS class, mean `low_res_round_trip_iou` of the ground truth."""
    miou_best_medium_large: float | None
    """Best-of-three mIoU over the medium and large masks together (None when there are none)."""


@dataclass(frozen=True)
class ProposalScores:
    ar_10: float
    ar_100: float
    ar_1000: float
    ar_1000_small: float
    ar_1000_medium: float
    ar_1000_large: float
    ar_100_by_size: dict[str, float]
    """AR@100 per AREA_BOUNDS class that has ground-truth masks."""
    mean_proposals: float
    precision_50: float
    """Share of all proposals whose best IoU with a ground-truth mask of their image is >= 0.5."""
    n_images: int
    n_masks: int


def _iou(predicted: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """IoU over the last two axes of ...xHxW bool predictions and ground truths that broadcast."""
    inter = np.logical_and(predicted, truth).sum((-2, -1))
    union = np.logical_or(predicted, truth).sum((-2, -1))
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def low_res_round_trip_iou(model: Sam, masks: np.ndarray) -> np.ndarray:
    """IoU of each of N HxW bool masks with itself after a round trip through the model's low-res grid.

    The mask is resized as the image is (longest side to image_size), padded, area-averaged to the
    LxL low-res grid (L = low_res_mask_size, 64 for a 256 px model), and the coverage minus one
    half is upsampled and thresholded exactly as the model's logits are. That is what a model whose
    low-res logits matched the mask's coverage would score: a reference for the share of a gap that
    is output resolution, not a strict upper bound. Returns N IoUs.
    """
    height, width = masks.shape[-2:]
    size, low = model.config.image_size, model.config.low_res_mask_size
    input_size = resized_shape(height, width, size)
    truth = torch.from_numpy(np.ascontiguousarray(masks)).float()[:, None]
    resized = F.interpolate(truth, input_size, mode="area")
    padded = F.pad(resized, (0, size - input_size[1], 0, size - input_size[0]))
    coverage = F.interpolate(padded, (low, low), mode="area")
    back = model.postprocess_masks(coverage - 0.5, input_size, (height, width))[:, 0] > model.mask_threshold
    return _iou(back.numpy(), masks)


def _mean_by_size(values: list[float], areas: list[int]) -> dict[str, float]:
    """Mean of `values` per AREA_BOUNDS class of `areas`, for the classes that have any."""
    means = {}
    for name, (low, high) in AREA_BOUNDS.items():
        chosen = [v for v, a in zip(values, areas) if low <= a < high]
        if chosen:
            means[name] = float(np.mean(chosen))
    return means


def single_point_miou(predictor: SamPredictor, images: Iterable[GroundTruthImage]) -> PointScores:
    """mIoU over all ground-truth masks of the top-ranked and of the best of the three masks."""
    top, best, round_trip, areas = [], [], [], []
    for item in images:
        if len(item.masks) == 0:
            continue
        predictor.set_image(item.image)
        points = np.array([interior_point(mask) for mask in item.masks])[:, None, :]
        labels = np.ones(points.shape[:2], dtype=np.int64)
        prediction = predictor.predict(points, labels, multimask_output=True)
        for masks, scores, truth in zip(prediction.masks, prediction.iou_predictions, item.masks):
            ious = _iou(masks, truth)
            top.append(float(ious[int(np.argmax(scores))]))
            best.append(float(ious.max()))
            areas.append(int(truth.sum()))
        round_trip.extend(low_res_round_trip_iou(predictor.model, item.masks).tolist())
    if not top:
        raise ValueError("no ground-truth masks to evaluate")
    counts = {name: sum(low <= a < high for a in areas) for name, (low, high) in AREA_BOUNDS.items()}
    not_small = [v for v, a in zip(best, areas) if a >= AREA_BOUNDS["medium"][0]]
    return PointScores(
        miou_top=float(np.mean(top)),
        miou_best=float(np.mean(best)),
        n_masks=len(top),
        miou_best_by_size=_mean_by_size(best, areas),
        masks_by_size={name: n for name, n in counts.items() if n},
        round_trip_by_size=_mean_by_size(round_trip, areas),
        miou_best_medium_large=float(np.mean(not_small)) if not_small else None,
    )


def _add_truth(
    annotations: list[dict[str, Any]], image_id: int, masks: np.ndarray, crowd: bool
) -> list[dict[str, Any]]:
    """Append NxHxW bool `masks` to COCO ground-truth `annotations` (category-agnostic); returns their RLEs."""
    tensor = torch.from_numpy(np.ascontiguousarray(masks))
    rles = encode_rles(tensor)
    for rle, mask, (x0, y0, x1, y1) in zip(rles, masks, masks_to_boxes(tensor).tolist()):
        annotations.append(
            {
                "id": len(annotations) + 1,
                "image_id": image_id,
                "category_id": 1,
                "iscrowd": int(crowd),
                "segmentation": rle,
                "area": float(mask.sum()),
                "bbox": [float(x0), float(y0), float(x1 - x0 + 1), float(y1 - y0 + 1)],
            }
        )
    return rles


def proposal_recall(generator: MaskGenerator, images: Iterable[GroundTruthImage]) -> ProposalScores:
    """AR@10/100/1000 of the generator's masks against the ground truth (COCOeval), and their precision at IoU 0.5."""
    return score_proposals((item, generator.generate(item.image)) for item in images)


def score_proposals(proposals: Iterable[tuple[GroundTruthImage, list[dict[str, Any]]]]) -> ProposalScores:
    """`proposal_recall` of proposals already made: (image, its generator records) pairs; each
    record needs "segmentation" (COCO RLE) and "predicted_iou" (the ranking score)."""
    gt_images, gt_annotations, detections = [], [], []
    matched = 0  # proposals covering a ground-truth mask at IoU >= 0.5
    for item, records in proposals:
        height, width = item.image.shape[:2]
        gt_images.append({"id": item.image_id, "height": height, "width": width})
        truth_rles = _add_truth(gt_annotations, item.image_id, item.masks, crowd=False)
        if item.ignore is not None:
            _add_truth(gt_annotations, item.image_id, item.ignore, crowd=True)
        if records and truth_rles:
            ious = coco_mask.iou([r["segmentation"] for r in records], truth_rles, [0] * len(truth_rles))
            matched += int((np.asarray(ious).max(1) >= 0.5).sum())
        for record in records:
            detections.append(
                {
                    "image_id": item.image_id,
                    "category_id": 1,
                    "segmentation": record["segmentation"],
                    "score": record["predicted_iou"],
                }
            )
    n_masks = sum(not a["iscrowd"] for a in gt_annotations)
    if not n_masks:
        raise ValueError("no ground-truth masks to evaluate")
    truth = COCO()
    truth.dataset = {"images": gt_images, "annotations": gt_annotations, "categories": [{"id": 1, "name": "object"}]}
    with contextlib.redirect_stdout(io.StringIO()):
        truth.createIndex()
        found = truth.loadRes(detections) if detections else None
    if found is None:
        return ProposalScores(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, {}, 0.0, 0.0, len(gt_images), n_masks)
    evaluation = COCOeval(truth, found, iouType="segm")
    evaluation.params.useCats = 0
    evaluation.params.maxDets = list(PROPOSAL_LIMITS)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = [max(float(v), 0.0) for v in evaluation.stats]  # COCOeval reports -1 where nothing is defined
    # recall: [IoU threshold, category, area range (all, small, medium, large), max detections]
    recall = evaluation.eval["recall"][:, 0, 1:, PROPOSAL_LIMITS.index(100)]
    ar_100_by_size = {
        name: float(recall[recall[:, k] > -1, k].mean())
        for k, name in enumerate(AREA_BOUNDS)
        if (recall[:, k] > -1).any()
    }
    return ProposalScores(
        ar_10=stats[6],
        ar_100=stats[7],
        ar_1000=stats[8],
        ar_1000_small=stats[9],
        ar_1000_medium=stats[10],
        ar_1000_large=stats[11],
        ar_100_by_size=ar_100_by_size,
        mean_proposals=len(detections) / len(gt_images),
        precision_50=matched / len(detections),
        n_images=len(gt_images),
        n_masks=n_masks,
    )
