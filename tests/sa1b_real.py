"""Real SA-1B data for tests, read from ../shared/data/real/sa1b_samples at test time and written
into tars under a test's tmp_path (research use only: never copied into the repository).

The one real SA-1B record there, sa_226381.json (113 masks, 2000x1500), comes without its image;
it is paired with real SA-1B JPEGs of the same size, so that record and image agree as they do
in SA-1B's own tars.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

from curation.records import image_key
from curation.release import ReleaseImage
from tests.conftest import REPO

REAL_SA1B = REPO.parent / "shared" / "data" / "real" / "sa1b_samples"
RECORD_SIZE = (1500, 2000)
"""(height, width) of the real record and of the JPEGs `real_sa1b_item` pairs with it."""
SAME_SIZE_IMAGES = ("sa_10039.jpg", "sa_561.jpg")
WIDER_IMAGE = "sa_192.jpg"
"""A real SA-1B JPEG of 2250x1500: wider than the real record says."""


def real_record(image_id: int = 226381, n_masks: int | None = None) -> dict[str, Any]:
    """The real SA-1B record sa_226381.json under `image_id` (its annotation ids kept unique per
    image id), with its first `n_masks` masks only when given."""
    record = json.loads((REAL_SA1B / "sa_226381.json").read_text())
    offset = (image_id - 226381) * 1000
    annotations = [{**ann, "id": ann["id"] + offset} for ann in record["annotations"][:n_masks]]
    return {
        "image": {**record["image"], "image_id": image_id, "file_name": f"{image_key(image_id)}.jpg"},
        "annotations": annotations,
    }


def real_image(name: str) -> bytes:
    path = REAL_SA1B / "images" / name
    assert path.is_file(), f"{path} is missing: the tests expect ../shared beside the checkout"
    return path.read_bytes()


def real_sa1b_item(k: int = 0, n_masks: int | None = None) -> ReleaseImage:
    """The real record as image 226381 + k with the k-th real JPEG of its size (k = 0 or 1)."""
    return ReleaseImage(real_record(226381 + k, n_masks), real_image(SAME_SIZE_IMAGES[k]))


def with_width(item: ReleaseImage, width: int) -> ReleaseImage:
    """`item` whose record's image width is rewritten to `width` (masks and JPEG unchanged)."""
    record = {**item.record, "image": {**item.record["image"], "width": width}}
    return ReleaseImage(record, item.image_bytes)


def write_sa1b_tar(path: Path, items: list[ReleaseImage]) -> Path:
    """A tar as SA-1B ships them: sa_<id>.jpg and sa_<id>.json for each item, in order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for item in items:
            key = image_key(item.record["image"]["image_id"])
            for name, data in ((f"{key}.jpg", item.image_bytes), (f"{key}.json", json.dumps(item.record).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path
