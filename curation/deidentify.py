"""Face and licence-plate de-identification of released images, as SA-1B blurred them.

Detection uses the Haar cascades that ship inside the opencv-python-headless wheel (OpenCV 5
dropped them, hence the `opencv-python-headless<5` pin); nothing is downloaded at run time.
Each detected box is grown by `MARGIN` of its size on every side, clipped to the image, and made
unrecognisable by pixelation into blocks of about 1/`BLOCKS` of the grown box's shorter side followed
by a Gaussian blur with sigma of half a block (see `blur_region`). Pixels outside the grown boxes are
returned byte-identical.

Parameters were chosen by trying them on scikit-image's photos, ../shared/data/images, the 100 face
and 100 non-face crops of `skimage.data.lfw_subset()` and Russian-format plates rendered onto real
photos; the numbers are in DETECTOR_LIMITS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

MARGIN = 0.2
"""Each box grows by this fraction of its width (height) on the left and right (top and bottom)."""
BLOCKS = 6
"""The grown box is pixelated into blocks of ceil(shorter side / BLOCKS) pixels, then Gaussian-blurred."""


@dataclass(frozen=True)
class Region:
    """A detected face or licence plate."""

    kind: str  # "face" or "plate"
    box: tuple[int, int, int, int]  # XYWH in pixels of the image passed in, inside it


@dataclass(frozen=True)
class _Cascade:
    kind: str  # "face" or "plate"
    file: str  # file name inside cv2.data.haarcascades
    scale_factor: float
    min_neighbors: int
    mirrored: bool  # also run on the left-right mirrored image (the profile cascade knows one side only)


_CASCADES = (
    _Cascade("face", "haarcascade_frontalface_alt2.xml", scale_factor=1.1, min_neighbors=4, mirrored=False),
    _Cascade("face", "haarcascade_profileface.xml", scale_factor=1.1, min_neighbors=4, mirrored=True),
    _Cascade("plate", "haarcascade_russian_plate_number.xml", scale_factor=1.1, min_neighbors=3, mirrored=False),
)
"""minSize of every cascade is its own training window (20x20 faces, 60x20 plates): the smallest it can find."""

DETECTOR = (
    f"OpenCV {cv2.__version__} Haar cascades bundled with opencv-python-headless: "
    "haarcascade_frontalface_alt2.xml and haarcascade_profileface.xml (image and its mirror) for faces, "
    "haarcascade_russian_plate_number.xml for licence plates, run on a grayscale copy downscaled to a long "
    f"side of at most 1024 px (default); boxes grown by {MARGIN:.0%} per side, pixelated and Gaussian-blurred."
)

DETECTOR_LIMITS = """\
- Faces: frontal and profile (both directions) Haar cascades only, each needing 4 overlapping hits. \
Faces seen from behind, turned beyond profile, heavily occluded or tilted in-plane are missed: on \
`skimage.data.astronaut()` rotated in-plane the face was found at -15..+20 degrees and missed at -20, \
+-25, +-30 and +-45.
- Minimum face size: the cascades' 20x20 px window on the detection copy (long side at most 1024 px), \
about 45 px on a 1500x2250 release image. The astronaut pasted into a 1500x2250 photo was found with a \
face of 48 px and up, missed at 44 px and below. Crowds and distant people stay unblurred.
- Recall was not measured on a face-detection benchmark. The only face measurement here: 98 of the 100 \
face crops of `skimage.data.lfw_subset()` found when upscaled 2x and padded (99 at 4x), with no \
detection on its 100 non-face crops.
- False positives: Haar cascades fire on textures and lettering; such areas are blurred needlessly. On \
the 24 photos here with no face large enough to detect (scikit-image's, and 3 in ../shared, one with \
people far away), at their own size the face cascades fired 0 times and the plate cascade 4 times \
(neon-sign lettering, a building facade); resized to a 1024 px long side (the size of the detection copy \
of a release image) the face cascades fired 2 times (a coin's profile effigy, garage clutter) and the \
plate cascade 4 times. Portraits that are not people may be blurred.
- Licence plates: the cascade (3 overlapping hits) was trained on Russian-format plates (one row of dark \
characters on a light plate); other formats (two rows, coloured, light-on-dark) are likely missed. No \
photo with a real plate was available: a Russian-format plate drawn with OpenCV's font onto 4 real \
photos at widths 64-300 px was found in 23 of 24 cases upright, 14 of 24 tilted 5 degrees and 4 of 24 \
tilted -10 degrees. Minimum plate size: the cascade's 60x20 px window on the detection copy; on a \
1500x2250 image found from 120 px wide, missed at 100.
- Each image is processed on its own, with no tracking, no human review and no check of what was missed.
"""


class Deidentifier:
    """Finds faces and licence plates in an RGB image and blurs them; loads the cascades once.

    Pickles as its settings (the cascades are reloaded), so it can be shipped to Ray workers.

    Args:
        detect_long_side: detection runs on a grayscale copy downscaled (never enlarged) so that its
            longer side is at most this many pixels; boxes are mapped back to the input's pixels.
    """

    def __init__(self, detect_long_side: int = 1024) -> None:
        if isinstance(detect_long_side, bool) or not isinstance(detect_long_side, int) or detect_long_side < 1:
            raise ValueError(f"detect_long_side must be a positive int, got {detect_long_side!r}")
        self.detect_long_side = detect_long_side
        self._classifiers = [(cascade, _load(cascade.file)) for cascade in _CASCADES]

    def __reduce__(self) -> tuple[type[Deidentifier], tuple[int]]:
        return Deidentifier, (self.detect_long_side,)

    def detect(self, image: np.ndarray) -> list[Region]:
        """Faces and plates in `image` (HxWx3 uint8 RGB), as XYWH boxes in its pixels, clipped to it.

        Returned sorted by kind then box; identical boxes appear once.
        """
        _check_image(image)
        height, width = image.shape[:2]
        gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
        scale = min(1.0, self.detect_long_side / max(height, width))
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        # Map back with the exact per-axis ratio so that a box touching the copy's edge touches the image's.
        scale_x, scale_y = width / gray.shape[1], height / gray.shape[0]
        mirror = np.ascontiguousarray(gray[:, ::-1])
        found: set[Region] = set()
        for cascade, classifier in self._classifiers:
            for flipped in (False, True) if cascade.mirrored else (False,):
                boxes = classifier.detectMultiScale(
                    mirror if flipped else gray,
                    scaleFactor=cascade.scale_factor,
                    minNeighbors=cascade.min_neighbors,
                    minSize=classifier.getOriginalWindowSize(),
                )
                for x, y, w, h in np.asarray(boxes, dtype=np.int64).reshape(-1, 4).tolist():
                    if flipped:
                        x = gray.shape[1] - x - w
                    x0, y0 = max(0, math.floor(x * scale_x)), max(0, math.floor(y * scale_y))
                    x1, y1 = min(width, math.ceil((x + w) * scale_x)), min(height, math.ceil((y + h) * scale_y))
                    if x1 > x0 and y1 > y0:
                        found.add(Region(cascade.kind, (x0, y0, x1 - x0, y1 - y0)))
        return sorted(found, key=lambda region: (region.kind, region.box))

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, list[Region]]:
        """A blurred copy of `image` (HxWx3 uint8 RGB; the input is not modified) and the regions found.

        Only pixels inside `grow_box(region.box, H, W)` of some region differ from the input.
        """
        regions = self.detect(image)
        out = image.copy()
        for region in regions:
            blur_region(out, grow_box(region.box, *image.shape[:2]))
        return out, regions


def grow_box(box: tuple[int, int, int, int], height: int, width: int) -> tuple[int, int, int, int]:
    """XYWH `box` grown by `MARGIN` of its width/height on each side and clipped to a HxW image (XYWH)."""
    x, y, w, h = box
    dx, dy = math.ceil(round(MARGIN * w, 6)), math.ceil(round(MARGIN * h, 6))  # round: 0.2 * 35 > 7.0
    x0, y0 = max(0, x - dx), max(0, y - dy)
    x1, y1 = min(width, x + w + dx), min(height, y + h + dy)
    return x0, y0, max(0, x1 - x0), max(0, y1 - y0)


def blur_region(image: np.ndarray, box: tuple[int, int, int, int]) -> None:
    """Makes the XYWH `box` of `image` (HxWx3 uint8, modified in place) unrecognisable.

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


def _load(file: str) -> cv2.CascadeClassifier:
    path = Path(cv2.data.haarcascades) / file
    hint = (
        f"the Haar cascade {file} ships inside opencv-python-headless<5 (OpenCV 5 dropped the bundled "
        f"cascades); installed: opencv {cv2.__version__}, cascade folder {cv2.data.haarcascades}"
    )
    if not path.is_file():
        raise RuntimeError(f"missing {path}: {hint}")
    try:
        classifier = cv2.CascadeClassifier(str(path))
    except (cv2.error, SystemError) as error:  # an unparsable file raises (SystemError wrapping cv2.error)
        raise RuntimeError(f"cannot load {path}: {hint}") from error
    if classifier.empty():  # parsable XML that holds no cascade
        raise RuntimeError(f"cannot load {path}: {hint}")
    return classifier


def _check_image(image: object) -> None:
    if not isinstance(image, np.ndarray):
        # ValueError, not TypeError: callers treat every unusable image alike (a failures row, see DESIGN.md).
        raise ValueError(f"expected an HxWx3 uint8 RGB numpy array, got {type(image).__name__}")  # noqa: TRY004
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 RGB array, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB array, got dtype {image.dtype}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"expected a non-empty HxWx3 image, got shape {image.shape}")
