"""Semantic near-duplicates of a release: a keep/drop table from its image embeddings (SemDeDup).

    sa-engine semdedup --release out/release --output out/semdedup.parquet [--threshold 0.996]
    sa-engine amg --input photos/ --output out/release2 --dedup-table out/dedup.parquet \\
        --dedup-table out/semdedup.parquet

The images of the release are named by their source (each record's `source`), so the table fits a
new job over the same inputs: `pipelines/amg.py --dedup-table` (given this table, the perceptual-hash
table, or both) never reads the inputs it drops. A release made before embeddings existed: compute
them with `sa-engine embed --release ... --output EMB` and pass `--embeddings EMB`.

Ray does the parts that grow with the release; the driver holds per image only its id, source,
pixels and cluster ids, plus the k-means sample and the pairs found (curation/semdedup.py):

    embeddings/<shard>.parquet + index/images/<shard>.parquet -> load_shard (a task per shard)
    -> a seeded sample gathered on the driver -> spherical k-means (faiss) on the driver
    -> assign_clusters (CPU tasks: each image's `probes` nearest centroids)
    -> each image sent to the groups of clusters it probes -> search_group (a task per group:
       exact inner products within each cluster) -> the pairs, on the driver
    -> connected components, one image kept per group (most pixels, then the smallest uri)
    -> the cosines of the dropped images to their kept ones (their vectors gathered) -> the table

Like pipelines/dedup.py, it runs on an embedded local Ray directly and joins the cluster under
`ray job submit`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

if __package__ in (None, ""):  # run as a script (`python pipelines/semdedup.py`): make the repo importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from curation.dedup_table import dedup_table_bytes
from curation.embeddings import EmbeddingsError, embedding_shards, read_embeddings_file
from curation.retrying_fs import RetryingFileSystem
from curation.semdedup import (
    DEFAULT_PROBES,
    SemDedupError,
    assign,
    decide,
    inner_products,
    measured_threshold,
    n_clusters,
    pairs_above,
    settings,
    spherical_kmeans,
    training_rows,
)
from pipelines.job import add_ray_flags, run_job
from sam_core.command_line import add_storage_options, command_parser
from sam_core.console import stderr_logger
from sam_core.pace import duration
from sam_core.storage_retry import StorageAccessError, StorageUnavailableError

if TYPE_CHECKING:
    import ray.data

GROUPS_PER_CPU = 2
"""Pair-search tasks per CPU of the cluster (at most one per k-means cluster)."""
IMAGE_COLUMNS = ["image_id", "source", "source_width", "source_height"]
"""What a shard's images index gives each image: its id, its uri (the input it was made from) and pixels."""

log = stderr_logger("semdedup")


def load_shard(batch: dict[str, np.ndarray], release: str, storage_options: dict[str, Any], info: str) -> dict:
    """One row per embeddings file URI in `batch["embeddings"]` -> one row per image of its shard:
    image_id, uri (its source), pixels (source width * height), embedding (D float16). EmbeddingsError
    when the file's info differs from `info` (JSON) or its ids are not its shard's in the images index."""
    parts = []
    for uri in batch["embeddings"]:
        found = read_embeddings_file(str(uri), storage_options)
        if json.dumps(found.info, sort_keys=True) != info:
            raise EmbeddingsError(f"{uri} was made otherwise than the first embeddings file: {found.info} != {info}")
        images = _images_index(release, PurePosixPath(str(uri)).stem, storage_options)
        order = np.argsort(images["image_id"])
        position = np.searchsorted(images["image_id"], found.image_ids, sorter=order)
        at = order[np.minimum(position, len(order) - 1)] if len(order) else position
        if len(found.image_ids) != len(order) or not np.array_equal(images["image_id"][at], found.image_ids):
            raise EmbeddingsError(f"{uri}: image ids differ from the release's images index of its shard")
        parts.append(
            {
                "image_id": found.image_ids,
                "uri": images["source"][at],
                "pixels": images["pixels"][at],
                "embedding": found.vectors,
            }
        )
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def _images_index(release: str, shard: str, storage_options: dict[str, Any]) -> dict[str, np.ndarray]:
    """image_id, source and pixels of the released images of `shard`."""
    fs = RetryingFileSystem(release, storage_options)
    path = f"{fs.root.rstrip('/')}/index/images/{shard}.parquet"
    if not fs.exists(path):
        raise EmbeddingsError(f"embeddings of shard {shard}: the release {release} has no images index for it")
    with fs.open(path, "rb") as f:
        schema = pq.read_schema(f)
        missing = sorted(set(IMAGE_COLUMNS) - set(schema.names))
        if missing:
            raise SemDedupError(f"{release}: its images index has no {missing}: not a release of `sa-engine amg`")
        f.seek(0)
        table = pq.read_table(f, columns=IMAGE_COLUMNS)
    width, height = (table[name].to_numpy().astype(np.int64) for name in ("source_width", "source_height"))
    return {
        "image_id": table["image_id"].to_numpy().astype(np.int64),
        "source": table["source"].to_numpy(zero_copy_only=False).astype(object),
        "pixels": width * height,
    }


def assign_clusters(batch: dict[str, np.ndarray], centroids: np.ndarray, probes: int, groups: int) -> dict:
    """Adds `clusters` ((B, probes) int32, nearest first: `curation.semdedup.assign`) to a batch of
    embeddings, and `groups` ((B, probes) int32, cluster % groups: the pair-search tasks that need it)."""
    clusters = assign(batch["embedding"], centroids, probes)
    return {**batch, "clusters": clusters, "groups": clusters % groups}


def to_groups(batch: dict[str, np.ndarray]) -> dict:
    """Each image once per distinct group among its clusters' (`assign_clusters`), with a `group` column."""
    probes = batch["groups"].shape[1]
    rows = np.repeat(np.arange(len(batch["image_id"])), probes)
    sent = np.unique(np.stack([rows, batch["groups"].ravel()], axis=1), axis=0)  # (row, group), each once
    rows = sent[:, 0]
    return {
        "group": sent[:, 1],
        "image_id": batch["image_id"][rows],
        "clusters": batch["clusters"][rows],
        "embedding": batch["embedding"][rows],
    }


def search_group(batch: dict[str, np.ndarray], threshold: float, groups: int) -> dict:
    """The images of one group (`to_groups`) -> the pairs above `threshold` within its clusters (those whose
    id % groups is the group): first, second (image ids, first < second) and cosine."""
    clusters = batch["clusters"]
    group = int(batch["group"][0])
    own = np.unique(clusters[:, 0][clusters[:, 0] % groups == group])
    rows, cosines = pairs_above(batch["embedding"], threshold, clusters, own)
    ids = batch["image_id"][rows]
    return {"first": ids.min(axis=1), "second": ids.max(axis=1), "cosine": cosines}


def embeddings_dataset(
    release: str, shards: list[str], info: dict[str, Any], storage_options: dict[str, Any]
) -> ray.data.Dataset:
    """The release's images with their embeddings (load_shard) from the embeddings files `shards`,
    each of which must hold embeddings of `info` (model, checkpoint, pooling, dim), materialised in
    the object store."""
    import ray.data

    described = json.dumps(info, sort_keys=True)
    log(f"{len(shards)} embeddings files: {described}")
    return (
        ray.data.from_items([{"embeddings": uri} for uri in shards], override_num_blocks=len(shards))
        .map_batches(
            load_shard,
            batch_size=1,
            batch_format="numpy",
            fn_kwargs={"release": release, "storage_options": storage_options, "info": described},
        )
        .materialize()
    )


def gather(dataset: ray.data.Dataset, columns: list[str], ids: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """`columns` of the rows of `dataset` (of those whose image_id is in `ids`, if given), by image_id."""
    if ids is not None:
        wanted = pa.array(np.asarray(ids, np.int64))

        def keep(batch: pa.Table) -> pa.Table:  # in Arrow: an empty block keeps its tensor column's type
            return batch.filter(pc.is_in(batch["image_id"], value_set=wanted))

        dataset = dataset.map_batches(keep, batch_format="pyarrow")
    parts = list(dataset.select_columns(columns).iter_batches(batch_size=None, batch_format="numpy"))
    if not parts:
        return {}
    found = {key: np.concatenate([p[key] for p in parts]) for key in columns}
    order = np.argsort(found["image_id"], kind="stable")
    return {key: value[order] for key, value in found.items()}


def build_parser() -> argparse.ArgumentParser:
    parser = command_parser("semdedup", __doc__)
    parser.add_argument("--release", required=True, help="a release of `sa-engine amg` (any fsspec URI)")
    parser.add_argument("--embeddings", default=None,
                        help="where `sa-engine embed` wrote the release's embeddings (default: the release's own)")  # fmt: skip
    parser.add_argument("--output", required=True, help="where the keep/drop table (Parquet) goes")
    parser.add_argument("--threshold", type=float, default=None,
                        help="images whose embeddings have a cosine of at least this are near-duplicates (0..1; "
                             "default: the one measured for the embeddings' model, the shipped sae_tiny only)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seeds the k-means sample and initialisation")
    parser.add_argument("--probes", type=int, default=DEFAULT_PROBES,
                        help="each image is compared with the images of its this many nearest clusters")  # fmt: skip
    add_storage_options(parser)
    add_ray_flags(parser)
    return parser


def checked_args(args: argparse.Namespace) -> argparse.Namespace:
    """The flags checked, `args.shards`: the embeddings files, `args.info`: their model, checkpoint, pooling
    and dim, and `args.threshold` set to the measured one when not given (before Ray starts:
    EmbeddingsError for a release without embeddings, SemDedupError when no threshold is known)."""
    if args.threshold is not None and not 0.0 < args.threshold <= 1.0:
        raise ValueError(f"--threshold must lie in (0, 1], got {args.threshold}")
    if args.probes < 1:
        raise ValueError(f"--probes must be >= 1, got {args.probes}")
    args.shards = embedding_shards(args.release, args.storage_options, args.embeddings)
    args.info = read_embeddings_file(args.shards[0], args.storage_options).info
    if args.threshold is None:
        args.threshold = measured_threshold(args.info)
        log(f"cosine threshold {args.threshold}: the one measured for {args.info['model']}'s embeddings")
    return args


def run(args: argparse.Namespace) -> dict[str, int]:
    """Cluster, search, group and write the keep/drop table of `args.release`; returns the counts by reason."""
    import ray

    options = args.storage_options
    dataset = embeddings_dataset(args.release, args.shards, args.info, options)
    images = gather(dataset, ["image_id", "uri", "pixels"])
    n = len(images.get("image_id", ()))
    if n == 0:
        raise EmbeddingsError(f"{args.release} has no released images to compare")
    k = n_clusters(n)
    sample = gather(dataset, ["image_id", "embedding"], images["image_id"][training_rows(n, k, args.seed)])
    start = time.monotonic()
    centroids = spherical_kmeans(sample["embedding"], k, args.seed)
    took = duration(time.monotonic() - start)
    log(f"{n:,} images: k-means on a sample of {len(sample['image_id']):,} into {k} clusters in {took}")
    groups = max(1, min(k, GROUPS_PER_CPU * int(ray.cluster_resources().get("CPU", 1))))
    routing = {"centroids": centroids, "probes": args.probes, "groups": groups}
    assigned = dataset.map_batches(assign_clusters, batch_format="numpy", fn_kwargs=routing)
    found = (
        assigned.map_batches(to_groups, batch_format="numpy")
        .groupby("group", num_partitions=groups)
        .map_groups(search_group, batch_format="numpy", fn_kwargs={"threshold": args.threshold, "groups": groups})
    )
    pairs = gather_pairs(found, images["image_id"])
    log(f"{len(pairs):,} pairs with cosine >= {args.threshold} ({args.probes} clusters searched per image)")

    def cosine_to_kept(rows: np.ndarray, kept: np.ndarray) -> np.ndarray:
        return cosines(dataset, images, rows, kept)

    table = decide(list(images["uri"]), images["pixels"], pairs, cosine_to_kept)
    metadata = {**settings(args.threshold, k, args.probes, args.seed), "release": args.release, "embeddings": args.info}
    with fsspec.open(args.output, "wb", **options) as f:
        f.write(dedup_table_bytes(table, metadata))
    counts = dict(zip(*np.unique(table["reason"].to_numpy(zero_copy_only=False), return_counts=True)))
    counts = {str(reason): int(count) for reason, count in counts.items()}
    log(f"done: {n} images, {counts} -> {args.output}")
    return counts


def gather_pairs(found: ray.data.Dataset, image_ids: np.ndarray) -> np.ndarray:
    """The pairs of the search tasks as (M, 2) int64 rows of `image_ids` (increasing), each pair once."""
    parts = list(found.iter_batches(batch_size=None, batch_format="numpy"))
    first = np.concatenate([np.zeros(0, np.int64), *(p["first"] for p in parts)])
    second = np.concatenate([np.zeros(0, np.int64), *(p["second"] for p in parts)])
    rows = np.stack([np.searchsorted(image_ids, first), np.searchsorted(image_ids, second)], axis=1)
    return np.unique(rows, axis=0)


def cosines(dataset: ray.data.Dataset, images: dict[str, np.ndarray], rows: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """(K,) cosines between images `rows` and `kept` (rows of `images`), their vectors gathered from
    `dataset`: only those of images in groups of near-duplicates, 2 bytes per dimension each."""
    ids = images["image_id"]
    if not len(rows):
        return np.zeros(0, np.float32)
    needed = gather(dataset, ["image_id", "embedding"], np.unique(np.concatenate([ids[rows], ids[kept]])))
    products = inner_products(needed["embedding"])
    return products(np.searchsorted(needed["image_id"], ids[rows]), np.searchsorted(needed["image_id"], ids[kept]))


def main(argv: list[str] | None = None) -> int:
    known = (EmbeddingsError, SemDedupError, StorageAccessError, StorageUnavailableError)
    return run_job(build_parser(), argv, checked_args, run, known, log)


if __name__ == "__main__":
    raise SystemExit(main())
