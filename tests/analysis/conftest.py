"""A small release whose statistics are known by hand, written with the project's own writer."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from curation.images import encode_jpeg
from curation.records import image_entry
from curation.release import ReleaseImage, ReleaseWriter


def rectangle(height: int, width: int, x: int, y: int, w: int, h: int) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    mask[y : y + h, x : x + w] = True
    return mask


def l_shape(height: int, width: int, x: int, y: int) -> np.ndarray:
    """A 20x20 square at (x, y) without its 10x10 lower-right quarter: 300 pixels.

    The convex hull of its pixel centres has the vertices (0,0) (19,0) (19,9) (9,19) (0,19)
    relative to (x, y); of the missing quarter, the pixels (10+a, 10+b) with a + b <= 8 lie in it,
    9 + 8 + ... + 1 = 45 of them, so the hull covers 345 pixels and concavity = 1 - 300/345."""
    mask = rectangle(height, width, x, y, 20, 20)
    mask[y + 10 : y + 20, x + 10 : x + 20] = False
    return mask


L_SHAPE_CONCAVITY = 1 - 300 / 345


@dataclass(frozen=True)
class KnownRelease:
    uri: str
    masks: dict[int, list[np.ndarray]]  # image id -> HxW bool masks, in annotation order
    sizes: dict[int, tuple[int, int]]  # image id -> (height, width)
    countries: dict[int, str | None]


def annotation(ann_id: int, mask: np.ndarray, predicted_iou: float) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode()
    x, y, w, h = mask_utils.toBbox(rle).tolist()
    return {
        "id": ann_id,
        "segmentation": rle,
        "bbox": [x, y, w, h],
        "area": int(mask.sum()),
        "predicted_iou": predicted_iou,
        "stability_score": 0.97,
        "crop_box": [0.0, 0.0, float(mask.shape[1]), float(mask.shape[0])],
        "point_coords": [[x, y]],
    }


def write_known_release(root: Path) -> KnownRelease:
    """Three images: 100x200 with an L-shape and a rectangle; 60x60 with no masks; 100x100 with
    twelve 4x4 squares; in two shards, image 3 located by lat/lon, the others by country."""
    masks = {
        1: [l_shape(100, 200, 0, 0), rectangle(100, 200, 100, 50, 100, 50)],
        2: [],
        3: [rectangle(100, 100, 8 * k, 8 * (k % 3), 4, 4) for k in range(12)],
    }
    sizes = {1: (100, 200), 2: (60, 60), 3: (100, 100)}
    metadata = {1: {"country": "KE"}, 2: {"country": "France"}, 3: {"lat": -23.55, "lon": -46.63}}  # São Paulo
    writer = ReleaseWriter(str(root))
    shards = []
    for shard, ids in enumerate(([1, 2], [3])):
        images = []
        for image_id in ids:
            height, width = sizes[image_id]
            record = {
                "image": image_entry(image_id, (height, width), metadata[image_id]),
                "annotations": [annotation(k, m, 0.9 + 0.01 * k) for k, m in enumerate(masks[image_id])],
            }
            pixels = np.full((height, width, 3), 128, np.uint8)
            images.append(ReleaseImage(record, encode_jpeg(pixels, 90)))
        shards.append(writer.write_shard(shard, images))
    writer.write_failures("none", [])
    writer.finish(shards, {"generator": "tests/analysis/conftest.py"}, "# known release\n")
    countries = {1: "KE", 2: "FR", 3: "BR"}
    return KnownRelease(str(root), masks, sizes, countries)


def write_coco(path: Path, known: KnownRelease, polygons: bool) -> Path:
    """The known release's masks as a COCO file: RLE, or polygons for the axis-aligned rectangles."""
    images, annotations = [], []
    for image_id, masks in known.masks.items():
        height, width = known.sizes[image_id]
        images.append({"id": image_id, "height": height, "width": width, "file_name": f"{image_id}.jpg"})
        for mask in masks:
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            x, y, w, h = mask_utils.toBbox(rle).tolist()
            is_rectangle = mask.sum() == w * h
            if polygons and is_rectangle:  # pycocotools rasterises this polygon back to the same pixels
                segmentation = [[x, y, x + w, y, x + w, y + h, x, y + h]]
            else:
                segmentation = {"size": rle["size"], "counts": rle["counts"].decode()}
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": 1,
                    "segmentation": segmentation,
                    "area": float(mask.sum()),
                    "bbox": [x, y, w, h],
                    "iscrowd": 0,
                }
            )
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "x"}]}))
    return path


@pytest.fixture(scope="session")
def known_release(tmp_path_factory: pytest.TempPathFactory) -> KnownRelease:
    return write_known_release(tmp_path_factory.mktemp("known_release"))


@pytest.fixture(scope="session")
def fairness_masks_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Per-mask IoUs of the shipped model on the objects of two generated scenes, each object
    given made-up MIAP-style attributes: what `python -m analysis.fairness` writes."""
    from analysis.fairness import per_mask_ious
    from analysis.interactive import PersonSample
    from sam_core.checkpoints import load_sam
    from sam_core.predictor import SamPredictor
    from synthetic.scenes import generate_scene

    samples = []
    for index in range(2):
        scene = generate_scene(11, index)
        for k in np.argsort(-scene.masks.sum((1, 2)))[:3]:
            attributes = {"GenderPresentation": ("Predominantly Feminine", "Predominantly Masculine")[int(k) % 2]}
            samples.append(PersonSample(f"scene{index}", scene.image, scene.masks[k], attributes))
    table = per_mask_ious(samples, SamPredictor(load_sam("sae_tiny", "sae_tiny")), n_points=3, seed=0)
    path = tmp_path_factory.mktemp("fairness") / "fairness_masks.csv"
    table.to_csv(path, index=False)
    return path
