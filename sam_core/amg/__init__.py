"""Automatic mask generation: grid prompts over the image and its crops, filters, NMS, clean-up."""

from sam_core.amg.generator import MaskGenerator
from sam_core.amg.settings import MaskGeneratorSettings

__all__ = ["MaskGenerator", "MaskGeneratorSettings"]
