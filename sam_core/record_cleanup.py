"""The mask generator's last steps, on its records: small-region clean-up and the coverage filter.

They run on the CPU (connected components through OpenCV) and need nothing of the model, so a
pipeline can run them in a CPU stage after the GPU stage (`MaskGenerator.propose`) and get
the same records as `MaskGenerator.generate`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.profiler import record_function

from sam_core.amg_settings import MaskGeneratorSettings
from sam_core.mask_ops import box_nms, decode_rle, encode_rles, masks_to_boxes, record_bbox, remove_small_regions


@record_function("amg.cleanup")
def finish_records(
    records: list[dict[str, Any]], settings: MaskGeneratorSettings, with_masks: bool = False
) -> list[dict[str, Any]]:
    """`records` (SA-1B annotations of one image, best first) after the clean-up of holes and
    islands under `min_mask_region_area` px and the `max_mask_coverage` filter, numbered 0..n-1.
    `with_masks` adds "mask": HxW bool."""
    if settings.min_mask_region_area > 0:
        records = _clean_small_regions(records, settings)
    if settings.max_mask_coverage is not None:
        records = [r for r in records if r["area"] < settings.max_mask_coverage * _pixels(r)]
    finished = []
    for i, record in enumerate(records):
        record = {**record, "id": i}
        if with_masks:
            record["mask"] = decode_rle(record["segmentation"])
        finished.append(record)
    return finished


def _pixels(record: dict[str, Any]) -> int:
    height, width = record["segmentation"]["size"]
    return height * width


def _clean_small_regions(records: list[dict[str, Any]], settings: MaskGeneratorSettings) -> list[dict[str, Any]]:
    """Remove small holes and islands; masks the clean-up changed lose NMS ties to unchanged ones."""
    s = settings
    cleaned, unchanged = [], []
    for record in records:
        mask, changed = remove_small_regions(
            decode_rle(record["segmentation"]), s.min_mask_region_area, s.small_region_mode == "paper"
        )
        if mask is None:
            continue
        if changed:
            tensor = torch.from_numpy(mask)[None]
            record = {
                **record,
                "segmentation": encode_rles(tensor)[0],
                "bbox": record_bbox(masks_to_boxes(tensor)[0].tolist()),
                "area": int(mask.sum()),
            }
        cleaned.append(record)
        unchanged.append(0.0 if changed else 1.0)
    if not cleaned:
        return []
    boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (r["bbox"] for r in cleaned)])
    keep = box_nms(boxes, torch.tensor(unchanged), max(s.box_nms_thresh, s.crop_nms_thresh))
    return [cleaned[i] for i in keep.tolist()]
