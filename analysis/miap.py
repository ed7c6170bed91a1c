"""MIAP person boxes and Open Images segmentation masks, matched into samples for `analysis.fairness`.

MIAP (More Inclusive Annotations for People, Open Images Extended; Schumann et al. 2021) labels
person boxes with perceived gender presentation and age group. Its box CSVs have the columns
`MIAP_COLUMNS`, coordinates normalised to [0, 1]. Ground-truth masks come from Open Images
(V5 and later) segmentation CSVs, columns `SEGMENTATION_COLUMNS`, one PNG per mask at any
resolution. As in the SAM paper (section 6), a MIAP box is given the mask of the same image whose
box agrees with it within 1% on all four coordinates.

Files are read through fsspec (local paths or any URI); images and mask PNGs are untrusted and
decoded by `curation.images.decode_image` with its pixel limits.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO

import cv2
import fsspec
import numpy as np
import pandas as pd

from analysis.interactive import PersonSample
from curation.images import ImageDecodeError, decode_image

log = logging.getLogger(__name__)

MIAP_COLUMNS = (
    "ImageID",
    "LabelName",
    "Confidence",
    "XMin",
    "XMax",
    "YMin",
    "YMax",
    "IsOccluded",
    "IsTruncated",
    "IsGroupOf",
    "IsDepictionOf",
    "IsInsideOf",
    "GenderPresentation",
    "AgePresentation",
)
GENDER_PRESENTATIONS = ("Predominantly Feminine", "Predominantly Masculine", "Unknown")
AGE_PRESENTATIONS = ("Young", "Middle", "Older", "Unknown")
SEGMENTATION_COLUMNS = (
    "MaskPath",
    "ImageID",
    "LabelName",
    "BoxID",
    "BoxXMin",
    "BoxXMax",
    "BoxYMin",
    "BoxYMax",
    "PredictedIoU",
    "Clicks",
)
_MIAP_BOX = ("XMin", "XMax", "YMin", "YMax")
_MASK_BOX = ("BoxXMin", "BoxXMax", "BoxYMin", "BoxYMax")
_MIAP_FLAGS = ("IsOccluded", "IsTruncated", "IsGroupOf", "IsDepictionOf", "IsInsideOf")
_FLAG_VALUES = (-1, 0, 1)  # Open Images writes -1 where a flag is unknown
_LISTED = 5  # bad values named in an error message


def _read_csv(source: str | os.PathLike | IO, text_columns: Sequence[str]) -> tuple[pd.DataFrame, str]:
    """The CSV as a DataFrame, `text_columns` read as strings (empty cells as NA), and a name for messages."""
    options = {"dtype": {c: "string" for c in text_columns}, "keep_default_na": False, "na_values": [""]}
    if isinstance(source, (str, os.PathLike)):
        with fsspec.open(os.fspath(source), "rb") as f:
            return pd.read_csv(f, **options), os.fspath(source)
    return pd.read_csv(source, **options), str(getattr(source, "name", "<file>"))


def _problems(
    frame: pd.DataFrame,
    required: Sequence[str],
    text: Sequence[str],
    unit: Sequence[str],
    box: Sequence[str],
    allowed: dict[str, Sequence],
) -> list[str]:
    """What is wrong with `frame`: missing columns, empty text cells, numbers outside [0, 1],
    boxes with min > max, values outside `allowed`. Numeric columns are converted in place."""
    missing = [c for c in required if c not in frame.columns]
    if missing:
        return [f"missing columns {missing} (found {list(frame.columns)})"]
    problems = []
    for column in text:
        empty = frame[column].isna()
        if empty.any():
            problems.append(f"{column} is empty in {int(empty.sum())} row(s), e.g. row {int(np.argmax(empty))}")
    for column in unit:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna() | (values < 0) | (values > 1)
        if bad.any():
            shown = frame.loc[bad, column].head(_LISTED).tolist()
            problems.append(f"{column} must be a number in [0, 1]: {int(bad.sum())} bad row(s), e.g. {shown}")
        frame[column] = values
    x0, x1, y0, y1 = box
    for low, high in ((x0, x1), (y0, y1)):
        unordered = frame[low] > frame[high]
        if unordered.any():
            problems.append(f"{low} > {high} in {int(unordered.sum())} row(s), e.g. row {int(np.argmax(unordered))}")
    for column, values in allowed.items():
        numeric = all(isinstance(v, int) for v in values)
        column_values = pd.to_numeric(frame[column], errors="coerce") if numeric else frame[column]
        bad = ~column_values.isin(values)
        if bad.any():
            shown = sorted(set(map(str, frame.loc[bad, column].tolist())))[:_LISTED]
            problems.append(f"{column} holds {int(bad.sum())} value(s) outside {list(values)}: {shown}")
        elif numeric:
            frame[column] = column_values.astype(np.int64)
    return problems


def read_miap_boxes(source: str | os.PathLike | IO) -> pd.DataFrame:
    """A MIAP box CSV (path, fsspec URI or open file), checked: all of `MIAP_COLUMNS` present,
    Confidence and coordinates numbers in [0, 1] with XMin <= XMax and YMin <= YMax, flags in
    {-1, 0, 1}, GenderPresentation in `GENDER_PRESENTATIONS`, AgePresentation in `AGE_PRESENTATIONS`.
    Raises ValueError naming every problem found. Extra columns are kept.
    """
    frame, name = _read_csv(source, ("ImageID", "LabelName", "GenderPresentation", "AgePresentation"))
    problems = _problems(
        frame,
        MIAP_COLUMNS,
        text=("ImageID",),
        unit=("Confidence", *_MIAP_BOX),
        box=("XMin", "XMax", "YMin", "YMax"),
        allowed={
            "GenderPresentation": GENDER_PRESENTATIONS,
            "AgePresentation": AGE_PRESENTATIONS,
            **{flag: _FLAG_VALUES for flag in _MIAP_FLAGS},
        },
    )
    if problems:
        raise ValueError(f"MIAP box CSV {name}: " + "; ".join(problems))
    return frame


def read_segmentation_masks(source: str | os.PathLike | IO) -> pd.DataFrame:
    """An Open Images segmentation CSV, checked: all of `SEGMENTATION_COLUMNS` present, MaskPath
    and ImageID not empty, box coordinates numbers in [0, 1] and ordered. Raises ValueError
    naming every problem found.
    """
    frame, name = _read_csv(source, ("MaskPath", "ImageID", "LabelName", "BoxID", "Clicks"))
    problems = _problems(
        frame, SEGMENTATION_COLUMNS, text=("MaskPath", "ImageID"), unit=_MASK_BOX, box=_MASK_BOX, allowed={}
    )
    if problems:
        raise ValueError(f"Open Images segmentation CSV {name}: " + "; ".join(problems))
    return frame


@dataclass(frozen=True)
class MatchSummary:
    """Counts of a box-to-mask matching; every box and every mask is in exactly one count of its kind."""

    n_matched: int
    unmatched_boxes: int  # boxes whose image has masks, none of them within the margin (or all taken)
    boxes_without_masks: int  # boxes of images that have no mask at all
    unmatched_masks: int  # masks of images with MIAP boxes that no box took
    masks_of_other_images: int  # masks of images without any MIAP box

    def __str__(self) -> str:
        return (
            f"{self.n_matched} boxes matched to masks; unmatched: {self.unmatched_boxes} boxes "
            f"(+{self.boxes_without_masks} in images without masks), {self.unmatched_masks} masks "
            f"(+{self.masks_of_other_images} in images without MIAP boxes)"
        )


def match_boxes_to_masks(
    boxes: pd.DataFrame, masks: pd.DataFrame, margin: float = 0.01
) -> tuple[pd.DataFrame, MatchSummary]:
    """Pair MIAP boxes with Open Images masks of the same ImageID whose box agrees within `margin`
    (normalised units) on XMin, XMax, YMin and YMax.

    Each box and each mask is used at most once: pairs are taken greedily by increasing largest
    coordinate difference (ties by box, then mask row order). Returns the matched boxes (all their
    columns) with MaskPath, BoxID, MaskLabelName and BoxDifference (the largest coordinate
    difference), sorted by ImageID and box row order, and the summary of what stayed unmatched
    (also logged).
    """
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    b = boxes.reset_index(drop=True).assign(_box=lambda f: np.arange(len(f)))
    m = masks.reset_index(drop=True).assign(_mask=lambda f: np.arange(len(f)))
    pairs = b[["ImageID", "_box", *_MIAP_BOX]].merge(m[["ImageID", "_mask", *_MASK_BOX]], on="ImageID")
    difference = np.max(
        [np.abs(pairs[a].to_numpy(np.float64) - pairs[c].to_numpy(np.float64)) for a, c in zip(_MIAP_BOX, _MASK_BOX)],
        axis=0,
        initial=0.0,
    )
    pairs = pairs.assign(BoxDifference=difference)[difference <= margin + 1e-12]
    pairs = pairs.sort_values(["BoxDifference", "_box", "_mask"], kind="stable")
    used_boxes: set[int] = set()
    used_masks: set[int] = set()
    chosen: list[tuple[int, int, float]] = []
    for box, mask, diff in zip(pairs["_box"].tolist(), pairs["_mask"].tolist(), pairs["BoxDifference"].tolist()):
        if box not in used_boxes and mask not in used_masks:
            used_boxes.add(box)
            used_masks.add(mask)
            chosen.append((box, mask, diff))
    chosen.sort()
    box_rows = [c[0] for c in chosen]
    mask_rows = [c[1] for c in chosen]
    matched = b.iloc[box_rows].drop(columns="_box").reset_index(drop=True)
    from_masks = m.iloc[mask_rows].reset_index(drop=True)
    matched = matched.assign(
        MaskPath=from_masks["MaskPath"],
        BoxID=from_masks["BoxID"],
        MaskLabelName=from_masks["LabelName"],
        BoxDifference=[c[2] for c in chosen],
    )
    matched = matched.sort_values("ImageID", kind="stable").reset_index(drop=True)

    box_has_masks = b["ImageID"].isin(set(m["ImageID"]))
    mask_has_boxes = m["ImageID"].isin(set(b["ImageID"]))
    summary = MatchSummary(
        n_matched=len(chosen),
        unmatched_boxes=int(box_has_masks.sum()) - len(chosen),
        boxes_without_masks=int((~box_has_masks).sum()),
        unmatched_masks=int(mask_has_boxes.sum()) - len(chosen),
        masks_of_other_images=int((~mask_has_boxes).sum()),
    )
    log.info("MIAP box matching: %s", summary)
    return matched, summary


def _read_bytes(uri: str, what: str) -> bytes:
    try:
        with fsspec.open(uri, "rb") as f:
            return f.read()
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{what} {uri} does not exist") from error


def _join(folder: str | os.PathLike, name: str) -> str:
    return f"{os.fspath(folder).rstrip('/')}/{name}"


def read_mask(uri: str, size: tuple[int, int]) -> np.ndarray:
    """The mask PNG at `uri` as HxW bool (any non-zero pixel is foreground), resized with nearest
    neighbour to `size` (H, W) when its resolution differs."""
    try:
        pixels = decode_image(_read_bytes(uri, "mask"))
    except ImageDecodeError as error:
        raise ImageDecodeError(f"mask {uri}: {error}") from error
    mask = pixels.max(axis=2) > 0
    if mask.shape != tuple(size):
        mask = cv2.resize(mask.astype(np.uint8), (size[1], size[0]), interpolation=cv2.INTER_NEAREST) > 0
    return mask


def iter_person_samples(
    matched: pd.DataFrame,
    images_dir: str | os.PathLike,
    mask_dir: str | os.PathLike,
    group_columns: Sequence[str],
) -> Iterator[PersonSample]:
    """One PersonSample per row of `match_boxes_to_masks`'s output, the rows of an image together.

    Reads `<images_dir>/<ImageID>.jpg` once per image and `<mask_dir>/<MaskPath>` per row (any
    fsspec URI); attributes are the row's `group_columns` as strings. A missing file raises
    FileNotFoundError, an undecodable one ImageDecodeError, an empty mask ValueError, each
    naming the file.
    """
    missing = [c for c in ("ImageID", "MaskPath", *group_columns) if c not in matched.columns]
    if missing:
        raise ValueError(f"the matched table lacks columns: {missing}")
    for image_id, rows in matched.groupby("ImageID", sort=False):
        uri = _join(images_dir, f"{image_id}.jpg")
        try:
            image = decode_image(_read_bytes(uri, "image"))
        except ImageDecodeError as error:
            raise ImageDecodeError(f"image {uri}: {error}") from error
        for row in rows.to_dict("records"):
            mask_uri = _join(mask_dir, row["MaskPath"])
            mask = read_mask(mask_uri, image.shape[:2])
            if not mask.any():
                raise ValueError(f"mask {mask_uri} (image {image_id}) is empty")
            yield PersonSample(str(image_id), image, mask, {c: str(row[c]) for c in group_columns})
