"""The Segment Anything Model, one module per part (as segment-anything's `modeling/`)."""

from sam_core.modeling.config import SamConfig
from sam_core.modeling.sam import Sam, build_sam

__all__ = ["Sam", "SamConfig", "build_sam"]
