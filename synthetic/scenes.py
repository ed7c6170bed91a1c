"""Generated scenes with exact instance masks: training and evaluation data for a small SAM.

A scene is a textured background with unannotated clutter, then objects painted back to
front so that later ones occlude earlier ones. Objects come in many kinds (ellipses,
polygons, smooth blobs, thin strokes, small objects) and sizes; some are made of parts
(whole / part / sub-part, each with its own texture) so that one point is ambiguous, as
SAM's multimask output expects. Fills are flat noisy colour, stripes, gradients,
low-frequency noise, or patches cut from the photos that scikit-image bundles.

Every annotation is the visible region of an instance after occlusion, exactly as painted:
the image pixels inside it were written by that instance (or its parts). Scene `index` of
`seed` is always the same image and masks (`numpy.random.default_rng([seed, index])`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

# scikit-image photos that ship inside its wheel (the rest are fetched from the internet on first use).
TEXTURE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "brick", "grass", "gravel", "coins", "moon")
SCENE_SHAPES = ((256, 256), (192, 256), (256, 192), (176, 256), (256, 176))
SHAPE_KINDS = ("ellipse", "polygon", "blob", "thin", "small")
SHAPE_WEIGHTS = (0.25, 0.25, 0.25, 0.12, 0.13)


@dataclass(frozen=True)
class SceneSettings:
    """How scenes are drawn. Sizes are in pixels of the generated image."""

    min_objects: int = 4
    max_objects: int = 12
    part_probability: float = 0.3  # chance that a large object is made of a part and a sub-part
    min_visible_area: int = 24  # instances whose visible region is smaller are not annotated
    clutter_marks: tuple[int, int] = (10, 60)  # unannotated specks and short strokes on the background
    pixel_noise: float = 3.0  # std of the Gaussian noise added to the final image, in 0..255 units

    def __post_init__(self) -> None:
        if not 1 <= self.min_objects <= self.max_objects:
            raise ValueError(f"need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}")
        if not 0.0 <= self.part_probability <= 1.0:
            raise ValueError(f"part_probability must lie in [0, 1], got {self.part_probability}")
        if self.min_visible_area < 1:
            raise ValueError(f"min_visible_area must be >= 1, got {self.min_visible_area}")


@dataclass(frozen=True)
class Scene:
    """image: HxWx3 uint8 RGB. masks: NxHxW bool visible regions. kinds: N shape kinds, with
    ":part" / ":subpart" for the pieces of a composite object. parents: N indexes of the
    enclosing instance, -1 for top-level objects."""

    image: np.ndarray
    masks: np.ndarray
    kinds: tuple[str, ...]
    parents: tuple[int, ...]


@lru_cache(maxsize=1)
def texture_photos() -> tuple[np.ndarray, ...]:
    import skimage.data

    photos = []
    for name in TEXTURE_PHOTOS:
        photo = np.asarray(getattr(skimage.data, name)())
        if photo.ndim == 2:
            photo = np.repeat(photo[..., None], 3, axis=2)
        photos.append(np.ascontiguousarray(photo[..., :3].astype(np.uint8)))
    return tuple(photos)


def _color(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, size=3)


def _fill(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """An HxWx3 float32 texture in 0..255, contiguous (OpenCV draws on it)."""
    return np.ascontiguousarray(_texture(rng, height, width), dtype=np.float32)


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    kind = rng.choice(("flat", "stripes", "gradient", "noise", "photo"), p=(0.2, 0.2, 0.2, 0.15, 0.25))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    if kind == "flat":
        texture = np.broadcast_to(_color(rng), (height, width, 3)).astype(np.float32)
        return texture + rng.normal(0, rng.uniform(0, 10), size=(height, width, 1)).astype(np.float32)
    if kind in ("stripes", "gradient"):
        angle = rng.uniform(0, np.pi)
        along = xx * np.cos(angle) + yy * np.sin(angle)
        if kind == "stripes":
            period = rng.uniform(4, 24)
            wave = np.sin(2 * np.pi * along / period)
            weight = (wave > 0).astype(np.float32) if rng.random() < 0.5 else 0.5 + 0.5 * wave
        else:
            weight = (along - along.min()) / max(float(np.ptp(along)), 1.0)
        a, b = _color(rng), _color(rng)
        return (a + (b - a) * weight[..., None]).astype(np.float32)
    if kind == "noise":
        cells = rng.uniform(0, 1, size=(int(rng.integers(2, 9)), int(rng.integers(2, 9)))).astype(np.float32)
        weight = cv2.resize(cells, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 1)
        a, b = _color(rng), _color(rng)
        return (a + (b - a) * weight[..., None]).astype(np.float32)
    photo = texture_photos()[int(rng.integers(len(TEXTURE_PHOTOS)))]
    scale = rng.uniform(0.4, 1.5)
    ph, pw = max(int(height / scale), 8), max(int(width / scale), 8)
    ph, pw = min(ph, photo.shape[0]), min(pw, photo.shape[1])
    top, left = int(rng.integers(0, photo.shape[0] - ph + 1)), int(rng.integers(0, photo.shape[1] - pw + 1))
    patch = cv2.resize(photo[top : top + ph, left : left + pw], (width, height), interpolation=cv2.INTER_LINEAR)
    tint = rng.uniform(0.6, 1.4, size=3)
    return (patch.astype(np.float32) * tint).clip(0, 255)


def _shape(rng: np.random.Generator, kind: str, size: tuple[int, int], center: np.ndarray, radius: float) -> np.ndarray:
    """A HxW bool mask of one shape of `kind` around `center` (x, y) with about `radius` pixels."""
    height, width = size
    canvas = np.zeros((height, width), np.uint8)
    cx, cy = float(center[0]), float(center[1])
    if kind in ("ellipse", "small"):
        axes = (max(1, int(radius)), max(1, int(radius * rng.uniform(0.35, 1.0))))
        cv2.ellipse(canvas, (int(cx), int(cy)), axes, float(rng.uniform(0, 180)), 0, 360, 1, thickness=-1)
    elif kind in ("polygon", "blob"):
        count = int(rng.integers(3, 10)) if kind == "polygon" else 64
        angles = np.sort(rng.uniform(0, 2 * np.pi, count)) if kind == "polygon" else np.linspace(0, 2 * np.pi, count)
        if kind == "polygon":
            radii = radius * rng.uniform(0.5, 1.0, count)
        else:
            harmonics = np.arange(2, 6)
            amplitudes = rng.uniform(0, 0.25, harmonics.size)
            phases = rng.uniform(0, 2 * np.pi, harmonics.size)
            radii = radius * (1 + (amplitudes * np.cos(np.outer(angles, harmonics) + phases)).sum(1))
        points = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)
        cv2.fillPoly(canvas, [np.round(points).astype(np.int32)], 1)
    elif kind == "thin":
        steps = int(rng.integers(2, 5))
        heading = rng.uniform(0, 2 * np.pi)
        points = [np.array([cx, cy])]
        for _ in range(steps):
            heading += rng.uniform(-1.0, 1.0)
            points.append(points[-1] + radius * rng.uniform(0.5, 1.0) * np.array([np.cos(heading), np.sin(heading)]))
        cv2.polylines(canvas, [np.round(points).astype(np.int32)], False, 1, thickness=int(rng.integers(3, 7)))
    else:
        raise ValueError(f"unknown shape kind {kind!r}")
    return canvas.astype(bool)


def _radius(rng: np.random.Generator, kind: str, size: tuple[int, int]) -> float:
    short = min(size)
    if kind == "small":
        return float(rng.uniform(3, 8))
    if kind == "thin":
        return float(rng.uniform(0.15, 0.35) * short)
    return float(np.exp(rng.uniform(np.log(8), np.log(0.4 * short))))


def _inside_point(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray | None:
    ys, xs = np.nonzero(mask)
    if xs.size == 0:
        return None
    i = int(rng.integers(xs.size))
    return np.array([xs[i], ys[i]], dtype=np.float64)


def _object(rng: np.random.Generator, size: tuple[int, int], settings: SceneSettings) -> list[tuple[str, np.ndarray]]:
    """One object: [(kind, full mask)] for a plain object, or whole, part and sub-part masks."""
    kind = str(rng.choice(SHAPE_KINDS, p=SHAPE_WEIGHTS))
    center = rng.uniform((0, 0), (size[1], size[0]))
    radius = _radius(rng, kind, size)
    pieces = [(kind, _shape(rng, kind, size, center, radius))]
    composite = kind in ("ellipse", "polygon", "blob") and radius > 24 and rng.random() < settings.part_probability
    if composite:
        for label in ("part", "subpart"):
            parent = pieces[-1][1]
            inner_center = _inside_point(rng, parent)
            if inner_center is None:
                break
            radius *= rng.uniform(0.35, 0.55)
            inner_kind = str(rng.choice(("ellipse", "polygon", "blob")))
            inner = _shape(rng, inner_kind, size, inner_center, radius) & parent
            pieces.append((f"{inner_kind}:{label}", inner))
    return pieces


def _clutter(rng: np.random.Generator, image: np.ndarray, settings: SceneSettings) -> None:
    height, width = image.shape[:2]
    for _ in range(int(rng.integers(*settings.clutter_marks))):
        color = tuple(float(c) for c in _color(rng))
        start = (int(rng.integers(width)), int(rng.integers(height)))
        if rng.random() < 0.5:
            cv2.circle(image, start, int(rng.integers(1, 3)), color, thickness=-1)
        else:
            end = (start[0] + int(rng.integers(-8, 9)), start[1] + int(rng.integers(-8, 9)))
            cv2.line(image, start, end, color, thickness=1)


def generate_scene(seed: int, index: int, settings: SceneSettings = SceneSettings()) -> Scene:
    """Scene number `index` of the series `seed`; the same arguments always give the same scene."""
    rng = np.random.default_rng([seed, index])
    height, width = SCENE_SHAPES[int(rng.integers(len(SCENE_SHAPES)))]
    image = _fill(rng, height, width)
    _clutter(rng, image, settings)

    count = int(rng.integers(settings.min_objects, settings.max_objects + 1))
    objects = [_object(rng, (height, width), settings) for _ in range(count)]
    for pieces in objects:
        for _, mask in pieces:
            image[mask] = _fill(rng, height, width)[mask]
    image += rng.normal(0, settings.pixel_noise, size=image.shape).astype(np.float32)

    masks, kinds, parents = [], [], []
    covered = np.zeros((height, width), bool)  # union of the objects painted after the current one
    for pieces in reversed(objects):
        for depth, (kind, full) in enumerate(pieces):
            visible = full & ~covered
            if visible.sum() < settings.min_visible_area:
                break  # a part of a hidden piece is hidden too
            masks.append(visible)
            kinds.append(kind)
            parents.append(-1 if depth == 0 else len(masks) - 2)  # a part's parent is the piece before it
        covered |= pieces[0][1]
    return Scene(
        image=np.clip(np.round(image), 0, 255).astype(np.uint8),
        masks=np.stack(masks) if masks else np.zeros((0, height, width), bool),
        kinds=tuple(kinds),
        parents=tuple(parents),
    )
