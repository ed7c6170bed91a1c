"""Writing and reading a release: tar shards of SA-1B records, Parquet indexes, manifest, _SUCCESS.

Layout under one prefix (any fsspec URI), as ../shared/DESIGN.md fixes it:

    shards/sa_000000.tar    sa_<id>.jpg + sa_<id>.json per image (WebDataset-readable)
    index/images/sa_000000.parquet, index/masks/sa_000000.parquet   one file per shard
    embeddings/sa_000000.parquet   one pooled image embedding per released image of the shard
                            (`curation.embeddings`; releases made before them have none)
    failures/sa_000000.parquet   inputs that could not be processed; one file per committed shard,
                            empty when none failed
    manifest.json           shards with n_images, n_masks, bytes, sha256; settings; summary; engine
    README.md               the card under a YAML header naming the data files of each config
                            (what `datasets.load_dataset(<release>)` reads)
    DATASET_CARD.md         the card alone
    _SUCCESS                written last

Folders whose names start with "_" (`_plan/`, `_progress/`) hold the job's bookkeeping, not data.

Shards are independent: `ReleaseWriter.write_shard` can run in many processes at once, and
`finish` only lists what they wrote.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import PurePosixPath
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from curation.embeddings import EMBEDDINGS_DIR
from curation.records import STANDARD_IMAGE_FIELDS, image_key
from curation.retrying_fs import RetryingFileSystem
from sam_core.storage_retry import add_to_tallies, counting_retries
from sam_core.version import engine_commit, engine_version

MANIFEST = "manifest.json"
SUCCESS = "_SUCCESS"
CARD = "DATASET_CARD.md"
HUB_README = "README.md"
MAX_MEMBER_BYTES = 256 << 20  # a single image or JSON larger than this in a shard is refused

MASK_SCHEMA = pa.schema(
    [
        ("image_id", pa.int64()),
        ("ann_id", pa.int64()),
        ("bbox", pa.list_(pa.float64(), 4)),
        ("area", pa.int64()),
        ("predicted_iou", pa.float64()),
        ("stability_score", pa.float64()),
        ("crop_box", pa.list_(pa.float64(), 4)),
        ("point_coords", pa.list_(pa.list_(pa.float64(), 2))),
        ("height", pa.int32()),
        ("width", pa.int32()),
        ("rle_counts", pa.string()),
    ]
)
FAILURE_SCHEMA = pa.schema(
    [("image_id", pa.int64()), ("uri", pa.string()), ("stage", pa.string()), ("error", pa.string())]
)
"""One row per input that could not be released; `image_id` is the id it was planned under (may be null)."""
PROGRESS = "_progress"
"""Folder of shard commit markers (`<shard>.json`), each written after all of its shard's files."""


class ReleaseError(ValueError):
    """A release or shard that cannot be read: missing pieces, bad member names, wrong checksums."""


@dataclass(frozen=True)
class ReleaseImage:
    """One image of a release: its SA-1B record and its encoded (JPEG) bytes."""

    record: dict[str, Any]
    image_bytes: bytes


@dataclass(frozen=True)
class ShardSummary:
    name: str
    n_images: int
    n_masks: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class ShardCommit:
    """What one committed shard accounts for: its tar (None when every input of it failed),
    the ids of every planned input it holds, released or failed, and the curation counts of its
    images (masks each filter removed, regions blurred; see `pipelines/amg_stages.write_shard`)."""

    name: str
    shard: ShardSummary | None
    image_ids: list[int]
    n_failed: int
    tallies: dict[str, int] = field(default_factory=dict)


def shard_name(index: int) -> str:
    return f"sa_{index:06d}"


class _HashingWriter:
    """A write-only file object that passes bytes through while counting and hashing them."""

    def __init__(self, sink: BinaryIO) -> None:
        self.sink, self.digest, self.size = sink, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.sink.write(data)

    def flush(self) -> None:
        self.sink.flush()


class _HashingReader:
    """A read-only file object that passes bytes through while counting and hashing them."""

    def __init__(self, source: BinaryIO) -> None:
        self.source, self.digest, self.size = source, hashlib.sha256(), 0

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.digest.update(data)
        self.size += len(data)
        return data

    def drain(self) -> None:
        """Read (and hash) whatever the tar reader left unread: end-of-archive padding."""
        while self.read(1 << 20):
            pass


class ReleaseWriter:
    """Writes a release under `uri`; `storage_options` go to fsspec (e.g. an S3 endpoint). Every
    storage call goes through `self.fs`, which retries transient faults (`curation.retrying_fs`)."""

    def __init__(self, uri: str, storage_options: dict[str, Any] | None = None) -> None:
        self.fs = RetryingFileSystem(uri, storage_options)
        self.root = self.fs.root.rstrip("/")
        self.fs.makedirs(self.root, exist_ok=True)

    def path(self, *parts: str) -> str:
        """The full path of `parts` under the release root (no protocol)."""
        return "/".join((self.root, *parts))

    def is_finished(self) -> bool:
        return self.fs.exists(self.path(SUCCESS))

    def write_shard(
        self, index: int, images: Sequence[ReleaseImage], metadata_schema: pa.Schema | None = None
    ) -> ShardSummary:
        """Write shard `index`: the tar, then its image and mask index files (see `write_index`)."""
        name = shard_name(index)
        with self.open_for_write("shards", f"{name}.tar") as raw:
            sink = _HashingWriter(raw)
            with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:
                for item in images:
                    key = image_key(item.record["image"]["image_id"])
                    _add_member(tar, f"{key}.jpg", item.image_bytes)
                    _add_member(tar, f"{key}.json", json.dumps(item.record, separators=(",", ":")).encode())
        self.write_index(name, [i.record for i in images], metadata_schema)
        n_masks = sum(len(i.record["annotations"]) for i in images)
        return ShardSummary(name, len(images), n_masks, sink.size, sink.digest.hexdigest())

    def write_index(
        self, shard: str, records: Sequence[dict[str, Any]], metadata_schema: pa.Schema | None = None
    ) -> None:
        """index/images/<shard>.parquet and index/masks/<shard>.parquet for the SA-1B records of one
        shard. `metadata_schema`: the input metadata's columns of the whole release
        (`curation.inputs.metadata_schema`), so that every shard's images index has the same
        columns and types even where a shard's images lack some of them."""
        self._write_table(("index", "images", f"{shard}.parquet"), _image_table(records, shard, metadata_schema))
        self._write_table(("index", "masks", f"{shard}.parquet"), _mask_table(records))

    def write_failures(self, part: str, rows: Iterable[dict[str, Any]]) -> None:
        """failures/<part>.parquet with the columns of FAILURE_SCHEMA (written even when empty)."""
        self._write_table(("failures", f"{part}.parquet"), pa.Table.from_pylist(list(rows), schema=FAILURE_SCHEMA))

    def commit_shard(
        self,
        index: int,
        images: Sequence[ReleaseImage],
        failures: Sequence[dict[str, Any]],
        tallies: dict[str, int] | None = None,
        metadata_schema: pa.Schema | None = None,
        before_marker: Callable[[str], None] | None = None,
        embeddings: pa.Table | None = None,
    ) -> ShardCommit:
        """Shard `index` of a resumable job: its tar and indexes (if any image), its embeddings
        file (`curation.embeddings.embeddings_table` of exactly the ids of `images`, when given and
        there is any image), its failures file (empty if none failed), then its marker in
        _progress/ last; the marker's tallies add the storage retries of writing the shard's files.
        Rewriting the same shard overwrites it. `before_marker` is called with the shard's name
        just before the marker is written; an exception from it leaves the shard uncommitted (a
        job's lease check)."""
        name = shard_name(index)
        if embeddings is not None and images:
            _check_embedding_ids(name, embeddings, [i.record["image"]["image_id"] for i in images])
        with counting_retries() as retries:
            shard = self.write_shard(index, images, metadata_schema) if images else None
            if embeddings is not None and images:
                self._write_table((EMBEDDINGS_DIR, f"{name}.parquet"), embeddings)
            self.write_failures(name, failures)
        ids = [i.record["image"]["image_id"] for i in images] + [f["image_id"] for f in failures]
        commit = ShardCommit(name, shard, sorted(ids), len(failures), add_to_tallies(tallies or {}, retries))
        if before_marker is not None:
            before_marker(name)
        self.write_bytes((PROGRESS, f"{name}.json"), json.dumps(asdict(commit)).encode())
        return commit

    def commits(self) -> list[ShardCommit]:
        """Every committed shard, by name."""
        paths = sorted(self.fs.glob(self.path(PROGRESS, "*.json")))
        found = []
        for raw in self.fs.cat(paths).values() if paths else []:
            data = json.loads(raw)
            shard = ShardSummary(**data["shard"]) if data["shard"] else None
            found.append(ShardCommit(data["name"], shard, data["image_ids"], data["n_failed"], data.get("tallies", {})))
        return sorted(found, key=lambda c: c.name)

    def failure_counts(self) -> dict[str, int]:
        """Rows of the failures table by stage."""
        counts: dict[str, int] = {}
        for path in self.fs.glob(self.path("failures", "*.parquet")):
            with self.fs.open(path, "rb") as f:
                for stage in pq.read_table(f, columns=["stage"])["stage"].to_pylist():
                    counts[stage] = counts.get(stage, 0) + 1
        return dict(sorted(counts.items()))

    def remove_uncommitted(self) -> list[str]:
        """Delete shard files (tars, index files, failures) that no commit marker vouches for:
        the leftovers of a run that died while writing. Returns what was deleted."""
        committed = {c.name for c in self.commits()}
        leftovers = [
            path
            for pattern in (
                "shards/*.tar",
                "index/images/*.parquet",
                "index/masks/*.parquet",
                f"{EMBEDDINGS_DIR}/*.parquet",
                "failures/*.parquet",
            )
            for path in self.fs.glob(self.path(pattern))
            if PurePosixPath(path).stem not in committed
        ]
        for path in leftovers:
            self.fs.rm_file(path)
        return leftovers

    def finish(
        self,
        shards: Sequence[ShardSummary],
        settings: dict[str, Any],
        card: str,
        summary: dict[str, Any] | None = None,
        failures_by_stage: dict[str, int] | None = None,
    ) -> dict[str, Any]:
        """Write manifest.json, README.md and DATASET_CARD.md, then _SUCCESS; returns the manifest.
        `failures_by_stage`: `failure_counts()`, when the caller has it already."""
        manifest = {
            "format": "sa-engine release 1",
            "created_unix": int(time.time()),
            "engine": {"name": "sa-engine", "version": engine_version(), "commit": engine_commit()},
            "n_images": sum(s.n_images for s in shards),
            "n_masks": sum(s.n_masks for s in shards),
            "shards": [asdict(s) for s in sorted(shards, key=lambda s: s.name)],
            "settings": settings,
            "summary": summary or {},
        }
        self.write_bytes((MANIFEST,), json.dumps(manifest, indent=2).encode())
        self.write_bytes((CARD,), card.encode())
        failed = sum((self.failure_counts() if failures_by_stage is None else failures_by_stage).values())
        absent = {"failures"} if failed == 0 else set()
        absent |= set() if self.fs.glob(self.path(EMBEDDINGS_DIR, "*.parquet")) else {"embeddings"}
        self.write_bytes((HUB_README,), (hub_header(absent) + card).encode())
        self.write_bytes((SUCCESS,), b"")
        return manifest

    def write_bytes(self, parts: tuple[str, ...], data: bytes) -> None:
        """Write `data` to the file `parts` under the root, creating folders where the filesystem has them."""
        with self.open_for_write(*parts) as f:
            f.write(data)

    def open_for_write(self, *parts: str) -> BinaryIO:
        """A file written whole when closed (see `RetryingFileSystem.open`)."""
        path = self.path(*parts)
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        return self.fs.open(path, "wb")

    def _write_table(self, parts: tuple[str, ...], table: pa.Table) -> None:
        """`table` as Parquet; an empty one gets no row group at all (readers that size their
        batches by the first row group, as Hugging Face `datasets` does, fail on an empty one)."""
        with self.open_for_write(*parts) as f, pq.ParquetWriter(f, table.schema) as parquet:
            if table.num_rows:
                parquet.write_table(table)


HUB_CONFIGS = (
    ("images", "index/images/*.parquet"),
    ("masks", "index/masks/*.parquet"),
    ("failures", "failures/*.parquet"),
    ("embeddings", f"{EMBEDDINGS_DIR}/*.parquet"),
)
"""The configs `datasets.load_dataset(<release>, name)` offers and the files each reads; `images`,
one row per released image, is the default. The shards are not among them: `datasets` reads one
format per folder, so they load through its `webdataset` builder (docs/reading.md)."""


def hub_header(absent: Collection[str] = ()) -> str:
    """The YAML front matter of the release's README.md: one config per kind of data file, so that
    readers of the Hugging Face layout never take the job's bookkeeping (`_plan/`) for data. The
    configs named in `absent` are left out: `failures` in a release without failures (`datasets`
    refuses an empty one), `embeddings` in a release without embeddings."""
    lines = ["---", "configs:"]
    for i, (name, pattern) in enumerate(HUB_CONFIGS):
        if name in absent:
            continue
        lines += [f"- config_name: {name}", "  data_files:", "  - split: train", f"    path: {pattern}"]
        lines += ["  default: true"] if i == 0 else []
    return "\n".join([*lines, "---", "", ""])


def _check_embedding_ids(shard: str, embeddings: pa.Table, image_ids: list[int]) -> None:
    """ReleaseError unless the embeddings table of `shard` has one row per id of `image_ids`."""
    found = sorted(embeddings["image_id"].to_pylist())
    if found != sorted(image_ids):
        raise ReleaseError(f"shard {shard}: the embeddings' {len(found)} ids are not its {len(image_ids)} images' ids")


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0
    tar.addfile(info, io.BytesIO(data))


def _image_table(records: Sequence[dict[str, Any]], shard: str, metadata_schema: pa.Schema | None) -> pa.Table:
    """One row per record: the standard fields, the extra ones (lists and objects as JSON text),
    then shard and n_masks; the columns of `metadata_schema` cast to their types, added as
    nulls where no record of the shard has them."""
    rows = []
    for record in records:
        image = record["image"]
        row = {field: image[field] for field in STANDARD_IMAGE_FIELDS}
        row.update({k: _scalar(v) for k, v in image.items() if k not in STANDARD_IMAGE_FIELDS})
        row.update(shard=shard, n_masks=len(record["annotations"]))
        rows.append(row)
    if metadata_schema is None:
        return pa.Table.from_pylist(rows)
    for row in rows:  # a metadata value JSON can hold that is not the column's type: its JSON text
        for column in metadata_schema:
            if pa.types.is_string(column.type) and row.get(column.name) is not None:
                row[column.name] = _text(row[column.name])
    table = pa.Table.from_pylist(rows)
    metadata = {f.name for f in metadata_schema}
    columns = {name: table[name] for name in table.column_names}
    ordered = [n for n in table.column_names if n not in metadata and n not in ("shard", "n_masks")]
    for column in metadata_schema:
        present = columns.get(column.name)
        columns[column.name] = present.cast(column.type) if present is not None else pa.nulls(len(rows), column.type)
    names = [*ordered, *metadata_schema.names, "shard", "n_masks"]
    return pa.table([columns[n] for n in names], names=names)


def _scalar(value: Any) -> Any:
    """`value` as an index cell: lists and objects become their JSON text."""
    return json.dumps(value, separators=(",", ":")) if isinstance(value, (list, dict)) else value


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _mask_table(records: Sequence[dict[str, Any]]) -> pa.Table:
    rows = [
        {
            "image_id": record["image"]["image_id"],
            "ann_id": ann["id"],
            "bbox": ann["bbox"],
            "area": ann["area"],
            "predicted_iou": ann.get("predicted_iou"),
            "stability_score": ann.get("stability_score"),
            "crop_box": ann["crop_box"],
            "point_coords": ann["point_coords"],
            "height": ann["segmentation"]["size"][0],
            "width": ann["segmentation"]["size"][1],
            "rle_counts": ann["segmentation"]["counts"],
        }
        for record in records
        for ann in record["annotations"]
    ]
    return pa.Table.from_pylist(rows, schema=MASK_SCHEMA)


def read_manifest(uri: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The manifest of a finished release; ReleaseError if the release is incomplete."""
    fs = RetryingFileSystem(uri, storage_options)
    root = fs.root.rstrip("/")
    if not fs.exists(f"{root}/{SUCCESS}"):
        raise ReleaseError(f"{uri} is not a finished release: {SUCCESS} is missing")
    with fs.open(f"{root}/{MANIFEST}", "rb") as f:
        return json.load(f)


def shard_uris(uri: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """The shard files of a release (from its manifest), or every *.tar in a folder of SA-1B tars."""
    fs = RetryingFileSystem(uri, storage_options)
    root = fs.root.rstrip("/")
    if fs.exists(f"{root}/{MANIFEST}"):
        names = [s["name"] for s in read_manifest(uri, storage_options)["shards"]]
        paths = [f"{root}/shards/{name}.tar" for name in names]
    else:
        paths = sorted(fs.glob(f"{root}/*.tar"))
    if not paths:
        raise ReleaseError(f"{uri} holds no release manifest and no .tar shards")
    return [fs.unstrip_protocol(p) for p in paths]


def iter_shard(
    uri: str, storage_options: dict[str, Any] | None = None, checksum: list[tuple[int, str]] | None = None
) -> Iterator[ReleaseImage]:
    """The images of one tar shard in order: each `<key>.json` record with its `<key>.jpg` bytes.

    Member names are checked (plain file names, no folders, no '..'), sizes are bounded, and
    every record must come with its image; anything else raises ReleaseError naming the shard.
    With a `checksum` list, (bytes, sha256 hex) of the whole file is appended to it once the
    shard has been read to its end, from the same single read. The shard is read in ranges, each
    under the storage retry policy (`RetryingFileSystem.open_ranged`).
    """
    pending: dict[str, dict[str, bytes]] = {}
    fs = RetryingFileSystem(uri, storage_options)
    with fs.open_ranged(fs.root) as source:
        raw = _HashingReader(source)
        yield from _shard_members(uri, raw, pending)
        if checksum is not None:
            raw.drain()
            checksum.append((raw.size, raw.digest.hexdigest()))
    if pending:
        raise ReleaseError(f"shard {uri}: entries without both an image and a record: {sorted(pending)[:5]}")


def _shard_members(uri: str, raw: _HashingReader, pending: dict[str, dict[str, bytes]]) -> Iterator[ReleaseImage]:
    with tarfile.open(fileobj=raw, mode="r|") as tar:
        for member in tar:
            name = _checked_member_name(uri, member)
            if name is None:
                continue
            key, _, extension = name.rpartition(".")
            handle = tar.extractfile(member)
            assert handle is not None  # a regular file, checked above
            pending.setdefault(key, {})[extension.lower()] = handle.read()
            parts = pending[key]
            if "json" in parts and ("jpg" in parts or "jpeg" in parts):
                del pending[key]
                yield ReleaseImage(json.loads(parts["json"]), parts.get("jpg") or parts["jpeg"])


def _checked_member_name(uri: str, member: tarfile.TarInfo) -> str | None:
    """The member's file name, None for a directory entry; ReleaseError for anything unsafe."""
    if member.isdir():
        return None
    path = PurePosixPath(member.name.removeprefix("./"))
    if not member.isfile() or path.is_absolute() or len(path.parts) != 1 or path.name in ("", ".", ".."):
        raise ReleaseError(f"shard {uri}: refusing member {member.name!r} (only plain files at the top level)")
    if member.size > MAX_MEMBER_BYTES:
        raise ReleaseError(f"shard {uri}: member {member.name!r} has {member.size} bytes, over {MAX_MEMBER_BYTES}")
    return path.name


def iter_release(uri: str, storage_options: dict[str, Any] | None = None) -> Iterator[ReleaseImage]:
    """Every image of a release (or of a folder of SA-1B tars), shard by shard."""
    for shard in shard_uris(uri, storage_options):
        yield from iter_shard(shard, storage_options)
