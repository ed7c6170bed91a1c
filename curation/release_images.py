"""What a released image is made of: the policy that turns source bytes into the release JPEG
and the model's input, and the provenance fields its record carries.

    source bytes -> decoded (size limits) -> model image (long side the crops need)
                 -> release image (shorter side `short_side`, never enlarged)
                 -> faces and plates blurred on the release image (when `deidentify`) -> JPEG

The model image is cut from the source, never from the blurred release image, so the masks see
the photo as it was; the blur happens after the resize, at the released resolution.
"""

from __future__ import annotations

import functools
import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from curation.deidentify import Deidentifier, grow_box
from curation.images import decode_image, encode_jpeg, fit_long_side, fit_short_side, resize_image

BLURRED_KINDS = ("face", "plate")
"""The kinds of region de-identification blurs, as `Region.kind` names them."""


@dataclass(frozen=True)
class ReleaseImagePolicy:
    """How source images become released images (the job's settings; no defaults of its own)."""

    short_side: int
    """Released images are resized to this shorter side (never enlarged)."""
    jpeg_quality: int
    deidentify: bool
    """Blur faces and licence plates in the released image."""
    min_side: int
    """Sources with a side below this many px are refused (ImageDecodeError)."""
    max_pixels: int
    """Sources whose header claims more pixels are refused undecoded (ImageDecodeError)."""


@dataclass(frozen=True)
class PreparedImage:
    """One source made ready: sizes are (height, width)."""

    sha256: str
    """Of the source bytes."""
    source_size: tuple[int, int]
    release_size: tuple[int, int]
    model_image: np.ndarray
    """HxWx3 uint8 RGB, unblurred, at the size the crops need."""
    release_jpeg: bytes
    blurred_regions: list[dict[str, Any]]
    """Regions blurred in the release JPEG: {"kind": "face" | "plate", "bbox": [x, y, w, h]}, XYWH in
    release-image pixels, each the area actually blurred (the detected box grown by
    `curation.deidentify.MARGIN` per side, clipped to the image); sorted by kind, then box."""

    @property
    def blurred(self) -> dict[str, int]:
        """Regions blurred in the release JPEG, by kind (every kind of BLURRED_KINDS, 0 when none)."""
        return blur_counts(self.blurred_regions)


@functools.cache
def deidentifier() -> Deidentifier:
    """One detector per process, built (and its model files checked) on first use: the job calls it
    before it starts, so that a missing or altered model file stops it at once with DetectorFileError."""
    return Deidentifier()


def prepare_image(data: bytes, policy: ReleaseImagePolicy, model_long_side: int) -> PreparedImage:
    """The release JPEG and the model image of the source `data`; ImageDecodeError when the bytes
    do not decode within the policy's limits.

    The model image keeps what the crops need: its longer side is the larger of the release
    image's and `model_long_side`, never more than the source's.
    """
    digest = hashlib.sha256(data).hexdigest()
    source = decode_image(data, max_pixels=policy.max_pixels, min_side=policy.min_side)
    size = source.shape[:2]
    release = fit_short_side(size, policy.short_side)
    model = fit_long_side(size, max(max(release), model_long_side))
    image = resize_image(source, model)
    released, blurred = resize_image(image, release), []
    if policy.deidentify:
        released, regions = deidentifier()(released)
        blurred = [{"kind": region.kind, "bbox": list(grow_box(region.box, *release))} for region in regions]
    jpeg = encode_jpeg(released, policy.jpeg_quality)
    return PreparedImage(digest, size, release, image, jpeg, blurred)


def blur_counts(blurred_regions: list[dict[str, Any]]) -> dict[str, int]:
    """The number of `blurred_regions` of each kind of BLURRED_KINDS (0 when none)."""
    counts = Counter({kind: 0 for kind in BLURRED_KINDS})
    counts.update(region["kind"] for region in blurred_regions)
    return dict(counts)


def provenance_fields(
    uri: str, sha256: str, source_size: tuple[int, int], blurred_regions: list[dict[str, Any]]
) -> dict[str, Any]:
    """The extra image fields of a released record, before the input's metadata: where the image
    came from, the source's sha256 and (height, width), and the regions blurred in it (their
    counts by kind, and the regions themselves as `PreparedImage.blurred_regions` gives them)."""
    height, width = source_size
    blurred = blur_counts(blurred_regions)
    return {
        "source": uri,
        "source_sha256": sha256,
        "source_width": width,
        "source_height": height,
        **{f"blurred_{kind}s": blurred[kind] for kind in BLURRED_KINDS},
        "blurred_regions": blurred_regions,
    }


def blur_tallies(blurred: dict[str, int]) -> dict[str, int]:
    """A released image's part of the shard tallies: regions blurred by kind, and whether any was."""
    return {
        **{f"blurred_{kind}s": blurred[kind] for kind in BLURRED_KINDS},
        "images_blurred": int(any(blurred.values())),
    }
