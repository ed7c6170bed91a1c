"""Simulated interactive segmentation of one ground-truth mask (SAM paper section 6 and appendix D).

The SAM paper measures how well a model segments a person from 1 and from 3 clicks, simulating the
clicks the way RITM (Sofiiuk et al. 2022, "Reviving Iterative Training with Mask Guidance for
Interactive Segmentation") and the SAM paper's own interactive evaluation do:

1. The first click is a foreground point sampled uniformly inside the ground-truth mask
   (`first_click`). The model answers with multimask output, and the mask it ranks highest by
   its own predicted IoU is kept (the model's choice, not the oracle's best of three).
2. Every later click goes to the error region of the previous prediction (`next_click`):
   false negatives FN = truth & ~pred and false positives FP = pred & ~truth. Each region is
   padded with zeros at the image border, so the image edge counts as its boundary, and its
   exact Euclidean distance transform taken; the region whose largest distance is larger
   wins (FP on a tie, as in RITM's `is_positive = fn_max_dist > fp_max_dist`) and the click
   goes to its pixel farthest from the region's boundary, the first in row-major order on
   ties: label 1 (add) for FN, 0 (remove) for FP.
3. Clicks 2..n prompt the model with all clicks so far plus the previous step's kept low-res
   logits as `mask_input`, with single-mask output.

IoU is measured after every click. Once a prediction equals the ground truth exactly there is
no error left to click on, and the remaining steps repeat its IoU (1.0).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from sam_core.predictor import SamPredictor

FOREGROUND, BACKGROUND = 1, 0


@dataclass(frozen=True, eq=False)
class PersonSample:
    """One person to segment. image: HxWx3 uint8 RGB; mask: HxW bool ground truth of the same size;
    attributes: the groups the person belongs to, e.g. {"GenderPresentation": "Unknown"}."""

    image_id: str
    image: np.ndarray
    mask: np.ndarray
    attributes: Mapping[str, str]


def mask_iou(predicted: np.ndarray, truth: np.ndarray) -> float:
    """IoU of two HxW bool masks; two empty masks agree perfectly (1.0)."""
    union = int(np.logical_or(predicted, truth).sum())
    return float(np.logical_and(predicted, truth).sum() / union) if union else 1.0


def _farthest_from_boundary(region: np.ndarray) -> tuple[float, int, int]:
    """(distance, x, y) of the HxW bool region's pixel farthest from its boundary, the image edge
    counting as boundary; the first such pixel in row-major order. Distance 0 for an empty region."""
    padded = np.pad(region, 1).astype(np.uint8)
    distance = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    flat = int(np.argmax(distance))  # argmax returns the first maximum: row-major tie-breaking
    y, x = np.unravel_index(flat, distance.shape)
    return float(distance.flat[flat]), int(x), int(y)


def next_click(truth: np.ndarray, predicted: np.ndarray) -> tuple[int, int, int]:
    """The corrective click (x, y, label) for HxW bool `predicted` against HxW bool `truth`.

    x is the column and y the row of a pixel; label 1 adds the false-negative region, 0 removes
    the false-positive one (see the module docstring). Raises ValueError when the masks agree
    (no error to click on) or their shapes differ.
    """
    truth, predicted = np.asarray(truth, bool), np.asarray(predicted, bool)
    if truth.ndim != 2 or truth.shape != predicted.shape:
        raise ValueError(
            f"truth and predicted must be HxW masks of the same shape, got {truth.shape}, {predicted.shape}"
        )
    false_negative, false_positive = truth & ~predicted, predicted & ~truth
    if not (false_negative.any() or false_positive.any()):
        raise ValueError("the prediction equals the ground truth: there is no error region to click on")
    fn_distance, fn_x, fn_y = _farthest_from_boundary(false_negative)
    fp_distance, fp_x, fp_y = _farthest_from_boundary(false_positive)
    if fn_distance > fp_distance:
        return fn_x, fn_y, FOREGROUND
    return fp_x, fp_y, BACKGROUND


def first_click(truth: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """(x, y) of a pixel drawn uniformly from the HxW bool ground-truth mask; ValueError if it is empty."""
    ys, xs = np.nonzero(np.asarray(truth, bool))
    if len(ys) == 0:
        raise ValueError("the ground-truth mask is empty: there is nowhere to place the first click")
    i = int(rng.integers(len(ys)))
    return int(xs[i]), int(ys[i])


def simulate(predictor: SamPredictor, truth: np.ndarray, n_points: int, rng: np.random.Generator) -> list[float]:
    """IoU with HxW bool `truth` after each of clicks 1..n_points (a list of n_points floats).

    The predictor must hold the image already (`set_image`), at the size of `truth`. `rng`
    draws the first click only; every later click is deterministic given the predictions.
    """
    if n_points < 1:
        raise ValueError(f"n_points must be >= 1, got {n_points}")
    truth = np.asarray(truth, bool)
    x, y = first_click(truth, rng)
    coords, labels = [(x, y)], [FOREGROUND]
    prediction = predictor.predict(np.array(coords, np.float64), np.array(labels), multimask_output=True)
    best = int(np.argmax(prediction.iou_predictions))
    mask, logits = prediction.masks[best], prediction.low_res_logits[best : best + 1]
    if mask.shape != truth.shape:
        raise ValueError(f"the predictor's image is {mask.shape[::-1]} (WxH) but the mask is {truth.shape[::-1]}")
    ious = [mask_iou(mask, truth)]
    for _ in range(1, n_points):
        if np.array_equal(mask, truth):
            ious.append(ious[-1])
            continue
        x, y, label = next_click(truth, mask)
        coords.append((x, y))
        labels.append(label)
        prediction = predictor.predict(
            np.array(coords, np.float64), np.array(labels), mask_input=logits, multimask_output=False
        )
        mask, logits = prediction.masks[0], prediction.low_res_logits[:1]
        ious.append(mask_iou(mask, truth))
    return ious
