"""The input plan of a job: which images to process, in a fixed order, each with its image id;
and reading one input, with a failure that says at which stage it failed.

Inputs are either a glob / folder on any fsspec filesystem, or a manifest (Parquet or CSV)
with a `uri` column and optional metadata columns (country, lat, lon, ...) that travel into the
image records. Image ids are positions in the URI-sorted plan (plus `first_id`), so the same
input gives the same ids on every run.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar

import fsspec
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from curation.images import ImageDecodeError
from curation.records import STANDARD_IMAGE_FIELDS

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
    """`decode` of the bytes at `uri`; InputFailure("read", ...) for any storage error, and
    InputFailure("decode", ...) when `decode` raises ImageDecodeError."""
    try:
        with fsspec.open(uri, "rb", **storage_options) as f:
            data = f.read()
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
        uris = _glob_images(uri, options)
        metadata = ["{}"] * len(uris)
    if not uris:
        raise InputError(f"no input images found at {uri} (extensions: {', '.join(IMAGE_EXTENSIONS)})")
    order = sorted(range(len(uris)), key=uris.__getitem__)
    return pa.table(
        {
            "image_id": pa.array(range(first_id, first_id + len(uris)), pa.int64()),
            "uri": pa.array([uris[i] for i in order], pa.string()),
            "metadata": pa.array([metadata[i] for i in order], pa.string()),
        },
        schema=PLAN_SCHEMA,
    )


def _glob_images(uri: str, options: dict[str, Any]) -> list[str]:
    fs, path = fsspec.core.url_to_fs(uri, **options)
    if fs.isdir(path):
        pattern = path.rstrip("/") + "/**"
    else:
        pattern = path
    found = fs.glob(pattern, detail=True)
    files = [p for p, info in found.items() if info.get("type") == "file" and p.lower().endswith(IMAGE_EXTENSIONS)]
    return [fs.unstrip_protocol(p) for p in files]


def _read_manifest(uri: str, options: dict[str, Any]) -> tuple[list[str], list[str]]:
    try:
        with fsspec.open(uri, "rb", **options) as f:
            table = pq.read_table(f) if uri.lower().endswith(".parquet") else pa_csv.read_csv(f)
    except (OSError, pa.ArrowException) as error:
        raise InputError(f"cannot read input manifest {uri}: {error}") from error
    if "uri" not in table.column_names:
        raise InputError(f"input manifest {uri} has no 'uri' column (columns: {', '.join(table.column_names)})")
    clashing = sorted(set(table.column_names) & set(STANDARD_IMAGE_FIELDS))
    if clashing:
        raise InputError(f"input manifest {uri}: columns {clashing} are reserved for the image record")
    rows = table.to_pylist()
    uris = [row.pop("uri") for row in rows]
    missing = [i for i, u in enumerate(uris) if not u]
    if missing:
        raise InputError(f"input manifest {uri}: rows {missing[:5]} have no uri")
    duplicated = sorted(u for u, n in Counter(uris).items() if n > 1)
    if duplicated:
        raise InputError(f"input manifest {uri} lists {len(duplicated)} URIs twice, e.g. {duplicated[:3]}")
    metadata = [json.dumps({k: v for k, v in row.items() if v is not None}, sort_keys=True) for row in rows]
    return uris, metadata


def metadata_schema(plan: pa.Table) -> pa.Schema:
    """The columns the plan's metadata gives the images index, by first appearance, each typed
    from the JSON values it holds over the whole plan: all bool -> bool, all integers -> int64,
    numbers -> float64, anything else -> string (JSON text where not a string). So that every
    shard's images index has the same columns, whichever of its images lack a value."""
    kinds: dict[str, set[type]] = {}
    for text in plan["metadata"].to_pylist():
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
