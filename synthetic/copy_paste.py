"""Copy-paste composites: real object cut-outs pasted onto real photos, with exact visible masks.

Cut-outs are the objects of photos with instance masks (a COCO instances file): the object's
pixels inside its mask. A composite starts from a background photo, resized so that its longer
side is `CopyPasteSettings.size`: either a photo with instance masks, whose own objects stay as
ground truth, or a photo without any (scikit-image's bundled photos, SA-1B samples), cropped at
random. Then `min_objects`..`max_objects` cut-outs are pasted one after another, each scaled
(its longer side log-uniform in `scale_range` of the composite's, enlarged at most
`max_upscale` times), mirrored at random,
colour-jittered (a gain per channel and a brightness shift) and placed anywhere its centre falls
inside the composite. Every paste removes its pixels from the masks below it, so each mask is the
exact visible region; a mask left with less than `min_visible` of its area, or fewer than
`min_area` px, is dropped (it is covered, not an object one can see). A share of composites
(`photo_share`) is a photo with instance masks alone, mirrored at random, with nothing pasted:
the real photos themselves, with their own annotation.

Composite `index` of `seed` is always the same (`numpy.random.default_rng([seed, index])`) for the
same sources in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from curation.images import resize_image


@dataclass(frozen=True)
class CopyPasteSettings:
    """How composites are made. Sizes are in pixels of the composite."""

    size: int = 512
    """Longer side of every composite."""
    min_objects: int = 2
    max_objects: int = 8
    photo_share: float = 0.25
    """Share of composites that are an annotated photo alone, nothing pasted."""
    annotated_background_share: float = 0.5
    """Of the other composites, the share whose background is an annotated photo (its objects kept)."""
    scale_range: tuple[float, float] = (0.08, 0.6)
    """A pasted object's longer side, as a fraction of the composite's longer side (log-uniform)."""
    max_upscale: float = 2.0
    """A cut-out is never enlarged beyond this factor of its own size (its outline would show its pixels)."""
    colour_gain: float = 0.2
    """Each channel is multiplied by a factor in 1 +- this."""
    brightness: float = 25.0
    """A shift in +- this (0..255 units), the same for the three channels."""
    min_visible: float = 0.3
    min_area: int = 64
    min_cutout_area: int = 400
    """Objects smaller than this (px, at their photo's size) are not cut out: their outlines are too coarse."""

    def __post_init__(self) -> None:
        problems = []
        if self.size < 32:
            problems.append(f"size must be >= 32, got {self.size}")
        if not 0 <= self.min_objects <= self.max_objects:
            problems.append(f"need 0 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}")
        for name in ("photo_share", "annotated_background_share", "min_visible"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        if self.max_upscale < 1.0:
            problems.append(f"max_upscale must be >= 1, got {self.max_upscale}")
        low, high = self.scale_range
        if not 0.0 < low <= high <= 1.0:
            problems.append(f"scale_range must satisfy 0 < low <= high <= 1, got {self.scale_range}")
        if problems:
            raise ValueError("invalid CopyPasteSettings: " + "; ".join(problems))


@dataclass(frozen=True)
class AnnotatedPhoto:
    """image: HxWx3 uint8 RGB; masks: NxHxW bool, its objects (crowd regions excluded)."""

    image: np.ndarray
    masks: np.ndarray


@dataclass(frozen=True)
class Cutout:
    """An object's bounding box: pixels hxwx3 uint8 and mask hxw bool (True on the object)."""

    pixels: np.ndarray
    mask: np.ndarray


@dataclass(frozen=True)
class Composite:
    """image: HxWx3 uint8 RGB, max(H, W) = settings.size; masks: NxHxW bool visible regions;
    pasted: N, whether each mask is a pasted cut-out (else an object of the background photo)."""

    image: np.ndarray
    masks: np.ndarray
    pasted: tuple[bool, ...]


def cutouts(photos: Sequence[AnnotatedPhoto], min_area: int) -> list[Cutout]:
    """Every object of `photos` with at least `min_area` px, cut to its bounding box."""
    found = []
    for photo in photos:
        for mask in photo.masks:
            if mask.sum() < min_area:
                continue
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
            found.append(Cutout(photo.image[box].copy(), mask[box].copy()))
    return found


def _nearest(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An HxW bool mask resized to (height, width) `shape`, nearest neighbour."""
    return cv2.resize(mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST).astype(bool)


def _fit(shape: tuple[int, int], size: int) -> tuple[int, int]:
    scale = size / max(shape)
    return max(1, round(shape[0] * scale)), max(1, round(shape[1] * scale))


def _annotated_background(photo: AnnotatedPhoto, size: int) -> tuple[np.ndarray, list[np.ndarray]]:
    shape = _fit(photo.image.shape[:2], size)
    masks = [_nearest(m, shape) for m in photo.masks]
    return resize_image(photo.image, shape), [m for m in masks if m.any()]


def _plain_background(rng: np.random.Generator, photo: np.ndarray, size: int) -> np.ndarray:
    """A random crop of 50-100% of both sides of `photo` (its aspect ratio kept), resized to longer side `size`."""
    height, width = photo.shape[:2]
    share = rng.uniform(0.5, 1.0)
    h, w = max(1, int(height * share)), max(1, int(width * share))
    y, x = int(rng.integers(height - h + 1)), int(rng.integers(width - w + 1))
    crop = photo[y : y + h, x : x + w]
    return resize_image(crop, _fit(crop.shape[:2], size))


def _jittered(rng: np.random.Generator, pixels: np.ndarray, settings: CopyPasteSettings) -> np.ndarray:
    gain = rng.uniform(1 - settings.colour_gain, 1 + settings.colour_gain, size=3)
    shift = rng.uniform(-settings.brightness, settings.brightness)
    return np.clip(pixels.astype(np.float32) * gain + shift, 0, 255).astype(np.uint8)


def _paste(
    rng: np.random.Generator, image: np.ndarray, cutout: Cutout, settings: CopyPasteSettings
) -> np.ndarray | None:
    """Paste `cutout` onto `image` in place; returns its visible mask at the image's size (None if nothing lands)."""
    height, width = image.shape[:2]
    low, high = np.log(settings.scale_range)
    long_side = np.exp(rng.uniform(low, high)) * max(height, width)
    long_side = min(long_side, settings.max_upscale * max(cutout.mask.shape))
    shape = _fit(cutout.mask.shape, max(1, round(long_side)))
    mask = cv2.resize(cutout.mask.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR) >= 0.5
    pixels = _jittered(rng, resize_image(cutout.pixels, shape), settings)
    if rng.random() < 0.5:
        mask, pixels = mask[:, ::-1], pixels[:, ::-1]
    top = int(rng.integers(height)) - shape[0] // 2
    left = int(rng.integers(width)) - shape[1] // 2
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + shape[0], height), min(left + shape[1], width)
    if y0 >= y1 or x0 >= x1:
        return None
    inside = mask[y0 - top : y1 - top, x0 - left : x1 - left]
    placed = np.zeros((height, width), bool)
    placed[y0:y1, x0:x1] = inside
    if not placed.any():
        return None
    image[placed] = pixels[y0 - top : y1 - top, x0 - left : x1 - left][inside]
    return placed


def make_composite(
    seed: int,
    index: int,
    annotated: Sequence[AnnotatedPhoto],
    plain: Sequence[np.ndarray],
    pieces: Sequence[Cutout],
    settings: CopyPasteSettings,
) -> Composite:
    """Composite `index` of series `seed` (see the module docstring). `annotated` must not be
    empty; `plain` (HxWx3 uint8 photos without masks) may be; `pieces` are the cut-outs."""
    if not annotated:
        raise ValueError("copy-paste needs at least one annotated photo")
    rng = np.random.default_rng([seed, index])
    alone = rng.random() < settings.photo_share or not pieces
    if alone or not plain or rng.random() < settings.annotated_background_share:
        image, masks = _annotated_background(annotated[int(rng.integers(len(annotated)))], settings.size)
    else:
        image, masks = _plain_background(rng, plain[int(rng.integers(len(plain)))], settings.size), []
    if rng.random() < 0.5:
        image, masks = image[:, ::-1], [m[:, ::-1] for m in masks]
    image = np.array(image, order="C")  # a copy: pastes write into it, never into a source photo
    areas = [int(m.sum()) for m in masks]
    pasted = [False] * len(masks)
    n_objects = 0 if alone else int(rng.integers(settings.min_objects, settings.max_objects + 1))
    for _ in range(n_objects):
        placed = _paste(rng, image, pieces[int(rng.integers(len(pieces)))], settings)
        if placed is None:
            continue
        masks = [m & ~placed for m in masks] + [placed]
        areas.append(int(placed.sum()))
        pasted.append(True)
    kept = [
        i
        for i, (mask, area) in enumerate(zip(masks, areas))
        if mask.sum() >= max(settings.min_area, settings.min_visible * area)
    ]
    stack = np.stack([masks[i] for i in kept]) if kept else np.zeros((0, *image.shape[:2]), bool)
    return Composite(image, stack, tuple(pasted[i] for i in kept))
