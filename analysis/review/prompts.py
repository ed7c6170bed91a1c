"""Adding a mask with SAM: clicks and/or a box decoded against an image's cached embedding.

Each decode gives three candidates and an id; a later decode may name one of them as `previous`,
whose low-resolution logits then go in as the mask prompt, as SAM's own tool feeds the last mask
back on each new click. The logits of the last `keep` decodes of each image are kept.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from analysis.review.embeddings import EmbeddingCache
from sam_core.predictor import SamPredictor


class UnknownDecode(ValueError):
    """A `previous` decode that is not (or no longer) kept for the image."""


@dataclass(frozen=True)
class Decoded:
    """decode_id: names these candidates for a later `previous`. masks: 3xHxW bool at the image's
    size; predicted_iou: 3 float32, the model's estimate of each mask's IoU."""

    decode_id: int
    masks: np.ndarray
    predicted_iou: np.ndarray


class Prompts:
    """Decodes against the embeddings of `cache`; safe to call from several threads."""

    def __init__(self, cache: EmbeddingCache, keep: int = 64) -> None:
        self.cache = cache
        self.keep = keep
        self._ids = itertools.count(1)
        self._logits: dict[int, OrderedDict[int, np.ndarray]] = {}
        self._lock = threading.Lock()

    def decode(
        self,
        image_id: int,
        jpeg: bytes,
        points: Sequence[tuple[float, float, int]],
        box: tuple[float, float, float, float] | None,
        previous: tuple[int, int] | None = None,
    ) -> Decoded:
        """The three candidates for `points` ((x, y, label): 1 foreground, 0 background, pixels
        of the image) and/or `box` (XYXY pixels), given the candidate (decode id, index 0..2) shown
        before as `previous`. ValueError for no prompt, prompts outside the image, or an unknown
        `previous` (UnknownDecode)."""
        if not points and box is None:
            raise ValueError("give at least one point or a box")
        mask_input = None if previous is None else self._previous_logits(image_id, *previous)
        embedding, _ = self.cache.get(jpeg)
        predictor = SamPredictor(self.cache.model.sam)
        predictor.set_embedding(embedding.tensor, embedding.original_size, embedding.input_size)
        coords = np.asarray([p[:2] for p in points], np.float64).reshape(-1, 2) if points else None
        labels = np.asarray([p[2] for p in points], np.int64) if points else None
        prediction = predictor.predict(
            coords, labels, None if box is None else np.asarray(box, np.float64), mask_input, multimask_output=True
        )
        decode_id = self._remember(image_id, prediction.low_res_logits)
        return Decoded(decode_id, prediction.masks, prediction.iou_predictions)

    def _previous_logits(self, image_id: int, decode_id: int, candidate: int) -> np.ndarray:
        """1xMxM low-res logits of a candidate kept for the image."""
        with self._lock:
            logits = self._logits.get(image_id, {}).get(decode_id)
        if logits is None:
            raise UnknownDecode(f"decode {decode_id} is not among the last {self.keep} of image {image_id}")
        if not 0 <= candidate < len(logits):
            raise ValueError(f"candidate {candidate} is not one of 0..{len(logits) - 1}")
        return logits[candidate : candidate + 1]

    def _remember(self, image_id: int, logits: np.ndarray) -> int:
        with self._lock:
            decode_id = next(self._ids)
            kept = self._logits.setdefault(image_id, OrderedDict())
            kept[decode_id] = logits
            while len(kept) > self.keep:
                kept.popitem(last=False)
            return decode_id
