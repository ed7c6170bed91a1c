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

from curation.deidentify import Deidentifier
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
    blurred: dict[str, int]
    """Regions blurred in the release JPEG, by kind (every kind of BLURRED_KINDS, 0 when none)."""


@functools.cache
def _deidentifier() -> Deidentifier:
    """One detector per worker process (loading the cascades takes a moment)."""
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
    released, blurred = resize_image(image, release), Counter({kind: 0 for kind in BLURRED_KINDS})
    if policy.deidentify:
        released, regions = _deidentifier()(released)
        blurred.update(region.kind for region in regions)
    jpeg = encode_jpeg(released, policy.jpeg_quality)
    return PreparedImage(digest, size, release, image, jpeg, dict(blurred))


def provenance_fields(uri: str, sha256: str, source_size: tuple[int, int], blurred: dict[str, int]) -> dict[str, Any]:
    """The extra image fields of a released record, before the input's metadata: where the image
    came from, the source's sha256 and (height, width), and the regions blurred in it."""
    height, width = source_size
    return {
        "source": uri,
        "source_sha256": sha256,
        "source_width": width,
        "source_height": height,
        **{f"blurred_{kind}s": blurred[kind] for kind in BLURRED_KINDS},
    }


def blur_tallies(blurred: dict[str, int]) -> dict[str, int]:
    """A released image's part of the shard tallies: regions blurred by kind, and whether any was."""
    return {
        **{f"blurred_{kind}s": blurred[kind] for kind in BLURRED_KINDS},
        "images_blurred": int(any(blurred.values())),
    }
