"""The images of a release to review: their records, JPEG bytes and mask statistics by image id.

The images (a seeded sample, as `sa-engine audit export` draws it, or ids named) are read from
the release once, at start, and held in memory: a review session covers a few hundred images at
most. A release that cannot be read, or ids it does not hold, fail here, before anything is served.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from analysis.audit import index_rows, release_items, sample_images
from analysis.release_index import ReleaseIndex


@dataclass(frozen=True)
class CatalogImage:
    record: dict[str, Any]
    """The image's SA-1B record in the release."""
    jpeg: bytes

    def summary(self) -> dict[str, Any]:
        """The image's row in the list view: id, file, size and its masks' statistics (None
        for an image without masks)."""
        image, annotations = self.record["image"], self.record["annotations"]

        def stat(field: str, reduce: Any) -> float | None:
            values = [a[field] for a in annotations if a.get(field) is not None]
            return float(reduce(values)) if values else None

        return {
            "image_id": image["image_id"],
            "file_name": image["file_name"],
            "width": image["width"],
            "height": image["height"],
            "n_masks": len(annotations),
            "mean_predicted_iou": stat("predicted_iou", np.mean),
            "min_predicted_iou": stat("predicted_iou", np.min),
            "mean_stability": stat("stability_score", np.mean),
            "median_area": stat("area", np.median),
        }


class Catalog:
    """The images to review of the release at `uri`, by image id."""

    def __init__(self, uri: str, images: dict[int, CatalogImage]) -> None:
        self.uri = uri
        self._images = images

    @classmethod
    def open(
        cls,
        uri: str,
        storage_options: dict[str, Any] | None = None,
        image_ids: Sequence[int] | None = None,
        sample: int | None = None,
        seed: int = 0,
    ) -> Catalog:
        """The images named by `image_ids`, or a seeded `sample` of that many (exactly one of the
        two). ReleaseError (or the storage's error) for a release that cannot be read,
        AuditInputError for ids it does not hold."""
        if (image_ids is None) == (sample is None):
            raise ValueError("give either image_ids or sample")
        index = ReleaseIndex(uri, storage_options)
        wanted = set(image_ids) if image_ids is not None else set(sample_images(index, sample, seed))
        items = release_items(index, index_rows(index, wanted))
        images = {image_id: CatalogImage(item.record, item.image_bytes) for image_id, item in items}
        return cls(uri, dict(sorted(images.items())))

    def ids(self) -> list[int]:
        return list(self._images)

    def __len__(self) -> int:
        return len(self._images)

    def __contains__(self, image_id: int) -> bool:
        return image_id in self._images

    def __getitem__(self, image_id: int) -> CatalogImage:
        """KeyError for an id not under review."""
        return self._images[image_id]
