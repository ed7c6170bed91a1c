"""The stages of the automatic-mask job, as callables for Ray Data's `map_batches`: column
plumbing around `curation` (release images, records, filters) and `sam_core` (the generator).

Batches are dicts of numpy arrays (Ray Data's "numpy" format; read_plan_rows's are Arrow tables).
Every row that enters a stage leaves it: a row that fails carries `stage` and `error` from then on
and passes the later stages untouched, so it reaches the writer and the failures table, never the
void.

    read_plan_rows (CPU tasks)  plan ids -> their uri and metadata, read from the saved plan file
    load_images   (CPU tasks)   uri -> source sha256 and size, the image at the model size, and
                                the release JPEG (`curation.release_images.prepare_image`)
    MaskStage     (actor pool)  images at the model size -> SA-1B mask proposals (JSON) and
                                each image's pooled embedding
    make_records  (CPU tasks)   proposals finished (clean-up, coverage) at the release size,
                                quality filters applied -> the SA-1B record (JSON) and tallies
    write_shard   (CPU tasks)   a batch of records (and embeddings) -> one committed shard of
                                the release

Rows that the dedup table drops enter with stage "dedup" already set, so they are never read.
Each stage takes its settings as the typed, frozen objects the job built once.
"""

from __future__ import annotations

import json
from collections import Counter
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import torch

from curation.embeddings import embedding_info, embeddings_table
from curation.filters import QualityFilters, apply_filters
from curation.inputs import InputFailure, read_input
from curation.job_plan import SavedPlan
from curation.output_lease import confirm_lease
from curation.records import image_entry, with_annotation_ids
from curation.release import ReleaseImage, ReleaseWriter
from curation.release_images import (
    BLURRED_KINDS,
    PreparedImage,
    ReleaseImagePolicy,
    blur_tallies,
    prepare_image,
    provenance_fields,
)
from pipelines.batch_progress import report_batch
from sam_core.amg import MaskGenerator, MaskGeneratorSettings
from sam_core.amg.cleanup import finish_records
from sam_core.checkpoints import load_sam
from sam_core.inference import InferenceOptions
from sam_core.modeling.registry import model_config
from sam_core.pooled_embedding import POOLING, embedding_dim
from sam_core.storage_retry import add_to_tallies, counting_retries

if TYPE_CHECKING:
    from ray.actor import ActorHandle

Batch = dict[str, np.ndarray]
_NO_IMAGE = np.zeros((1, 1, 3), np.uint8)
"""Stands in for the pixels of a row that failed (Ray's tensor columns need an array in every row)."""
_SIZES = ("source_size", "release_size")


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


def read_plan_rows(block: pa.Table, plan: SavedPlan) -> pa.Table:
    """Adds uri and metadata to a block of ids of `plan` (image_id, stage, error), read from the
    plan file (under the storage retry policy): only the row groups that hold them."""
    rows = plan.rows(block["image_id"].to_numpy(), ["uri", "metadata"])
    return block.append_column("uri", rows.column("uri")).append_column("metadata", rows.column("metadata"))


def load_images(
    batch: Batch, storage_options: dict[str, Any], policy: ReleaseImagePolicy, model_long_side: int
) -> Batch:
    """Adds sha256, source_size, release_size (height, width), model_image, release_jpeg,
    blurred_faces, blurred_plates and blurred_regions (JSON text) (see `prepare_image`;
    `model_long_side`: the longest side the crop layout needs) and storage_retries (JSON: the
    retries its read took, by kind); a row whose bytes cannot be read or decoded gets stage
    "read" or "decode"."""
    prepare = partial(prepare_image, policy=policy, model_long_side=model_long_side)
    stages, errors = list(batch["stage"]), list(batch["error"])
    prepared: list[PreparedImage | None] = []
    retried: list[str] = []
    for i, uri in enumerate(batch["uri"]):
        image = None
        with counting_retries() as retries:
            if not stages[i]:
                try:
                    image = read_input(str(uri), storage_options, prepare)
                except InputFailure as failure:
                    stages[i], errors[i] = failure.stage, failure.reason
        prepared.append(image)
        retried.append(json.dumps(retries))
    n = len(prepared)
    return {
        **batch,
        "stage": np.array(stages, dtype=object),
        "error": np.array(errors, dtype=object),
        "sha256": np.array([p.sha256 if p else "" for p in prepared], dtype=object),
        **{
            key: np.array([getattr(p, key) if p else (0, 0) for p in prepared], dtype=np.int64).reshape(n, 2)
            for key in _SIZES
        },
        "model_image": _objects([p.model_image if p else _NO_IMAGE for p in prepared]),
        "release_jpeg": np.array([p.release_jpeg if p else b"" for p in prepared], dtype=object),
        **{
            f"blurred_{kind}s": np.array([p.blurred[kind] if p else 0 for p in prepared], dtype=np.int64)
            for kind in BLURRED_KINDS
        },
        "blurred_regions": np.array([json.dumps(p.blurred_regions if p else []) for p in prepared], dtype=object),
        "storage_retries": np.array(retried, dtype=object),
    }


class MaskStage:
    """The model actor: loads the SAM once, then turns the images of each batch into mask proposals.

    Drops `model_image` and adds `annotations`: a JSON list of SA-1B annotation records at the
    model size, before the CPU-side clean-up that `make_records` applies, and `embedding`: BxD
    float16, each image's pooled embedding (`sam_core.pooled_embedding`; zeros for a row that
    failed or was not proposed), from the same encoder pass as its masks. The images of a batch
    are proposed together (their crops share encoder batches); when that raises, each image is
    tried alone, so only the image at fault gets stage "generate" with the error. Each finished
    batch's counts go to `tally` (a `pipelines.batch_progress.BatchTally` actor; None: nowhere).
    """

    def __init__(
        self,
        model: str,
        checkpoint: str | None,
        checkpoint_sha256: str,
        settings: MaskGeneratorSettings,
        options: InferenceOptions,
        device: str,
        tally: ActorHandle | None = None,
    ) -> None:
        self.tally = tally
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        sam = load_sam(model, checkpoint, expected_sha256=checkpoint_sha256 or None).to(device)
        self.generator = MaskGenerator(sam, settings, options)
        self.embedding_dim = embedding_dim(sam.config)

    def __call__(self, batch: Batch) -> Batch:
        stages, errors = list(batch["stage"]), list(batch["error"])
        todo = [i for i in range(len(stages)) if not stages[i]]
        found: dict[int, list[dict[str, Any]]] = {}
        embeddings = np.zeros((len(stages), self.embedding_dim), dtype=np.float16)
        try:
            records, pooled = self.generator.propose_with_embeddings(
                [np.asarray(batch["model_image"][i]) for i in todo]
            )
            found, embeddings[todo] = dict(zip(todo, records)), pooled
        except Exception:  # noqa: BLE001 - retried image by image below to find the one at fault
            for i in todo:
                try:
                    records, pooled = self.generator.propose_with_embeddings([np.asarray(batch["model_image"][i])])
                    found[i], embeddings[i] = records[0], pooled[0]
                except Exception as error:  # noqa: BLE001 - one image's failure must not end the job
                    stages[i], errors[i] = "generate", f"{type(error).__name__}: {error}"
        annotations = [json.dumps(found.get(i, []), separators=(",", ":")) for i in range(len(stages))]
        report_batch(self.tally, len(found), len(stages) - len(found), sum(map(len, found.values())))
        out = _replace_column(batch, "model_image", "annotations", annotations, stages, errors)
        return {**out, "embedding": embeddings}


def release_embedding_info(model: str, checkpoint_sha256: str) -> dict[str, Any]:
    """The info of the embeddings `MaskStage` makes with `model` (a preset name) and the checkpoint
    of `checkpoint_sha256` ("" for random weights), as `write_shard` records it."""
    return embedding_info(model, checkpoint_sha256, POOLING, embedding_dim(model_config(model)))


def make_records(batch: Batch, settings: MaskGeneratorSettings, filters: QualityFilters) -> Batch:
    """Replaces `annotations` by `record`: the SA-1B JSON at the release size, after the mask
    generator's clean-up and coverage filter and the quality `filters`, with release-wide
    annotation ids (`curation.records.with_annotation_ids`) and the provenance and the input's
    metadata in the image entry. Adds `tallies` (JSON: masks and images each filter
    removed, regions blurred); an image an image filter drops gets stage "filter" with the reason."""
    records, tallies, stages, errors = [], [], list(batch["stage"]), list(batch["error"])
    for i in range(len(batch["uri"])):
        record, counts = "", {}
        if not stages[i]:
            try:
                record, counts, stages[i], errors[i] = _record(batch, i, settings, filters)
            except Exception as error:  # noqa: BLE001 - recorded as this image's failure
                stages[i], errors[i] = "record", f"{type(error).__name__}: {error}"
        records.append(record)
        tallies.append(json.dumps(counts))
    out = _replace_column(batch, "annotations", "record", records, stages, errors)
    return {**out, "tallies": np.array(tallies, dtype=object)}


def _record(
    batch: Batch, i: int, settings: MaskGeneratorSettings, filters: QualityFilters
) -> tuple[str, dict[str, int], str, str]:
    """(record JSON, tallies, stage, error) of row `i`; stage "filter" when an image filter drops
    the image (the record is then "")."""
    release_size = tuple(int(v) for v in batch["release_size"][i])
    annotations = finish_records(json.loads(batch["annotations"][i]), settings, size=release_size)
    kept = apply_filters(annotations, release_size, filters)
    if kept.image_dropped_by:
        return "", kept.tallies(), "filter", f"{kept.image_dropped_by}: {kept.reason}"
    blurred = {kind: int(batch[f"blurred_{kind}s"][i]) for kind in BLURRED_KINDS}
    source_size = tuple(int(v) for v in batch["source_size"][i])
    extra = {
        **provenance_fields(
            str(batch["uri"][i]), str(batch["sha256"][i]), source_size, json.loads(batch["blurred_regions"][i])
        ),
        **json.loads(batch["metadata"][i]),
    }
    image_id = int(batch["image_id"][i])
    entry = image_entry(image_id, release_size, extra)
    annotations = with_annotation_ids(image_id, kept.annotations)
    record = json.dumps({"image": entry, "annotations": annotations}, separators=(",", ":"))
    return record, {**kept.tallies(), **blur_tallies(blurred)}, "", ""


def write_shard(
    batch: Batch,
    output: str,
    storage_options: dict[str, Any],
    metadata: pa.Schema,
    lease_token: str | None = None,
    embedding_info: dict[str, Any] | None = None,
) -> Batch:
    """Commits the batch as one shard named after its smallest image id, with its summed curation
    tallies (its inputs' storage retries among them) and the release's `metadata` columns in its
    images index; returns one row (shard, n_images, n_masks, n_failed, bytes) for the driver's
    progress and summary. With the job's `lease_token` the shard commits only while the output's
    lease still carries it (`curation.output_lease.confirm_lease`, LeaseLostError otherwise).
    With `embedding_info` (`release_embedding_info`) the released images' `embedding` column is
    committed with the shard as its embeddings file (`curation.embeddings`)."""
    images, failures, tallies = [], [], Counter[str]()
    for i in range(len(batch["uri"])):
        tallies.update(add_to_tallies(json.loads(batch["tallies"][i]), json.loads(batch["storage_retries"][i])))
        if batch["stage"][i]:
            failures.append(
                {
                    "image_id": int(batch["image_id"][i]),
                    "uri": str(batch["uri"][i]),
                    "stage": batch["stage"][i],
                    "error": batch["error"][i],
                }
            )
        else:
            images.append(ReleaseImage(json.loads(batch["record"][i]), bytes(batch["release_jpeg"][i])))
    writer = ReleaseWriter(output, storage_options)
    fence = partial(confirm_lease, output, storage_options, lease_token) if lease_token else None
    embeddings = None
    if embedding_info is not None:
        released = np.array([not stage for stage in batch["stage"]], dtype=bool)
        vectors = np.asarray(batch["embedding"])[released]
        embeddings = embeddings_table(np.asarray(batch["image_id"])[released], vectors, embedding_info)
    commit = writer.commit_shard(
        int(np.min(batch["image_id"])), images, failures, dict(tallies), metadata, fence, embeddings
    )
    return {
        "shard": np.array([commit.name], dtype=object),
        "n_images": np.array([commit.shard.n_images if commit.shard else 0]),
        "n_masks": np.array([commit.shard.n_masks if commit.shard else 0]),
        "n_failed": np.array([commit.n_failed]),
        "bytes": np.array([commit.shard.bytes if commit.shard else 0]),
    }
