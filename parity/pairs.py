"""Either model family paired with its public implementation, and the public automatic mask generator
of that family, for the benchmarks that compare ours with the public code."""

from __future__ import annotations

from segment_anything import SamAutomaticMaskGenerator
from segment_anything.modeling import Sam as OfficialSam

from parity.models import official_generator_kwargs, paired_models
from parity.sam2_models import official_generator, paired_sam2_models
from sam_core.amg.settings import MaskGeneratorSettings
from sam_core.modeling.registry import ModelConfig, SamModel
from sam_core.modeling.sam2_config import Sam2Config


def paired(config: ModelConfig, seed: int = 0, speckle: bool = False, scale: float = 0.1) -> tuple[SamModel, object]:
    """Ours and the public model of `config`'s family (segment_anything or sam2) with the same weights."""
    pair = paired_sam2_models if isinstance(config, Sam2Config) else paired_models
    return pair(config, seed, speckle, scale)


def public_generator(official_model: object, settings: MaskGeneratorSettings) -> object:
    """The public generator of `official_model`'s family with the settings both implementations share
    (SAM 2's also takes `use_m2m`), writing COCO RLE."""
    kwargs = official_generator_kwargs(settings)
    if isinstance(official_model, OfficialSam):
        return SamAutomaticMaskGenerator(official_model, output_mode="coco_rle", **kwargs)
    return official_generator(official_model, **kwargs, use_m2m=settings.use_m2m)
