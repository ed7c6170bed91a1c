"""Mask properties of a dataset, as the SAM paper's Fig. 5-6 compare them across datasets.

- masks per image, in the bins 0-10, 11-50, 51-100, 101-200, >200;
- relative mask size sqrt(mask area / image area);
- concavity 1 - mask area / convex-hull area, on a sample stratified by mask size
  (`release_index.SIZE_LABELS`), since decoding every mask of a large release is not needed
  for a distribution;
- the image-size-normalised distribution of mask centres (centre bias). The centre is the centre
  of the mask's bounding box, which the index holds without decoding the mask.

`summarize_release` streams a release's Parquet indexes; `summarize_coco` reads any COCO-format
annotation file (COCO, LVIS, ADE20K or Open Images exports) through pycocotools, so both land in
the same `MaskProperties` and can be tabulated and plotted side by side.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from analysis.accumulators import Histogram, Histogram2D, StratifiedSample, pair_key
from analysis.release_index import SIZE_LABELS, ReleaseIndex, relative_size, size_class
from analysis.rle import concavity_of_runs, rle_runs
from sam_core.console import stderr_line
from sam_core.pace import Pace

MASKS_PER_IMAGE_EDGES = (0, 11, 51, 101, 201)
MASKS_PER_IMAGE_LABELS = ("0-10", "11-50", "51-100", "101-200", ">200")
RELATIVE_SIZE_EDGES = np.linspace(0.0, 1.0, 41)
CONCAVITY_EDGES = np.linspace(0.0, 1.0, 21)
SCORE_EDGES = np.linspace(0.0, 1.0, 51)
DEFAULT_CONCAVITY_SAMPLE = 1000
"""Masks per size class whose concavity is computed."""
CENTER_BINS = 50


def rle_concavity(rle: dict) -> float:
    """Concavity (`analysis.rle.concavity_of_runs`) of a mask given as compressed COCO RLE."""
    counts = rle["counts"]
    runs = rle_runs(counts.decode("ascii") if isinstance(counts, bytes) else counts)
    height, width = rle["size"]
    if runs is None or runs.sum() != height * width:
        raise ValueError(f"malformed RLE counts for a {height}x{width} mask: {str(counts)[:40]!r}")
    return concavity_of_runs(int(height), runs)


def concavity(mask: np.ndarray) -> float:
    """1 - area / convex-hull area of an HxW bool mask (all its components together); a convex
    mask scores exactly 0, an empty one raises ValueError."""
    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return rle_concavity(encoded)


@dataclass(frozen=True)
class MaskProperties:
    """What one dataset's masks look like; every field is bounded in size."""

    name: str
    n_images: int
    n_masks: int
    masks_per_image: np.ndarray  # images per MASKS_PER_IMAGE_LABELS bin, int64
    relative_size: Histogram  # over RELATIVE_SIZE_EDGES
    size_classes: np.ndarray  # masks per SIZE_LABELS class, int64
    concavity: tuple[np.ndarray, ...]  # sampled concavities per SIZE_LABELS class, float64
    centers: Histogram2D  # normalised bbox centres
    mean_center_distance: float  # mean distance of the centres from (0.5, 0.5), in image-size units
    predicted_iou: Histogram | None  # over SCORE_EDGES; None where the dataset has no model scores
    stability_score: Histogram | None


class MaskPropertyAccumulator:
    """Feed image mask counts and mask rows batch by batch; `result()` gives MaskProperties."""

    def __init__(self, name: str, concavity_sample: int = DEFAULT_CONCAVITY_SAMPLE, seed: int = 0) -> None:
        self.name = name
        self.n_images = 0
        self.masks_per_image = np.zeros(len(MASKS_PER_IMAGE_LABELS), np.int64)
        self.relative_size = Histogram(RELATIVE_SIZE_EDGES)
        self.size_classes = np.zeros(len(SIZE_LABELS), np.int64)
        self.sample = StratifiedSample(concavity_sample, len(SIZE_LABELS), seed)
        self.centers = Histogram2D(CENTER_BINS)
        self.center_distance_sum = 0.0
        self.predicted_iou = Histogram(SCORE_EDGES)
        self.stability_score = Histogram(SCORE_EDGES)

    def add_images(self, n_masks: np.ndarray) -> None:
        """N ints: the number of masks of each image (images without masks count too)."""
        n_masks = np.asarray(n_masks, np.int64)
        self.n_images += len(n_masks)
        bins = np.searchsorted(MASKS_PER_IMAGE_EDGES, n_masks, side="right") - 1
        self.masks_per_image += np.bincount(bins, minlength=len(MASKS_PER_IMAGE_LABELS))

    def add_masks(
        self,
        keys: np.ndarray,
        area: np.ndarray,
        height: np.ndarray,
        width: np.ndarray,
        bbox: np.ndarray,
        rle: Callable[[int], dict],
        predicted_iou: np.ndarray | None = None,
        stability_score: np.ndarray | None = None,
    ) -> None:
        """N masks: unique int64 keys, pixel areas, their images' heights and widths, Nx4 XYWH
        boxes in pixels, and rle(i), the COCO RLE of mask i (called only for sampled masks)."""
        rel = relative_size(area, height, width)
        classes = size_class(rel)
        self.relative_size.add(rel)
        self.size_classes += np.bincount(classes, minlength=len(SIZE_LABELS))
        bbox = np.asarray(bbox, np.float64).reshape(-1, 4)
        cx = (bbox[:, 0] + bbox[:, 2] / 2) / np.asarray(width, np.float64)
        cy = (bbox[:, 1] + bbox[:, 3] / 2) / np.asarray(height, np.float64)
        self.centers.add(cx, cy)
        self.center_distance_sum += float(np.hypot(cx - 0.5, cy - 0.5).sum())
        self.sample.add(keys, classes, rle)
        for histogram, scores in ((self.predicted_iou, predicted_iou), (self.stability_score, stability_score)):
            if scores is not None:
                histogram.add(scores)

    def result(self, progress: Callable[[str], None] | None = None) -> MaskProperties:
        """Decode the sampled masks for their concavity and return the summary."""
        concavities = []
        for label, stratum in zip(SIZE_LABELS, range(len(SIZE_LABELS))):
            items = self.sample.items(stratum)
            values = np.array([rle_concavity(r) for r in items], np.float64)
            concavities.append(values)
            if progress:
                progress(f"{self.name}: concavity of {len(values)} {label} masks")
        n_masks = int(self.size_classes.sum())
        return MaskProperties(
            name=self.name,
            n_images=self.n_images,
            n_masks=n_masks,
            masks_per_image=self.masks_per_image.copy(),
            relative_size=self.relative_size,
            size_classes=self.size_classes.copy(),
            concavity=tuple(concavities),
            centers=self.centers,
            mean_center_distance=self.center_distance_sum / max(n_masks, 1),
            predicted_iou=self.predicted_iou if self.predicted_iou.total else None,
            stability_score=self.stability_score if self.stability_score.total else None,
        )


def summarize_release(
    index: ReleaseIndex,
    name: str = "release",
    concavity_sample: int = DEFAULT_CONCAVITY_SAMPLE,
    seed: int = 0,
    progress: Callable[[str], None] | None = stderr_line,
) -> MaskProperties:
    """Mask properties of a release, streaming its indexes (memory bounded by one batch)."""
    acc = MaskPropertyAccumulator(name, concavity_sample, seed)
    for batch in index.iter_images(["n_masks"]):
        acc.add_images(batch["n_masks"].to_numpy(zero_copy_only=False))
    columns = [
        "image_id",
        "ann_id",
        "area",
        "height",
        "width",
        "bbox",
        "predicted_iou",
        "stability_score",
        "rle_counts",
    ]
    done, pace = 0, Pace(index.manifest.get("n_masks"), "masks")
    for batch in index.iter_masks(columns):
        height = batch["height"].to_numpy(zero_copy_only=False)
        width = batch["width"].to_numpy(zero_copy_only=False)
        counts = batch["rle_counts"]

        def rle(i: int, counts=counts, height=height, width=width) -> dict:
            return {"size": [int(height[i]), int(width[i])], "counts": counts[i].as_py()}

        acc.add_masks(
            keys=pair_key(batch["image_id"].to_numpy(), batch["ann_id"].to_numpy()),
            area=batch["area"].to_numpy(),
            height=height,
            width=width,
            bbox=batch["bbox"].combine_chunks().flatten().to_numpy(zero_copy_only=False),
            rle=rle,
            predicted_iou=batch["predicted_iou"].to_numpy(zero_copy_only=False),
            stability_score=batch["stability_score"].to_numpy(zero_copy_only=False),
        )
        done += len(batch)
        if progress and pace.due(done):
            progress(f"{name}: read {pace.describe(done)}")
    return acc.result(progress)


def summarize_coco(
    path: str,
    name: str,
    concavity_sample: int = DEFAULT_CONCAVITY_SAMPLE,
    seed: int = 0,
    progress: Callable[[str], None] | None = stderr_line,
) -> MaskProperties:
    """Mask properties of a COCO-format annotation file (polygons or RLE; crowd regions skipped)."""
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        try:
            coco = COCO(path)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path} is not a readable COCO-format annotation file: {error}") from error
    if "annotations" not in coco.dataset or "images" not in coco.dataset:
        raise ValueError(f"{path} is not a COCO-format annotation file: it needs 'images' and 'annotations'")
    acc = MaskPropertyAccumulator(name, concavity_sample, seed)
    image_ids = sorted(coco.imgs)
    anns_per_image = [[a for a in coco.imgToAnns.get(i, []) if not a.get("iscrowd", 0)] for i in image_ids]
    acc.add_images(np.array([len(anns) for anns in anns_per_image], np.int64))
    anns = [a for group in anns_per_image for a in group]
    if anns:
        rles = [coco.annToRLE(a) for a in anns]
        sizes = np.array([r["size"] for r in rles], np.float64)
        acc.add_masks(
            keys=pair_key(np.array([a["image_id"] for a in anns]), np.array([a["id"] for a in anns])),
            area=_areas(rles),
            height=sizes[:, 0],
            width=sizes[:, 1],
            bbox=mask_utils.toBbox(rles),
            rle=rles.__getitem__,
        )
    return acc.result(progress)


def _areas(rles: list[dict]) -> np.ndarray:
    """Pixel areas of COCO RLEs, float64. pycocotools' `area` fails on 256 or more RLEs at once
    under numpy 2 (it sizes an array with a uint8 of the count), hence the chunks of 255."""
    chunks = [mask_utils.area(rles[i : i + 255]) for i in range(0, len(rles), 255)]
    return np.concatenate(chunks).astype(np.float64)


def masks_per_image_table(datasets: Sequence[MaskProperties]) -> pd.DataFrame:
    """Share of images per masks-per-image bin, one column per dataset."""
    return pd.DataFrame(
        {p.name: p.masks_per_image / max(p.n_images, 1) for p in datasets}, index=pd.Index(MASKS_PER_IMAGE_LABELS)
    ).rename_axis("masks per image")


def relative_size_table(datasets: Sequence[MaskProperties]) -> pd.DataFrame:
    """Share of masks per relative-size bin (rows: the bins' lower edges), one column per dataset."""
    return pd.DataFrame(
        {p.name: p.relative_size.shares() for p in datasets}, index=pd.Index(RELATIVE_SIZE_EDGES[:-1].round(3))
    ).rename_axis("relative size from")


def concavity_table(datasets: Sequence[MaskProperties]) -> pd.DataFrame:
    """Per dataset and size class: masks, masks sampled, mean and median concavity."""
    rows = [
        {
            "dataset": p.name,
            "size": label,
            "masks": int(p.size_classes[k]),
            "sampled": len(p.concavity[k]),
            "mean_concavity": float(p.concavity[k].mean()) if len(p.concavity[k]) else np.nan,
            "median_concavity": float(np.median(p.concavity[k])) if len(p.concavity[k]) else np.nan,
        }
        for p in datasets
        for k, label in enumerate(SIZE_LABELS)
    ]
    return pd.DataFrame(rows)


def overview_table(datasets: Sequence[MaskProperties]) -> pd.DataFrame:
    """Images, masks, masks per image, size-class shares and mean centre distance per dataset."""
    rows = []
    for p in datasets:
        row = {
            "dataset": p.name,
            "images": p.n_images,
            "masks": p.n_masks,
            "masks_per_image": p.n_masks / max(p.n_images, 1),
            "mean_center_distance": p.mean_center_distance,
        }
        row.update({f"share_{label}": p.size_classes[k] / max(p.n_masks, 1) for k, label in enumerate(SIZE_LABELS)})
        rows.append(row)
    return pd.DataFrame(rows)
