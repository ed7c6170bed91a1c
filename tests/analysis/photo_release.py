"""A release of real photos with real masks, made as the job makes its images: COCO train photos
(people up close among them) with their annotated instances, and the shared photos with
image-segmentation regions as masks. Every image goes
through `curation.release_images.prepare_image` with de-identification on, so the records carry
the regions really blurred; written with the project's `ReleaseWriter`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import skimage.segmentation
from PIL import Image
from pycocotools.coco import COCO

from curation.records import image_entry
from curation.release import ReleaseImage, ReleaseWriter
from curation.release_images import ReleaseImagePolicy, prepare_image, provenance_fields
from sam_core.mask_ops import resample_mask
from tests.analysis.conftest import annotation
from tests.conftest import REAL, REPO

COCO_IDS = (223648, 462565, 5802, 374628, 318219, 554625, 60623, 113588)
"""COCO train photos of ../shared/data/real/coco_train50: the most instances, and people up close."""
SHARED_PHOTOS = ("picture1.jpg", "picture2.jpg", "dog.jpg")
POLICY = ReleaseImagePolicy(short_side=480, jpeg_quality=90, deidentify=True, min_side=32, max_pixels=10**8)


@dataclass(frozen=True)
class PhotoRelease:
    uri: str
    records: dict[int, dict[str, Any]]
    """image id -> the released SA-1B record."""
    failures: list[dict[str, Any]]


def _coco_masks(coco: COCO, coco_id: int) -> list[np.ndarray]:
    """The photo's non-crowd instances as HxW bool masks at the photo's size."""
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[coco_id], iscrowd=False))
    return [coco.annToMask(ann).astype(bool) for ann in anns]


def _segments(image: np.ndarray) -> list[np.ndarray]:
    """Felzenszwalb regions of an HxWx3 uint8 photo covering at least 0.5% of it, as HxW bool masks."""
    labels = skimage.segmentation.felzenszwalb(
        image, scale=400, sigma=0.8, min_size=image.shape[0] * image.shape[1] // 400
    )
    masks = [labels == label for label in np.unique(labels)]
    return [mask for mask in masks if mask.mean() >= 0.005]


def _record(image_id: int, uri: str, data: bytes, masks: list[np.ndarray]) -> ReleaseImage:
    """The released image of `data` and its record, `masks` (at the source's size) resized to the release size."""
    prepared = prepare_image(data, POLICY, model_long_side=480)
    extra = provenance_fields(uri, prepared.sha256, prepared.source_size, prepared.blurred_regions)
    scores = np.random.default_rng(image_id).uniform(0.88, 1.0, len(masks))
    annotations = []
    for k, mask in enumerate(masks):
        resized = resample_mask(mask, prepared.release_size)
        if resized.any():
            annotations.append(annotation(image_id * 1000 + k, resized, round(float(scores[k]), 4)))
    record = {"image": image_entry(image_id, prepared.release_size, extra), "annotations": annotations}
    return ReleaseImage(record, prepared.release_jpeg)


def photo_images(coco_ids: tuple[int, ...] = COCO_IDS) -> list[ReleaseImage]:
    """The released images, ids 1.. in order: the COCO photos, then the shared photos."""
    coco_dir = REAL / "coco_train50"
    coco = COCO(str(coco_dir / "instances.json"))
    images = []
    for coco_id in coco_ids:
        path = coco_dir / "images" / coco.loadImgs([coco_id])[0]["file_name"]
        images.append(_record(len(images) + 1, str(path), path.read_bytes(), _coco_masks(coco, coco_id)))
    for name in SHARED_PHOTOS:
        path = REPO.parent / "shared" / "data" / "images" / name
        pixels = np.asarray(Image.open(path).convert("RGB"))
        images.append(_record(len(images) + 1, str(path), path.read_bytes(), _segments(pixels)))
    return images


def failure_rows(n: int) -> list[dict[str, Any]]:
    """n failures rows of the kinds the job writes."""
    kinds = (("read", "FileNotFoundError: no such file"), ("decode", "cannot decode image: truncated"))
    return [
        {"image_id": 1000 + i, "uri": f"s3://photos/bad_{i}.jpg", "stage": kinds[i % 2][0], "error": kinds[i % 2][1]}
        for i in range(n)
    ]


def write_photo_release(
    root: Path, images: list[ReleaseImage], failures: list[dict[str, Any]], copies: int = 1, per_shard: int = 4
) -> PhotoRelease:
    """`images` (and `copies` - 1 more copies of them under new ids) in shards of `per_shard`,
    and the `failures` rows."""
    released = []
    for copy in range(copies):
        for item in images:
            image = {**item.record["image"], "image_id": item.record["image"]["image_id"] + copy * len(images)}
            image["file_name"] = f"sa_{image['image_id']}.jpg"
            released.append(ReleaseImage({**item.record, "image": image}, item.image_bytes))
    writer = ReleaseWriter(str(root))
    shards = [
        writer.write_shard(i, released[start : start + per_shard])
        for i, start in enumerate(range(0, len(released), per_shard))
    ]
    writer.write_failures("sa_000000", failures)
    writer.finish(shards, {"generator": "tests/analysis/photo_release.py"}, "# photo release\n")
    records = {item.record["image"]["image_id"]: json.loads(json.dumps(item.record)) for item in released}
    return PhotoRelease(str(root), records, failures)
