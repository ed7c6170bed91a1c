"""SAM core: the Segment Anything Model, its checkpoints, the prompted predictor and automatic masks."""

from sam_core.amg_settings import MaskGeneratorSettings
from sam_core.checkpoints import OFFICIAL_CHECKPOINTS, CheckpointError, load_sam
from sam_core.config import SamConfig
from sam_core.inference import InferenceOptions
from sam_core.mask_generator import MaskGenerator
from sam_core.predictor import Prediction, SamPredictor
from sam_core.sam import Sam, build_sam

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
