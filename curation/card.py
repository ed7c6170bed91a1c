"""DATASET_CARD.md of a release made by the automatic-mask job: what is in it and how it was made."""

from __future__ import annotations

import json
from typing import Any


def release_card(summary: dict[str, Any], settings: dict[str, Any], failures_by_stage: dict[str, int]) -> str:
    """Markdown for a release with `summary` counts, generation `settings` and failures per stage."""
    generator = settings.get("generator", {})
    failures = "\n".join(f"| {stage} | {n} |" for stage, n in failures_by_stage.items()) or "| (none) | 0 |"
    sha = settings.get("checkpoint_sha256") or "none (random weights)"
    return f"""# Dataset card

Automatic masks made by sa-engine (`pipelines/amg.py`), in SA-1B's record format: tar shards of
`sa_<id>.jpg` + `sa_<id>.json`, Parquet indexes of images and masks, a failures table.

## Contents

| | |
|---|---|
| inputs | {summary["n_inputs"]} |
| images released | {summary["n_images"]} |
| masks | {summary["n_masks"]} |
| masks per image | {summary["masks_per_image"]} |
| inputs that failed | {summary["n_failed"]} |

Failures by stage (`failures/*.parquet` holds each with its reason):

| stage | inputs |
|---|---|
{failures}

## How it was made

- Input: `{settings.get("input")}`, image ids from {settings.get("first_id")} in URI order.
- Model: `{settings.get("model")}`, checkpoint `{settings.get("checkpoint")}`, sha256 `{sha}`.
- Mask generator: preset `{settings.get("preset")}`; points per side {generator.get("points_per_side")},
  {generator.get("crop_n_layers")} crop layers, predicted IoU > {generator.get("pred_iou_thresh")},
  stability >= {generator.get("stability_score_thresh")}, box NMS {generator.get("box_nms_thresh")}.
- Images resized to a shorter side of at most {settings.get("release_short_side")} px, JPEG quality
  {settings.get("jpeg_quality")}; masks were made at the resolution the crops need and resampled to it.

All generator settings:

```json
{json.dumps(generator, indent=2)}
```

## Known limitations

- Masks are what the model proposes, unreviewed: no human checked them. A small or briefly trained
  model (such as the shipped `sae_tiny`) gives fragmentary masks on photographs.
- No near-duplicate removal, face or licence-plate blurring, or quality filtering beyond the
  generator's thresholds has been applied to this release.
"""
