"""Automatic masks for every image under an input URI, released as an SA-1B-style dataset.

    sa-engine amg --input photos/ --output out/release
    ray job submit --working-dir . -- python pipelines/amg.py --config cluster_job.yaml

Run directly, it starts an embedded local Ray and uses the shipped `sae_tiny` model; under
`ray job submit` it joins the job's cluster. The plan, as Ray Data stages:

    pending ids (a block per plan row group) -> read_plan_rows (CPU) -> blocks of PLAN_BLOCK_ROWS
        -> load_images (CPU) -> blocks of one model batch -> MaskStage (actor pool, GPU)
        -> make_records (CPU) -> write_shard (CPU)

Exactly once: the input is listed once and saved with the job's settings under
`<output>/_plan/`; every shard commits a marker in `<output>/_progress/` after its files. A
rerun on the same output (after a crash, a stopped job, a killed driver) deletes files no
marker vouches for, processes only inputs no committed shard holds, then writes the manifest,
the card and `_SUCCESS`. A finished release is left as it is. The driver never holds the plan's
rows: the plan is written a row group at a time, and the driver keeps only ids; the Ray tasks
read the uris and metadata of their ids from the plan file.
"""

from __future__ import annotations

import itertools
import json
import os
import shlex
import sys
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if __package__ in (None, ""):  # run as a script (`python pipelines/amg.py`): make the repo importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from curation.card import curation_summary, release_card
from curation.dedup_table import NO_DROPS, DedupTable, DedupTableError, dropped_by_any
from curation.detector_file_error import DetectorFileError
from curation.inputs import InputError, InputPlan, plan_inputs
from curation.job_plan import PlanMismatchError, SavedPlan, load_or_create_plan
from curation.output_lease import LeaseLostError, OutputHeldError, OutputLease
from curation.release import ReleaseWriter, ShardCommit, read_manifest
from curation.release_images import deidentifier
from pipelines.amg_config import JobConfig, build_parser, config_from_args, with_gpus
from pipelines.amg_stages import (
    MaskStage,
    load_images,
    make_records,
    read_plan_rows,
    release_embedding_info,
    write_shard,
)
from pipelines.batch_progress import BatchProgress
from pipelines.job import run_job
from sam_core.checkpoints import CheckpointError, checkpoint_or_shipped, fetch_checkpoint, file_sha256
from sam_core.console import stderr_logger
from sam_core.pace import Pace
from sam_core.storage_retry import (
    StorageAccessError,
    StorageUnavailableError,
    process_retries,
    retry_summary,
    storage_options_for,
    with_retries,
)

if TYPE_CHECKING:
    import ray.data
    from ray.actor import ActorHandle

PLAN_BLOCK_ROWS = 16
"""Rows per block of load_images: small blocks let it spread over many tasks."""
LOADER_CPUS = 0.5
"""Reading waits on storage much of the time; and a resource shape unlike the model actor's keeps
Ray Data from fusing decoding into the actor, where it would hold up the GPU."""
TASK_RETRIES = {"max_retries": -1}
"""Ray Data's default for its tasks, which the job relies on: a task lost with its node (or its
worker process) runs again elsewhere, and a lost block is made again by rerunning the task that
made it. Rerunning a write is safe: the same shard, overwritten, its marker last."""
ACTOR_RESTARTS = {"max_restarts": -1, "max_task_retries": -1}
"""Ray Data's default for actor pools, which the job relies on: a model actor lost with its node
starts again on another, its unfinished batches are retried there, and the blocks it made that
were lost with the node are made again (Ray reconstructs an actor task's output only when the
actor restarts and its tasks retry)."""


def dedup_copy(number: int) -> tuple[str, str]:
    """Where the release keeps a copy of the `number`th (from 1) keep/drop table it was made with."""
    return ("dedup", f"keep_drop_{number}.parquet")


class JobError(RuntimeError):
    """The job cannot finish the release; the message says what to do."""


log = stderr_logger("amg")


def resolve_checkpoint(config: JobConfig) -> tuple[str | None, str]:
    """(the checkpoint the actors load, its sha256; "" for random weights)."""
    source = checkpoint_or_shipped(config.model, config.checkpoint, log)
    return source, file_sha256(fetch_checkpoint(source)) if source is not None else ""


def list_inputs(config: JobConfig) -> InputPlan:
    """The input plan of `config`, its listing (or manifest read) made again from the start after
    a transient storage fault; a refusal for good is an InputError naming the input."""
    options = storage_options_for(config.input, config.storage_options)
    try:
        return with_retries(lambda: plan_inputs(config.input, options, config.first_id), config.input)
    except (PermissionError, FileNotFoundError) as error:
        raise InputError(f"cannot list the input {config.input}: {type(error).__name__}: {error}") from error


def pending_ids(plan: SavedPlan, commits: list[ShardCommit]) -> np.ndarray:
    """The image ids of `plan` (increasing) that no committed shard holds; JobError if a committed
    id is held twice."""
    held = np.sort(np.concatenate([np.empty(0, np.int64), *(np.asarray(c.image_ids, np.int64) for c in commits)]))
    twice = np.unique(held[1:][held[1:] == held[:-1]])
    if twice.size:
        raise JobError(f"image ids {twice[:5].tolist()} are in more than one committed shard; the release is corrupt")
    todo = np.ones(plan.num_rows, bool)
    positions = held - plan.first_id
    todo[positions[(positions >= 0) & (positions < plan.num_rows)]] = False
    return np.flatnonzero(todo) + plan.first_id


def id_blocks(plan: SavedPlan, pending: np.ndarray, dropped: pa.Table) -> list[pa.Table]:
    """The first blocks of the job's dataset: the `pending` ids (increasing) of `plan`, a block per
    row group of the plan file that holds any, with stage "dedup" and the error for the ids in
    `dropped` (image_id, error: `DedupTable.dropped`, by id), "" for the others."""
    drop_ids = dropped["image_id"].to_numpy()
    errors = pa.concat_arrays([*dropped["error"].chunks, pa.array([""])])  # the last: no error
    cuts = np.searchsorted(pending, plan.first_id + np.asarray(plan.group_starts))
    blocks = []
    for a, b in itertools.pairwise(cuts):
        if b > a:
            ids = pending[a:b]
            at = np.searchsorted(drop_ids, ids)
            hit = at < len(drop_ids)
            hit[hit] = drop_ids[at[hit]] == ids[hit]
            stage = pc.if_else(pa.array(hit), "dedup", "")
            blocks.append(
                pa.table({"image_id": ids, "stage": stage, "error": errors.take(np.where(hit, at, len(drop_ids)))})
            )
    return blocks


def build_dataset(
    plan: SavedPlan,
    blocks: list[pa.Table],
    config: JobConfig,
    checkpoint: str | None,
    checkpoint_sha256: str,
    tally: ActorHandle | None = None,
    *,
    lease_token: str,
) -> ray.data.Dataset:
    """The job's dataset over `blocks` of ids of `plan` (`id_blocks`): the inputs with stage
    "dedup" are never read. `tally`: the `BatchTally` actor the model stage reports each finished
    batch to."""
    import ray.data

    settings = config.generator_settings()
    return (
        ray.data.from_arrow(blocks)
        .map_batches(read_plan_rows, batch_size=None, batch_format="pyarrow", fn_kwargs={"plan": plan}, **TASK_RETRIES)
        # Streaming (no all-to-all), and never fused with the stage after it: load_images gets
        # small blocks, spread over many tasks, rather than a row group's worth in one task.
        .repartition(target_num_rows_per_block=PLAN_BLOCK_ROWS)
        .map_batches(
            load_images,
            batch_size=PLAN_BLOCK_ROWS,
            batch_format="numpy",
            num_cpus=LOADER_CPUS,
            **TASK_RETRIES,
            fn_kwargs={
                "storage_options": config.storage_options,
                "policy": config.release_policy(),
                "model_long_side": config.model_long_side(),
            },
        )
        # Streaming (no all-to-all): blocks of one model batch each, so that every actor call's
        # output moves on at once instead of waiting for a whole input block of images.
        .repartition(target_num_rows_per_block=config.batch_size)
        .map_batches(
            MaskStage,
            batch_size=config.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=config.actors),
            num_gpus=config.gpus_per_actor,
            num_cpus=config.cpus_per_actor,
            **ACTOR_RESTARTS,
            fn_constructor_kwargs={
                "model": config.model,
                "checkpoint": checkpoint,
                "checkpoint_sha256": checkpoint_sha256,
                "settings": settings,
                "options": config.inference_options(),
                "device": config.device,
                "tally": tally,
            },
        )
        .map_batches(
            make_records,
            batch_size=config.batch_size,
            batch_format="numpy",
            fn_kwargs={"settings": settings, "filters": config.quality_filters()},
            **TASK_RETRIES,
        )
        .map_batches(
            write_shard,
            batch_size=config.shard_size,
            batch_format="numpy",
            **TASK_RETRIES,
            fn_kwargs={
                "output": config.output,
                "storage_options": config.storage_options,
                "metadata": plan.metadata,
                "lease_token": lease_token,
                "embedding_info": release_embedding_info(config.model, checkpoint_sha256),
            },
        )
    )


class Progress:
    """One line per committed shard: counts, rate and time left."""

    def __init__(self, total: int) -> None:
        self.pace = Pace(total, "inputs")
        self.shards = self.images = self.masks = self.failed = 0

    def add(self, row: dict[str, Any]) -> None:
        self.shards += 1
        self.images += int(row["n_images"])
        self.masks += int(row["n_masks"])
        self.failed += int(row["n_failed"])
        log(
            f"shard {row['shard']} committed ({int(row['n_images'])} images, {int(row['n_failed'])} failed) | "
            f"{self.pace.describe(self.images + self.failed)} | "
            f"{self.images:,} images, {self.masks:,} masks, {self.failed:,} failed in committed shards"
        )

    @property
    def seconds(self) -> float:
        return self.pace.seconds


def run(config: JobConfig) -> dict[str, Any]:
    """Run (or resume, or confirm) the release of `config`; returns its manifest. From planning to
    `_SUCCESS` the job holds the output's lease (`curation.output_lease`): OutputHeldError if
    another job holds it."""
    writer = ReleaseWriter(config.output, config.storage_options)
    if writer.is_finished():
        log(f"{config.output} is already a finished release; nothing to do")
        log_next_steps(config)
        return read_manifest(config.output, config.storage_options)
    with OutputLease(config.output, config.storage_options, submission_id(), log) as lease:
        return make_release(writer, config, lease)


def submission_id() -> str | None:
    """The id `ray job submit` gave this driver (what `ray job stop` takes); None when run directly.
    Ray passes it to the driver only in the job config it puts in the environment."""
    job_config = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}"))
    return job_config.get("metadata", {}).get("job_submission_id")


def make_release(writer: ReleaseWriter, config: JobConfig, lease: OutputLease) -> dict[str, Any]:
    """Plan (or read back the plan), run what is pending and finish, while `lease` holds the output."""
    checkpoint, checkpoint_sha256 = resolve_checkpoint(config)
    if config.blur_faces_and_plates:
        deidentifier()  # checks the detectors' model files here, not in the first worker's first image
    dedups = [DedupTable.read(uri, config.storage_options) for uri in config.dedup_table]
    plan, resumed = load_or_create_plan(
        writer,
        config.identity(checkpoint_sha256, [dedup.sha256 for dedup in dedups]),
        lambda f: list_inputs(config).write(f),
        config.storage_options,
    )
    dropped = dropped_by_any(dedups, plan.read(["image_id", "uri"])) if dedups else NO_DROPS
    for number, dedup in enumerate(dedups, 1):
        writer.write_bytes(dedup_copy(number), dedup.data)
    removed = writer.remove_uncommitted()
    pending = pending_ids(plan, writer.commits())
    log(
        f"{'resuming' if resumed else 'starting'}: {plan.num_rows} inputs planned, {pending.size} to do"
        + (f"; the keep/drop tables drop {dropped.num_rows} as near-duplicates" if dedups else "")
        + (f"; removed {len(removed)} files of unfinished shards" if removed else "")
    )
    progress = Progress(pending.size)
    if pending.size:
        with BatchProgress(pending.size, log) as live:
            blocks = id_blocks(plan, pending, dropped)
            dataset = build_dataset(
                plan, blocks, config, checkpoint, checkpoint_sha256, live.tally, lease_token=lease.token
            )
            for row in dataset.iter_rows():
                progress.add(row)
    lease.confirm("the manifest and _SUCCESS")
    return finish(writer, config, plan, checkpoint, checkpoint_sha256, progress, dedups)


def finish(
    writer: ReleaseWriter,
    config: JobConfig,
    plan: SavedPlan,
    checkpoint: str | None,
    sha256: str,
    progress: Progress,
    dedups: list[DedupTable],
) -> dict[str, Any]:
    commits = writer.commits()
    missing = pending_ids(plan, commits)
    if missing.size:
        example = plan.rows(missing[:1], ["uri"]).column("uri")[0]
        raise JobError(f"{missing.size} planned inputs are in no committed shard (e.g. {example}); rerun the job")
    shards = [c.shard for c in commits if c.shard is not None]
    n_images, n_failed = sum(s.n_images for s in shards), sum(c.n_failed for c in commits)
    n_masks = sum(s.n_masks for s in shards)
    tallies = sum((Counter(c.tallies) for c in commits), Counter())
    summary = {
        "n_inputs": plan.num_rows,
        "n_images": n_images,
        "n_masks": n_masks,
        "n_failed": n_failed,
        "masks_per_image": round(n_masks / n_images, 2) if n_images else 0.0,
        "curation": curation_summary(
            config.quality_filters().active(),
            config.blur_faces_and_plates,
            tallies,
            [
                {**dedup.summary(), "table": uri, "copy": "/".join(dedup_copy(number))}
                for number, (uri, dedup) in enumerate(zip(config.dedup_table, dedups, strict=True), 1)
            ],
        ),
        "last_run_images": progress.images + progress.failed,
        "last_run_seconds": round(progress.seconds, 1),
        "last_run_images_per_second": round((progress.images + progress.failed) / max(progress.seconds, 1e-9), 3),
        "storage": retry_summary(tallies, process_retries()),
    }
    settings = {
        **config.identity(sha256, [dedup.sha256 for dedup in dedups]),
        "checkpoint": checkpoint,
        "embeddings": release_embedding_info(config.model, sha256),
        "preset": config.preset,
        "engine": "sa-engine pipelines/amg.py",
    }
    failures = writer.failure_counts()
    manifest = writer.finish(shards, settings, release_card(summary, settings, failures), summary, failures)
    log(
        f"done: {n_images} images released, {n_failed} not released, {n_masks} masks "
        f"({summary['masks_per_image']} per image); this run {summary['last_run_images']} inputs in "
        f"{summary['last_run_seconds']} s ({summary['last_run_images_per_second']} images/s) -> {config.output}"
    )
    log_next_steps(config)
    return manifest


def log_next_steps(config: JobConfig) -> None:
    """The commands to run next on the release of `config`, one line each."""
    release = config.output.rstrip("/")
    # The report is written to a local folder; a keep/drop table may go to any fsspec URI.
    report = release + "_report" if "://" not in release else release.rsplit("/", 1)[-1] + "_report"
    options = " --storage-options '<as for this job>'" if config.storage_options else ""
    log(
        f"next: sa-engine report --release {shlex.quote(release)} --output {shlex.quote(report)}{options}"
        "  (the HTML report: masks, geography, the paper's tables and figures)"
    )
    if not config.dedup_table:
        table = shlex.quote(release + "_dedup.parquet")
        log(
            f"next: sa-engine dedup --input {shlex.quote(config.input)} --output {table}{options}"
            f"  (near-duplicates among the inputs; a new release made with --dedup-table {table} leaves them out)"
        )


def run_on_cluster(config: JobConfig) -> dict[str, Any]:
    """`run` with the model actors' GPUs decided by the connected cluster's."""
    import ray

    return run(with_gpus(config, ray.cluster_resources().get("GPU", 0.0)))


def main(argv: list[str] | None = None) -> int:
    known = (InputError, PlanMismatchError, CheckpointError, DedupTableError, DetectorFileError, JobError)
    known += (OutputHeldError, LeaseLostError, StorageAccessError, StorageUnavailableError)
    return run_job(build_parser(__doc__), argv, config_from_args, run_on_cluster, known, log)


if __name__ == "__main__":
    raise SystemExit(main())
