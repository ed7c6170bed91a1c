"""The saved plan of a resumable job: what it was asked to do, fixed at its first run.

`_plan/job.json` holds the job's identity (input, model, generation settings: everything that
decides what the release contains) and `_plan/inputs.parquet` the input plan. A rerun on the
same output prefix reads them back instead of listing the input again, so image ids and
shard contents stay those of the first run; a rerun with a different identity is refused
rather than mixed into the release.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation.release import ReleaseWriter

PLAN_DIR = "_plan"


class PlanMismatchError(ValueError):
    """The output prefix holds another job's plan, or unrelated files."""


def load_or_create_plan(
    writer: ReleaseWriter, identity: dict[str, Any], make_plan: Callable[[], pa.Table]
) -> tuple[pa.Table, bool]:
    """(the plan, whether it was already there). `identity` must be JSON-serialisable."""
    job_path, plan_path = writer.path(PLAN_DIR, "job.json"), writer.path(PLAN_DIR, "inputs.parquet")
    wanted = json.loads(json.dumps(identity, sort_keys=True))
    if writer.fs.exists(job_path) and writer.fs.exists(plan_path):
        saved = json.loads(writer.fs.cat_file(job_path))
        if saved != wanted:
            changed = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
            raise PlanMismatchError(
                f"{writer.root} holds a job started with other settings ({', '.join(changed)} differ); "
                "rerun with the original settings to finish it, or write to a new output"
            )
        with writer.fs.open(plan_path, "rb") as f:
            return pq.read_table(f), True
    try:
        present = writer.fs.ls(writer.root, detail=False)
    except FileNotFoundError:
        present = []
    unrelated = [p for p in present if not p.rstrip("/").rsplit("/", 1)[-1].startswith("_")]  # "_": bookkeeping
    if unrelated:
        raise PlanMismatchError(
            f"output {writer.root} is not empty and holds no job plan (found {unrelated[:3]}); use an empty output"
        )
    plan = make_plan()
    with writer.open_for_write(PLAN_DIR, "inputs.parquet") as f:
        pq.write_table(plan, f)
    writer.write_bytes((PLAN_DIR, "job.json"), json.dumps(wanted, sort_keys=True, indent=2).encode())
    return plan, False
