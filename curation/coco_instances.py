"""Photos with instance masks from a COCO instances file, and the split that keeps some for validation.

A COCO instances file (`instances_*.json`: images, annotations with polygon or RLE segmentations)
names its photos by `file_name`, relative to an images folder. Both are untrusted: a file name
that would leave the folder, a photo whose size disagrees with its entry, an annotation that does
not rasterise, are errors naming the image. Crowd annotations (`iscrowd` 1) are regions to ignore
(COCOeval matches proposals on them without counting them), never objects to find or to train on.

The split is a rule on the image id alone (`is_validation`), so it stays the same whatever other
photos a file holds and whichever tool reads it: training never sees a validation photo.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pycocotools import mask as coco_mask

from curation.images import ImageDecodeError, decode_image

Split = Literal["validation", "training", "all"]
SPLITS: tuple[Split, ...] = ("validation", "training", "all")
VALIDATION_SHARE = 0.4
"""Share of image ids (by the hash rule of `is_validation`) held out for validation."""


class CocoInstancesError(ValueError):
    """An instances file or images folder that cannot be used; the message names the file or image."""


@dataclass(frozen=True)
class CocoPhoto:
    """One photo of an instances file. objects and crowd: COCO RLEs (compressed) at the photo's size."""

    image_id: int
    path: Path
    height: int
    width: int
    objects: tuple[dict[str, Any], ...]
    crowd: tuple[dict[str, Any], ...]

    def pixels(self) -> np.ndarray:
        """HxWx3 uint8 RGB, checked against the size the instances file gives."""
        try:
            image = decode_image(self.path.read_bytes())
        except (OSError, ImageDecodeError) as error:
            raise CocoInstancesError(f"image {self.image_id} ({self.path}): {error}") from error
        if image.shape[:2] != (self.height, self.width):
            raise CocoInstancesError(
                f"image {self.image_id} ({self.path}) is {image.shape[1]}x{image.shape[0]}, "
                f"its entry says {self.width}x{self.height}"
            )
        return image

    def masks(self, which: Literal["objects", "crowd"] = "objects") -> np.ndarray:
        """NxHxW bool masks of the objects (or of the crowd regions)."""
        rles = self.objects if which == "objects" else self.crowd
        if not rles:
            return np.zeros((0, self.height, self.width), bool)
        return np.moveaxis(coco_mask.decode(list(rles)), -1, 0).astype(bool)


def is_validation(image_id: int) -> bool:
    """Whether a photo belongs to the validation split: the first 8 bytes of sha256 of its id,
    as a fraction of 2^64, below VALIDATION_SHARE."""
    digest = hashlib.sha256(str(int(image_id)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < VALIDATION_SHARE


def in_split(image_id: int, split: Split) -> bool:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return split == "all" or is_validation(image_id) == (split == "validation")


def _image_path(images: Path, file_name: Any, image_id: int) -> Path:
    if not isinstance(file_name, str) or not file_name:
        raise CocoInstancesError(f"image {image_id} has no file_name")
    path = (images / file_name).resolve()
    if not path.is_relative_to(images.resolve()):
        raise CocoInstancesError(f"image {image_id}: file_name {file_name!r} leaves the images folder")
    return path


def _rle(segmentation: Any, height: int, width: int, where: str) -> dict[str, Any]:
    """One compressed RLE from a polygon list, an uncompressed RLE or a compressed one."""
    try:
        if isinstance(segmentation, list):
            return coco_mask.merge(coco_mask.frPyObjects(segmentation, height, width))
        if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
            return coco_mask.frPyObjects(segmentation, height, width)
        if isinstance(segmentation, dict) and list(segmentation.get("size", [])) == [height, width]:
            return {"size": [height, width], "counts": segmentation["counts"]}
    except Exception as error:  # pycocotools raises a bare Exception for input it does not take
        raise CocoInstancesError(f"{where}: segmentation does not rasterise: {error}") from error
    raise CocoInstancesError(f"{where}: segmentation is neither polygons nor an RLE of the image's size")


def read_coco_instances(annotations: str | Path, images: str | Path, split: Split = "all") -> list[CocoPhoto]:
    """The photos of `split` in an instances file (in the file's order), with their masks as RLEs.
    Photos with no annotation are kept (they have nothing to find). Pixels are read on demand."""
    annotations, images = Path(annotations), Path(images)
    try:
        data = json.loads(annotations.read_text())
        entries, labels = data["images"], data["annotations"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CocoInstancesError(f"{annotations}: not a COCO instances file ({error})") from error
    if not images.is_dir():
        raise CocoInstancesError(f"{images}: no such images folder")
    by_image: dict[int, list[dict[str, Any]]] = {}
    for label in labels:
        by_image.setdefault(label.get("image_id"), []).append(label)
    photos = []
    for entry in entries:
        image_id = entry.get("id")
        if not isinstance(image_id, int):
            raise CocoInstancesError(f"{annotations}: an image entry without an integer id: {entry!r:.200}")
        if not in_split(image_id, split):
            continue
        height, width = entry.get("height"), entry.get("width")
        if not (isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0):
            raise CocoInstancesError(f"{annotations}: image {image_id} has no valid height and width")
        objects, crowd = [], []
        for label in by_image.get(image_id, []):
            where = f"{annotations}: annotation {label.get('id')} of image {image_id}"
            rle = _rle(label.get("segmentation"), height, width, where)
            (crowd if label.get("iscrowd") else objects).append(rle)
        path = _image_path(images, entry.get("file_name"), image_id)
        photos.append(CocoPhoto(image_id, path, height, width, tuple(objects), tuple(crowd)))
    return photos
