"""The job driver's input plan at scale: a first run's planning and a resume's, wall time and peak memory.

    python -m benchmarks.plan_scale [--rows 11000000] [--shard-size 1100] [--work /tmp]

A synthetic Parquet manifest of `--rows` inputs (uris like s3://bucket/images/042/sa_42123.jpg in a
shuffled order; country, lat and lon columns, some of them null) is written first. Then, each in a
fresh child process so that its peak resident set size (ru_maxrss) is its own:

- first run: what `pipelines/amg.py` does before Ray starts at a job's first run: `plan_inputs`
  over the manifest and the plan written a row group at a time with its metadata schema
  (`load_or_create_plan`), `pending_ids`, and the blocks of ids the dataset starts from (`id_blocks`).
- resume: after commit markers for `rows // shard-size` shards of `--shard-size` ids each are
  written in `_progress/` (as `ReleaseWriter.commit_shard` writes them; the shards' files are not),
  what a rerun does: the saved plan's footer read back, `remove_uncommitted`, `commits`,
  `pending_ids`, `id_blocks`.

"ready" is the child's RSS once its imports are done (torch among them, as in the driver); "peak" is
its peak over the run. Times are wall seconds of the driver's steps, not of writing the inputs.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

if TYPE_CHECKING:
    from curation.job_plan import SavedPlan
    from curation.release import ReleaseWriter

COUNTRIES = ("NZ", "FR", "BR", "IN", "US", "KE", "JP", "DE", "ZA", "AR", "EG", "ID")
IDENTITY = {"input": "manifest", "model": "benchmark"}


def write_manifest(path: Path, rows: int, seed: int) -> None:
    """A Parquet manifest of `rows` inputs in a random order, with country, lat and lon (5% null each)."""
    rng = np.random.default_rng(seed)
    numbers = pa.array(rng.permutation(rows))
    folder = pc.utf8_lpad(pc.cast(pc.divide(numbers, 1000), pa.string()), 3, "0")
    uri = pc.binary_join_element_wise("s3://bucket/images/", folder, "/sa_", pc.cast(numbers, pa.string()), ".jpg", "")
    nulls = rng.random((3, rows)) < 0.05
    country = pa.array(np.array(COUNTRIES)[rng.integers(0, len(COUNTRIES), rows)], mask=nulls[0])
    lat = pa.array(np.round(rng.uniform(-60, 70, rows), 4), mask=nulls[1])
    lon = pa.array(np.round(rng.uniform(-180, 180, rows), 4), mask=nulls[2])
    pq.write_table(pa.table({"uri": uri, "country": country, "lat": lat, "lon": lon}), path)


def write_markers(output: Path, rows: int, shard_size: int) -> int:
    """Commit markers of rows // shard_size shards, each holding shard_size consecutive ids; their count."""
    from curation.release import PROGRESS, ReleaseWriter, ShardCommit, ShardSummary, shard_name

    writer = ReleaseWriter(str(output))
    shards = rows // shard_size
    for index in range(0, shards * shard_size, shard_size):
        name = shard_name(index)
        summary = ShardSummary(name, shard_size - 10, 100 * shard_size, 150_000_000, "0" * 64)
        commit = ShardCommit(name, summary, list(range(index, index + shard_size)), 10, {"filter_iou": 7})
        writer.write_bytes((PROGRESS, f"{name}.json"), json.dumps(asdict(commit)).encode())
    return shards


def first_run(manifest: Path, output: Path) -> tuple[int, int]:
    """The driver's planning at a job's first run; (planned, pending)."""
    from curation.inputs import plan_inputs
    from curation.job_plan import load_or_create_plan
    from curation.release import ReleaseWriter

    writer = ReleaseWriter(str(output))
    plan, _ = load_or_create_plan(writer, IDENTITY, lambda f: plan_inputs(str(manifest)).write(f))
    return plan.num_rows, _pending_blocks(plan, writer)


def resume(manifest: Path, output: Path) -> tuple[int, int]:
    """The driver's planning when a job resumes; (planned, pending)."""
    from curation.job_plan import load_or_create_plan
    from curation.release import ReleaseWriter

    def must_not_list(f: BinaryIO) -> None:
        raise RuntimeError(f"the resume listed {manifest} again instead of reading the saved plan")

    writer = ReleaseWriter(str(output))
    plan, _ = load_or_create_plan(writer, IDENTITY, must_not_list)
    writer.remove_uncommitted()
    return plan.num_rows, _pending_blocks(plan, writer)


def _pending_blocks(plan: SavedPlan, writer: ReleaseWriter) -> int:
    """The pending ids of `plan` and the dataset's first blocks made of them; how many ids."""
    from pipelines.amg import NO_DROPS, id_blocks, pending_ids

    blocks = id_blocks(plan, pending_ids(plan, writer.commits()), NO_DROPS)
    return sum(block.num_rows for block in blocks)


STEPS = {"first run": first_run, "resume": resume}


def _measure(step: str, manifest: Path, output: Path, queue: mp.Queue) -> None:
    import curation.inputs  # noqa: F401  the imports (torch among them) before "ready"
    import pipelines.amg  # noqa: F401

    ready = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    start = time.perf_counter()
    planned, pending = STEPS[step](manifest, output)
    seconds = time.perf_counter() - start
    queue.put((planned, pending, seconds, ready, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10))


def _in_child(context: mp.context.SpawnContext, target, *args) -> object:
    """target(*args, queue) in a fresh process; what it put on the queue."""
    queue = context.Queue()
    child = context.Process(target=target, args=(*args, queue))
    child.start()
    result = queue.get()  # before join: a child with a queued item does not exit until it is read
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"{target.__name__}{args[:1]} failed (exit code {child.exitcode}); see above")
    return result


def _prepare(rows: int, shard_size: int, manifest: Path, output: Path, step: str, queue: mp.Queue) -> None:
    start = time.perf_counter()
    if step == "manifest":
        write_manifest(manifest, rows, seed=0)
        queue.put((rows, time.perf_counter() - start))
    else:
        queue.put((write_markers(output, rows, shard_size), time.perf_counter() - start))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=11_000_000, help="inputs in the manifest")
    parser.add_argument("--shard-size", type=int, default=1100, help="ids per committed shard at the resume")
    parser.add_argument("--work", default=None, help="folder for the manifest and the output (a temporary one)")
    args = parser.parse_args()
    context = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(dir=args.work, prefix="plan_scale_") as work:
        manifest, output = Path(work) / "inputs.parquet", Path(work) / "release"
        _, seconds = _in_child(context, _prepare, args.rows, args.shard_size, manifest, output, "manifest")
        print(
            f"manifest of {args.rows:,} inputs written in {seconds:.1f} s ({manifest.stat().st_size / 2**20:.0f} MiB)"
        )
        print(
            f"{'run':<10} {'inputs':>11} {'shards':>7} {'pending':>11} {'wall s':>7} {'ready MiB':>10} {'peak MiB':>9}"
        )
        shards = 0
        for step in STEPS:
            if step == "resume":
                shards, seconds = _in_child(context, _prepare, args.rows, args.shard_size, manifest, output, "markers")
                print(f"({shards:,} commit markers written in {seconds:.1f} s)")
            planned, pending, seconds, ready, peak = _in_child(context, _measure, step, manifest, output)
            print(
                f"{step:<10} {planned:>11,} {shards:>7,} {pending:>11,} {seconds:>7.1f} {ready:>10.0f} {peak:>9.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
