"""A corrections folder: the masks of a release's images as a reviewer corrected them.

Layout under one prefix (any fsspec URI):

    corrections.json        {"format": FORMAT, "release": <release uri>, "model": {"name", "sha256"}},
                            written on the first save
    records/sa_<id>.json    one per saved image: an SA-1B record (see `corrected_record`)
    coco.json               every saved image as COCO (RLE segmentations, category 1 "object"),
                            rewritten after each save

A saved record is {"image": <the release record's image entry, unchanged>, "annotations": [the
kept masks], "review": {"version", "saved_at", "release", "seconds_on_image", "rejected",
"pending"}}. A kept mask is an SA-1B annotation (id, segmentation as compressed RLE, bbox XYWH,
area, predicted_iou, stability_score, point_coords; an automatic mask keeps its other fields) with
"review": {"status": "accepted" | "edited" | "added", "source_id": <automatic ann id> | None,
"seconds", "at"}. Added masks take the ids after the image's largest automatic id. An automatic
mask rejected is listed in review.rejected; one not decided yet is in review.pending and not among
the annotations (an undecided mask is not a correction).

Every file is written whole: on a local filesystem to a temporary file then renamed over the
target, on an object store by one PUT. Reads and writes go through `RetryingFileSystem`.
"""

from __future__ import annotations

import json
import math
import os
import posixpath
import re
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch
from pycocotools import mask as coco_mask

from curation.records import MASK_ID_STRIDE, image_key
from curation.retrying_fs import RetryingFileSystem
from sam_core.mask_ops import annotation_fields, decode_rle, rle_counts

FORMAT = "sa-engine-corrections/1"
HEADER = "corrections.json"
RECORDS = "records"
COCO = "coco.json"
CATEGORY = {"id": 1, "name": "object"}
KEPT_STATUSES = ("accepted", "edited", "added")
STATUSES = (*KEPT_STATUSES, "rejected", "pending")
_IMAGE_ID = re.compile(r"[0-9]{1,18}")
_RECORD_NAME = re.compile(r"sa_([0-9]{1,18})\.json")


def parse_image_id(text: str) -> int:
    """An image id from outside (a URL, a file name): 1 to 18 decimal digits, else ValueError.
    Never use such text as a path component without this check."""
    if not isinstance(text, str) or not _IMAGE_ID.fullmatch(text):
        raise ValueError(f"image id {str(text)[:40]!r} is not 1 to 18 decimal digits")
    return int(text)


def now_iso() -> str:
    """The current UTC time, ISO-8601 to the millisecond: 2024-05-01T12:00:00.000Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class CorrectionConflict(Exception):
    """A save whose base version is not the stored one: someone saved the image in between."""

    def __init__(self, stored_version: int, saved_at: str | None) -> None:
        super().__init__(f"the image was saved meanwhile (stored version {stored_version}, at {saved_at})")
        self.stored_version, self.saved_at = stored_version, saved_at


class CorrectionsError(ValueError):
    """A corrections folder that cannot be used as asked (another release's, another format)."""


@dataclass(frozen=True)
class ReviewedMask:
    """One mask of an image as the reviewer left it.

    source_id: the automatic annotation's id, None for an added mask. segmentation: a COCO RLE of
    the image's size, compressed ({"size", "counts": str}) or uncompressed ({"size", "counts":
    [int, ...]}, column-major); None for a rejected or pending mask. predicted_iou: for an added
    mask, the chosen SAM candidate's. seconds: time spent on the mask. point_coords: the clicks of an
    added mask, [[x, y], ...] in pixels.
    """

    source_id: int | None
    status: str
    segmentation: dict[str, Any] | None = None
    predicted_iou: float | None = None
    seconds: float = 0.0
    point_coords: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True)
class Saved:
    version: int
    saved_at: str


def corrected_record(
    release_record: dict[str, Any],
    masks: Sequence[ReviewedMask],
    seconds_on_image: float,
    release: str,
    previous: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The record to save for `release_record` (the image's SA-1B record in the release) reviewed
    as `masks`; automatic masks not among them stay pending. ValueError (saying why) for a mask
    that does not fit: an unknown or repeated source_id, a bad status, a segmentation missing or of
    another size or malformed or empty, an "accepted" mask that differs from the automatic one, a
    number that is negative or not finite. Each decision keeps its "at" from `previous` (the stored
    record) when it is unchanged there; the "review" lacks version and saved_at (`save` adds them).
    """
    image = release_record["image"]
    size = [image["height"], image["width"]]
    automatic = {ann["id"]: ann for ann in release_record["annotations"]}
    _check_number(seconds_on_image, "seconds_on_image")
    at = now_iso()
    earlier = _decision_times(previous)
    next_id = max(automatic, default=image["image_id"] * MASK_ID_STRIDE - 1) + 1
    named: set[int] = set()
    annotations, rejected = [], []
    for position, mask in enumerate(masks):
        where = f"mask {position}"
        _check_mask(mask, automatic, named, where)
        if mask.status == "pending":
            continue
        if mask.status == "rejected":
            key = ("rejected", mask.source_id, None)
            rejected.append({"source_id": mask.source_id, "seconds": mask.seconds, "at": earlier.get(key, at)})
            continue
        annotation = _kept_annotation(mask, automatic, _compressed(mask.segmentation, size, where), where)
        if mask.source_id is None:
            annotation = {"id": next_id, **annotation}
            next_id += 1
        key = (mask.status, mask.source_id, annotation["segmentation"]["counts"])
        review = {"status": mask.status, "source_id": mask.source_id, "seconds": mask.seconds}
        annotations.append({**annotation, "review": {**review, "at": earlier.get(key, at)}})
    decided = {r["source_id"] for r in rejected} | {a["review"]["source_id"] for a in annotations}
    pending = [ann_id for ann_id in automatic if ann_id not in decided]
    return {
        "image": image,
        "annotations": annotations,
        "review": {"release": release, "seconds_on_image": seconds_on_image, "rejected": rejected, "pending": pending},
    }


def _kept_annotation(
    mask: ReviewedMask, automatic: dict[int, Any], segmentation: dict[str, Any], where: str
) -> dict[str, Any]:
    """The SA-1B annotation of an accepted (the automatic one unchanged), edited (the automatic one
    with the new mask's fields) or added mask (its id left to the caller)."""
    if mask.status == "accepted":
        if not _same_mask(segmentation, automatic[mask.source_id]["segmentation"]):
            raise ValueError(f"{where}: 'accepted' but differs from automatic mask {mask.source_id}; mark it 'edited'")
        return dict(automatic[mask.source_id])
    fields = annotation_fields(torch.from_numpy(np.ascontiguousarray(decode_rle(segmentation)))[None])[0]
    if fields["area"] == 0:
        raise ValueError(f"{where}: the mask is empty; reject it instead")
    if mask.status == "edited":
        return {**automatic[mask.source_id], **fields}
    return {**fields, "predicted_iou": mask.predicted_iou, "point_coords": [list(p) for p in mask.point_coords]}


def _check_mask(mask: ReviewedMask, automatic: dict[int, Any], named: set[int], where: str) -> None:
    """The checks of `corrected_record` that need no pixels; adds the mask's source_id to `named`."""
    if mask.status not in STATUSES:
        raise ValueError(f"{where}: status {str(mask.status)[:20]!r} is not one of {', '.join(STATUSES)}")
    if mask.status == "added":
        if mask.source_id is not None:
            raise ValueError(f"{where}: an added mask has no source_id")
    elif mask.source_id not in automatic:
        raise ValueError(f"{where}: source_id {mask.source_id!r} is not an automatic mask of this image")
    elif mask.source_id in named:
        raise ValueError(f"{where}: source_id {mask.source_id} appears twice")
    else:
        named.add(mask.source_id)
    _check_number(mask.seconds, f"{where}: seconds")
    if mask.predicted_iou is not None:
        _check_number(mask.predicted_iou, f"{where}: predicted_iou")
    for point in mask.point_coords:
        if len(point) != 2:
            raise ValueError(f"{where}: a point is not [x, y]")
        for value in point:
            _check_number(value, f"{where}: point_coords")
    if mask.status in KEPT_STATUSES and mask.segmentation is None:
        raise ValueError(f"{where}: an {mask.status} mask needs a segmentation")


def _check_number(value: Any, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {str(value)[:20]}")


def _compressed(rle: Any, size: list[int], where: str) -> dict[str, Any]:
    """A checked COCO RLE of an image of `size` [height, width] as compressed {"size", "counts": str}."""
    if not isinstance(rle, dict) or set(rle) != {"size", "counts"}:
        raise ValueError(f"{where}: segmentation must be an RLE {{'size': [h, w], 'counts': ...}}")
    if rle["size"] != size:
        raise ValueError(f"{where}: segmentation size {str(rle['size'])[:40]} is not the image's {size}")
    counts = rle["counts"]
    if isinstance(counts, str):
        try:
            runs = rle_counts(rle)
        except ValueError:  # not ASCII, or not COCO's characters
            raise ValueError(f"{where}: malformed compressed RLE counts {counts[:20]!r}") from None
    elif isinstance(counts, list) and all(type(c) is int and 0 <= c < 2**31 for c in counts):
        runs = np.asarray(counts, dtype=np.int64)
    else:
        raise ValueError(f"{where}: counts must be a string (compressed) or a list of run lengths (uncompressed)")
    if len(runs) and runs.min() < 0:
        raise ValueError(f"{where}: counts hold a negative run length")
    if int(runs.sum()) != size[0] * size[1]:
        raise ValueError(f"{where}: counts cover {int(runs.sum())} pixels, not {size[0]} x {size[1]}")
    if isinstance(counts, str):
        return {"size": size, "counts": counts}
    encoded = coco_mask.frPyObjects({"size": size, "counts": runs.tolist()}, *size)
    return {"size": size, "counts": encoded["counts"].decode("ascii")}


def _same_mask(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return bool(np.array_equal(decode_rle(a), decode_rle(b)))


def _decision_times(record: dict[str, Any] | None) -> dict[tuple[str, int | None, str | None], str]:
    """(status, source_id, counts) -> "at" of each decision in a stored record."""
    if record is None:
        return {}
    times = {("rejected", r["source_id"], None): r["at"] for r in record["review"]["rejected"]}
    for ann in record["annotations"]:
        review = ann["review"]
        times[(review["status"], review["source_id"], ann["segmentation"]["counts"])] = review["at"]
    return times


class CorrectionsFolder:
    """The corrections folder at `uri` (`storage_options` as for fsspec).

    `release` and `model` ({"name", "sha256"}) are what a folder written to is for: the first save
    writes them to corrections.json, and a folder already made for another release is refused
    (CorrectionsError). A reader leaves them out.

    Saves hold a lock of this object, so two requests of one process cannot interleave their
    version check and write. Two processes writing one folder are not guarded against: on an
    object store the write is a plain PUT, not a conditional one.
    """

    def __init__(
        self,
        uri: str,
        storage_options: dict[str, Any] | None = None,
        release: str | None = None,
        model: dict[str, Any] | None = None,
    ) -> None:
        self.uri = uri
        self.fs = RetryingFileSystem(uri, storage_options)
        self.root = self.fs.root.rstrip("/")
        self._lock = threading.Lock()
        self._header = None if release is None else {"format": FORMAT, "release": release, "model": model}
        stored = self.header()
        if stored is not None and stored.get("format") != FORMAT:
            raise CorrectionsError(f"{uri}: {HEADER} has format {stored.get('format')!r}, not {FORMAT!r}")
        if stored is not None and release is not None and stored.get("release") != release:
            raise CorrectionsError(f"{uri} holds corrections of release {stored.get('release')!r}, not {release!r}")

    def header(self) -> dict[str, Any] | None:
        """corrections.json, or None before the first save."""
        return self._read_json(f"{self.root}/{HEADER}")

    def load(self, image_id: int) -> dict[str, Any] | None:
        """The saved record of an image, or None."""
        return self._read_json(self._record_path(image_id))

    def version(self, image_id: int) -> int:
        """The saved version of an image, 0 if never saved."""
        record = self.load(image_id)
        return 0 if record is None else record["review"]["version"]

    def save(self, image_id: int, record: dict[str, Any], base_version: int) -> Saved:
        """Store `record` (`corrected_record`'s) as the next version of the image, then rewrite
        coco.json. CorrectionConflict when `base_version` (0: never saved) is not the stored one."""
        if self._header is None:
            raise CorrectionsError(f"{self.uri} was opened for reading: no release to write corrections for")
        if record["image"]["image_id"] != image_id:
            raise ValueError(f"the record is of image {record['image']['image_id']}, not {image_id}")
        with self._lock:
            stored = self.load(image_id)
            stored_version = 0 if stored is None else stored["review"]["version"]
            if base_version != stored_version:
                raise CorrectionConflict(stored_version, None if stored is None else stored["review"]["saved_at"])
            saved = Saved(stored_version + 1, now_iso())
            review = {"version": saved.version, "saved_at": saved.saved_at, **record["review"]}
            if stored is None and self.header() is None:
                self._write_json(f"{self.root}/{HEADER}", self._header)
            self._write_json(self._record_path(image_id), {**record, "review": review})
            self.write_coco()
        return saved

    def image_ids(self) -> list[int]:
        """The ids of the saved images, in order."""
        names = (posixpath.basename(p) for p in self.fs.glob(f"{self.root}/{RECORDS}/sa_*.json"))
        return sorted(int(m.group(1)) for m in map(_RECORD_NAME.fullmatch, names) if m)

    def records(self) -> Iterator[dict[str, Any]]:
        """The saved records, by image id."""
        for image_id in self.image_ids():
            record = self.load(image_id)
            if record is not None:
                yield record

    def coco(self) -> dict[str, Any]:
        """Every saved image's kept masks as a COCO dataset."""
        images, annotations = [], []
        for record in self.records():
            image = record["image"]
            images.append({k: image[k] for k in ("file_name", "width", "height")} | {"id": image["image_id"]})
            for ann in record["annotations"]:
                annotations.append(
                    {
                        "id": ann["id"],
                        "image_id": image["image_id"],
                        "category_id": CATEGORY["id"],
                        "segmentation": ann["segmentation"],
                        "area": ann["area"],
                        "bbox": ann["bbox"],
                        "iscrowd": 0,
                        "predicted_iou": ann.get("predicted_iou"),
                        "review_status": ann["review"]["status"],
                    }
                )
        info = {"description": "sa-engine review corrections", **(self.header() or {})}
        return {"info": info, "images": images, "annotations": annotations, "categories": [dict(CATEGORY)]}

    def write_coco(self) -> None:
        """Rewrite coco.json from the saved records."""
        self._write_json(f"{self.root}/{COCO}", self.coco())

    def _record_path(self, image_id: int) -> str:
        if not isinstance(image_id, int) or isinstance(image_id, bool) or image_id < 0:
            raise ValueError(f"image id {image_id!r} is not a whole number >= 0")
        return f"{self.root}/{RECORDS}/{image_key(image_id)}.json"

    def _read_json(self, path: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.fs.cat_file(path))
        except FileNotFoundError:
            return None

    def _write_json(self, path: str, value: Any) -> None:
        """`value` as JSON at `path`, whole: a temporary file renamed over it locally, one PUT elsewhere."""
        data = json.dumps(value, separators=(",", ":")).encode()
        if not self.fs.is_local:
            self.fs.pipe_file(path, data)
            return
        self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
        partial = f"{path}.{uuid.uuid4().hex}.tmp"
        self.fs.pipe_file(partial, data)
        os.replace(partial, path)
