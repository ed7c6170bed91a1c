"""The input plan of a job: which images to process, in a fixed order, each with its image id;
and reading one input, with a failure that says at which stage it failed.

Inputs are either a glob / folder on any fsspec filesystem, or a manifest (Parquet or CSV)
with a `uri` column and optional metadata columns (country, lat, lon, ...) that travel into the
image records. Image ids are positions in the URI-sorted plan (plus `first_id`), so the same
input gives the same ids on every run. Only the URIs' sort order is made over the whole input:
the plan is written (`InputPlan.write`) a row group at a time, each taken from the listing.
"""

from __future__ import annotations

import glob
import itertools
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator
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
PLAN_ROW_GROUP = 65_536
"""Inputs per row group of a written plan: the unit in which it is written, and read back by id."""
PLAN_PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "use_dictionary": False,
    "column_encoding": {"image_id": "DELTA_BINARY_PACKED", "uri": "DELTA_BYTE_ARRAY", "metadata": "DELTA_BYTE_ARRAY"},
}
"""How a plan is written: sorted URIs share their prefixes, so the file is less than half the
default's size (the driver holds it while it is written) and reads back faster."""
METADATA_SCHEMA_KEY = b"sa_engine.metadata_schema"
"""The key of a written plan's metadata schema in its Parquet key-value metadata (`schema_text`)."""


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


def plan_inputs(uri: str, storage_options: dict[str, Any] | None = None, first_id: int = 0) -> InputPlan:
    """The plan of a folder, a glob, or a manifest file at `uri`: listed (or read) and checked,
    in URI order, not yet written (`InputPlan.write`)."""
    options = storage_options or {}
    if uri.lower().endswith(MANIFEST_EXTENSIONS):
        batches = _read_manifest(uri, options)
    else:
        batches = [pa.record_batch({"uri": pa.array(_glob_images(uri, options), pa.string())})]
    plan = InputPlan(batches, first_id)
    if not plan.num_rows:
        raise InputError(f"no input images found at {uri} (extensions: {', '.join(IMAGE_EXTENSIONS)})")
    count, examples = plan.duplicates()
    if count:
        raise InputError(f"input manifest {uri} lists {count} URIs twice, e.g. {examples}")
    return plan


class InputPlan:
    """The inputs as listed: `batches` (a `uri` column, then a manifest's other columns, Arrow as
    read) in the listing's order, and the URI order over them, which gives each input its image
    id (`first_id` + its place in that order). Only the sort indices are made: the plan's rows in
    URI order are taken from the listing a group of rows at a time, never held whole."""

    def __init__(self, batches: list[pa.RecordBatch], first_id: int) -> None:
        self.batches, self.first_id = batches, first_id
        self.starts = np.cumsum([0] + [len(b) for b in batches[:-1]], dtype=np.int64)
        uris = pa.chunked_array([b.column("uri") for b in batches], pa.string())
        # UTF-8 byte order is code point order, as Python's sorted(); the smallest integers that hold
        # the positions (uint32 below 4G inputs), as this is held while the plan is written
        self.order = pc.sort_indices(uris).to_numpy().astype(np.min_scalar_type(len(uris)))

    @property
    def num_rows(self) -> int:
        return len(self.order)

    def groups(self, rows: int = PLAN_ROW_GROUP, columns: list[str] | None = None) -> Iterator[pa.RecordBatch]:
        """The listing's rows (`columns` of them; all by default) in URI order, `rows` at a time."""
        batches = self.batches if columns is None else [b.select(columns) for b in self.batches]
        for start in range(0, self.num_rows, rows):
            yield gather(batches.__getitem__, self.starts, self.order[start : start + rows])

    def uris(self) -> pa.ChunkedArray:
        """Every URI, in URI order."""
        return pa.chunked_array([group.column(0) for group in self.groups(columns=["uri"])], pa.string())

    def duplicates(self) -> tuple[int, list[str]]:
        """(how many URIs are listed more than once, up to three of them), found in URI order."""
        count, examples, last, last_found = 0, [], None, None
        for group in self.groups(columns=["uri"]):
            uris = group.column(0)
            if last is not None:
                uris = pa.concat_arrays([pa.array([last], pa.string()), uris])
            found = pc.unique(uris[1:].filter(pc.equal(uris[1:], uris[:-1])))
            again = int(len(found) > 0 and found[0].as_py() == last_found)  # counted in the group before
            count += len(found) - again
            examples += found[again : again + 3 - len(examples)].to_pylist()
            last, last_found = uris[-1].as_py(), found[-1].as_py() if len(found) else last_found
        return count, examples

    def write(self, sink: BinaryIO, rows: int = PLAN_ROW_GROUP) -> None:
        """The plan (PLAN_SCHEMA) as Parquet to `sink`, a row group of `rows` inputs at a time, each
        group's metadata JSON made as it is written; the metadata schema (`MetadataColumns`) goes
        into the file's key-value metadata (`plan_metadata_schema` reads it back)."""
        columns = MetadataColumns()
        with pq.ParquetWriter(sink, PLAN_SCHEMA, **PLAN_PARQUET_OPTIONS) as parquet:
            for first, group in zip(itertools.count(self.first_id, rows), self.groups(rows)):
                others = group.drop_columns(["uri"])
                columns.add_columns(others)
                ids = np.arange(first, first + len(group), dtype=np.int64)
                plan = pa.table([ids, group["uri"], _metadata_json(others)], schema=PLAN_SCHEMA)
                parquet.write_table(plan, row_group_size=rows)
            parquet.add_key_value_metadata({METADATA_SCHEMA_KEY: schema_text(columns.schema())})


def gather(batch: Callable[[int], pa.RecordBatch], starts: np.ndarray, rows: np.ndarray) -> pa.RecordBatch:
    """`rows` (positions over batches laid end to end; `starts`: where each batch begins) in the
    order given, taken batch by batch: `batch(i)` is called once for each batch `rows` fall in.
    (Arrow's take over a chunked string column first joins all its chunks into one copy.)"""
    which = np.searchsorted(starts, rows, side="right") - 1
    by_batch = np.argsort(which, kind="stable")
    cuts = np.searchsorted(which[by_batch], np.arange(len(starts) + 1))
    pieces = [
        batch(i).take(pa.array(rows[by_batch[a:b]] - starts[i]))
        for i, (a, b) in enumerate(itertools.pairwise(cuts))
        if b > a
    ]
    return pa.concat_batches(pieces).take(pa.array(np.argsort(by_batch)))


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
"""Rows of a Parquet manifest read at a time, and of a plan's metadata JSON parsed at a time."""


def _read_manifest(uri: str, options: dict[str, Any]) -> list[pa.RecordBatch]:
    """The manifest's rows in batches: `uri` (as strings) first, then its other columns as read."""
    batches, missing, seen = [], [], 0
    try:
        with fsspec.open(uri, "rb", **options) as f:
            for batch in _manifest_batches(f, uri):
                found = pc.cast(batch.column("uri"), pa.string())
                empty = pc.indices_nonzero(pc.fill_null(pc.equal(found, ""), True))
                missing.extend(seen + i for i in empty[: 5 - len(missing)].to_pylist())
                seen += batch.num_rows
                others = batch.drop_columns(["uri"])
                batches.append(pa.RecordBatch.from_arrays([found, *others.columns], ["uri", *others.schema.names]))
    except (OSError, pa.ArrowException) as error:
        raise InputError(f"cannot read input manifest {uri}: {error}") from error
    if missing:
        raise InputError(
            f"input manifest {uri}: rows {missing} (counted from 0, header excluded) have no uri; "
            "give each row a uri or remove it"
        )
    return batches


def _manifest_batches(f: BinaryIO, uri: str) -> Iterator[pa.RecordBatch]:
    """The manifest's rows in batches, after checking its columns."""
    if uri.lower().endswith(".parquet"):
        parquet = pq.ParquetFile(f, pre_buffer=False)  # pre-buffering holds whole row groups' bytes
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


class MetadataColumns:
    """The columns the plan's metadata gives the images index, gathered a group of plan rows at a
    time: by first appearance (a row's keys in name order), each typed from the JSON values it holds
    over the whole plan: all bool -> bool, all integers -> int64, numbers -> float64, anything else
    -> string (JSON text where not a string). So that every shard's images index has the same
    columns, whichever of its images lack a value."""

    def __init__(self) -> None:
        self.kinds: dict[str, set[type]] = {}

    def add_columns(self, columns: pa.RecordBatch) -> None:
        """Manifest rows (its columns other than `uri`), typed by what their values are as JSON."""
        first = {name: pc.index(pc.is_valid(columns.column(name)), True).as_py() for name in columns.schema.names}
        for name in sorted((n for n, row in first.items() if row >= 0), key=lambda n: (first[n], n)):
            self.kinds.setdefault(name, set()).add(_json_type(columns.schema.field(name).type))

    def add_json(self, texts: Iterable[str]) -> None:
        """Plan rows' metadata, as JSON objects."""
        for text in texts:
            for key, value in json.loads(text).items():
                self.kinds.setdefault(key, set()).add(type(value))

    def schema(self) -> pa.Schema:
        return pa.schema([(key, _column_type(found)) for key, found in self.kinds.items()])


def _json_type(kind: pa.DataType) -> type:
    """The Python type `json.loads` gives the JSON text of a value of Arrow type `kind` (as
    `_json_values` writes it); str for anything that becomes a string column."""
    if pa.types.is_dictionary(kind):
        return _json_type(kind.value_type)
    if pa.types.is_boolean(kind):
        return bool
    if pa.types.is_integer(kind):
        return int
    return float if pa.types.is_floating(kind) else str


def schema_text(schema: pa.Schema) -> str:
    """A metadata schema (`MetadataColumns.schema`) as JSON: [[name, Arrow type name], ...]."""
    return json.dumps([[field.name, str(field.type)] for field in schema])


def plan_metadata_schema(plan: pq.ParquetFile) -> pa.Schema:
    """The metadata schema of a written plan: stored with it by `InputPlan.write`, or (a plan
    written before it was) gathered from its metadata JSON a batch of rows at a time."""
    stored = (plan.metadata.metadata or {}).get(METADATA_SCHEMA_KEY)
    if stored is not None:
        return pa.schema([(name, pa.type_for_alias(kind)) for name, kind in json.loads(stored)])
    columns = MetadataColumns()
    for batch in plan.iter_batches(MANIFEST_BATCH_ROWS, columns=["metadata"]):
        columns.add_json(batch.column(0).to_pylist())
    return columns.schema()


def _column_type(found: set[type]) -> pa.DataType:
    if found == {bool}:
        return pa.bool_()
    if found == {int}:
        return pa.int64()
    if found and found <= {int, float}:
        return pa.float64()
    return pa.string()
