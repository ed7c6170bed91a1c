"""The input plan of a job: which images to process, in a fixed order, each with its image id;
and reading one input, with a failure that says at which stage it failed.

Inputs are either a glob / folder on any fsspec filesystem, or a manifest (Parquet or CSV)
with a `uri` column and optional metadata columns (country, lat, lon, ...) that travel into the
image records. Image ids are positions in the URI-sorted plan (plus `first_id`), so the same
input gives the same ids on every run.
"""

from __future__ import annotations

import glob
import itertools
import json
import math
import os
from collections.abc import Callable, Iterator
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any, BinaryIO, TypeVar

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from curation.images import ImageDecodeError
from curation.records import STANDARD_IMAGE_FIELDS
from sam_core.storage_retry import StorageUnavailableError, read_bytes

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
MANIFEST_EXTENSIONS = (".parquet", ".csv")
PLAN_SCHEMA = pa.schema([("image_id", pa.int64()), ("uri", pa.string()), ("metadata", pa.string())])
"""One row per input; `metadata` is a JSON object (possibly empty) of the manifest's other columns."""


class InputError(ValueError):
    """An input specification that names no images or cannot be read as a manifest."""


class InputFailure(Exception):
    """One input that cannot be used: `stage` is "read" (storage) or "decode" (its bytes)."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage, self.reason = stage, reason


Decoded = TypeVar("Decoded")


def read_input(uri: str, storage_options: dict[str, Any], decode: Callable[[bytes], Decoded]) -> Decoded:
    """`decode` of the bytes at `uri`, read whole under the storage retry policy;
    InputFailure("read", ...) for a permanent storage error (missing, access denied: the job
    cannot tell a bad object from bad credentials one object at a time), and
    InputFailure("decode", ...) when `decode` raises ImageDecodeError. Transient errors on every
    try raise StorageUnavailableError: the input is not done, and a rerun will read it."""
    try:
        data = read_bytes(uri, storage_options)
    except StorageUnavailableError:
        raise
    except Exception as error:
        raise InputFailure("read", f"{type(error).__name__}: {error}") from error
    try:
        return decode(data)
    except ImageDecodeError as error:
        raise InputFailure("decode", str(error)) from error


def plan_inputs(uri: str, storage_options: dict[str, Any] | None = None, first_id: int = 0) -> pa.Table:
    """The plan (PLAN_SCHEMA) for a folder, a glob, or a manifest file at `uri`."""
    options = storage_options or {}
    if uri.lower().endswith(MANIFEST_EXTENSIONS):
        uris, metadata = _read_manifest(uri, options)
    else:
        uris = pa.chunked_array([_glob_images(uri, options)], pa.string())
        metadata = pa.chunked_array([pa.repeat("{}", len(uris))], pa.string())
    if not len(uris):
        raise InputError(f"no input images found at {uri} (extensions: {', '.join(IMAGE_EXTENSIONS)})")
    order = pc.sort_indices(uris)  # UTF-8 byte order is code point order, as Python's sorted()
    uris = uris.take(order)  # one column at a time: the plan is never held twice
    duplicated = pc.unique(uris[1:].filter(pc.equal(uris[1:], uris[:-1]))).to_pylist()
    if duplicated:
        raise InputError(f"input manifest {uri} lists {len(duplicated)} URIs twice, e.g. {duplicated[:3]}")
    ids = np.arange(first_id, first_id + len(uris), dtype=np.int64)
    return pa.table({"image_id": ids, "uri": uris, "metadata": metadata.take(order)}, schema=PLAN_SCHEMA)


def _glob_images(uri: str, options: dict[str, Any]) -> list[str]:
    """The image files in the folder `uri` (recursively) or matching the glob `uri`, skipping names
    that start with "." below it. A symbolic link to a file counts as a file, and so does a
    dangling one (reading it fails, as a failure of that input); a link to a folder is followed
    unless its target lies in a folder listed already (so a link cycle ends)."""
    fs, path = fsspec.core.url_to_fs(uri, **options)
    base = path.rstrip("/")
    if fs.isdir(path):
        pending = [(base, base + "/**")]
    else:
        pending = [(_fixed_folder(path), path)]
    images: list[str] = []
    listed: list[str] = []  # real paths of the folders listed, once a link needs them
    while pending:
        folder, pattern = pending.pop()
        for found, info in fs.glob(pattern, detail=True).items():
            if any(part.startswith(".") for part in found[len(folder) :].split("/")):
                continue
            if info.get("islink") and fs.isdir(found):  # only local filesystems have links
                listed = listed or [os.path.realpath(base)]
                target = os.path.realpath(found)
                if not any(os.path.commonpath([target, done]) == done for done in listed):
                    listed.append(target)
                    pending.append((found, found + "/**"))
            elif (info.get("type") == "file" or info.get("islink")) and found.lower().endswith(IMAGE_EXTENSIONS):
                images.append(fs.unstrip_protocol(found))
    return images


def _fixed_folder(pattern: str) -> str:
    """The folder a glob pattern lists under: its leading parts without wildcards, less the last."""
    parts = pattern.split("/")
    fixed = list(itertools.takewhile(lambda part: not glob.has_magic(part), parts))
    return "/".join(fixed[: min(len(fixed), len(parts) - 1)])


MANIFEST_BATCH_ROWS = 1 << 18
"""Manifest rows turned into plan rows at a time: the manifest's other columns are never held whole."""


def _read_manifest(uri: str, options: dict[str, Any]) -> tuple[pa.ChunkedArray, pa.ChunkedArray]:
    """(the manifest's uris, each row's other non-null columns as a JSON object with sorted keys)."""
    uris, metadata, missing, seen = [], [], [], 0
    try:
        with fsspec.open(uri, "rb", **options) as f:
            for batch in _manifest_batches(f, uri):
                found = pc.cast(batch.column("uri"), pa.string())
                empty = pc.indices_nonzero(pc.fill_null(pc.equal(found, ""), True))
                missing.extend(seen + i for i in empty[: 5 - len(missing)].to_pylist())
                seen += batch.num_rows
                uris.append(found)
                metadata.append(_metadata_json(batch.drop_columns(["uri"])))
    except (OSError, pa.ArrowException) as error:
        raise InputError(f"cannot read input manifest {uri}: {error}") from error
    if missing:
        raise InputError(
            f"input manifest {uri}: rows {missing} (counted from 0, header excluded) have no uri; "
            "give each row a uri or remove it"
        )
    return pa.chunked_array(uris, pa.string()), pa.chunked_array(metadata, pa.string())


def _manifest_batches(f: BinaryIO, uri: str) -> Iterator[pa.RecordBatch]:
    """The manifest's rows in batches, after checking its columns."""
    if uri.lower().endswith(".parquet"):
        parquet = pq.ParquetFile(f)
        schema, batches = parquet.schema_arrow, parquet.iter_batches(MANIFEST_BATCH_ROWS)
    else:
        table = pa_csv.read_csv(f)  # whole: CSV column types are inferred over every row
        schema, batches = table.schema, table.to_batches(MANIFEST_BATCH_ROWS)
    if "uri" not in schema.names:
        raise InputError(f"input manifest {uri} has no 'uri' column (columns: {', '.join(schema.names)})")
    clashing = sorted(set(schema.names) & set(STANDARD_IMAGE_FIELDS))
    if clashing:
        raise InputError(f"input manifest {uri}: columns {clashing} are reserved for the image record")
    return iter(batches)


def _metadata_json(columns: pa.RecordBatch) -> pa.Array:
    """Each row of `columns` as the JSON object of its non-null values, keys sorted: the text
    `json.dumps(row, sort_keys=True)` gives, built a column at a time."""
    members = [  # ', "key": value' where the value is not null
        pc.binary_join_element_wise(", " + encode_basestring_ascii(name) + ": ", _json_values(columns.column(name)), "")
        for name in sorted(columns.schema.names)
    ]
    if not members:
        return pa.repeat("{}", len(columns))
    joined = pc.binary_join_element_wise(*members, "", null_handling="replace")
    return pc.binary_join_element_wise("{", pc.utf8_slice_codeunits(joined, 2), "}", "")


def _json_values(values: pa.Array) -> pa.Array:
    """Each value as JSON text, as `json.dumps` writes it; null where null."""
    kind = values.type
    if pa.types.is_dictionary(kind):
        return _json_values(values.dictionary).take(values.indices)
    if pa.types.is_integer(kind):
        return pc.cast(values, pa.string())
    if pa.types.is_boolean(kind):
        return pc.if_else(values, "true", "false")
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        encode: Callable[[Any], str] = encode_basestring_ascii
    elif pa.types.is_floating(kind):
        encode = _float_json
    else:
        encode = _nested_json
    return pa.array([None if v is None else encode(v) for v in values.to_pylist()], pa.string())


def _float_json(value: float) -> str:
    return float.__repr__(value) if math.isfinite(value) else json.dumps(value)


def _nested_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def metadata_schema(plan: pa.Table) -> pa.Schema:
    """The columns the plan's metadata gives the images index, by first appearance, each typed
    from the JSON values it holds over the whole plan: all bool -> bool, all integers -> int64,
    numbers -> float64, anything else -> string (JSON text where not a string). So that every
    shard's images index has the same columns, whichever of its images lack a value."""
    kinds: dict[str, set[type]] = {}
    for chunk in plan["metadata"].chunks:
        for start in range(0, len(chunk), MANIFEST_BATCH_ROWS):
            for text in chunk[start : start + MANIFEST_BATCH_ROWS].to_pylist():
                for key, value in json.loads(text).items():
                    kinds.setdefault(key, set()).add(type(value))
    return pa.schema([(key, _column_type(found)) for key, found in kinds.items()])


def _column_type(found: set[type]) -> pa.DataType:
    if found == {bool}:
        return pa.bool_()
    if found == {int}:
        return pa.int64()
    if found and found <= {int, float}:
        return pa.float64()
    return pa.string()
