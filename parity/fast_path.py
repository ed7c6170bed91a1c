"""The fast path's acceptance bar against the float32 reference, one place for the tests (on a
CPU) and the device suite (on CUDA): bfloat16 encoder, float16 decoder, crops sharing encoder
batches; at least 98% of masks matched one-to-one at mask IoU >= 0.9, both ways."""

from __future__ import annotations

import numpy as np

from parity.agreement import Agreement, compare_records
from sam_core.amg.generator import MaskGenerator
from sam_core.amg.settings import MaskGeneratorSettings
from sam_core.inference import InferenceOptions
from sam_core.modeling.registry import SamModel

FAST = InferenceOptions(encoder_precision="bfloat16", decoder_precision="float16", encoder_batch_size=21)
"""What `auto` resolves to on CUDA, named so that it also runs on a CPU."""
MATCH_IOU = 0.9
MIN_MATCHED = 0.98


def fast_path_agreement(
    model: SamModel, settings: MaskGeneratorSettings, image: np.ndarray, fast: InferenceOptions = FAST
) -> tuple[Agreement, int]:
    """(agreement of the fast path's records with the float32 path's, the reference's mask count)
    on one HxWx3 uint8 `image`."""
    reference = MaskGenerator(model, settings).generate(image)
    records = MaskGenerator(model, settings, fast).generate(image)
    return compare_records(records, reference, iou_threshold=MATCH_IOU, score_window=0.01), len(reference)


def meets_the_bar(agreement: Agreement) -> bool:
    return agreement.matched_a >= MIN_MATCHED and agreement.matched_b >= MIN_MATCHED
