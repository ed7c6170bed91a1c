"""The report's gallery: a few images of a release with every mask drawn and the regions that
de-identification blurred outlined, as small JPEG thumbnails.

Which images (`choose_images`), in two streaming passes over the indexes, holding a fixed number
of rows whatever the release's size:

- the extremes: the image with the most masks, the image holding the mask with the lowest
  predicted IoU, the image holding the largest mask (area in pixels); ties go to the smallest
  image id, then annotation id;
- a seeded uniform sample of n images: the n smallest `seeded_hash(image_id, seed)`, as
  `analysis.audit` draws its sample, so it does not depend on the order of the index files.

An image chosen for several reasons is drawn once, with every reason in its caption. Only the
shards holding chosen images are read (`write_gallery`). Each mask gets its own colour (hues a
golden-ratio step apart), a translucent fill and an outline, larger masks first so that small ones
stay on top; the masks an extreme is about get a thick white outline (and a ring when small); each blurred region
(`blurred_regions` of the record's image entry) is outlined in black and white and labelled with
its kind. Thumbnails are at most THUMB_LONG_SIDE px on their long side, so the gallery's size is
bounded by its number of images, not by the release's size.
"""

from __future__ import annotations

import colorsys
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow as pa

from analysis.accumulators import StratifiedSample
from analysis.release_index import ReleaseIndex
from curation.images import decode_image, encode_jpeg, fit_long_side, resize_image
from curation.records import image_file_name
from curation.release import ReleaseError, iter_shard
from curation.release_images import BLURRED_KINDS, blur_counts
from sam_core.mask_ops import decode_rle

DEFAULT_SAMPLE = 12
"""Images of the seeded sample; the gallery holds at most this many plus the 3 extremes."""
THUMB_LONG_SIDE = 320
THUMB_QUALITY = 80
FILL_ALPHA = 0.4
"""Opacity of a mask's fill colour."""
RING_BELOW = 24
"""A highlighted mask spanning fewer thumbnail px than this also gets a ring around it."""
_GOLDEN = 0.618033988749895
_WHITE, _BLACK = (255, 255, 255), (0, 0, 0)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass
class Pick:
    """An image chosen for the gallery and why: `reasons` such as "most masks: 212";
    `highlight`: annotation ids of the masks an extreme is about."""

    image_id: int
    reasons: list[str] = field(default_factory=list)
    highlight: set[int] = field(default_factory=set)
    shard: str | None = None


@dataclass(frozen=True)
class Tile:
    """One written thumbnail: `file` is its name in the gallery folder; size in px; why it was
    chosen (`Pick.reasons`) and what it shows ("sa_7.jpg: 12 masks, blurred (outlined): 1 face")."""

    image_id: int
    file: str
    width: int
    height: int
    reasons: tuple[str, ...]
    details: str


@dataclass
class _Smallest:
    """The index row with the smallest (value, image id, annotation id) offered so far."""

    key: tuple[float, int, int] | None = None
    row: dict[str, Any] = field(default_factory=dict)

    def offer(self, batch: pa.Table, values: np.ndarray, ann_ids: np.ndarray) -> None:
        """values, ann_ids: one per row of `batch` (which has image_id); NaN values are skipped."""
        image_ids = batch["image_id"].to_numpy().astype(np.int64)
        rows = np.flatnonzero(~np.isnan(values))
        if len(rows) == 0:
            return
        best = int(rows[np.lexsort((ann_ids[rows], image_ids[rows], values[rows]))[0]])
        key = (float(values[best]), int(image_ids[best]), int(ann_ids[best]))
        if self.key is None or key < self.key:
            self.key, self.row = key, batch.slice(best, 1).to_pylist()[0]


def _float_column(batch: pa.Table, name: str) -> np.ndarray:
    """The column as float64, nulls as NaN."""
    return batch[name].to_numpy(zero_copy_only=False).astype(np.float64)


def _mask_extremes(index: ReleaseIndex) -> tuple[_Smallest, _Smallest]:
    """(the mask with the lowest predicted IoU, the largest mask) of the masks index."""
    lowest_iou, largest = _Smallest(), _Smallest()
    for batch in index.iter_masks(["image_id", "ann_id", "predicted_iou", "area", "height", "width"]):
        ann_ids = batch["ann_id"].to_numpy().astype(np.int64)
        lowest_iou.offer(batch, _float_column(batch, "predicted_iou"), ann_ids)
        largest.offer(batch, -_float_column(batch, "area"), ann_ids)
    return lowest_iou, largest


def choose_images(index: ReleaseIndex, n_sample: int, seed: int) -> list[Pick]:
    """The gallery's images in order: the most masks, the lowest predicted IoU, the largest mask,
    then the seeded sample by image id; each image once, with the shard that holds it. Empty for a
    release with no images."""
    lowest_iou, largest = _mask_extremes(index)
    wanted = {extreme.row["image_id"] for extreme in (lowest_iou, largest) if extreme.key is not None}
    most_masks, sample = _Smallest(), StratifiedSample(k=n_sample, n_strata=1, seed=seed)
    shards: dict[int, str] = {}
    for batch in index.iter_images(["image_id", "shard", "n_masks"]):
        image_ids = batch["image_id"].to_numpy().astype(np.int64)
        most_masks.offer(batch, -_float_column(batch, "n_masks"), np.zeros(len(batch), np.int64))
        sample.add(image_ids, np.zeros(len(batch), np.int64), lambda i, batch=batch: batch.slice(i, 1).to_pylist()[0])
        shards.update(
            (int(image_id), shard)
            for image_id, shard in zip(image_ids, batch["shard"].to_pylist())
            if int(image_id) in wanted
        )

    picks: dict[int, Pick] = {}

    def pick(row: dict[str, Any], reason: str, highlight: int | None = None) -> None:
        chosen = picks.setdefault(row["image_id"], Pick(row["image_id"]))
        chosen.reasons.append(reason)
        chosen.highlight.update([highlight] if highlight is not None else [])

    if most_masks.key is not None:
        shards[most_masks.row["image_id"]] = most_masks.row["shard"]
        pick(most_masks.row, f"most masks: {most_masks.row['n_masks']}")
    if lowest_iou.key is not None:
        row = lowest_iou.row
        pick(row, f"lowest predicted IoU: {row['predicted_iou']:.3f} (white outline)", row["ann_id"])
    if largest.key is not None:
        row = largest.row
        share = row["area"] / (row["height"] * row["width"])
        pick(row, f"largest mask: {row['area']:,} px, {share:.0%} of the image (white outline)", row["ann_id"])
    for row in sorted(sample.items(0), key=lambda row: row["image_id"]):
        shards[row["image_id"]] = row["shard"]
        pick(row, "seeded sample")
    for chosen in picks.values():
        if chosen.image_id not in shards:
            raise ReleaseError(f"{index.uri}: image {chosen.image_id} has masks but no row in the images index")
        chosen.shard = shards[chosen.image_id]
    return list(picks.values())


def mask_colour(k: int) -> tuple[int, int, int]:
    """The RGB colour of the k-th mask drawn: hues a golden-ratio turn apart, so neighbours differ."""
    red, green, blue = colorsys.hsv_to_rgb((k * _GOLDEN) % 1.0, 0.85, 1.0)
    return round(red * 255), round(green * 255), round(blue * 255)


def draw_tile(
    image: np.ndarray,
    size: tuple[int, int],
    annotations: list[dict[str, Any]],
    blurred_regions: list[dict[str, Any]],
    highlight: Collection[int] = (),
) -> np.ndarray:
    """The thumbnail of one released image with its masks and blurred regions drawn.

    image: HxWx3 uint8 RGB, the released image at any scale (it is resized to the thumbnail);
    size: (height, width) of the released image, the frame of the masks' RLE and the regions'
    XYWH boxes; returns an hxwx3 uint8 RGB thumbnail, long side at most THUMB_LONG_SIDE.
    """
    thumb_size = fit_long_side(size, THUMB_LONG_SIDE)
    out = resize_image(image, thumb_size).astype(np.float32)
    outlines: list[tuple[list[np.ndarray], tuple[int, int, int]]] = []
    highlighted: list[tuple[list[np.ndarray], np.ndarray]] = []
    for k in sorted(range(len(annotations)), key=lambda k: -int(annotations[k]["area"])):
        coverage = _mask_coverage(annotations[k]["segmentation"], size, thumb_size)
        colour = mask_colour(k)
        alpha = (FILL_ALPHA * coverage)[..., None]
        out = out * (1.0 - alpha) + np.asarray(colour, np.float32) * alpha
        contours, _ = cv2.findContours((coverage >= 0.5).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        outlines.append((list(contours), colour))
        if annotations[k].get("id") in highlight:
            highlighted.append((list(contours), coverage))
    drawn = np.ascontiguousarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))
    for contours, colour in outlines:
        cv2.drawContours(drawn, contours, -1, colour, 1)
    for contours, coverage in highlighted:
        _highlight(drawn, contours, coverage)
    scale = (thumb_size[1] / size[1], thumb_size[0] / size[0])
    for region in blurred_regions:
        _outline_region(drawn, region["kind"], region["bbox"], scale)
    return drawn


def _highlight(image: np.ndarray, contours: list[np.ndarray], coverage: np.ndarray) -> None:
    """Outlines a mask thick white on black on the thumbnail `image` (modified), with a ring around
    it when it spans fewer than RING_BELOW px (`coverage`: the mask's hxw share of each pixel)."""
    cv2.drawContours(image, contours, -1, _BLACK, 4)
    cv2.drawContours(image, contours, -1, _WHITE, 2)
    ys, xs = np.nonzero(coverage)
    if len(xs) and max(np.ptp(xs), np.ptp(ys)) < RING_BELOW:
        centre = (int(xs.min() + xs.max()) // 2, int(ys.min() + ys.max()) // 2)
        radius = int(max(np.ptp(xs), np.ptp(ys))) // 2 + 10
        cv2.circle(image, centre, radius, _BLACK, 3, cv2.LINE_AA)
        cv2.circle(image, centre, radius, _WHITE, 1, cv2.LINE_AA)


def _mask_coverage(segmentation: dict[str, Any], size: tuple[int, int], thumb_size: tuple[int, int]) -> np.ndarray:
    """The share of each thumbnail pixel that the mask covers: hxw float32 in [0, 1]."""
    mask = decode_rle(segmentation)
    if mask.shape != tuple(size):
        raise ReleaseError(f"a mask of size {mask.shape} on an image of size {tuple(size)}")
    # The RLE decodes column-major: resize its C-ordered transpose, as 0/255 so that area averaging keeps fractions.
    transposed = mask.T.view(np.uint8) * np.uint8(255)
    coverage = cv2.resize(transposed, (thumb_size[0], thumb_size[1]), interpolation=cv2.INTER_AREA)
    return coverage.T.astype(np.float32) / 255.0


def _outline_region(image: np.ndarray, kind: str, bbox: list[float], scale: tuple[float, float]) -> None:
    """Outlines a blurred region (XYWH `bbox` in released-image pixels, `scale` = thumbnail px per
    released px along x and y) on `image` (the thumbnail, modified) and labels it with `kind`."""
    x, y, w, h = bbox
    x0, y0 = int(x * scale[0]), int(y * scale[1])
    x1, y1 = max(x0 + 1, round((x + w) * scale[0]) - 1), max(y0 + 1, round((y + h) * scale[1]) - 1)
    cv2.rectangle(image, (x0, y0), (x1, y1), _BLACK, 3)
    cv2.rectangle(image, (x0, y0), (x1, y1), _WHITE, 1)
    (text_w, text_h), baseline = cv2.getTextSize(kind, _FONT, 0.4, 1)
    top = y0 - text_h - baseline - 2 if y0 >= text_h + baseline + 2 else y1 + 1  # above the box, else below
    cv2.rectangle(image, (x0, top), (x0 + text_w + 4, top + text_h + baseline + 2), _BLACK, -1)
    cv2.putText(image, kind, (x0 + 2, top + text_h + 1), _FONT, 0.4, _WHITE, 1, cv2.LINE_AA)


def _blur_caption(image: dict[str, Any]) -> str:
    """What de-identification blurred in the image, from its record's image entry ("" when the
    record says nothing about it, as SA-1B's own records do)."""
    regions = image.get("blurred_regions")
    counts = (
        blur_counts(regions) if regions is not None else {k: image.get(f"blurred_{k}s") or 0 for k in BLURRED_KINDS}
    )
    listed = ", ".join(f"{n} {kind}{'s' * (n != 1)}" for kind, n in counts.items() if n)
    if regions is None:
        return f"blurred: {listed} (regions not recorded)" if listed else ""
    return f"blurred (outlined): {listed}" if listed else "nothing blurred"


def _write_tile(folder: Path, record: dict[str, Any], image_bytes: bytes, pick: Pick) -> Tile:
    image = record["image"]
    size = (int(image["height"]), int(image["width"]))
    thumb_size = fit_long_side(size, THUMB_LONG_SIDE)
    pixels = decode_image(image_bytes, draft_side=min(thumb_size))
    drawn = draw_tile(pixels, size, record["annotations"], image.get("blurred_regions") or [], pick.highlight)
    file = image_file_name(pick.image_id)
    (folder / file).write_bytes(encode_jpeg(drawn, THUMB_QUALITY))
    details = ", ".join(part for part in (f"{file}: {len(record['annotations'])} masks", _blur_caption(image)) if part)
    return Tile(pick.image_id, file, drawn.shape[1], drawn.shape[0], tuple(pick.reasons), details)


def write_gallery(index: ReleaseIndex, folder: Path, n_sample: int = DEFAULT_SAMPLE, seed: int = 0) -> list[Tile]:
    """Chooses the gallery's images (`choose_images`), reads the shards that hold them and writes
    one thumbnail per image, `folder`/sa_<id>.jpg (thumbnails of an earlier run are removed
    first); returns the tiles in gallery order (empty for a release with no images)."""
    picks = choose_images(index, n_sample, seed)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("sa_*.jpg"):
        old.unlink()
    by_shard: dict[str, dict[int, Pick]] = {}
    for chosen in picks:
        by_shard.setdefault(str(chosen.shard), {})[chosen.image_id] = chosen
    tiles: dict[int, Tile] = {}
    for shard, missing in sorted(by_shard.items()):
        for item in iter_shard(index.shard_uri(shard), index.storage_options):
            chosen = missing.pop(item.record["image"]["image_id"], None)
            if chosen is not None:
                tiles[chosen.image_id] = _write_tile(folder, item.record, item.image_bytes, chosen)
            if not missing:
                break
        if missing:
            raise ReleaseError(f"shard {shard} of {index.uri} lacks images the index puts there: {sorted(missing)}")
    return [tiles[chosen.image_id] for chosen in picks]
