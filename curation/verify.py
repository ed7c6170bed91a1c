"""Check a release against its manifest: every shard's size and sha256, its index rows against its
records, every record as SA-1B has it, every planned input in exactly one place, and, in a release
with embeddings (`embeddings/`), one finite unit vector per released image, all of one model.

    sa-engine verify out/release
    sa-engine verify s3://bucket/release --storage-options '{"client_kwargs": {"endpoint_url": "..."}}'

Prints each problem found as one line naming the file and the image or annotation id, and exits
1; or one line, `ok: N shards, N images, N masks, N failures verified`, and exits 0. A release
without `_plan/` (made by a tool, e.g. `sa-engine scenes`) says that its inputs could not be
checked. The release is read once, shard by shard (a tar in one pass that also hashes it, then its
two index files): memory holds one shard's annotations and 12 bytes per image id. Every storage
call is under the storage retry policy (`curation.retrying_fs`; files are read in ranges): a 503
or a reset connection is retried, and a store that keeps failing or refuses stops verify with
exit status 2 and one line, never a problem reported against a file.
"""

from __future__ import annotations

import json
import sys
import tarfile
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, BinaryIO, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curation.embeddings import EMBEDDINGS_DIR, ReleaseEmbeddings, parse_embeddings
from curation.job_plan import PLAN_DIR
from curation.record_check import record_problems
from curation.release import MANIFEST, SUCCESS, ReleaseError, iter_shard
from curation.retrying_fs import RetryingFileSystem
from sam_core.command_line import add_storage_options, command_parser, input_error
from sam_core.console import configure_logging, stderr_line
from sam_core.pace import Pace
from sam_core.storage_retry import StorageAccessError, StorageUnavailableError

PLAN_INPUTS = f"{PLAN_DIR}/inputs.parquet"
SHARD_FIELDS = {"name": str, "n_images": int, "n_masks": int, "bytes": int, "sha256": str}
"""Each manifest shard entry's fields and types."""
UNREADABLE = (ReleaseError, tarfile.TarError, EOFError, OSError, ValueError)
"""What reading a damaged file raises (JSON and Arrow errors are ValueErrors)."""
UNIT_NORM_TOLERANCE = 1e-2
"""How far from 1 the norm of a stored (float16) embedding may be."""
T = TypeVar("T")


@dataclass
class VerifyReport:
    """What `verify_release` found: each problem as one line naming the file and id, the checks it
    could not make, and the counts of what it read."""

    uri: str
    problems: list[str] = field(default_factory=list)
    not_checked: list[str] = field(default_factory=list)
    n_shards: int = 0
    n_images: int = 0
    n_masks: int = 0
    n_failures: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        counts = f"{self.n_shards} shards, {self.n_images} images, {self.n_masks} masks, {self.n_failures} failures"
        return f"ok: {counts} verified" if self.ok else f"{len(self.problems)} problems in {self.uri} ({counts} read)"


class Placements:
    """Where each image id was found: a shard's tar (released) or a failures file. Numpy arrays,
    12 bytes per id, so that the ids of millions of images fit."""

    def __init__(self) -> None:
        self.places: list[str] = []
        self._ids: list[np.ndarray] = []
        self._where: list[np.ndarray] = []

    def add(self, place: str, ids: Sequence[int] | np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        self._ids.append(ids)
        self._where.append(np.full(len(ids), len(self.places), dtype=np.int32))
        self.places.append(place)

    def problems(self, planned: np.ndarray | None) -> tuple[list[str], np.ndarray]:
        """(a line per id found in more than one place, and with `planned` per id found outside
        it; the planned ids found nowhere)."""
        ids = np.concatenate([np.zeros(0, np.int64), *self._ids])
        where = np.concatenate([np.zeros(0, np.int32), *self._where])
        order = np.argsort(ids, kind="stable")
        ids, where = ids[order], where[order]
        unique, first, counts = np.unique(ids, return_index=True, return_counts=True)
        lines = [
            f"image {unique[k]} is in {counts[k]} places: "
            + ", ".join(self.places[w] for w in where[first[k] : first[k] + counts[k]])
            + " (an input is released or failed, once)"
            for k in np.flatnonzero(counts > 1)
        ]
        if planned is None:
            return lines, np.zeros(0, np.int64)
        outside = np.flatnonzero(~np.isin(unique, planned))
        lines += [f"image {unique[k]} in {self.places[where[first[k]]]} is not in {PLAN_INPUTS}" for k in outside]
        return lines, np.setdiff1d(planned, unique)


@dataclass
class _ShardContents:
    """What one tar holds, as its index files must list it."""

    image_ids: list[int] = field(default_factory=list)
    n_masks: dict[int, int] = field(default_factory=dict)
    """Annotations per image id."""
    total_masks: int = 0
    annotations: dict[Any, tuple[Any, Any, int | None]] = field(default_factory=dict)
    """ann id -> (image id, area, hash of the RLE counts)."""


class _Verifier:
    """One pass over a release under `root` of `fs`, adding to `report`."""

    def __init__(self, uri: str, storage_options: dict[str, Any]) -> None:
        self.fs = RetryingFileSystem(uri, storage_options)
        self.root = self.fs.root.rstrip("/")
        self.storage_options = storage_options
        self.report = VerifyReport(uri)
        self.placements = Placements()
        self.failures_without_id: list[str] = []
        self.with_embeddings = False
        self.embedding_info: tuple[str, dict[str, Any]] | None = None
        """The first embeddings file read and its info, which every other file must share."""

    def path(self, relative: str) -> str:
        return f"{self.root}/{relative}"

    def problem(self, line: str) -> None:
        self.report.problems.append(line)

    def unreadable(self, line: str, error: BaseException) -> None:
        """The problem `line` for a file that `error` made unreadable; `error` itself when it is the
        store's, not the file's (still failing after every retry, or refused): verify stops."""
        if isinstance(error, (StorageUnavailableError, StorageAccessError)):
            raise error
        self.problem(line)

    def run(self) -> VerifyReport:
        if not self.fs.exists(self.root):
            raise ReleaseError(f"{self.report.uri}: no such folder or prefix; give the URI of a release")
        if not self.fs.exists(self.path(SUCCESS)):
            self.problem(f"{SUCCESS} is missing: the release is unfinished (rerun the job that made it)")
        manifest = self.manifest()
        if manifest is None:
            return self.report
        entries = self.shard_entries(manifest)
        self.with_embeddings = bool(self.fs.glob(self.path(f"{EMBEDDINGS_DIR}/*.parquet")))
        pace = Pace(len(entries), "shards")
        for done, entry in enumerate(entries, 1):
            self.check_shard(entry)
            if pace.due(done):
                stderr_line(f"verified {pace.describe(done)} | {len(self.report.problems)} problems so far")
        self.check_listing({entry["name"] for entry in entries})
        self.read_failures()
        self.check_placements()
        return self.report

    def manifest(self) -> dict[str, Any] | None:
        manifest = self.open_as(MANIFEST, _read_json)
        if manifest is None:
            return None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("shards"), list):
            self.problem(f"{MANIFEST}: no list of shards")
            return None
        if isinstance(manifest.get("settings"), dict) and "shards_uri" in manifest["settings"]:
            raise ReleaseError(
                f"{self.report.uri} is an index of SA-1B tars (sa-engine sa1b-index), not a release; "
                "verify checks releases made by the job or by sa-engine scenes"
            )
        return manifest

    def shard_entries(self, manifest: dict[str, Any]) -> list[dict[str, Any]]:
        """The manifest's well-formed shard entries, once each; a problem for each other one, and
        for totals that are not the sums of the shards'."""
        entries, seen = [], set()
        for position, entry in enumerate(manifest["shards"]):
            if not isinstance(entry, dict) or any(not isinstance(entry.get(k), t) for k, t in SHARD_FIELDS.items()):
                self.problem(f"{MANIFEST}: shards[{position}] is not a shard entry ({', '.join(SHARD_FIELDS)})")
            elif PurePosixPath(entry["name"]).name != entry["name"] or entry["name"] in ("", ".", ".."):
                self.problem(f"{MANIFEST}: shard name {entry['name']!r} is not a plain file name")
            elif entry["name"] in seen:
                self.problem(f"{MANIFEST}: shard {entry['name']} is listed twice")
            else:
                seen.add(entry["name"])
                entries.append(entry)
        for total in ("n_images", "n_masks"):
            summed = sum(entry[total] for entry in entries)
            if manifest.get(total) != summed:
                self.problem(f"{MANIFEST}: {total} is {manifest.get(total)!r}, its shards sum to {summed}")
        return entries

    def check_shard(self, entry: dict[str, Any]) -> None:
        """The tar (size, sha256, records, counts), its two index files and, in a release with
        embeddings, its embeddings file."""
        name, tar = entry["name"], f"shards/{entry['name']}.tar"
        try:
            size = self.fs.size(self.path(tar))
        except FileNotFoundError:
            self.problem(f"{tar}: missing (listed in {MANIFEST})")
            return
        self.report.n_shards += 1
        if size != entry["bytes"]:
            self.problem(f"{tar}: {size} bytes, {MANIFEST} says {entry['bytes']}")
        contents = self.read_tar(tar, entry)
        if contents is None:
            return
        self.check_images_index(name, tar, contents)
        self.check_masks_index(name, tar, contents)
        if self.with_embeddings:
            self.check_embeddings(name, tar, contents)

    def read_tar(self, tar: str, entry: dict[str, Any]) -> _ShardContents | None:
        """The tar's records, each checked; None (and a problem) if the tar does not read to its end."""
        contents, checksum = _ShardContents(), []
        uri = self.fs.unstrip_protocol(self.path(tar))
        try:
            for item in iter_shard(uri, self.storage_options, checksum):
                self.add_record(tar, item.record, contents)
        except UNREADABLE as error:
            self.unreadable(f"{tar}: unreadable after {len(contents.image_ids)} images: {error}", error)
        self.placements.add(tar, contents.image_ids)
        n_masks = contents.total_masks
        self.report.n_images += len(contents.image_ids)
        self.report.n_masks += n_masks
        if not checksum:
            return None
        if checksum[0][1] != entry["sha256"]:
            self.problem(f"{tar}: sha256 {checksum[0][1]}, {MANIFEST} says {entry['sha256']}")
        if (len(contents.image_ids), n_masks) != (entry["n_images"], entry["n_masks"]):
            self.problem(
                f"{tar}: {len(contents.image_ids)} images and {n_masks} masks, "
                f"{MANIFEST} says {entry['n_images']} and {entry['n_masks']}"
            )
        return contents

    def add_record(self, tar: str, record: Any, contents: _ShardContents) -> None:
        problems = record_problems(record)
        image_id = (
            record["image"].get("image_id")
            if isinstance(record, dict) and isinstance(record.get("image"), dict)
            else None
        )
        self.report.problems += [f"{tar}: image {image_id}: {p}" for p in problems]
        if not isinstance(image_id, int):
            return
        annotations = record.get("annotations")
        annotations = [a for a in annotations if isinstance(a, dict)] if isinstance(annotations, list) else []
        contents.image_ids.append(image_id)
        contents.n_masks[image_id] = len(annotations)
        contents.total_masks += len(annotations)
        for annotation in annotations:
            segmentation = annotation.get("segmentation")
            counts = segmentation.get("counts") if isinstance(segmentation, dict) else None
            if isinstance(annotation.get("id"), int):
                key = hash(counts) if isinstance(counts, str) else None
                contents.annotations[annotation["id"]] = (image_id, annotation.get("area"), key)

    def open_as(self, relative: str, reader: Callable[[BinaryIO], T]) -> T | None:
        """`reader` over the file `relative` (it may keep the file open); None, and a problem, if
        the file is missing or `reader` fails."""
        try:
            f = self.fs.open_ranged(self.path(relative))
        except FileNotFoundError:
            self.problem(f"{relative}: missing")
            return None
        try:
            return reader(f)
        except UNREADABLE as error:
            f.close()
            self.unreadable(f"{relative}: unreadable: {error}", error)
            return None

    def open_index(self, relative: str, columns: Sequence[str]) -> pq.ParquetFile | None:
        """The Parquet file `relative` with `columns`; None (and a problem) if missing, unreadable
        or without them. The caller closes it (`.close(force=True)`, which closes the file too)."""
        parquet = self.open_as(relative, pq.ParquetFile)
        if parquet is None:
            return None
        lacking = [c for c in columns if c not in parquet.schema_arrow.names]
        if lacking:
            self.problem(f"{relative}: lacks the column(s) {', '.join(lacking)}")
            parquet.close(force=True)
            return None
        return parquet

    def check_images_index(self, name: str, tar: str, contents: _ShardContents) -> None:
        index = f"index/images/{name}.parquet"
        parquet = self.open_index(index, ("image_id", "n_masks", "shard"))
        if parquet is None:
            return
        try:
            rows = parquet.read(columns=["image_id", "n_masks", "shard"]).to_pylist()
        except UNREADABLE as error:
            self.unreadable(f"{index}: unreadable: {error}", error)
            return
        finally:
            parquet.close(force=True)
        for shard in sorted({str(row["shard"]) for row in rows} - {name}):
            self.problem(f"{index}: rows name shard {shard}, not {name}")
        listed, held = Counter(row["image_id"] for row in rows), Counter(contents.image_ids)
        for image_id, n in sorted((listed - held).items(), key=str):
            self.problem(f"{index}: image {image_id} has {n} row(s) more than {tar} has images")
        for image_id, n in sorted((held - listed).items(), key=str):
            self.problem(f"{index}: no row for image {image_id} of {tar}" + (f" ({n} missing)" if n > 1 else ""))
        for row in rows:
            expected = contents.n_masks.get(row["image_id"])
            if expected is not None and row["n_masks"] != expected:
                self.problem(f"{index}: image {row['image_id']} has n_masks {row['n_masks']}, its record {expected}")

    def check_masks_index(self, name: str, tar: str, contents: _ShardContents) -> None:
        index = f"index/masks/{name}.parquet"
        columns = ["image_id", "ann_id", "area", "rle_counts"]
        parquet = self.open_index(index, columns)
        if parquet is None:
            return
        expected = dict(contents.annotations)
        try:
            for batch in parquet.iter_batches(columns=columns):
                for row in batch.to_pylist():
                    self.check_mask_row(index, tar, row, expected)
        except UNREADABLE as error:
            self.unreadable(f"{index}: unreadable: {error}", error)
            return
        finally:
            parquet.close(force=True)
        for ann_id, (image_id, _, _) in expected.items():
            self.problem(f"{index}: no row for annotation {ann_id} of image {image_id} in {tar}")

    def check_mask_row(self, index: str, tar: str, row: dict[str, Any], expected: dict[Any, tuple]) -> None:
        """One mask index row against the annotation it names (removed from `expected`)."""
        ann_id = row["ann_id"]
        if ann_id not in expected:
            self.problem(f"{index}: annotation {ann_id} (image {row['image_id']}) is not in {tar} or has two rows")
            return
        image_id, area, counts = expected.pop(ann_id)
        found = (row["image_id"], row["area"], hash(row["rle_counts"]) if row["rle_counts"] is not None else None)
        differ = [k for k, a, b in zip(("image_id", "area", "rle_counts"), found, (image_id, area, counts)) if a != b]
        if differ:
            self.problem(f"{index}: annotation {ann_id}: {', '.join(differ)} not as its record in {tar} has it")

    def check_embeddings(self, name: str, tar: str, contents: _ShardContents) -> None:
        """The shard's embeddings file: one row per image of `tar`, the info every other file has,
        finite unit vectors."""
        relative = f"{EMBEDDINGS_DIR}/{name}.parquet"
        found = self.open_as(relative, lambda f: _read_embeddings(f, relative))
        if found is None:
            return
        listed, held = Counter(found.image_ids.tolist()), Counter(contents.image_ids)
        for image_id, n in sorted((listed - held).items()):
            self.problem(f"{relative}: image {image_id} has {n} row(s) more than {tar} has images")
        for image_id in sorted(held - listed):
            self.problem(f"{relative}: no embedding for image {image_id} of {tar}")
        if self.embedding_info is None:
            self.embedding_info = (relative, found.info)
        elif found.info != self.embedding_info[1]:
            first, info = self.embedding_info
            self.problem(f"{relative}: made with {found.info}, {first} with {info} (one model and dim per release)")
        vectors = found.vectors.astype(np.float32)
        finite = np.isfinite(vectors).all(axis=1)
        norms = np.linalg.norm(np.where(finite[:, None], vectors, 0.0), axis=1)
        for what, bad in (
            ("not finite", ~finite),
            ("not of unit norm", finite & (np.abs(norms - 1) > UNIT_NORM_TOLERANCE)),
        ):
            if bad.any():
                ids = found.image_ids[bad]
                self.problem(f"{relative}: the embeddings of {len(ids)} images are {what} (e.g. image {ids[0]})")

    def check_listing(self, listed: set[str]) -> None:
        """No tar, index or embeddings file of a shard the manifest does not list."""
        folders = (
            ("shards", ".tar"),
            ("index/images", ".parquet"),
            ("index/masks", ".parquet"),
            (EMBEDDINGS_DIR, ".parquet"),
        )
        for folder, suffix in folders:
            for path in sorted(self.fs.glob(self.path(f"{folder}/*{suffix}"))):
                file = PurePosixPath(path).name
                if file.removesuffix(suffix) not in listed:
                    self.problem(f"{folder}/{file}: shard {file.removesuffix(suffix)} is not in {MANIFEST}")

    def read_failures(self) -> None:
        """Every failures file, its ids placed (rows without an id kept for the plan check)."""
        for path in sorted(self.fs.glob(self.path("failures/*.parquet"))):
            relative = f"failures/{PurePosixPath(path).name}"
            parquet = self.open_index(relative, ("image_id", "uri", "stage", "error"))
            if parquet is None:
                continue
            ids = []
            try:
                for batch in parquet.iter_batches(columns=["image_id", "uri"]):
                    self.report.n_failures += batch.num_rows
                    present = pc.is_valid(batch["image_id"])
                    ids.append(pc.filter(batch["image_id"], present).to_numpy())
                    missing = pc.filter(batch["uri"], pc.invert(present)).to_pylist()
                    self.failures_without_id += [f"{relative}: the row of {uri} has no image_id" for uri in missing]
            except UNREADABLE as error:
                self.unreadable(f"{relative}: unreadable: {error}", error)
            finally:
                parquet.close(force=True)
            self.placements.add(relative, np.concatenate([np.zeros(0, np.int64), *ids]))

    def check_placements(self) -> None:
        """No image id in two places; with a plan, every planned id in one and no other id."""
        plan = self.open_plan()
        if plan is None:
            self.report.problems += self.placements.problems(None)[0]
            return
        try:
            planned = plan.read(columns=["image_id"])["image_id"].to_numpy()
            lines, missing = self.placements.problems(planned)
            self.report.problems += lines + self.failures_without_id
            for batch in plan.iter_batches(columns=["image_id", "uri"]) if len(missing) else ():
                for row in batch.filter(pc.is_in(batch["image_id"], value_set=pa.array(missing))).to_pylist():
                    self.problem(
                        f"image {row['image_id']} ({row['uri']}) of {PLAN_INPUTS} is in no readable shard "
                        "and no failures file"
                    )
        except UNREADABLE as error:
            self.unreadable(f"{PLAN_INPUTS}: unreadable: {error}", error)
        finally:
            plan.close(force=True)

    def open_plan(self) -> pq.ParquetFile | None:
        """The job's input plan; None where there is none (noted as not checked) or it is unreadable."""
        if not self.fs.exists(self.path(PLAN_INPUTS)):
            self.report.not_checked.append(
                f"every planned input in exactly one place: there is no {PLAN_INPUTS} (a release made by a tool)"
            )
            return None
        return self.open_index(PLAN_INPUTS, ("image_id", "uri"))


def _read_json(f: BinaryIO) -> Any:
    with f:
        return json.load(f)


def _read_embeddings(f: BinaryIO, relative: str) -> ReleaseEmbeddings:
    with f:
        return parse_embeddings(pq.read_table(f), relative)


def verify_release(uri: str, storage_options: dict[str, Any] | None = None) -> VerifyReport:
    """Check the release at `uri` (any fsspec URI; `storage_options` go to fsspec); ReleaseError
    when there is nothing to check there (no such folder, an SA-1B index)."""
    return _Verifier(uri, storage_options or {}).run()


def main(argv: Sequence[str] | None = None) -> int:
    parser = command_parser("verify", __doc__)
    parser.add_argument("release", help="the release: a local folder or any fsspec URI")
    add_storage_options(parser)
    args = parser.parse_args(argv)
    configure_logging()
    try:
        report = verify_release(args.release, args.storage_options)
    except (ReleaseError, OSError) as error:
        return input_error(str(error))
    for line in report.not_checked:
        print(f"not checked: {line}")
    for line in report.problems:
        print(line)
    print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
