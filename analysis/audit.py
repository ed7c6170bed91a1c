"""The SAM paper's mask quality audit (section 5, "Mask quality"), for any release.

The paper drew ~500 images (~50k masks) of SA-1B at random, had professional annotators correct
the automatic masks with pixel-precise tools, and compared each automatic mask with its corrected
version: 94% of the pairs had IoU > 0.90 and 97% IoU > 0.75. This module does the same for a
release in three steps:

    sa-engine audit export --release URI --output DIR --n 500 --seed 0
        DIR/audit.json (COCO, the automatic masks as RLE) and DIR/images/sa_<id>.jpg
    ... annotators correct DIR/audit.json in any COCO tool, keeping annotation ids; they may delete
        masks and add new ones (new ids), and may save polygons or RLE ...
    sa-engine audit score --exported DIR/audit.json --corrected FILE --output DIR
        DIR/audit_pairs.csv (one row per kept mask), DIR/audit_summary.csv, DIR/audit_changes.csv

or, with the review app (`sa-engine review`) instead of a COCO tool, straight from its corrections
folder (`curation.corrections`), the automatic masks read from the release:

    sa-engine audit score --corrections URI --output DIR
        the same three tables (rejected masks as removed, undecided ones as pending) and
        DIR/audit_time.csv (seconds spent per mask, by review status)

The sample is uniform and seeded: the n images with the smallest splitmix64 hash of their id
(`analysis.accumulators.seeded_hash`), found in one streaming pass over the images index, so it is
the same on every machine and does not depend on the order of the index files.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import re
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from analysis.accumulators import StratifiedSample
from analysis.release_index import DEFAULT_BATCH_ROWS, SIZE_LABELS, ReleaseIndex, relative_size, size_class
from analysis.rle import rle_runs
from curation.corrections import HEADER as CORRECTIONS_HEADER
from curation.corrections import KEPT_STATUSES, CorrectionsFolder
from curation.record_size import conform
from curation.records import image_file_name
from curation.release import ReleaseError, ReleaseImage, iter_shard
from sam_core.command_line import add_storage_options, command_parser, input_error
from sam_core.console import configure_logging

log = logging.getLogger(__name__)

AUDIT_FILE = "audit.json"
IMAGES_DIR = "images"
CATEGORY = {"id": 1, "name": "object"}
IOU_THRESHOLDS = (0.90, 0.75)
"""The paper's thresholds; a pair counts when its IoU is strictly greater ("IoU > 0.90")."""
SUMMARY_ROWS = ("all", *SIZE_LABELS)
SUMMARY_COLUMNS = ("pairs", "share_iou_above_0_90", "share_iou_above_0_75", "mean_iou", "median_iou")
PAIR_COLUMNS = ("id", "image_id", "area", "corrected_area", "relative_size", "size_class", "iou")
_SHARD_NAME = re.compile(r"[A-Za-z0-9_.-]+")


class AuditInputError(ValueError):
    """An exported or corrected audit file that cannot be scored: missing, not COCO, inconsistent."""


def _progress(message: str) -> None:
    print(f"\raudit: {message}", end="", file=sys.stderr, flush=True)


# --- sampling -----------------------------------------------------------------------------------


def _sample_rows(
    index: ReleaseIndex, n: int, seed: int, columns: Sequence[str], batch_rows: int, progress: bool = False
) -> list[dict[str, Any]]:
    """The images-index rows (`columns`, which must include image_id) of the n images with the
    smallest seeded hash of their id, sorted by image id. Holds at most n + batch_rows rows."""
    if n < 1:
        raise ValueError(f"the sample size n must be >= 1, got {n}")
    if "image_id" not in columns:
        raise ValueError("columns must include image_id")
    sample = StratifiedSample(k=n, n_strata=1, seed=seed)
    for batch in index.iter_images(columns, batch_rows):
        ids = batch["image_id"]
        if ids.null_count:
            raise ReleaseError(f"{index.uri}: the images index has {ids.null_count} rows without an image_id")
        keys = ids.to_numpy().astype(np.int64)
        sample.add(keys, np.zeros(len(keys), np.int64), lambda i, batch=batch: batch.slice(i, 1).to_pylist()[0])
        if progress:
            _progress(f"sampling: {int(sample.seen.sum())} images scanned")
    if progress:
        print(file=sys.stderr)
    rows = sample.items(0)
    if sample.repeated:
        log.warning("%s: image ids listed more than once in the images index; sampled once", index.uri)
    if not rows:
        raise ReleaseError(f"{index.uri}: the images index holds no images")
    if len(rows) < n:
        log.warning(
            "%s holds %d images, fewer than the %d asked for: the sample is all of them", index.uri, len(rows), n
        )
    return sorted(rows, key=lambda row: row["image_id"])


def sample_images(index: ReleaseIndex, n: int, seed: int, batch_rows: int = DEFAULT_BATCH_ROWS) -> list[int]:
    """A uniform random sample of n image ids of the release without replacement, sorted.

    Bottom-n by `seeded_hash(image_id, seed)`: deterministic per seed, independent of file order
    and batch size, in one streaming pass holding at most n + batch_rows ids. A release with fewer
    than n images gives all of them (and logs a warning). ValueError for n < 1.
    """
    return [row["image_id"] for row in _sample_rows(index, n, seed, ["image_id"], batch_rows)]


# --- reading sampled or saved images from the release -------------------------------------------

_ROW_COLUMNS = ("image_id", "width", "height", "shard")
"""The images-index columns `release_items` needs of each image."""


def index_rows(index: ReleaseIndex, image_ids: set[int]) -> list[dict[str, Any]]:
    """The images-index rows (_ROW_COLUMNS) of `image_ids`, in one streaming pass; AuditInputError
    naming the ids the release does not hold."""
    rows = []
    for batch in index.iter_images(list(_ROW_COLUMNS)):
        keep = np.isin(batch["image_id"].to_numpy(zero_copy_only=False), list(image_ids))
        rows.extend(batch.filter(keep).to_pylist())
    missing = sorted(image_ids - {row["image_id"] for row in rows})
    if missing:
        raise AuditInputError(f"images {missing[:10]} are not in the release {index.uri}")
    return sorted(rows, key=lambda row: row["image_id"])


def release_items(
    index: ReleaseIndex, rows: Sequence[dict[str, Any]], progress: bool = False
) -> Iterator[tuple[int, ReleaseImage]]:
    """(image id, record and JPEG) of each images-index row (_ROW_COLUMNS), reading only the shards
    that hold them, each once, in shard order. ReleaseError for an invalid shard name, a shard
    lacking an image the index puts there, or a record whose size disagrees with the index."""
    wanted: dict[str, dict[int, dict[str, Any]]] = {}
    for row in rows:
        shard = row["shard"]
        if not isinstance(shard, str) or not _SHARD_NAME.fullmatch(shard):
            raise ReleaseError(f"{index.uri}: image {row['image_id']} has an invalid shard name {shard!r}")
        wanted.setdefault(shard, {})[row["image_id"]] = row
    read = 0
    for done, (shard, images) in enumerate(sorted(wanted.items()), 1):
        missing = dict(images)
        for item in iter_shard(index.shard_uri(shard), index.storage_options):
            image_id = item.record["image"]["image_id"]
            row = missing.pop(image_id, None)
            if row is None:
                continue
            header = item.record["image"]
            if (header["width"], header["height"]) != (row["width"], row["height"]):
                raise ReleaseError(f"image {image_id}: the shard and the images index disagree on its size")
            read += 1
            yield image_id, item
            if not missing:
                break
        if missing:
            raise ReleaseError(f"shard {shard} of {index.uri} lacks images the index puts there: {sorted(missing)}")
        if progress:
            _progress(f"{done}/{len(wanted)} shards read, {read}/{len(rows)} images")
    if progress:
        print(file=sys.stderr)


# --- export -------------------------------------------------------------------------------------


def _model_info(manifest: dict[str, Any]) -> dict[str, Any]:
    settings = manifest.get("settings") or {}
    info = {"model": settings.get("model"), "model_sha256": settings.get("checkpoint_sha256") or None}
    return {k: v for k, v in info.items() if v}


def _audit_annotation(ann: dict[str, Any], image: dict[str, Any], new_id: int) -> dict[str, Any]:
    segmentation = ann["segmentation"]
    size = [image["height"], image["width"]]
    if not isinstance(segmentation, dict) or list(segmentation.get("size", ())) != size:
        raise ReleaseError(f"image {image['image_id']} mask {ann.get('id')}: segmentation is not an RLE of size {size}")
    rle = {"size": size, "counts": segmentation["counts"]}
    bbox = ann.get("bbox")
    return {
        "id": new_id,
        "image_id": image["image_id"],
        "category_id": CATEGORY["id"],
        "segmentation": rle,
        "area": int(ann["area"]) if ann.get("area") is not None else int(mask_utils.area(rle)),
        "bbox": [float(v) for v in bbox] if bbox is not None else mask_utils.toBbox(rle).tolist(),
        "iscrowd": 0,
        "predicted_iou": ann.get("predicted_iou"),
        "stability_score": ann.get("stability_score"),
        "release_image_id": image["image_id"],
        "release_ann_id": ann["id"],
    }


def export_audit(
    release_uri: str,
    out_dir: str | os.PathLike[str],
    n: int,
    seed: int,
    storage_options: dict[str, Any] | None = None,
    *,
    progress: bool = True,
    rescale: bool = False,
) -> Path:
    """Export a seeded sample of n images of a release for correction; returns out_dir/audit.json.

    Writes out_dir/images/sa_<id>.jpg and out_dir/audit.json (COCO: images with id = the
    release's image id, file_name, width, height, shard; one annotation per mask with a new id
    unique in the file, 1..M, keeping `release_image_id`/`release_ann_id`, the RLE, area, bbox
    XYWH and the model's scores; `info` with the release, seed, n and model). Reads only the
    shards that hold sampled images. A rerun overwrites the same files with the same bytes.

    A sampled record whose size disagrees with its JPEG (`curation.record_size`) stops the export
    with a RecordSizeError naming the image and both sizes, before audit.json is written; with
    `rescale`, its masks are resized to the JPEG's size instead (nearest neighbour) and exported
    at that size, and `info.rescaled_image_ids` lists those images.
    """
    index = ReleaseIndex(release_uri, storage_options)
    rows = _sample_rows(index, n, seed, list(_ROW_COLUMNS), DEFAULT_BATCH_ROWS, progress)
    out = Path(out_dir)
    (out / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    records: dict[int, dict[str, Any]] = {}
    rescaled: list[int] = []
    shard_of = {row["image_id"]: row["shard"] for row in rows}
    for image_id, item in release_items(index, rows, progress):
        checked = conform(item, rescale)
        if checked is not item:
            rescaled.append(image_id)
        (out / IMAGES_DIR / image_file_name(image_id)).write_bytes(item.image_bytes)
        records[image_id] = checked.record
    images, annotations = [], []
    for image_id in sorted(records):
        header = records[image_id]["image"]
        image = {
            "id": image_id,
            "file_name": image_file_name(image_id),
            "width": header["width"],
            "height": header["height"],
            "shard": shard_of[image_id],
        }
        images.append(image)
        for ann in records[image_id]["annotations"]:
            annotations.append(_audit_annotation(ann, header, len(annotations) + 1))
    info = {
        "description": "sa-engine mask quality audit (SAM paper section 5): correct these masks",
        "release": index.uri,
        "seed": seed,
        "n": n,
        "n_images": len(images),
        "n_masks": len(annotations),
        "sampling": "bottom-n of splitmix64(image_id ^ seed) (analysis.accumulators.seeded_hash)",
        **_model_info(index.manifest),
        **({"rescaled_image_ids": sorted(rescaled)} if rescaled else {}),
    }
    coco = {"info": info, "images": images, "annotations": annotations, "categories": [dict(CATEGORY)]}
    path = out / AUDIT_FILE
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(coco, separators=(",", ":")))
    os.replace(tmp, path)
    log.info("%d images, %d masks exported to %s", len(images), len(annotations), path)
    return path


# --- scoring ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditResult:
    """pairs: one row per exported mask kept in the corrected file (PAIR_COLUMNS; area and size
    class of the exported mask). summary: rows SUMMARY_ROWS x SUMMARY_COLUMNS (NaN shares for a
    class without pairs). deleted_ids / added_ids: exported annotation ids absent from the corrected
    file, and corrected annotation ids that were not exported (new masks).

    Scored from a corrections folder (`score_corrections`), the exported masks are the automatic
    masks of the saved images; deleted_ids are the rejected ones (`removed` says "rejected"),
    pending_ids those not decided yet, and `times` holds the seconds per mask (TIME_ROWS x
    TIME_COLUMNS)."""

    pairs: pd.DataFrame
    summary: pd.DataFrame
    deleted_ids: list[int] = field(default_factory=list)
    added_ids: list[int] = field(default_factory=list)
    n_exported: int = 0
    n_corrected: int = 0
    pending_ids: list[int] = field(default_factory=list)
    times: pd.DataFrame | None = None
    removed: str = "deleted"
    """What the correction calls an exported mask it dropped: "deleted" (a COCO file), "rejected" (review)."""

    @property
    def n_deleted(self) -> int:
        return len(self.deleted_ids)

    @property
    def n_added(self) -> int:
        return len(self.added_ids)


def _load_coco(path: str | os.PathLike[str], role: str) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise AuditInputError(f"{role} file {path} does not exist")
    text = path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise AuditInputError(f"{role} file {path} is empty")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise AuditInputError(f"{role} file {path} is not JSON: {error}") from None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("images"), list)
        or not isinstance(data.get("annotations"), list)
    ):
        raise AuditInputError(f"{role} file {path} is not COCO JSON: it needs 'images' and 'annotations' lists")
    for key, entries, needed in (
        ("images", data["images"], ("id", "width", "height")),
        ("annotations", data["annotations"], ("id", "image_id", "segmentation")),
    ):
        ids: Counter[Any] = Counter()
        for entry in entries:
            if not isinstance(entry, dict) or any(k not in entry for k in needed):
                raise AuditInputError(
                    f"{role} file {path}: every entry of '{key}' needs {list(needed)}: {entry!r:.200}"
                )
            ids[entry["id"]] += 1
        duplicates = sorted((i for i, count in ids.items() if count > 1), key=str)
        if duplicates:
            raise AuditInputError(f"{role} file {path}: '{key}' ids listed more than once: {duplicates[:10]}")
    return data


def _coco_index(data: dict[str, Any]) -> COCO:
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):  # createIndex prints progress
        coco.createIndex()
    return coco


def _check_rle(segmentation: dict[str, Any], height: int, width: int, what: str) -> None:
    """AuditInputError unless `segmentation` is an RLE of a height x width image (compressed
    counts are decoded to check them: pycocotools reads malformed ones without complaint)."""
    size = list(segmentation.get("size", ()))
    if size != [height, width]:
        raise AuditInputError(f"{what}: mask size {size} differs from its image's [height, width] = {[height, width]}")
    counts = segmentation.get("counts")
    if isinstance(counts, str):
        runs = rle_runs(counts)
        if runs is None or (runs < 0).any() or int(runs.sum()) != height * width:
            raise AuditInputError(f"{what}: RLE counts are malformed or do not cover its {height}x{width} image")


def _rle(coco: COCO, ann: dict[str, Any], role: str) -> dict[str, Any]:
    image = coco.imgs[ann["image_id"]]
    segmentation = ann["segmentation"]
    if isinstance(segmentation, dict):
        _check_rle(segmentation, image["height"], image["width"], f"{role} annotation {ann['id']}")
    elif not isinstance(segmentation, list) or not segmentation:
        raise AuditInputError(f"{role} annotation {ann['id']}: segmentation is neither RLE nor polygons")
    try:
        return coco.annToRLE(ann)
    except Exception as error:  # noqa: BLE001 - pycocotools raises bare Exception on malformed polygons
        raise AuditInputError(f"{role} annotation {ann['id']}: unreadable segmentation ({error})") from None


def _pair_iou(corrected: dict[str, Any], exported: dict[str, Any]) -> float:
    if mask_utils.area(corrected) == 0 and mask_utils.area(exported) == 0:
        return 1.0
    return float(mask_utils.iou([corrected], [exported], [0])[0, 0])


def _pair_row(
    ann_id: int, image_id: int, exported: dict[str, Any], corrected: dict[str, Any], height: int, width: int
) -> dict[str, Any]:
    """One pair: the exported mask's id and area, the corrected area and their IoU (RLEs of height x width)."""
    return {
        "id": ann_id,
        "image_id": image_id,
        "area": int(mask_utils.area(exported)),
        "corrected_area": int(mask_utils.area(corrected)),
        "height": height,
        "width": width,
        "iou": _pair_iou(corrected, exported),
    }


def _pairs_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The pairs table (PAIR_COLUMNS) of `_pair_row`s: relative size and size class of the exported mask."""
    pairs = pd.DataFrame(rows, columns=["id", "image_id", "area", "corrected_area", "height", "width", "iou"])
    rel = relative_size(pairs["area"].to_numpy(), pairs["height"].to_numpy(), pairs["width"].to_numpy())
    pairs["relative_size"] = rel
    pairs["size_class"] = np.asarray(SIZE_LABELS, dtype=object)[size_class(rel)] if len(pairs) else []
    return pairs[list(PAIR_COLUMNS)].astype({"id": np.int64, "image_id": np.int64, "iou": np.float64})


def _by_label(values: pd.Series, labels: pd.Series, wanted: Sequence[str]) -> Iterator[tuple[str, np.ndarray]]:
    """(label, the float64 values of the rows with that label) for each of `wanted`; "all" takes every row."""
    for label in wanted:
        yield label, (values if label == "all" else values[labels == label]).to_numpy(np.float64)


def _table(rows: dict[str, dict[str, float]], columns: Sequence[str], index_name: str) -> pd.DataFrame:
    """`rows` (label -> column -> value) as a table indexed by label, its first column (a count) int64."""
    table = pd.DataFrame.from_dict(rows, orient="index", columns=list(columns))
    table[columns[0]] = table[columns[0]].astype(np.int64)
    table.index.name = index_name
    return table


def summarize_pairs(pairs: pd.DataFrame) -> pd.DataFrame:
    """The summary table of a pairs table: rows SUMMARY_ROWS, columns SUMMARY_COLUMNS."""
    rows = {}
    for label, iou in _by_label(pairs["iou"], pairs["size_class"], SUMMARY_ROWS):
        empty = len(iou) == 0
        rows[label] = {
            "pairs": len(iou),
            "share_iou_above_0_90": np.nan if empty else float(np.mean(iou > IOU_THRESHOLDS[0])),
            "share_iou_above_0_75": np.nan if empty else float(np.mean(iou > IOU_THRESHOLDS[1])),
            "mean_iou": np.nan if empty else float(np.mean(iou)),
            "median_iou": np.nan if empty else float(np.median(iou)),
        }
    return _table(rows, SUMMARY_COLUMNS, "masks")


def score_audit(exported: str | os.PathLike[str], corrected: str | os.PathLike[str]) -> AuditResult:
    """IoU of every exported mask with its corrected version (paired by annotation id).

    The corrected file may store masks as RLE or polygons and may omit images (the exported image
    sizes are used). Masks absent from it count as deleted, ids not in the export as added; both
    are reported, neither is scored. AuditInputError (a ValueError) for a missing or non-COCO file,
    an export without masks, an annotation moved to another image, an image unknown to the export,
    or a mask whose size differs from its image.
    """
    exported_data = _load_coco(exported, "exported")
    corrected_data = _load_coco(corrected, "corrected")
    if not exported_data["annotations"]:
        raise AuditInputError(f"exported file {exported} holds no annotations")
    images = {image["id"]: image for image in exported_data["images"]}
    for image in corrected_data["images"]:
        known = images.get(image["id"])
        if known is None:
            raise AuditInputError(f"corrected file {corrected}: image {image['id']} is not in the export")
        if (image["width"], image["height"]) != (known["width"], known["height"]):
            raise AuditInputError(
                f"corrected file {corrected}: image {image['id']} is {image['width']}x{image['height']}, "
                f"exported as {known['width']}x{known['height']} (width x height)"
            )
    for ann in (*exported_data["annotations"], *corrected_data["annotations"]):
        if ann["image_id"] not in images:
            raise AuditInputError(f"annotation {ann['id']} refers to image {ann['image_id']}, not in the export")
    exported_coco = _coco_index(exported_data)
    # the exported images give the sizes polygons are drawn at, whatever the corrected file lists
    corrected_coco = _coco_index({**corrected_data, "images": exported_data["images"]})
    corrected_anns = {ann["id"]: ann for ann in corrected_data["annotations"]}
    exported_ids = {ann["id"] for ann in exported_data["annotations"]}
    rows, deleted = [], []
    for ann in exported_data["annotations"]:
        other = corrected_anns.get(ann["id"])
        if other is None:
            deleted.append(ann["id"])
            continue
        if other["image_id"] != ann["image_id"]:
            raise AuditInputError(
                f"corrected annotation {ann['id']} is on image {other['image_id']}, exported on {ann['image_id']}"
            )
        rle_exported = _rle(exported_coco, ann, "exported")
        rle_corrected = _rle(corrected_coco, other, "corrected")
        image = images[ann["image_id"]]
        rows.append(_pair_row(ann["id"], ann["image_id"], rle_exported, rle_corrected, image["height"], image["width"]))
    added = sorted(i for i in corrected_anns if i not in exported_ids)
    pairs = _pairs_table(rows)
    if deleted or added:
        log.info("%d exported masks deleted, %d masks added by the correction", len(deleted), len(added))
    return AuditResult(
        pairs=pairs,
        summary=summarize_pairs(pairs),
        deleted_ids=sorted(deleted),
        added_ids=added,
        n_exported=len(exported_ids),
        n_corrected=len(corrected_anns),
    )


# --- scoring a corrections folder (the review app's, `curation.corrections`) ----------------------

TIME_ROWS = (*KEPT_STATUSES, "rejected", "all")
TIME_COLUMNS = ("masks", "total_seconds", "mean_seconds", "median_seconds")


def summarize_times(times: pd.DataFrame) -> pd.DataFrame:
    """Seconds spent per mask by review status: rows TIME_ROWS, columns TIME_COLUMNS (NaN mean and
    median for a status without masks). `times`: one row per decided mask, columns status, seconds."""
    rows = {}
    for label, seconds in _by_label(times["seconds"], times["status"], TIME_ROWS):
        empty = len(seconds) == 0
        rows[label] = {
            "masks": len(seconds),
            "total_seconds": float(seconds.sum()),
            "mean_seconds": np.nan if empty else float(np.mean(seconds)),
            "median_seconds": np.nan if empty else float(np.median(seconds)),
        }
    return _table(rows, TIME_COLUMNS, "status")


def _decide(source_id: Any, automatic: dict[int, Any], decided: set[int], what: str) -> None:
    """Add `source_id` to `decided`; AuditInputError unless it is an automatic mask not decided yet."""
    if source_id not in automatic or source_id in decided:
        raise AuditInputError(f"{what}: source_id {source_id!r} is not an undecided automatic mask of the image")
    decided.add(source_id)


def score_corrections(
    uri: str, storage_options: dict[str, Any] | None = None, release: str | None = None
) -> AuditResult:
    """The audit of a corrections folder written by the review app: every automatic mask of a saved
    image that was accepted or edited is paired with its corrected version (IoU; an accepted mask
    scores 1.0), a rejected one counts as removed, one not decided yet as pending, an added mask as
    added; `times` holds the seconds spent per mask, by status.

    The automatic masks are read from the release the folder names in corrections.json (`release`
    overrides it: the same release at another URI), only from the shards that hold saved images.
    AuditInputError for a folder with nothing saved, a saved image the release does not hold or of
    another size, a kept mask that is not an RLE of its image, or a source_id that is not an
    automatic mask of its image or is decided twice.
    """
    folder = CorrectionsFolder(uri, storage_options)
    header = folder.header()
    saved = {record["image"]["image_id"]: record for record in folder.records()}
    if header is None or not saved:
        raise AuditInputError(f"{uri} holds no saved corrections (no {CORRECTIONS_HEADER} or no records)")
    index = ReleaseIndex(release or header["release"], storage_options)
    rows, rejected, added, pending, times = [], [], [], [], []
    n_automatic = n_kept = 0
    for image_id, item in release_items(index, index_rows(index, set(saved))):
        record = saved[image_id]
        height, width = item.record["image"]["height"], item.record["image"]["width"]
        if (record["image"]["height"], record["image"]["width"]) != (height, width):
            raise AuditInputError(
                f"image {image_id}: saved at {record['image']['width']}x{record['image']['height']}, "
                f"{width}x{height} in the release (width x height)"
            )
        automatic = {ann["id"]: ann["segmentation"] for ann in item.record["annotations"]}
        decided: set[int] = set()
        for ann in record["annotations"]:
            review, what = ann["review"], f"image {image_id} mask {ann['id']}"
            if review["status"] not in KEPT_STATUSES:
                raise AuditInputError(f"{what}: status {review['status']!r} is not one of {KEPT_STATUSES}")
            _check_rle(ann["segmentation"], height, width, what)
            times.append((review["status"], review["seconds"]))
            if review["status"] == "added":
                added.append(ann["id"])
                continue
            source = review["source_id"]
            _decide(source, automatic, decided, what)
            _check_rle(automatic[source], height, width, f"image {image_id} automatic mask {source}")
            rows.append(_pair_row(source, image_id, automatic[source], ann["segmentation"], height, width))
        for entry in record["review"]["rejected"]:
            _decide(entry["source_id"], automatic, decided, f"image {image_id} rejected mask")
            rejected.append(entry["source_id"])
            times.append(("rejected", entry["seconds"]))
        pending.extend(sorted(set(automatic) - decided))
        n_automatic += len(automatic)
        n_kept += len(record["annotations"])
    pairs = _pairs_table(rows)
    return AuditResult(
        pairs=pairs,
        summary=summarize_pairs(pairs),
        deleted_ids=sorted(rejected),
        added_ids=sorted(added),
        n_exported=n_automatic,
        n_corrected=n_kept,
        pending_ids=pending,
        times=summarize_times(pd.DataFrame(times, columns=["status", "seconds"])),
        removed="rejected",
    )


def write_audit_tables(result: AuditResult, out_dir: str | os.PathLike[str]) -> list[Path]:
    """audit_pairs.csv, audit_summary.csv and audit_changes.csv (ids deleted or rejected, added,
    pending) in out_dir, and audit_time.csv when the result has times."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    changes = pd.DataFrame(
        {
            "id": [*result.deleted_ids, *result.added_ids, *result.pending_ids],
            "change": [result.removed] * result.n_deleted
            + ["added"] * result.n_added
            + ["pending"] * len(result.pending_ids),
        }
    )
    paths = [out / "audit_pairs.csv", out / "audit_summary.csv", out / "audit_changes.csv"]
    result.pairs.to_csv(paths[0], index=False)
    result.summary.to_csv(paths[1])
    changes.to_csv(paths[2], index=False)
    if result.times is not None:
        paths.append(out / "audit_time.csv")
        result.times.to_csv(paths[-1])
    return paths


def describe_changes(result: AuditResult) -> str:
    """One line: exported masks scored, removed (and pending), masks added."""
    pending = f", {len(result.pending_ids)} pending" if result.times is not None else ""
    return (
        f"{result.n_exported} {'automatic' if result.times is not None else 'exported'} masks: "
        f"{len(result.pairs)} scored, {result.n_deleted} {result.removed}{pending}; {result.n_added} added"
    )


# --- command line -------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = command_parser("audit", __doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="sample images of a release and export their masks as COCO")
    export.add_argument("--release", required=True, help="release URI (local folder, s3://, gs://)")
    export.add_argument("--output", required=True, help="local folder for audit.json and images/")
    export.add_argument("--n", type=int, default=500, help="images to sample (the paper: about 500)")
    export.add_argument("--seed", type=int, default=0, help="sampling seed")
    export.add_argument(
        "--on-size-mismatch",
        choices=("fail", "rescale"),
        default="fail",
        help="a sampled record whose size disagrees with its JPEG: stop with an error, or resize its masks "
        "to the JPEG's size (nearest)",
    )
    add_storage_options(export)
    score = commands.add_parser(
        "score", help="compare corrected masks with the exported ones, or score a review corrections folder"
    )
    score.add_argument("--exported", help="the audit.json written by export")
    score.add_argument("--corrected", help="the corrected COCO JSON (RLE or polygons)")
    score.add_argument(
        "--corrections", help="instead of the two above: a corrections folder of `sa-engine review` (any fsspec URI)"
    )
    score.add_argument(
        "--release", help="with --corrections: the release's URI, if not the one its corrections.json names"
    )
    score.add_argument(
        "--output",
        required=True,
        help="folder for audit_pairs.csv, audit_summary.csv, audit_changes.csv (and audit_time.csv)",
    )
    add_storage_options(score)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "score":
        coco_files = (args.exported, args.corrected)
        if any(coco_files) if args.corrections else not all(coco_files):
            parser.error("score takes --exported and --corrected, or --corrections")
        if args.release and not args.corrections:
            parser.error("--release goes with --corrections")
    configure_logging()
    try:
        if args.command == "export":
            path = export_audit(
                args.release,
                args.output,
                args.n,
                args.seed,
                args.storage_options,
                rescale=args.on_size_mismatch == "rescale",
            )
            info = json.loads(path.read_text())["info"]
            print(f"{info['n_images']} images, {info['n_masks']} masks -> {path}")
            if info.get("rescaled_image_ids"):
                print(f"masks rescaled to their JPEG's size for images {info['rescaled_image_ids']}")
        else:
            if args.corrections:
                result = score_corrections(args.corrections, args.storage_options, args.release)
            else:
                result = score_audit(args.exported, args.corrected)
            paths = write_audit_tables(result, args.output)
            with pd.option_context("display.float_format", "{:.4f}".format, "display.width", 120):
                print(result.summary.to_string())
                if result.times is not None:
                    print(result.times.to_string())
            print(describe_changes(result))
            print("written: " + ", ".join(str(p) for p in paths))
    except (ValueError, OSError) as error:  # ReleaseError and AuditInputError are ValueErrors
        return input_error(str(error))
    return 0


if __name__ == "__main__":
    sys.exit(main())
