"""SAM core: the Segment Anything Model, its checkpoints, the prompted predictor and automatic masks."""

from sam_core.amg import MaskGenerator, MaskGeneratorSettings
from sam_core.checkpoints import OFFICIAL_CHECKPOINTS, CheckpointError, load_sam
from sam_core.inference import InferenceOptions
from sam_core.modeling import Sam, SamConfig, build_sam
from sam_core.predictor import Prediction, SamPredictor

__all__ = [
    "OFFICIAL_CHECKPOINTS",
    "CheckpointError",
    "InferenceOptions",
    "MaskGenerator",
    "MaskGeneratorSettings",
    "Prediction",
    "Sam",
    "SamConfig",
    "SamPredictor",
    "build_sam",
    "load_sam",
]
