"""SemDeDup once the embeddings exist: time and peak memory at 100k and 1M images, recall against exact search.

    python -m benchmarks.semdedup_scale [--sizes 100000,1000000] [--threshold T] [--duplicates 0.05]

Embeddings are synthetic and seeded, 256-d float16 unit vectors as a release stores them, with the
structure that makes clustering matter: every row belongs to one of N / 1000 topics (of lognormal
popularity) and lies at cosine ~0.7 to its topic's centre (~0.5 to its topic's other rows, far below
any dedup threshold). A `--duplicates` share of the rows is then overwritten with copies of other
rows at an exact cosine drawn from [threshold + 0.002, 0.999] (the planted pairs, in groups of one
source and one or more copies). Each size runs in a fresh child process, so that its peak resident
set size (VmHWM) is its own; "ready" is that figure once the embeddings, uris and pixels exist.

Timed, as `curation.semdedup` runs them: the number of clusters (`n_clusters`), spherical k-means on
its sample, the assignment of every row to its nearest `--probes` centroids, the exact pair search
within each cluster, and the keep/drop decision (connected components, keepers, the Arrow table).
"x first" is each size's total over the first size's: linear growth from 100k to 1M reads 10 (the
target is <= 12). "planted" is the share of the planted pairs found. At sizes up to `--exact-max`,
every pair at or above the threshold is also found by brute force (all inner products, in blocks,
after the timed part and its memory reading), and "vs exact" is the share of those found.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import numpy as np

from benchmarks.analysis_scale import peak_rss_mib

DIM = 256
THRESHOLD = 0.95
"""The default cosine threshold, SemDeDup's usual 1 - eps with eps = 0.05: no threshold reached precision
0.99 with the shipped model's embeddings on real photos (benchmarks/semdedup_threshold.py), so none is
taken from there; the time depends little on it, as long as the pairs above it are few."""
ROWS_PER_TOPIC = 1000
TOPIC_COSINE = 0.7
"""A row's cosine to its topic's centre; two rows of one topic lie near its square."""
MARGIN = 0.002
"""Planted copies lie at least this far above the threshold, beyond float16's rounding of a cosine."""
CHUNK = 65_536
"""Rows generated per step, which bounds the temporary memory."""
EXACT_BLOCK = 1024
"""Rows per step of the brute-force search: a block of 1024 x N float32 inner products (400 MB at 100k)."""


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def synthetic_embeddings(
    count: int, threshold: float, duplicates: float, seed: int, dim: int = DIM
) -> tuple[np.ndarray, np.ndarray]:
    """((count, dim) float16 unit vectors, (M, 2) int64 planted pairs (source row, copy row), sorted
    by the smaller row): topic structure and planted near-duplicates as the module docstring says."""
    rng = np.random.default_rng(seed)
    topics = max(1, count // ROWS_PER_TOPIC)
    centres = _unit(rng.standard_normal((topics, dim))).astype(np.float32)
    popularity = rng.lognormal(0.0, 1.0, topics)
    spread = np.sqrt(1 / TOPIC_COSINE**2 - 1)  # noise norm that puts a row at TOPIC_COSINE to its centre
    vectors = np.empty((count, dim), np.float16)
    for start in range(0, count, CHUNK):
        stop = min(count, start + CHUNK)
        topic = rng.choice(topics, stop - start, p=popularity / popularity.sum())
        noise = rng.standard_normal((stop - start, dim), dtype=np.float32) * np.float32(spread / np.sqrt(dim))
        vectors[start:stop] = _unit(centres[topic] + noise)
    shuffled = rng.permutation(count)
    copies = int(count * duplicates)
    targets, pool = shuffled[:copies], shuffled[copies:]  # a copy is never the source of another
    sources = pool[rng.integers(0, len(pool), copies)]
    cosine = rng.uniform(threshold + MARGIN, 0.999, copies).astype(np.float32)[:, None]
    source = vectors[sources].astype(np.float32)
    source /= np.linalg.norm(source, axis=1, keepdims=True)
    away = rng.standard_normal((copies, dim), dtype=np.float32)
    away = _unit(away - np.einsum("ij,ij->i", away, source)[:, None] * source)  # orthogonal to the source
    vectors[targets] = cosine * source + np.sqrt(1 - cosine**2) * away
    pairs = np.sort(np.stack([sources, targets], axis=1), axis=1).astype(np.int64)
    return vectors, pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def exact_pairs(vectors: np.ndarray, threshold: float) -> np.ndarray:
    """(N, D) float16 -> (M, 2) int64 every pair i < j whose float32 inner product is >= threshold,
    by brute force (N^2 / 2 inner products in blocks of EXACT_BLOCK rows)."""
    full = vectors.astype(np.float32)
    found = [np.zeros((0, 2), np.int64)]
    for start in range(0, len(full), EXACT_BLOCK):
        block = full[start : start + EXACT_BLOCK] @ full[start:].T
        rows, cols = np.nonzero(block >= threshold)
        keep = cols > rows  # the upper triangle of the diagonal block
        found.append(np.stack([rows[keep] + start, cols[keep] + start], axis=1).astype(np.int64))
    return np.concatenate(found)


def _share_found(found: np.ndarray, wanted: np.ndarray, count: int) -> float:
    """The share of `wanted` (W, 2) pairs that are among `found` (F, 2) pairs of rows < count."""
    if len(wanted) == 0:
        return 1.0
    keys = found[:, 0] * count + found[:, 1]
    return float(np.isin(wanted[:, 0] * count + wanted[:, 1], keys).mean())


def _run(count: int, args: argparse.Namespace, queue: mp.Queue) -> None:
    from curation import semdedup

    vectors, planted = synthetic_embeddings(count, args.threshold, args.duplicates, args.seed)
    uris = [f"s3://bucket/images/{row:08d}.jpg" for row in range(count)]
    pixels = np.random.default_rng(args.seed + 1).integers(200_000, 12_000_000, count)
    ready = peak_rss_mib()
    seconds = {}
    start = time.perf_counter()
    clusters = semdedup.n_clusters(count)
    centroids = semdedup.spherical_kmeans(vectors, clusters, args.seed)
    seconds["k-means"] = time.perf_counter() - start
    start = time.perf_counter()
    assignments = semdedup.assign(vectors, centroids, probes=args.probes)
    seconds["assign"] = time.perf_counter() - start
    start = time.perf_counter()
    found, _ = semdedup.pairs_above(vectors, args.threshold, assignments)
    seconds["pairs"] = time.perf_counter() - start
    start = time.perf_counter()
    table = semdedup.decide(uris, pixels, found, semdedup.inner_products(vectors))
    seconds["decide"] = time.perf_counter() - start
    peak = peak_rss_mib()
    result = {
        "count": count,
        "clusters": clusters,
        "seconds": seconds,
        "pairs": len(found),
        "dropped": table.num_rows - int(np.count_nonzero(table["keep"].to_numpy(zero_copy_only=False))),
        "planted": _share_found(found, planted, count),
        "ready_mib": ready,
        "peak_mib": peak,
        "vs_exact": None,
        "exact_pairs": None,
    }
    if count <= args.exact_max:
        exact = exact_pairs(vectors, args.threshold)
        result["vs_exact"], result["exact_pairs"] = _share_found(found, exact, count), len(exact)
    queue.put(result)


def main() -> None:
    from curation.semdedup import DEFAULT_PROBES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="embedding counts, comma-separated")
    parser.add_argument("--threshold", type=float, default=THRESHOLD, help="the cosine threshold")
    parser.add_argument("--duplicates", type=float, default=0.05, help="share of rows planted as near-duplicates")
    parser.add_argument("--probes", type=int, default=DEFAULT_PROBES, help="nearest centroids each row is assigned to")
    parser.add_argument("--exact-max", type=int, default=100_000, help="brute-force check at sizes up to this")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        sizes = [int(size) for size in args.sizes.split(",")]
    except ValueError:
        parser.error(f"--sizes must be integers separated by commas, got {args.sizes!r}")
    if any(size < 2 for size in sizes) or not 0 < args.threshold < 1 - MARGIN or not 0 <= args.duplicates < 1:
        parser.error("sizes must be >= 2, --threshold in (0, 0.998) and --duplicates in [0, 1)")

    context = mp.get_context("spawn")
    print(f"{DIM}-d float16, threshold {args.threshold}, {args.duplicates:.0%} planted, {args.probes} probes")
    print(
        "| embeddings | clusters | k-means s | assign s | pairs s | decide s | total s | x first | pairs | dropped "
        "| planted found | vs exact | ready MiB | peak MiB |"
    )
    print("|---:" * 14 + "|")
    first_total = None
    for count in sizes:
        queue = context.Queue()
        child = context.Process(target=_run, args=(count, args, queue))
        child.start()
        child.join()  # the child sends a few numbers only, so it never blocks on a full queue
        if child.exitcode != 0:
            raise SystemExit(f"error: the {count:,}-embedding run failed (exit code {child.exitcode}); see above")
        result = queue.get()
        total = sum(result["seconds"].values())
        first_total = first_total or total
        exact = "-" if result["vs_exact"] is None else f"{result['vs_exact']:.4f} of {result['exact_pairs']:,}"
        steps = " | ".join(f"{result['seconds'][step]:.1f}" for step in ("k-means", "assign", "pairs", "decide"))
        print(
            f"| {count:,} | {result['clusters']:,} | {steps} | {total:.1f} | {total / first_total:.1f} "
            f"| {result['pairs']:,} | {result['dropped']:,} | {result['planted']:.4f} | {exact} "
            f"| {result['ready_mib']:.0f} | {result['peak_mib']:.0f} |",
            flush=True,
        )
        last = (count, total)
    if len(sizes) > 1:
        growth = last[1] / first_total
        print(f"{last[0] / sizes[0]:.0f}x the embeddings took {growth:.1f}x the time (target for 10x: <= 12x)")


if __name__ == "__main__":
    main()
