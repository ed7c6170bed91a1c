"""The saved plan of a resumable job: what it was asked to do, fixed at its first run.

`_plan/job.json` holds the job's identity (input, model, generation settings: everything that
decides what the release contains) and `_plan/inputs.parquet` the input plan. A rerun on the
same output prefix reads them back instead of listing the input again, so image ids and
shard contents stay those of the first run; a rerun with a different identity is refused
rather than mixed into the release. The plan file is never read whole: the driver knows it by
its footer (`SavedPlan`), and the rows of given ids are read from the row groups holding them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation.inputs import gather, plan_metadata_schema
from curation.release import ReleaseWriter
from curation.retrying_fs import RetryingFileSystem

PLAN_DIR = "_plan"


class PlanMismatchError(ValueError):
    """The output prefix holds another job's plan, or unrelated files."""


@dataclass(frozen=True)
class SavedPlan:
    """A job's written input plan (PLAN_SCHEMA), known by its footer: `uri` and `storage_options`
    (for fsspec) name the file; its image ids run from `first_id`, one per row;
    `group_starts`: the row each row group starts at, then the number of rows; `metadata`: the
    plan's metadata schema (`curation.inputs.MetadataColumns`). Small: Ray tasks get it whole."""

    uri: str
    storage_options: dict[str, Any]
    first_id: int
    group_starts: tuple[int, ...]
    metadata: pa.Schema

    @classmethod
    def open(cls, uri: str, storage_options: dict[str, Any] | None = None) -> SavedPlan:
        options = storage_options or {}
        with _parquet(uri, options) as parquet:
            sizes = [parquet.metadata.row_group(i).num_rows for i in range(parquet.metadata.num_row_groups)]
            first_id = parquet.read_row_group(0, columns=["image_id"]).column(0)[0].as_py() if sizes else 0
            starts = tuple(int(n) for n in np.cumsum([0, *sizes]))
            return cls(uri, options, first_id, starts, plan_metadata_schema(parquet))

    @property
    def num_rows(self) -> int:
        return self.group_starts[-1]

    def rows(self, ids: np.ndarray, columns: Sequence[str]) -> pa.RecordBatch:
        """image_id and `columns` of the plan's rows of `ids` (any order, at least one), in that
        order; only the row groups that hold them are read."""
        ids = np.asarray(ids, np.int64)
        starts = np.asarray(self.group_starts[:-1], np.int64)
        with _parquet(self.uri, self.storage_options) as parquet:
            found = gather(
                lambda i: parquet.read_row_group(i, columns=["image_id", *columns]).combine_chunks().to_batches()[0],
                starts,
                ids - self.first_id,
            )
        if not np.array_equal(found.column("image_id").to_numpy(), ids):
            raise ValueError(f"{self.uri}: its image ids do not follow its rows; it is not a plan of this job")
        return found

    def read(self, columns: Sequence[str]) -> pa.Table:
        """`columns` of the whole plan, held whole."""
        with _parquet(self.uri, self.storage_options) as parquet:
            return parquet.read(columns=list(columns))


@contextmanager
def _parquet(uri: str, storage_options: dict[str, Any]) -> Iterator[pq.ParquetFile]:
    """The Parquet file at `uri`, read in ranges under the storage retry policy."""
    fs = RetryingFileSystem(uri, storage_options)
    with fs.open_ranged(fs.root) as f, pq.ParquetFile(f) as parquet:
        yield parquet


def load_or_create_plan(
    writer: ReleaseWriter,
    identity: dict[str, Any],
    write_plan: Callable[[BinaryIO], None],
    storage_options: dict[str, Any] | None = None,
) -> tuple[SavedPlan, bool]:
    """(the plan, whether it was already there). `identity` must be JSON-serialisable;
    `write_plan` writes a new plan's Parquet file to the file it is given (`InputPlan.write`);
    `storage_options`: the writer's, for reading the plan back."""
    job_path, plan_path = writer.path(PLAN_DIR, "job.json"), writer.path(PLAN_DIR, "inputs.parquet")
    wanted = json.loads(json.dumps(identity, sort_keys=True))
    plan_uri = writer.fs.unstrip_protocol(plan_path)
    if writer.fs.exists(job_path) and writer.fs.exists(plan_path):
        saved = json.loads(writer.fs.cat_file(job_path))
        if saved != wanted:
            changed = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
            raise PlanMismatchError(
                f"{writer.root} holds a job started with other settings ({', '.join(changed)} differ); "
                "rerun with the original settings to finish it, or write to a new output"
            )
        return SavedPlan.open(plan_uri, storage_options), True
    try:
        present = writer.fs.ls(writer.root, detail=False)
    except FileNotFoundError:
        present = []
    unrelated = [p for p in present if not p.rstrip("/").rsplit("/", 1)[-1].startswith("_")]  # "_": bookkeeping
    if unrelated:
        raise PlanMismatchError(
            f"output {writer.root} is not empty and holds no job plan (found {unrelated[:3]}); use an empty output"
        )
    with writer.open_for_write(PLAN_DIR, "inputs.parquet") as f:
        write_plan(f)
    writer.write_bytes((PLAN_DIR, "job.json"), json.dumps(wanted, sort_keys=True, indent=2).encode())
    return SavedPlan.open(plan_uri, storage_options), False
