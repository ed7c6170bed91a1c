"""Near-duplicate removal before the masks: a keep/drop table for every image under an input URI.

    sa-engine dedup --input photos/ --output out/dedup.parquet
    sa-engine amg --input photos/ --output out/release --dedup-table out/dedup.parquet

A perceptual hash of every image is computed in Ray tasks on CPUs; the hashes are then gathered
on the driver (8 bytes each: 88 MB for 11M images), searched exactly for every pair within
`--max-distance` bits (multi-index hashing) and grouped into clusters of near-duplicates, one
image kept per cluster (most pixels, then the smallest URI). The table
(one row per input: keep, reason, matched image, distance) goes to `--output` on any fsspec
filesystem; `pipelines/amg.py --dedup-table` then spends no GPU time on the dropped images.
Like amg.py, it runs on an embedded local Ray directly and joins the cluster under `ray job submit`.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from functools import partial
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa

if __package__ in (None, ""):  # run as a script (`python pipelines/dedup.py`): make the repo importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from curation.dedup import DEFAULT_MAX_DISTANCE, HASH_BYTES, MAX_SEARCH_DISTANCE, decide, signature_from_bytes
from curation.dedup_table import dedup_table_bytes
from curation.images import MAX_PIXELS, MIN_SIDE
from curation.inputs import InputError, InputFailure, plan_inputs, read_input
from pipelines.job import add_ray_flags, run_job
from sam_core.command_line import add_storage_options, command_parser
from sam_core.console import stderr_logger
from sam_core.pace import Pace, duration
from sam_core.storage_retry import StorageAccessError, StorageUnavailableError

BLOCK_ROWS = 64


log = stderr_logger("dedup")


def compute_signatures(batch: dict[str, np.ndarray], storage_options: dict[str, Any], **limits: int) -> dict:
    """Per input uri: its hash (HASH_BYTES uint8, zeros when unreadable), source pixels and the
    error ("" when read and decoded). `limits`: max_pixels, min_side."""
    hashes = np.zeros((len(batch["uri"]), HASH_BYTES), np.uint8)
    pixels = np.zeros(len(batch["uri"]), np.int64)
    errors = []
    signature = partial(signature_from_bytes, **limits)
    for i, uri in enumerate(batch["uri"]):
        error = ""
        try:
            hashes[i], pixels[i] = read_input(str(uri), storage_options, signature)
        except InputFailure as failure:
            error = str(failure)
        errors.append(error)
    return {"uri": batch["uri"], "hash": hashes, "pixels": pixels, "error": np.array(errors, dtype=object)}


def signatures(uris: list[str], storage_options: dict[str, Any], limits: dict[str, int]) -> dict[str, np.ndarray]:
    """Columns uri, hash (Nx8 uint8), pixels, error for every input, sorted by uri, with progress lines."""
    import ray.data

    blocks = [pa.table({"uri": uris[start : start + BLOCK_ROWS]}) for start in range(0, len(uris), BLOCK_ROWS)]
    dataset = ray.data.from_arrow(blocks).map_batches(
        compute_signatures,
        batch_size=BLOCK_ROWS,
        batch_format="numpy",
        fn_kwargs={"storage_options": storage_options, **limits},
    )
    parts, done, unreadable, pace = [], 0, 0, Pace(len(uris), "images")
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        parts.append(batch)
        done += len(batch["uri"])
        unreadable += int(np.count_nonzero(batch["error"] != ""))
        if pace.due(done):
            log(f"hashed {pace.describe(done)} | {unreadable:,} unreadable")
    found = {key: np.concatenate([p[key] for p in parts]) for key in ("uri", "hash", "pixels", "error")}
    order = np.argsort(found["uri"], kind="stable")  # Ray Data may deliver blocks out of order
    by_uri = {key: value[order] for key, value in found.items()}
    if list(by_uri["uri"]) != sorted(uris):
        raise RuntimeError("the hashing stage lost or repeated inputs")  # Ray Data guarantees otherwise
    return by_uri


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser("dedup", __doc__)
    parser.add_argument("--input", required=True, help="images: a folder or glob on any fsspec filesystem, or a "
                        "Parquet/CSV manifest with a `uri` column (the same as amg's --input)")  # fmt: skip
    parser.add_argument("--output", required=True, help="where the keep/drop table (Parquet) goes")
    parser.add_argument("--max-distance", type=int, default=DEFAULT_MAX_DISTANCE,
                        help=f"images whose hashes differ in at most this many of 64 bits are near-duplicates "
                        f"(0..{MAX_SEARCH_DISTANCE})")  # fmt: skip
    parser.add_argument("--min-side", type=int, default=MIN_SIDE, help="smaller images are marked unreadable")
    parser.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                        help="images whose header claims more pixels are marked unreadable, undecoded")  # fmt: skip
    add_storage_options(parser)
    add_ray_flags(parser)
    return parser


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Hash, group and write the keep/drop table of `args.input`; returns the counts by reason."""
    plan = plan_inputs(args.input, args.storage_options)
    log(f"hashing {plan.num_rows} inputs")
    uris = plan.uris().to_pylist()
    found = signatures(uris, args.storage_options, {"max_pixels": args.max_pixels, "min_side": args.min_side})
    log(f"grouping {plan.num_rows:,} hashes: every pair within {args.max_distance} bits")
    start = time.monotonic()
    table = decide(list(found["uri"]), found["hash"], found["pixels"], list(found["error"]), args.max_distance)
    log(f"grouped in {duration(time.monotonic() - start)}")
    settings = {
        "method": "phash",
        "description": f"a 64-bit windowed low-frequency DCT hash, pairs within {args.max_distance} Hamming bits "
        "(exact multi-index search), clusters = connected components, kept: most pixels, then smallest URI",
        "max_distance": args.max_distance,
        "input": args.input,
    }
    with fsspec.open(args.output, "wb", **args.storage_options) as f:
        f.write(dedup_table_bytes(table, settings))
    counts = dict(zip(*np.unique(table["reason"].to_numpy(zero_copy_only=False), return_counts=True)))
    counts = {str(reason): int(n) for reason, n in counts.items()}
    log(f"done: {plan.num_rows} inputs, {counts} -> {args.output}")
    return counts


def checked_args(args: argparse.Namespace) -> argparse.Namespace:
    if not 0 <= args.max_distance <= MAX_SEARCH_DISTANCE:
        raise ValueError(f"--max-distance must lie in 0..{MAX_SEARCH_DISTANCE}, got {args.max_distance}")
    return args


def main(argv: list[str] | None = None) -> int:
    known = (InputError, StorageAccessError, StorageUnavailableError)
    return run_job(build_parser(), argv, checked_args, run, known, log)


if __name__ == "__main__":
    raise SystemExit(main())
