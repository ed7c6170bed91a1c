"""Every published model type by name, SAM (`vit_h`, ...) and SAM 2.1 (`sam2.1_hiera_l`, ...), and
building either family from its configuration."""

from __future__ import annotations

from sam_core.modeling.config import PRESETS as SAM_PRESETS
from sam_core.modeling.config import SamConfig
from sam_core.modeling.sam import Sam
from sam_core.modeling.sam2 import Sam2
from sam_core.modeling.sam2_config import PRESETS as SAM2_PRESETS
from sam_core.modeling.sam2_config import Sam2Config

ModelConfig = SamConfig | Sam2Config
SamModel = Sam | Sam2

MODEL_PRESETS: dict[str, ModelConfig] = {**SAM_PRESETS, **SAM2_PRESETS}
"""Configurations by model type: SAM's, then SAM 2.1's."""


def model_config(name: str, image_size: int | None = None) -> ModelConfig:
    """The configuration of a published model type (or `sae_tiny`), optionally at another input size."""
    if name in SAM2_PRESETS:
        return Sam2Config.preset(name, image_size)
    if name in SAM_PRESETS:
        return SamConfig.preset(name, image_size)
    raise ValueError(f"unknown model type {name!r}; known: {', '.join(MODEL_PRESETS)}")


def build_model(config: ModelConfig | str) -> SamModel:
    """A randomly initialised model of either family."""
    if isinstance(config, str):
        config = model_config(config)
    return Sam2(config) if isinstance(config, Sam2Config) else Sam(config)
