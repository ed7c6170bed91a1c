"""The mask generator's last steps, on its records: small-region clean-up, the coverage filter,
and, for a pipeline that releases a smaller image than the model saw, the move to that size.

They run on the CPU and need nothing of the model, so a pipeline can run them in a CPU stage
after the GPU stage (`MaskGenerator.propose`) and get the same records as
`MaskGenerator.generate`. The clean-up works on each mask's runs as its RLE holds them
(`small_regions`), never on its pixels; a mask is decoded only to move it to another size or
when the caller asks for the masks (`with_masks`), and encoded only when it changed. Much of the
clean-up's numpy work releases the GIL, so `threads` finish masks side by side.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from torch.profiler import record_function

from sam_core.amg.settings import MaskGeneratorSettings
from sam_core.amg.small_regions import remove_small_regions
from sam_core.mask_ops import (
    annotation_fields,
    box_nms,
    decode_rle,
    record_bbox,
    resample_mask,
    rle_runs,
    rles_from_runs,
)


@dataclass(frozen=True)
class _Finished:
    """One record after the per-mask steps, before the steps that compare masks."""

    record: dict[str, Any]
    """At the output size, every field final but "id"."""
    box: list[float]
    """XYXY at the input size after the clean-up, for the clean-up's NMS."""
    unchanged: bool
    """The clean-up left the mask as it was (it wins NMS ties against changed ones)."""
    area: int
    """Pixels at the input size after the clean-up, for the coverage filter."""
    vanished: bool
    """No pixel of the mask is left at the output size."""
    mask: np.ndarray | None
    """HxW bool at the output size, when asked for."""


@record_function("amg.cleanup")
def finish_records(
    records: list[dict[str, Any]],
    settings: MaskGeneratorSettings,
    with_masks: bool = False,
    size: tuple[int, int] | None = None,
    threads: int = 1,
) -> list[dict[str, Any]]:
    """`records` (SA-1B annotations of one image, best first) after the clean-up of holes and
    islands under `min_mask_region_area` px and the `max_mask_coverage` filter, numbered 0..n-1.

    `size`: (height, width) of an image to move the records to, e.g. a smaller release image:
    masks are area-resampled (a pixel is in when at least half of its area is), boxes recomputed,
    crop boxes and points scaled; masks that vanish there are left out. `with_masks` adds
    "mask": HxW bool (at `size` when given). `threads`: masks finished side by side."""
    if not records:
        return []
    height, width = records[0]["segmentation"]["size"]
    if size is not None and tuple(size) == (height, width):
        size = None
    finish = partial(_finish_one, settings=settings, size=size, with_masks=with_masks)
    if threads > 1 and len(records) > 1:
        with ThreadPoolExecutor(threads, thread_name_prefix="amg-cleanup") as pool:
            results = list(pool.map(finish, records))
    else:
        results = [finish(record) for record in records]
    finished = [item for item in results if item is not None]
    if settings.min_mask_region_area > 0 and finished:
        boxes = torch.tensor([item.box for item in finished])
        unchanged = torch.tensor([1.0 if item.unchanged else 0.0 for item in finished])
        keep = box_nms(boxes, unchanged, max(settings.box_nms_thresh, settings.crop_nms_thresh))
        finished = [finished[i] for i in keep.tolist()]
    if settings.max_mask_coverage is not None:
        finished = [item for item in finished if item.area < settings.max_mask_coverage * height * width]
    kept = [item for item in finished if not item.vanished]
    return [{**item.record, "id": i, **({"mask": item.mask} if with_masks else {})} for i, item in enumerate(kept)]


def _finish_one(
    record: dict[str, Any], settings: MaskGeneratorSettings, size: tuple[int, int] | None, with_masks: bool
) -> _Finished | None:
    """The clean-up and the move of one record; None when the clean-up drops its mask."""
    x, y, w, h = record["bbox"]
    box, area, changed = [x, y, x + w, y + h], record["area"], False
    rle = record["segmentation"]
    if settings.min_mask_region_area > 0:
        paper = settings.small_region_mode == "paper"
        cleaned = remove_small_regions(rle_runs(rle), tuple(rle["size"]), settings.min_mask_region_area, paper)
        if cleaned.runs is None:
            return None
        if cleaned.changed:
            changed, box, area = True, [float(v) for v in cleaned.box], cleaned.area
            rle = rles_from_runs([cleaned.runs], tuple(rle["size"]))[0]
            record = {**record, "segmentation": rle, "bbox": record_bbox(cleaned.box), "area": area}
    mask = decode_rle(rle) if size is not None or with_masks else None
    vanished = False
    if size is not None:
        record = _scaled_geometry(record, size)
        mask = resample_mask(mask, size)
        vanished = not mask.any()
        if not vanished:
            record = {**record, **annotation_fields(torch.from_numpy(mask)[None])[0]}
    return _Finished(record, box, not changed, area, vanished, mask if with_masks else None)


def _scaled_geometry(record: dict[str, Any], size: tuple[int, int]) -> dict[str, Any]:
    """`record` with its crop box and points moved to the (height, width) `size`."""
    height, width = record["segmentation"]["size"]
    sy, sx = size[0] / height, size[1] / width
    x, y, w, h = record["crop_box"]
    return {
        **record,
        "crop_box": [x * sx, y * sy, w * sx, h * sy],
        "point_coords": [[px * sx, py * sy] for px, py in record["point_coords"]],
    }
