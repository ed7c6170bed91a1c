"""Licence-plate detection: OpenCV's bundled plate cascade, each candidate verified as a row of characters.

What it finds: Russian-format plates (GOST R 50577 type 1: one row of dark characters on a light
plate), the format `haarcascade_russian_plate_number.xml` was trained on, upright or tilted a few
degrees, at least the cascade's 60x20 px window on the detection copy (a grayscale copy downscaled
to a long side of at most `DETECT_LONG_SIDE`). The cascade fires on lettering and facades too, so
each of its boxes is kept only if `looks_like_plate` finds a row of dark characters in it.

What it cannot find: other formats the cascade was not trained on (two-row, coloured, light
characters on a dark plate), plates seen at a steep angle or smaller than the window, and often
tilted ones. `looks_like_plate` also rejects plates whose characters merge into fewer than
`MIN_CHARACTERS` blobs (blur, dirt, a frame touching them).

Where the numbers come from: no photo with a real plate was available, so plates drawn by
`synthetic.plates` were pasted onto 4 real photos (coffee, chelsea, rocket, dog.jpg) at widths
64-300 px, upright and tilted +5 and -10 degrees, at the photos' own size and resized to a 1500 px
shorter side (widths scaled alike); false plates were counted on 20 plate-free photos
(scikit-image's and ../shared/data/images) at both sizes. The cascade alone found 22, 18 and 12
of the 24 plates (upright, +5, -10) at own size, 22, 17 and 11 resized, smallest 64 px wide at own
size and 110 px on a 1500 px short side; it gave 4 false plates at own size (neon-sign lettering,
a facade) and 3 resized (the sign, dog fur). With `looks_like_plate`: the same plates, no false
plate. Each threshold below says why it has its value.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from curation.detector_file_error import DetectorFileError

CASCADE_FILE = "haarcascade_russian_plate_number.xml"
DETECT_LONG_SIDE = 1024
"""Detection runs on a grayscale copy downscaled (never enlarged) to at most this long side, in px."""
SCALE_FACTOR = 1.1
"""Cascade pyramid step: each scale 10% larger than the last."""
MIN_NEIGHBORS = 3
"""Overlapping cascade hits needed for a box (the setting the measurements above were made with)."""

MIN_CONTRAST = 40
"""Grey levels between the mean light and mean dark pixel of a candidate: plates are black ink on white
(rendered ones: >= 113); below this, Otsu's split separates the noise of a flat patch, not ink from plate."""
CHARACTER_HEIGHT = (0.15, 0.45)
"""Character height as a fraction of the candidate's height: the cascade frames a plate at its 3:1
window's shape, so the plate is about 0.55 of the box's height and its 42-58 mm characters (of 112 mm)
0.2-0.3 of it; rendered plates measured 0.19-0.36, upright and tilted."""
MAX_CHARACTER_ASPECT = 1.0
"""Character width / height: plate characters are taller than wide (rendered ones measured 0.3-0.9)."""
BASELINE_TOLERANCE = 0.2
"""How far, in median character heights, a character's bottom may lie off the fitted baseline: letters
and digits stand on one baseline; the slack covers blur and the boxes of tilted characters."""
MIN_CHARACTERS = 4
"""Characters needed on the baseline: the main field holds 6 (a letter, 3 digits, 2 letters), 2 may be
lost to merging at small sizes; the cascade's false positives seen had at most 2 character-shaped blobs."""
MIN_ALIGNED_SHARE = 0.5
"""Share of the character-shaped blobs that must be on the baseline: on a plate most are its row (6 of 8
with the region code, which stands higher); texture scatters them."""

Box = tuple[int, int, int, int]
"""XYWH in pixels."""


def load_cascade(file: str) -> cv2.CascadeClassifier:
    """The Haar cascade `file` from opencv-python's bundled folder (cv2.data.haarcascades).

    Raises:
        DetectorFileError: (a RuntimeError) the file is missing, unparsable or holds no cascade; the
            message names the path, the opencv-python<5 requirement and the installed version and folder.
    """
    path = Path(cv2.data.haarcascades) / file
    hint = (
        f"the Haar cascade {file} ships inside opencv-python<5 (OpenCV 5 dropped the bundled "
        f"cascades); installed: opencv {cv2.__version__}, cascade folder {cv2.data.haarcascades}"
    )
    if not path.is_file():
        raise DetectorFileError(f"missing {path}: {hint}")
    try:
        classifier = cv2.CascadeClassifier(str(path))
    except (cv2.error, SystemError) as error:  # an unparsable file raises (SystemError wrapping cv2.error)
        raise DetectorFileError(f"cannot load {path}: {hint}") from error
    if classifier.empty():  # parsable XML that holds no cascade
        raise DetectorFileError(f"cannot load {path}: {hint}")
    return classifier


def cascade_boxes(
    classifier: cv2.CascadeClassifier, gray: np.ndarray, scale_factor: float, min_neighbors: int
) -> list[Box]:
    """The boxes `classifier` finds in `gray` (HxW uint8), XYWH in its pixels.

    The smallest box searched is the cascade's own training window (getOriginalWindowSize).
    """
    boxes = classifier.detectMultiScale(
        gray, scaleFactor=scale_factor, minNeighbors=min_neighbors, minSize=classifier.getOriginalWindowSize()
    )
    return [(x, y, w, h) for x, y, w, h in np.asarray(boxes, dtype=np.int64).reshape(-1, 4).tolist()]


class PlateDetector:
    """Finds Russian-format licence plates in RGB images; loads the cascade once.

    Pickles as its settings (it has none: the cascade is reloaded), so it can be shipped to Ray workers.
    """

    def __init__(self) -> None:
        self._classifier = load_cascade(CASCADE_FILE)

    def __reduce__(self) -> tuple[type[PlateDetector], tuple[()]]:
        return PlateDetector, ()

    def detect(self, image: np.ndarray) -> list[Box]:
        """Plates in `image` (HxWx3 uint8 RGB), as sorted XYWH boxes in its pixels, clipped to it.

        The cascade runs on a grayscale copy downscaled to a long side of at most `DETECT_LONG_SIDE`;
        each box it finds is checked by `looks_like_plate` on that copy, then mapped back.
        """
        gray, scale_x, scale_y = detection_copy(image)
        found = {
            mapped_back(box, scale_x, scale_y, image.shape[:2])
            for box in cascade_boxes(self._classifier, gray, SCALE_FACTOR, MIN_NEIGHBORS)
            if looks_like_plate(gray[box[1] : box[1] + box[3], box[0] : box[0] + box[2]])
        }
        return sorted(box for box in found if box[2] > 0 and box[3] > 0)


def detection_copy(image: np.ndarray) -> tuple[np.ndarray, float, float]:
    """The grayscale copy of `image` (HxWx3 uint8 RGB) that cascades search, downscaled (never enlarged)
    to a long side of at most `DETECT_LONG_SIDE`, and the x and y factors from its pixels to the image's
    (exact per axis, so that a box touching the copy's edge touches the image's)."""
    height, width = image.shape[:2]
    gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    scale = min(1.0, DETECT_LONG_SIDE / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    return gray, width / gray.shape[1], height / gray.shape[0]


def mapped_back(box: Box, scale_x: float, scale_y: float, size: tuple[int, int]) -> Box:
    """XYWH `box` of the detection copy in pixels of the (height, width) `size` image, clipped to it
    (width or height 0 when nothing of it is left)."""
    x, y, w, h = box
    x0, y0 = max(0, math.floor(x * scale_x)), max(0, math.floor(y * scale_y))
    x1, y1 = min(size[1], math.ceil((x + w) * scale_x)), min(size[0], math.ceil((y + h) * scale_y))
    return x0, y0, max(0, x1 - x0), max(0, y1 - y0)


def looks_like_plate(crop: np.ndarray) -> bool:
    """Whether `crop` (HxW uint8 grey, a cascade box) holds a row of dark characters on a light plate.

    `PlateDetector` passes the box cut from its detection copy (the image's resolution for images
    whose long side is at most `DETECT_LONG_SIDE`). The crop is split into dark and light pixels by
    Otsu's threshold; it is a plate if the split has `MIN_CONTRAST`, and at least `MIN_CHARACTERS`
    character-shaped dark blobs (enclosed by light pixels, of `CHARACTER_HEIGHT`, no wider than
    `MAX_CHARACTER_ASPECT`), the majority of them (`MIN_ALIGNED_SHARE`), stand on one straight baseline.
    """
    threshold, dark = cv2.threshold(crop, 0, 1, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    light = crop > threshold
    if light.all() or not light.any() or crop[light].mean() - crop[~light].mean() < MIN_CONTRAST:
        return False
    characters = _character_boxes(dark)
    if len(characters) < MIN_CHARACTERS:
        return False
    aligned = _on_one_baseline(characters)
    return int(aligned.sum()) >= MIN_CHARACTERS and aligned.mean() >= MIN_ALIGNED_SHARE


def _character_boxes(dark: np.ndarray) -> np.ndarray:
    """Nx4 XYWH boxes of the character-shaped blobs of `dark` (HxW uint8, 1 for dark pixels).

    A blob is character-shaped if it does not touch the crop's edge (so light pixels surround it:
    dark on light), its height is within `CHARACTER_HEIGHT` of the crop's and its width at most
    `MAX_CHARACTER_ASPECT` times its height.
    """
    height, width = dark.shape
    _, _, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=8)
    x, y, w, h = stats[1:, :4].T
    enclosed = (x > 0) & (y > 0) & (x + w < width) & (y + h < height)
    sized = (h >= CHARACTER_HEIGHT[0] * height) & (h <= CHARACTER_HEIGHT[1] * height)
    return stats[1:, :4][enclosed & sized & (w <= MAX_CHARACTER_ASPECT * h)]


def _on_one_baseline(boxes: np.ndarray) -> np.ndarray:
    """N bools: which of the Nx4 XYWH `boxes` (N >= 2) have their bottom on one straight baseline.

    The baseline is fitted robustly (Theil-Sen: the median of the pairwise slopes of the boxes'
    bottom-centre points, then the median offset), so stray blobs do not tilt it; a box is on it if
    its bottom is within `BASELINE_TOLERANCE` median box heights of it.
    """
    centres = boxes[:, 0] + boxes[:, 2] / 2
    bottoms = (boxes[:, 1] + boxes[:, 3]).astype(np.float64)
    i, j = np.triu_indices(len(boxes), 1)
    apart = centres[i] != centres[j]
    slope = (
        float(np.median((bottoms[j] - bottoms[i])[apart] / (centres[j] - centres[i])[apart])) if apart.any() else 0.0
    )
    offsets = bottoms - slope * centres
    return np.abs(offsets - np.median(offsets)) <= BASELINE_TOLERANCE * np.median(boxes[:, 3])
