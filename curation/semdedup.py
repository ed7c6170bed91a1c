"""Semantic near-duplicates (SemDeDup, Abbas et al. 2023): images whose embeddings lie within a cosine
threshold of each other, found by clustering the embeddings and searching each cluster exactly.

    centroids = spherical_kmeans(vectors, n_clusters(len(vectors)), seed)
    assignments = assign(vectors, centroids, probes=2)
    pairs, cosines = pairs_above(vectors, threshold, assignments)
    table = decide(uris, pixels, pairs, inner_products(vectors))

The vectors are L2-normalised image embeddings (curation.embeddings: float16, one per released image),
so the inner product is the cosine. Spherical k-means (faiss) cuts the sphere into clusters of about
CLUSTER_SIZE images; each image belongs to its nearest centroid and is compared, exactly, with every
image that belongs to any of its `probes` nearest centroids (an inverted file searched with `probes`
lists): two near-identical images whose nearest centroids differ are still compared as long as one's
centroid is among the other's nearest `probes`. Per image the search costs one inner product with each
centroid plus about `probes` * CLUSTER_SIZE with images: linear in N while clusters keep their size.
The centroid products and the k-means training grow with N per image (about N / 900 inner products per
image together), below the search's 4000 up to about 3.5M images; benchmarks/semdedup_scale.py measures.

Groups and the image kept in each are decided exactly as for the perceptual hash (curation.dedup's
`keep_drop_table`): connected components of the pairs, the image with the most pixels kept (then the
smallest uri), `distance` = round(10000 * (1 - cosine)) to the kept image.
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import faiss
import numpy as np
import pyarrow as pa

from curation.dedup import SEMANTIC_DISTANCE_SCALE, components, keep_drop_table
from sam_core.pooled_embedding import POOLING

CLUSTER_SIZE = 2000
"""Images per k-means cluster that `n_clusters` aims at. The exact search costs about `probes` times
this many inner products per image, the assignment one per cluster (N / CLUSTER_SIZE): larger clusters
cost more at small N, smaller ones make the part that grows with N per image dominate sooner."""
POINTS_PER_CLUSTER = 128
"""k-means trains on a seeded sample of at most this many points per cluster (faiss's default cap is 256;
the centroids only route the search, so a coarser fit costs recall nothing that `probes` does not make up)."""
KMEANS_ITERATIONS = 20
DEFAULT_PROBES = 2
_BLOCK_ENTRIES = 1 << 22
"""Inner products computed at once (16 MB of float32) in `assign` and `pairs_above`."""


class SemDedupError(ValueError):
    """Embeddings or settings that semantic dedup cannot use; the message says why."""


MEASURED_THRESHOLDS: dict[tuple[str, str], float] = {
    ("773df1fe297f5e7a9db2dbb56e5460cc615a0ba22ba8e0878185090a3412a2b9", POOLING): 0.996,
}
"""(checkpoint sha256, pooling) -> the cosine threshold `benchmarks/semdedup_threshold.py` chose for
embeddings of that checkpoint pooled that way: the highest recall of duplicate pairs at precision >= 0.99
on 112 real photos and their variants (docs/curation.md). The shipped `sae_tiny` only: a threshold holds
for one model's embeddings, and another checkpoint must be measured before it gets one."""


def measured_threshold(info: dict[str, Any]) -> float:
    """The threshold of MEASURED_THRESHOLDS for embeddings of `info` (`curation.embeddings.embedding_info`);
    SemDedupError naming the model when none was measured for them."""
    found = MEASURED_THRESHOLDS.get((str(info.get("checkpoint_sha256")), str(info.get("pooling"))))
    if found is None:
        raise SemDedupError(
            f"no cosine threshold has been measured for embeddings of {info.get('model')} (checkpoint sha256 "
            f"{str(info.get('checkpoint_sha256'))[:12] or 'none'}, pooling {info.get('pooling')!r}): pass "
            "--threshold, chosen with benchmarks/semdedup_threshold.py on photos of your own"
        )
    return found


def n_clusters(n: int) -> int:
    """The number of k-means clusters for `n` embeddings: round(n / CLUSTER_SIZE), at least 1 (at most n)."""
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise SemDedupError(f"the number of embeddings must be a non-negative integer, got {n!r}")
    return max(1, min(int(n), round(n / CLUSTER_SIZE)))


def _checked_vectors(vectors: np.ndarray) -> np.ndarray:
    if not isinstance(vectors, np.ndarray) or vectors.ndim != 2 or vectors.dtype not in (np.float16, np.float32):
        raise SemDedupError(
            f"embeddings must be an (N, D) float16 or float32 array, got {type(vectors).__name__} "
            f"{getattr(vectors, 'dtype', '')} {getattr(vectors, 'shape', '')}"
        )
    if vectors.shape[1] == 0:
        raise SemDedupError("embeddings must have at least one dimension")
    return vectors


def training_rows(n: int, k: int, seed: int) -> np.ndarray:
    """The rows of `n` that k-means with `k` clusters trains on: min(n, POINTS_PER_CLUSTER * k) of them,
    drawn with `seed`, increasing. (N,) int64."""
    size = min(n, POINTS_PER_CLUSTER * k)
    return np.arange(n) if size == n else np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


def spherical_kmeans(vectors: np.ndarray, k: int, seed: int) -> np.ndarray:
    """(N, D) float16/float32 unit vectors -> (k, D) float32 unit centroids.

    faiss's k-means with spherical=True (centroids renormalised each iteration), KMEANS_ITERATIONS
    iterations, trained on the `training_rows` of `vectors`, seeded with `seed`: the same vectors and
    seed give the same centroids, and so do just those rows of them (what a distributed job gathers).
    """
    vectors = _checked_vectors(vectors)
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= len(vectors):
        raise SemDedupError(f"k must be an integer in [1, {len(vectors)}] (the number of embeddings), got {k!r}")
    training = np.ascontiguousarray(vectors[training_rows(len(vectors), int(k), seed)], dtype=np.float32)
    kmeans = faiss.Kmeans(
        training.shape[1],
        int(k),
        niter=KMEANS_ITERATIONS,
        spherical=True,
        seed=int(seed),
        max_points_per_centroid=POINTS_PER_CLUSTER,
        min_points_per_centroid=1,  # small inputs are fine here: no warning
    )
    kmeans.train(training)
    return np.asarray(kmeans.centroids, dtype=np.float32)


def _rows_per_block(columns: int) -> int:
    return max(1, _BLOCK_ENTRIES // max(columns, 1))


def assign(vectors: np.ndarray, centroids: np.ndarray, probes: int = DEFAULT_PROBES) -> np.ndarray:
    """(N, D) vectors, (k, D) centroids -> (N, min(probes, k)) int32: each vector's nearest centroids by
    inner product, nearest first (column 0 is the cluster it belongs to). Exact (faiss IndexFlatIP)."""
    vectors = _checked_vectors(vectors)
    centroids = np.ascontiguousarray(_checked_vectors(centroids), dtype=np.float32)
    if centroids.shape[1] != vectors.shape[1]:
        raise SemDedupError(f"centroids have {centroids.shape[1]} dimensions, the embeddings {vectors.shape[1]}")
    if not isinstance(probes, (int, np.integer)) or probes < 1:
        raise SemDedupError(f"probes must be an integer >= 1, got {probes!r}")
    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(centroids)
    probes = min(int(probes), len(centroids))
    found = np.empty((len(vectors), probes), np.int32)
    step = _rows_per_block(len(centroids))
    for start in range(0, len(vectors), step):
        block = np.ascontiguousarray(vectors[start : start + step], dtype=np.float32)
        found[start : start + step] = index.search(block, probes)[1]
    return found


def pairs_above(
    vectors: np.ndarray,
    threshold: float,
    assignments: np.ndarray,
    clusters: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of rows compared in a cluster whose cosine is >= `threshold`.

    vectors: (N, D) float16/float32 unit vectors; assignments: (N, P) integer from `assign` (column 0
    the row's own cluster). Within cluster c, the rows probing c (c anywhere in their row of
    `assignments`) are compared with the rows belonging to c (c in column 0), in float32, exactly.
    `clusters`: search only these cluster ids (a part of the work; default: all).
    Returns (M, 2) int64 row pairs with i < j, each pair once, sorted, and (M,) float32 their cosines.
    """
    vectors = _checked_vectors(vectors)
    if not (isinstance(threshold, numbers.Real) and -1.0 <= threshold <= 1.0) or isinstance(threshold, bool):
        raise SemDedupError(f"the cosine threshold must be a number in [-1, 1], got {threshold!r}")
    assignments = np.asarray(assignments)
    if assignments.ndim != 2 or len(assignments) != len(vectors) or not np.issubdtype(assignments.dtype, np.integer):
        raise SemDedupError(
            f"assignments must be an (N, P) integer array for {len(vectors)} embeddings, "
            f"got {assignments.dtype} {assignments.shape}"
        )
    owners = _rows_by_cluster(assignments[:, 0])
    probing = _rows_by_cluster(assignments.ravel(), rows=np.repeat(np.arange(len(vectors)), assignments.shape[1]))
    wanted = owners.keys() if clusters is None else [int(c) for c in clusters]
    found = [(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))]
    for cluster in wanted:
        members = owners.get(cluster)
        if members is not None:
            found.extend(_pairs_in_cluster(vectors, probing[cluster], members, float(threshold)))
    first, second, cosines = (np.concatenate(parts) for parts in zip(*found, strict=True))
    keys = first * len(vectors) + second
    keys, at = np.unique(keys, return_index=True)  # a pair of two clusters' rows may be found from both
    return np.stack([keys // max(len(vectors), 1), keys % max(len(vectors), 1)], axis=1), cosines[at]


def _rows_by_cluster(cluster_ids: np.ndarray, rows: np.ndarray | None = None) -> dict[int, np.ndarray]:
    """(K,) cluster ids with (K,) rows (default: 0..K-1) -> cluster id -> its rows, increasing."""
    rows = np.arange(len(cluster_ids)) if rows is None else rows
    order = np.lexsort((rows, cluster_ids))
    sorted_ids = cluster_ids[order]
    starts = np.flatnonzero(np.diff(sorted_ids, prepend=sorted_ids[:1] - 1)) if len(order) else np.zeros(0, int)
    bounds = [*starts.tolist(), len(order)]
    return {int(sorted_ids[a]): rows[order[a:b]].astype(np.int64) for a, b in itertools.pairwise(bounds)}


def _pairs_in_cluster(
    vectors: np.ndarray, queries: np.ndarray, members: np.ndarray, threshold: float
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Rows `queries` against rows `members` (both increasing int64): the (i < j) row pairs with an inner
    product >= threshold, their smaller row first, in blocks of queries."""
    base = np.ascontiguousarray(vectors[members], dtype=np.float32).T
    found = []
    step = _rows_per_block(len(members))
    for start in range(0, len(queries), step):
        rows = queries[start : start + step]
        products = np.asarray(vectors[rows], dtype=np.float32) @ base
        q, m = np.nonzero(products >= threshold)
        first, second = rows[q], members[m]
        distinct = first != second
        first, second, cosines = first[distinct], second[distinct], products[q[distinct], m[distinct]]
        found.append((np.minimum(first, second), np.maximum(first, second), cosines))
    return found


def semantic_distance(cosines: np.ndarray) -> np.ndarray:
    """(M,) cosines -> (M,) int32 round(SEMANTIC_DISTANCE_SCALE * (1 - cosine)), clipped at 0: a table's `distance`."""
    return np.maximum(np.rint(SEMANTIC_DISTANCE_SCALE * (1.0 - np.asarray(cosines, np.float64))), 0).astype(np.int32)


def decide(
    uris: Sequence[str],
    pixels: np.ndarray,
    pairs: np.ndarray,
    cosine_to_kept: Callable[[np.ndarray, np.ndarray], np.ndarray],
) -> pa.Table:
    """The keep/drop table (curation.dedup.DEDUP_SCHEMA), one row per image, in input order.

    uris: N strings (the images' sources); pixels: (N,) integer source width * height; pairs: (M, 2)
    row pairs from `pairs_above`; cosine_to_kept(rows, kept): (K,) cosines between the rows and their
    kept rows (`inner_products(vectors)` where the vectors are at hand). Groups are the connected
    components of the pairs; each keeps the image with the most pixels (then the smallest uri, then
    the first row); the others are "duplicate"s of it, their `distance` round(10000 * (1 - cosine))
    to it (through a chain of pairs it may exceed the threshold's), `signature` "".
    """
    if len(uris) != len(pixels):
        raise SemDedupError(f"uris and pixels must have one entry per image, got {len(uris)} and {len(pixels)}")
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    if pairs.size and not 0 <= pairs.min() <= pairs.max() < len(uris):
        raise SemDedupError(f"pairs must be rows of the {len(uris)} images, got rows {pairs.min()}..{pairs.max()}")
    labels = components(len(uris), pairs)

    def distance(rows: np.ndarray, kept: np.ndarray) -> np.ndarray:
        return semantic_distance(cosine_to_kept(rows, kept))

    return keep_drop_table(uris, pixels, [""] * len(uris), labels, distance, [""] * len(uris))


def inner_products(vectors: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """(N, D) vectors -> a function of two (K,) row arrays giving their (K,) float32 inner products."""
    vectors = _checked_vectors(vectors)

    def products(rows: np.ndarray, others: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->i", np.asarray(vectors[rows], np.float32), np.asarray(vectors[others], np.float32))

    return products


def semdedup(
    uris: Sequence[str],
    pixels: np.ndarray,
    vectors: np.ndarray,
    threshold: float,
    seed: int = 0,
    probes: int = DEFAULT_PROBES,
) -> tuple[pa.Table, dict[str, object]]:
    """All steps in one process: the keep/drop table of `vectors` (see `decide`) and the settings it was
    made with (method, threshold, clusters, probes, seed, faiss version) for the table's metadata."""
    vectors = _checked_vectors(vectors)
    if len(uris) != len(vectors):
        raise SemDedupError(f"uris and embeddings must have one entry per image, got {len(uris)} and {len(vectors)}")
    k = n_clusters(len(vectors))
    if len(vectors):
        assignments = assign(vectors, spherical_kmeans(vectors, k, seed), probes)
        pairs, _ = pairs_above(vectors, threshold, assignments)
    else:
        pairs = np.zeros((0, 2), np.int64)
    return decide(uris, pixels, pairs, inner_products(vectors)), settings(threshold, k, probes, seed)


def settings(threshold: float, clusters: int, probes: int, seed: int) -> dict[str, object]:
    """The `sa_engine.dedup` metadata of a semantic table, less the embeddings' own info."""
    return {
        "method": "semdedup",
        "threshold": float(threshold),
        "clusters": int(clusters),
        "probes": int(probes),
        "seed": int(seed),
        "faiss": faiss.__version__,
        "description": f"cosine >= {threshold} between image embeddings (spherical k-means into {clusters} "
        f"clusters, each image searched exactly in its {probes} nearest), groups = connected components, "
        "kept: most pixels, then smallest URI",
    }
