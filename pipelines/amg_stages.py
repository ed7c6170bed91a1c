"""The stages of the automatic-mask job, as callables for Ray Data's `map_batches`.

Batches are dicts of numpy arrays (Ray Data's "numpy" format). Every row that enters a stage
leaves it: a row that fails carries `stage` and `error` from then on and passes the later
stages untouched, so it reaches the writer and the failures table, never the void.

    load_images   (CPU tasks)   uri -> source bytes, sha256, decoded image at the model size,
                                and the release JPEG (faces and licence plates blurred when asked)
    MaskStage     (actor pool)  images at the model size -> SA-1B mask proposals (JSON)
    make_records  (CPU tasks)   proposals cleaned up (small regions, coverage), moved to the
                                release size, quality filters applied -> the SA-1B record (JSON)
    write_shard   (CPU tasks)   a batch of records -> one committed shard of the release

Rows that the dedup table drops enter with stage "dedup" already set, so they are never read.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import fsspec
import numpy as np
import torch

from curation.deidentify import Deidentifier
from curation.filters import IMAGES_REMOVED, MASKS_REMOVED, QualityFilters, apply_filters
from curation.images import ImageDecodeError, decode_image, encode_jpeg, fit_long_side, fit_short_side, resize_image
from curation.records import image_entry, rescale_annotations
from curation.release import ReleaseImage, ReleaseWriter
from sam_core.amg_settings import MaskGeneratorSettings
from sam_core.checkpoints import load_sam
from sam_core.inference import InferenceOptions
from sam_core.mask_generator import MaskGenerator
from sam_core.record_cleanup import finish_records

Batch = dict[str, np.ndarray]
_NO_IMAGE = np.zeros((1, 1, 3), np.uint8)
"""Stands in for the pixels of a row that failed (Ray's tensor columns need an array in every row)."""


def _objects(values: list[Any]) -> np.ndarray:
    """A 1-D object array of `values` (numpy would otherwise stack equal-shaped arrays)."""
    column = np.empty(len(values), dtype=object)
    column[:] = values
    return column


def _replace_column(batch: Batch, old: str, new: str, values: list[Any], stages: list[str], errors: list[str]) -> Batch:
    """`batch` with column `old` replaced by `new` (an object column of `values`), and the updated
    stage and error columns."""
    kept = {k: v for k, v in batch.items() if k != old}
    return {
        **kept,
        "stage": np.array(stages, dtype=object),
        "error": np.array(errors, dtype=object),
        new: np.array(values, dtype=object),
    }


@dataclass(frozen=True)
class _Loaded:
    """One input after the load stage; sizes are (height, width), (0, 0) when it failed."""

    stage: str = ""
    error: str = ""
    sha256: str = ""
    source_size: tuple[int, int] = (0, 0)
    release_size: tuple[int, int] = (0, 0)
    model_size: tuple[int, int] = (0, 0)
    model_image: np.ndarray = field(default_factory=lambda: _NO_IMAGE)
    release_jpeg: bytes = b""
    blurred: dict[str, int] = field(default_factory=dict)
    """Regions blurred in the release image, by kind ("face", "plate")."""


@functools.cache
def _deidentifier() -> Deidentifier:
    """One detector per worker process (loading the cascades takes a moment)."""
    return Deidentifier()


def _load_one(
    uri: str,
    storage_options: dict[str, Any],
    deidentify: bool,
    release_short_side: int,
    model_long_side: int,
    jpeg_quality: int,
    min_side: int,
    max_pixels: int,
) -> _Loaded:
    try:
        with fsspec.open(uri, "rb", **storage_options) as f:
            data = f.read()
    except Exception as error:  # noqa: BLE001 - any storage error is this input's failure, with its reason
        return _Loaded(stage="read", error=f"{type(error).__name__}: {error}")
    digest = hashlib.sha256(data).hexdigest()
    try:
        source = decode_image(data, max_pixels=max_pixels, min_side=min_side)
    except ImageDecodeError as error:
        return _Loaded(stage="decode", error=str(error), sha256=digest)
    size = source.shape[:2]
    release = fit_short_side(size, release_short_side)
    model = fit_long_side(size, max(max(release), model_long_side))
    image = resize_image(source, model)
    released, blurred = resize_image(image, release), Counter[str]()
    if deidentify:
        released, regions = _deidentifier()(released)
        blurred.update(region.kind for region in regions)
    jpeg = encode_jpeg(released, jpeg_quality)
    return _Loaded("", "", digest, size, release, model, image, jpeg, dict(blurred))


def load_images(batch: Batch, storage_options: dict[str, Any], deidentify: bool, **sizes_and_limits: int) -> Batch:
    """Adds sha256, source_size, release_size, model_size (height, width), model_image,
    release_jpeg, blurred_faces and blurred_plates (regions blurred in the release JPEG when
    `deidentify`); a row whose bytes cannot be read or decoded gets stage "read" or "decode".

    `sizes_and_limits`: release_short_side, model_long_side, jpeg_quality, min_side, max_pixels.
    The model image keeps what the crops need: its longer side is the larger of the release
    image's and `model_long_side` (the model's input side times the crop layers' subdivisions),
    never more than the source's.
    """
    loaded = [
        _Loaded(stage=stage, error=error)
        if stage
        else _load_one(str(uri), storage_options, deidentify, **sizes_and_limits)
        for uri, stage, error in zip(batch["uri"], batch["stage"], batch["error"])
    ]
    n = len(loaded)
    return {
        **batch,
        "stage": np.array([r.stage for r in loaded], dtype=object),
        "error": np.array([r.error for r in loaded], dtype=object),
        "sha256": np.array([r.sha256 for r in loaded], dtype=object),
        **{
            key: np.array([getattr(r, key) for r in loaded], dtype=np.int64).reshape(n, 2)
            for key in ("source_size", "release_size", "model_size")
        },
        "model_image": _objects([r.model_image for r in loaded]),
        "release_jpeg": np.array([r.release_jpeg for r in loaded], dtype=object),
        **{
            f"blurred_{kind}s": np.array([r.blurred.get(kind, 0) for r in loaded], dtype=np.int64)
            for kind in ("face", "plate")
        },
    }


class MaskStage:
    """The model actor: loads the SAM once, then turns the images of each batch into mask proposals.

    Drops `model_image` and adds `annotations`: a JSON list of SA-1B annotation records at the
    model size, before the CPU-side clean-up that `make_records` applies. The images of a batch
    are proposed together (their crops share encoder batches); when that raises, each image is
    tried alone, so only the image at fault gets stage "generate" with the error.
    """

    def __init__(
        self,
        model: str,
        checkpoint: str | None,
        checkpoint_sha256: str,
        settings: dict[str, Any],
        options: dict[str, Any],
        device: str,
    ) -> None:
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        sam = load_sam(model, checkpoint, expected_sha256=checkpoint_sha256 or None).to(device)
        self.generator = MaskGenerator(sam, MaskGeneratorSettings(**settings), InferenceOptions(**options))

    def __call__(self, batch: Batch) -> Batch:
        stages, errors = list(batch["stage"]), list(batch["error"])
        todo = [i for i in range(len(stages)) if not stages[i]]
        found: dict[int, list[dict[str, Any]]] = {}
        try:
            found = dict(zip(todo, self.generator.propose([np.asarray(batch["model_image"][i]) for i in todo])))
        except Exception:  # noqa: BLE001 - retried image by image below to find the one at fault
            for i in todo:
                try:
                    found[i] = self.generator.propose([np.asarray(batch["model_image"][i])])[0]
                except Exception as error:  # noqa: BLE001 - one image's failure must not end the job
                    stages[i], errors[i] = "generate", f"{type(error).__name__}: {error}"
        annotations = [json.dumps(found.get(i, []), separators=(",", ":")) for i in range(len(stages))]
        return _replace_column(batch, "model_image", "annotations", annotations, stages, errors)


def make_records(batch: Batch, settings: dict[str, Any], filters: dict[str, Any]) -> Batch:
    """Replaces `annotations` by `record`: the SA-1B JSON at the release size, after the mask
    generator's clean-up and coverage filter (`settings`: MaskGeneratorSettings fields) and the
    quality `filters` (QualityFilters fields), with the source URI, its sha256 and size, the regions
    blurred, and the input's metadata in the image entry. Adds `masks_removed` (JSON: masks each
    filter removed); an image an image filter drops gets stage "filter" with the reason."""
    generator, quality = MaskGeneratorSettings(**settings), QualityFilters(**filters)
    records, removed, stages, errors = [], [], list(batch["stage"]), list(batch["error"])
    for i in range(len(batch["uri"])):
        record, counts = "", {}
        if not stages[i]:
            try:
                record, counts, stages[i], errors[i] = _record(batch, i, generator, quality)
            except Exception as error:  # noqa: BLE001 - recorded as this image's failure
                stages[i], errors[i] = "record", f"{type(error).__name__}: {error}"
        records.append(record)
        removed.append(json.dumps(counts))
    out = _replace_column(batch, "annotations", "record", records, stages, errors)
    return {**out, "masks_removed": np.array(removed, dtype=object)}


def _record(
    batch: Batch, i: int, generator: MaskGeneratorSettings, quality: QualityFilters
) -> tuple[str, dict[str, int], str, str]:
    """(record JSON, masks removed per filter, stage, error) of row `i`; stage "filter" when an
    image filter drops the image (the record is then "")."""
    release_size = tuple(int(v) for v in batch["release_size"][i])
    model_size = tuple(int(v) for v in batch["model_size"][i])
    finished = finish_records(json.loads(batch["annotations"][i]), generator)
    annotations = rescale_annotations(finished, model_size, release_size)
    kept = apply_filters(annotations, release_size, quality)
    if kept.image_dropped_by:
        return "", kept.masks_removed, "filter", f"{kept.image_dropped_by}: {kept.reason}"
    source_h, source_w = (int(v) for v in batch["source_size"][i])
    extra = {
        "source": str(batch["uri"][i]),
        "source_sha256": str(batch["sha256"][i]),
        "source_width": source_w,
        "source_height": source_h,
        "blurred_faces": int(batch["blurred_faces"][i]),
        "blurred_plates": int(batch["blurred_plates"][i]),
        **json.loads(batch["metadata"][i]),
    }
    entry = image_entry(int(batch["image_id"][i]), release_size, extra)
    record = json.dumps({"image": entry, "annotations": kept.annotations}, separators=(",", ":"))
    return record, kept.masks_removed, "", ""


def write_shard(batch: Batch, output: str, storage_options: dict[str, Any]) -> Batch:
    """Commits the batch as one shard named after its smallest image id, with its curation
    tallies (masks and images removed per filter, faces and plates blurred); returns one
    row (shard, n_images, n_masks, n_failed, bytes) for the driver's progress and summary."""
    images, failures, tallies = [], [], Counter[str]()
    for i in range(len(batch["uri"])):
        image_id = int(batch["image_id"][i])
        tallies.update({MASKS_REMOVED + k: v for k, v in json.loads(batch["masks_removed"][i]).items()})
        if batch["stage"][i] == "filter":
            tallies[IMAGES_REMOVED + str(batch["error"][i]).split(":", 1)[0]] += 1
        if batch["stage"][i]:
            failures.append(
                {
                    "image_id": image_id,
                    "uri": str(batch["uri"][i]),
                    "stage": batch["stage"][i],
                    "error": batch["error"][i],
                }
            )
        else:
            images.append(ReleaseImage(json.loads(batch["record"][i]), bytes(batch["release_jpeg"][i])))
            faces, plates = int(batch["blurred_faces"][i]), int(batch["blurred_plates"][i])
            tallies.update(
                {"blurred_faces": faces, "blurred_plates": plates, "images_blurred": int(faces + plates > 0)}
            )
    writer = ReleaseWriter(output, storage_options)
    commit = writer.commit_shard(int(np.min(batch["image_id"])), images, failures, dict(tallies))
    return {
        "shard": np.array([commit.name], dtype=object),
        "n_images": np.array([commit.shard.n_images if commit.shard else 0]),
        "n_masks": np.array([commit.shard.n_masks if commit.shard else 0]),
        "n_failed": np.array([commit.n_failed]),
        "bytes": np.array([commit.shard.bytes if commit.shard else 0]),
    }
