"""Settings of automatic mask generation and the three presets, `official`, `sa1b` and `sam2`.

Where the SAM paper (appendix B, "fully automatic stage") and the public
`SamAutomaticMaskGenerator` differ, the `sa1b` preset follows the paper and `official` the code:

| what                              | public code (`official`)      | paper (`sa1b`)                          |
|-----------------------------------|-------------------------------|-----------------------------------------|
| crops                             | none by default               | 2x2 and 4x4 overlapping crops (20) with |
|                                   |                               | 16x16 and 8x8 grids (downscale 2)       |
| small regions (holes, islands)    | off by default; when on, a    | holes and islands under 100 px removed; |
|                                   | mask with only small islands  | a mask whose largest component is under |
|                                   | keeps its largest one         | 100 px is dropped                       |
| masks covering >= 95% of image    | kept                          | dropped                                 |

Both use a 32x32 grid on the whole image, predicted IoU > 0.88, stability >= 0.95 between
logit cut-offs -1 and +1, and box NMS at 0.7 within and across crops (smaller crops win).
The crop overlap is the public code's 512/1500 of the short side in the first crop layer; the
paper does not state it. `sam2` holds the defaults of SAM 2's public `SAM2AutomaticMaskGenerator`:
`official` with predicted IoU > 0.8 (its IoU head ends in a sigmoid); `use_m2m` turns on its
mask-to-mask refinement with any preset. Every field can be overridden: `MaskGeneratorSettings.preset("sa1b",
points_per_batch=128)`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Literal


@dataclass(frozen=True)
class MaskGeneratorSettings:
    """All knobs of `MaskGenerator`; the defaults are the public generator's (the `official` preset)."""

    points_per_side: int = 32
    """Grid points per side on the whole image (layer 0)."""
    points_per_batch: int = 64
    """Prompts decoded together; memory grows with it (about 40 MB per prompt at 1024 px input)."""
    pred_iou_thresh: float = 0.88
    """Keep masks whose predicted IoU is above this (0 disables the filter)."""
    stability_score_thresh: float = 0.95
    """Keep masks whose stability score is at least this (0 disables the filter)."""
    stability_score_offset: float = 1.0
    """Logit offset delta: stability is the IoU of the masks at mask_threshold +- delta."""
    mask_threshold: float = 0.0
    """Logit cut-off that binarises masks."""
    box_nms_thresh: float = 0.7
    """Box IoU above which the lower-scoring of two masks of one crop is dropped."""
    crop_n_layers: int = 0
    """Crop layers after the whole image; layer i has 2^i x 2^i crops."""
    crop_nms_thresh: float = 0.7
    """Box IoU for NMS across crops, where masks from smaller crops win."""
    crop_overlap_ratio: float = 512 / 1500
    """Overlap of neighbouring layer-1 crops as a fraction of the image's short side."""
    crop_n_points_downscale_factor: int = 1
    """Layer i is prompted with points_per_side / factor^i points per side."""
    crop_edge_tolerance: float = 20.0
    """Masks whose box is within this many px of an inner crop edge are dropped."""
    min_mask_region_area: int = 0
    """Holes and islands smaller than this (px) are removed; 0 disables the clean-up."""
    small_region_mode: Literal["public", "paper"] = "public"
    """When all islands of a mask are small: keep the largest ("public") or drop the mask ("paper")."""
    max_mask_coverage: float | None = None
    """Drop masks covering at least this fraction of the image (the paper uses 0.95); None keeps all."""
    use_m2m: bool = False
    """SAM 2's mask-to-mask refinement: each mask decoded once more with its own low-res logits as a
    mask prompt (single output), before the filters."""
    upsample_batch: int | None = None
    """Masks brought to full resolution at once; bounds memory (16 x 1500 x 2250 float32 = 216 MB).
    None: 4 on a CPU (fastest on the 2-core CPU of `benchmarks/amg_speed.py`, where fewer masks
    at a time stay in its caches through the filters), 16 on a GPU."""

    def __post_init__(self) -> None:
        problems = []
        for name in ("points_per_side", "points_per_batch", "crop_n_points_downscale_factor", "upsample_batch"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh", "crop_nms_thresh"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                problems.append(f"{name} must lie in [0, 1], got {value}")
        if self.crop_n_layers < 0:
            problems.append(f"crop_n_layers must be >= 0, got {self.crop_n_layers}")
        if not 0.0 <= self.crop_overlap_ratio < 1.0:
            problems.append(f"crop_overlap_ratio must lie in [0, 1), got {self.crop_overlap_ratio}")
        if self.min_mask_region_area < 0:
            problems.append(f"min_mask_region_area must be >= 0, got {self.min_mask_region_area}")
        if self.small_region_mode not in ("public", "paper"):
            problems.append(f"small_region_mode must be 'public' or 'paper', got {self.small_region_mode!r}")
        if self.max_mask_coverage is not None and not 0.0 < self.max_mask_coverage <= 1.0:
            problems.append(f"max_mask_coverage must lie in (0, 1] or be None, got {self.max_mask_coverage}")
        if self.points_per_side // self.crop_n_points_downscale_factor**self.crop_n_layers < 1:
            problems.append("the last crop layer would get no points: lower crop_n_layers or the downscale factor")
        if problems:
            raise ValueError("invalid MaskGeneratorSettings: " + "; ".join(problems))

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> MaskGeneratorSettings:
        """`official` or `sa1b`, with any field overridden."""
        try:
            base = PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown mask generator preset {name!r}; known: {', '.join(PRESETS)}") from None
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown MaskGeneratorSettings fields: {', '.join(unknown)}")
        return replace(base, **overrides)


PRESETS: dict[str, MaskGeneratorSettings] = {
    "official": MaskGeneratorSettings(),
    "sa1b": MaskGeneratorSettings(
        crop_n_layers=2,
        crop_n_points_downscale_factor=2,
        min_mask_region_area=100,
        small_region_mode="paper",
        max_mask_coverage=0.95,
    ),
    "sam2": MaskGeneratorSettings(pred_iou_thresh=0.8),
}
