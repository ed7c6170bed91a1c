"""DATASET_CARD.md of a release made by the automatic-mask job: what is in it and how it was made,
in the spirit of SA-1B's datasheet (counts, generation settings, model, curation, limitations)."""

from __future__ import annotations

import json
from typing import Any

from curation.deidentify import DETECTOR, DETECTOR_FACTS, DETECTOR_LIMITS
from curation.filters import IMAGES_REMOVED, MASKS_REMOVED


def curation_summary(
    filters: dict[str, Any], deidentified: bool, tallies: dict[str, int], dedup: list[dict[str, Any]]
) -> dict[str, Any]:
    """What curation did to a release, from the active `filters`, whether images were
    `deidentified`, the summed shard `tallies` and the summary of each keep/drop table it was given
    (`DedupTable.summary` with its "table" URI and "copy" path; none: [])."""
    return {
        "filters": filters,
        "masks_removed": _prefixed(tallies, MASKS_REMOVED),
        "images_removed": _prefixed(tallies, IMAGES_REMOVED),
        "deidentify": {
            "on": deidentified,
            "detector": DETECTOR if deidentified else None,
            "models": DETECTOR_FACTS if deidentified else None,
            "limits": [line.removeprefix("- ") for line in DETECTOR_LIMITS.strip().splitlines()]
            if deidentified
            else None,
            "images_blurred": tallies.get("images_blurred", 0),
            "faces": tallies.get("blurred_faces", 0),
            "plates": tallies.get("blurred_plates", 0),
        },
        "dedup": dedup,
    }


def _prefixed(tallies: dict[str, int], prefix: str) -> dict[str, int]:
    return {k.removeprefix(prefix): v for k, v in sorted(tallies.items()) if k.startswith(prefix)}


def release_card(summary: dict[str, Any], settings: dict[str, Any], failures_by_stage: dict[str, int]) -> str:
    """Markdown for a release with `summary` counts (and its "curation" part), generation
    `settings` and inputs not released per stage."""
    generator = settings.get("generator", {})
    curation = summary["curation"]
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
| inputs not released | {summary["n_failed"]} |

Inputs not released, by stage (`failures/*.parquet` holds each with its reason; "dedup" and
"filter" are curation's deliberate drops, the others are inputs that could not be processed):

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
{_embeddings_line(settings.get("embeddings"))}
All generator settings:

```json
{json.dumps(generator, indent=2)}
```

{_curation_section(curation)}
## Known limitations

- Masks are what the model proposes, unreviewed: no human checked them. A small or briefly trained
  model (such as the shipped `sae_tiny`) gives fragmentary masks on photographs.
{_limitations(curation)}"""


def _embeddings_line(info: dict[str, Any] | None) -> str:
    """The card's line on the image embeddings of `info` (`curation.embeddings`); "" without them."""
    if not info:
        return ""
    return (
        f"- Image embeddings: `embeddings/*.parquet`, one {info['dim']}-d float16 vector per released image "
        f"from `{info['model']}`: {info['pooling']}.\n"
    )


def _table(rows: dict[str, Any], header: tuple[str, str]) -> str:
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {key} | {value} |" for key, value in rows.items()] or ["| (none) | 0 |"]
    return "\n".join(lines)


def _curation_section(curation: dict[str, Any]) -> str:
    filters = curation["filters"]
    filter_rows = {
        f"`{name}` = {value}": f"{curation['masks_removed'].get(name, 0)} masks, "
        f"{curation['images_removed'].get(name, 0)} images"
        for name, value in filters.items()
    }
    deid = curation["deidentify"]
    if deid["on"]:
        deid_text = (
            f"Faces and licence plates were detected and blurred in the released images: {deid['faces']} faces "
            f"and {deid['plates']} plates in {deid['images_blurred']} images. Each image record holds "
            "`blurred_faces`, `blurred_plates` and `blurred_regions` (kind and XYWH box of each area blurred). "
            "Masks were made on the unblurred image.\n\n"
            f"Detector: {deid['detector']}"
        )
    else:
        deid_text = "Off: faces and licence plates are NOT blurred in this release."
    dedup_text = _dedup_text(curation["dedup"])
    return f"""## Curation

### Quality filters

Applied to the generator's masks after it ran (masks and images each filter removed; a mask or
image is counted under the first filter that removed it):

{_table(filter_rows, ("filter", "removed")) if filters else "None beyond the generator's own thresholds."}

### De-identification

{deid_text}

### Near-duplicates

{dedup_text}
"""


_DEDUP_MAKERS = {
    "phash": "`sa-engine dedup` (perceptual hash of the input images)",
    "semdedup": "`sa-engine semdedup` (image embeddings of a release)",
}
_DEDUP_COUNTS = {
    "inputs": "inputs checked",
    "unique": "unique",
    "clusters": "near-duplicate groups (one image kept from each)",
    "dropped": "dropped as near-duplicates (in the table)",
    "unreadable": "unreadable when checked",
}


def _dedup_text(tables: list[dict[str, Any]]) -> str:
    """The card's near-duplicates part: each keep/drop table (how it was made) and its counts, by method."""
    if not tables:
        return "Not applied: the job was given no keep/drop table, so near-duplicates may remain."
    lines = ["An input is dropped (stage `dedup` in the failures table) when any of these tables drops it:\n"]
    for number, table in enumerate(tables, 1):
        found = table["settings"]
        how = found.get("description") or found.get("method") or "unrecorded settings"
        lines.append(
            f"{number}. `{table['table']}` (sha256 `{table['sha256']}`, copied to `{table['copy']}`), made by "
            f"{_DEDUP_MAKERS[table['method']]} with {how}."
        )
    header = "| | " + " | ".join(f"{n}. {t['method']}" for n, t in enumerate(tables, 1)) + " |"
    rows = [header, "|---" * (len(tables) + 1) + "|"]
    rows += [
        "| " + label + " | " + " | ".join(str(t[key]) for t in tables) + " |" for key, label in _DEDUP_COUNTS.items()
    ]
    return "\n".join(lines) + "\n\n" + "\n".join(rows)


def _limitations(curation: dict[str, Any]) -> str:
    lines = []
    if curation["deidentify"]["on"]:
        lines.append("- De-identification is automatic and can miss faces and plates. The detector's limits:")
        lines.append("\n".join("  " + line for line in DETECTOR_LIMITS.strip().splitlines()))
    if not curation["dedup"]:
        lines.append("- No near-duplicate removal was applied.")
    return "\n".join(lines) + "\n"
