"""Near-duplicate removal once the signatures exist: time and memory at 100k and 1M images.

    python -m benchmarks.dedup_scale [--sizes 100000,1000000] [--duplicates 0.05] [--max-distance 9]

Signatures are synthetic and seeded: uniformly random 64-bit hashes, of which a `--duplicates` share are
overwritten with copies of other rows with 0 to max-distance bits flipped (planted near-duplicate
clusters). Each size runs in a fresh child process, so that its peak resident set size (ru_maxrss) is
its own; "ready" is that figure once the signatures, uris and pixels exist. Timed: `near_duplicate_pairs`
alone, then the whole `decide` (distinct hashes, the pair search again, connected components, keepers,
the Arrow table). "x first" is each size's `decide` time over the first size's: linear growth from
100k to 1M reads 10.

With `--faiss`, the same hashes also go through faiss's exact multi-index binary search
(`IndexBinaryMultiHash`, 4 substrings of 16 bits, max-distance // 4 flips: exact by the pigeonhole
principle) in the same child; its pairs must equal ours, and its time is printed beside ours.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import time

import numpy as np


def synthetic_signatures(count: int, duplicates: float, max_distance: int, seed: int) -> np.ndarray:
    """(count, 8) uint8: random hashes, `duplicates` of the rows copies of others with a few bits flipped."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 256, (count, 8), dtype=np.uint8)
    copies = int(count * duplicates)
    targets = rng.choice(count, copies, replace=False)
    sources = rng.integers(0, count, copies)
    flipped = rng.integers(0, max_distance + 1, copies)
    chosen = np.argsort(rng.random((copies, 64)), axis=1) < flipped[:, None]  # `flipped` random bits per row
    hashes[targets] = hashes[sources] ^ np.packbits(chosen, axis=1)
    return hashes


def faiss_pairs(hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """(N, 8) uint8 -> (M, 2) int64 pairs i < j within `max_distance` bits, by faiss's multi-hash index."""
    import faiss

    index = faiss.IndexBinaryMultiHash(64, 4, 16)
    index.nflip = max_distance // 4
    index.add(hashes)
    limits, _, found = index.range_search(hashes, max_distance + 1)  # faiss's radius is exclusive
    queries = np.repeat(np.arange(len(hashes)), np.diff(limits.astype(np.int64)))
    keep = queries < found
    return np.unique(np.stack([queries[keep], found[keep]], axis=1), axis=0)


def _run(count: int, duplicates: float, max_distance: int, seed: int, with_faiss: bool, queue: mp.Queue) -> None:
    from curation.dedup import decide, near_duplicate_pairs

    hashes = synthetic_signatures(count, duplicates, max_distance, seed)
    uris = [f"s3://bucket/images/{row:08d}.jpg" for row in range(count)]
    pixels = np.random.default_rng(seed + 1).integers(200_000, 12_000_000, count)
    errors = [""] * count
    ready = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    start = time.perf_counter()
    pairs, _ = near_duplicate_pairs(hashes, max_distance)
    pairs_seconds = time.perf_counter() - start
    start = time.perf_counter()
    table = decide(uris, hashes, pixels, errors, max_distance)
    decide_seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    dropped = table.num_rows - sum(table["keep"].to_pylist())
    faiss_seconds = float("nan")
    if with_faiss:
        start = time.perf_counter()
        reference = faiss_pairs(hashes, max_distance)
        faiss_seconds = time.perf_counter() - start
        if not np.array_equal(reference, pairs):
            raise RuntimeError(f"faiss found {len(reference)} pairs, ours {len(pairs)}: the searches disagree")
    queue.put((ready, peak, pairs_seconds, len(pairs), decide_seconds, dropped, faiss_seconds))


def main() -> None:
    from curation.dedup import DEFAULT_MAX_DISTANCE

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000", help="signature counts, comma-separated")
    parser.add_argument("--duplicates", type=float, default=0.05, help="share of rows planted as near-duplicates")
    parser.add_argument("--max-distance", type=int, default=DEFAULT_MAX_DISTANCE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--faiss", action="store_true", help="also time faiss's IndexBinaryMultiHash on the same hashes"
    )
    args = parser.parse_args()
    context = mp.get_context("spawn")
    print(f"max distance {args.max_distance} bits, {args.duplicates:.0%} planted near-duplicates; RSS in MiB")
    print(
        f"{'signatures':>11} {'pairs s':>8} {'pairs':>8} {'decide s':>9} {'dropped':>8} {'ready':>6} {'peak':>6} "
        f"{'x first':>8} {'faiss s':>8}"
    )
    first = None
    for count in (int(size) for size in args.sizes.split(",")):
        queue = context.Queue()
        child = context.Process(
            target=_run, args=(count, args.duplicates, args.max_distance, args.seed, args.faiss, queue)
        )
        child.start()
        child.join()  # the child sends a few numbers only, so it never blocks on a full queue
        if child.exitcode != 0:
            raise SystemExit(f"the {count:,}-signature run failed (exit code {child.exitcode}); see above")
        ready, peak, pairs_seconds, pairs, decide_seconds, dropped, faiss_seconds = queue.get()
        first = first or (count, decide_seconds)
        print(
            f"{count:>11,} {pairs_seconds:>8.1f} {pairs:>8,} {decide_seconds:>9.1f} {dropped:>8,} "
            f"{ready:>6.0f} {peak:>6.0f} {decide_seconds / first[1]:>8.1f} {faiss_seconds:>8.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
