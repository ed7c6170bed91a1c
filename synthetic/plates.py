"""Licence plates drawn with OpenCV's font and pasted onto photos: test scenes for the plate detector.

No photo with a real licence plate is available to the project, so plates are rendered in the
format the bundled plate cascade was trained on (Russian, GOST R 50577 type 1: one row of dark
characters on a light plate) and pasted onto real photos, upright or tilted in-plane.
"""

from __future__ import annotations

import cv2
import numpy as np

PLATE_SHAPE = (112, 520)
"""Height and width in pixels of `russian_plate()`: 112x520 mm, the plate's real size, at 1 px/mm."""


def russian_plate() -> np.ndarray:
    """112x520x3 uint8 RGB: a Russian-format (GOST R 50577 type 1) plate 'A 123 BC | 77 RUS' in OpenCV's font."""
    plate = np.full((*PLATE_SHAPE, 3), 240, np.uint8)
    ink = (20, 20, 20)
    cv2.rectangle(plate, (3, 3), (516, 108), (25, 25, 25), 4)
    cv2.line(plate, (404, 3), (404, 108), (25, 25, 25), 3)

    def put(text: str, centre_x: int, baseline: int, height: int, thickness: int) -> None:
        font = cv2.FONT_HERSHEY_SIMPLEX
        scale = height / cv2.getTextSize(text, font, 1.0, thickness)[0][1]
        width = cv2.getTextSize(text, font, scale, thickness)[0][0]
        cv2.putText(plate, text, (centre_x - width // 2, baseline), font, scale, ink, thickness, cv2.LINE_AA)

    put("A", 50, 92, 42, 7)
    for i, digit in enumerate("123"):
        put(digit, 112 + 52 * i, 92, 58, 8)
    put("B", 292, 92, 42, 7)
    put("C", 348, 92, 42, 7)
    put("77", 460, 66, 46, 6)
    put("RUS", 446, 96, 14, 2)
    plate[85:89, 475:500] = (250, 250, 250)  # the flag
    plate[89:93, 475:500] = (30, 60, 200)
    plate[93:98, 475:500] = (200, 30, 30)
    return plate


def paste_plate(
    photo: np.ndarray, width: int, xy: tuple[int, int], tilt_degrees: float = 0.0
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A copy of `photo` with `russian_plate()` pasted on it, and the XYWH box the pasted plate covers.

    Args:
        photo: HxWx3 uint8 RGB; not modified.
        width: the plate's width in pixels before tilting; its height keeps the plate's 520:112 aspect.
        xy: top-left corner, in the photo's pixels, of the upright plate; the tilt turns it about its centre.
        tilt_degrees: in-plane rotation, counter-clockwise as seen in the image.

    Returns:
        The HxWx3 uint8 RGB copy, and the XYWH box of the photo's pixels that the plate covers (its
        rotated outline's bounding box, clipped to the photo). Only the plate's own pixels are pasted,
        blended at its anti-aliased edge; the corners left by the rotation keep the photo's pixels.
    """
    height = max(1, round(width * PLATE_SHAPE[0] / PLATE_SHAPE[1]))
    plate = cv2.resize(russian_plate(), (width, height), interpolation=cv2.INTER_AREA).astype(np.float32)
    centre = (xy[0] + width / 2, xy[1] + height / 2)
    # Plate pixel (u, v) lands at (u + xy[0], v + xy[1]) before the rotation about `centre`.
    warp = cv2.getRotationMatrix2D(centre, tilt_degrees, 1.0)
    warp[:, 2] += warp[:, :2] @ np.array(xy, np.float64)
    size = (photo.shape[1], photo.shape[0])
    painted = cv2.warpAffine(plate, warp, size, flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
    alpha = cv2.warpAffine(np.ones((height, width), np.float32), warp, size, flags=cv2.INTER_LINEAR)[..., None]
    # The zero border makes `painted` already weighted by `alpha` at the plate's edge.
    out = np.clip(np.rint(painted + (1 - alpha) * photo), 0, 255).astype(np.uint8)
    ys, xs = np.nonzero(alpha[..., 0] > 0)
    if xs.size == 0:
        raise ValueError(f"a plate {width} px wide at {xy} lies outside the {size[0]}x{size[1]} photo")
    x0, y0 = int(xs.min()), int(ys.min())
    return out, (x0, y0, int(xs.max()) + 1 - x0, int(ys.max()) + 1 - y0)
