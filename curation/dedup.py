"""Near-duplicate detection: a 64-bit perceptual hash per image, an exact search for every pair of hashes
within a Hamming distance, and one keep/drop decision per input.

The hash is a windowed low-frequency DCT hash. pHash (grayscale, 32x32 area thumbnail, 2-D DCT, the 8x8
lowest frequencies thresholded at their median) survives resizing, recompression and colour jitter, but
its higher frequencies (up to 7 half-cycles across the image) change sign when an image is cropped by a
few percent per side. Here the 32x32 thumbnail, less its mean, is weighted by a sine window (the borders,
which a crop removes, count least), only the 35 DCT frequencies with u, v <= 5 (the DC left out) are kept,
and 64 bits are their signs along 64 fixed directions: a seeded random 64x35 projection made orthonormal
(SimHash), so that the Hamming distance tracks the angle between the two frequency vectors.
`tests/curation/test_dedup.py` measures both on real photos.

The search is multi-index hashing (Norouzi, Punjani and Fleet 2012), exact: the 64 bits are cut into 3
substrings (22, 21, 21 bits), and two hashes within r = 3q + a bits differ in at most q bits in one of
the first a + 1 substrings or in at most q - 1 bits in one of the others. So, per substring, every hash
probes the buckets of the keys within that many flipped bits of its own, in numpy over key-sorted arrays,
and each candidate is checked on all 64 bits. faiss's IndexBinaryMultiHash probes the same way, one
query at a time through hash tables: at distance 8 on 2 cores it took 6.5 s for 100k random hashes and
278 s for 1M, against 0.7 s and 10 s here.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable, Iterator, Sequence

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from PIL import Image
from scipy.sparse import coo_array
from scipy.sparse.csgraph import connected_components

from curation.images import decode_image

HASH_BYTES = 8
"""A hash is 64 bits, packed into 8 uint8 (numpy.packbits order)."""
DEFAULT_MAX_DISTANCE = 9
"""Hashes within this many bits are near-duplicates (chosen on the tests' few real photos; on 112 real
photos its precision is 0.19: docs/curation.md, semantic near-duplicates)."""
MAX_SEARCH_DISTANCE = 11
"""The largest distance `near_duplicate_pairs` searches: beyond it the probes per hash grow five-fold."""

SEMANTIC_DISTANCE_SCALE = 10000
"""A semantic (semdedup) table's `distance` is round(SEMANTIC_DISTANCE_SCALE * (1 - cosine))."""

DEDUP_SCHEMA = pa.schema(
    [
        ("uri", pa.string()),
        ("keep", pa.bool_()),
        ("reason", pa.string()),  # "unique" | "kept" | "duplicate" | "unreadable"
        ("matched_uri", pa.string()),  # the kept image of a duplicate's cluster, else ""
        # to matched_uri, else -1: Hamming bits (phash); see SEMANTIC_DISTANCE_SCALE (semdedup)
        ("distance", pa.int32()),
        ("cluster", pa.int64()),  # input row of the cluster's kept image (own row if unique), -1 unreadable
        ("pixels", pa.int64()),  # source width * height, 0 unreadable
        ("signature", pa.string()),  # the hash as 16 lowercase hex digits, "" unreadable (and for semdedup)
        ("error", pa.string()),  # why an unreadable input could not be decoded, else ""
    ]
)

_THUMBNAIL_SIDE = 32
_DRAFT_SIDE = 2 * _THUMBNAIL_SIDE  # JPEGs are decoded at a reduced scale that keeps both sides >= this
_MAX_FREQUENCY = 5
_SUBSTRING_BITS = (22, 21, 21)
_SUBSTRING_SHIFTS = (0, 22, 43)


def _window() -> np.ndarray:
    """32x32 float32: the outer product of a half sine period, zero-free, largest at the centre."""
    ramp = np.sin((np.arange(_THUMBNAIL_SIDE) + 0.5) * np.pi / _THUMBNAIL_SIDE)
    return np.outer(ramp, ramp).astype(np.float32)


def _projection() -> np.ndarray:
    """64x35 float64 with orthonormal columns: seeded Gaussian directions, symmetrically orthonormalised.

    Legacy RandomState (whose stream numpy keeps frozen) and the symmetric (Loewdin) orthonormalisation
    (unique, unlike QR's signs) keep the hash identical across numpy and LAPACK versions.
    """
    frequencies = (_MAX_FREQUENCY + 1) ** 2 - 1
    gaussian = np.random.RandomState(0).standard_normal((8 * HASH_BYTES, frequencies))
    eigenvalues, eigenvectors = np.linalg.eigh(gaussian.T @ gaussian)
    return gaussian @ (eigenvectors / np.sqrt(eigenvalues)) @ eigenvectors.T


_WINDOW = _window()
_LOW_FREQUENCIES = np.add.outer(np.arange(_MAX_FREQUENCY + 1), np.arange(_MAX_FREQUENCY + 1)) > 0
_PROJECTION = _projection()


def perceptual_hash(image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 RGB or HxW uint8 grayscale -> (8,) uint8, the packed 64-bit hash.

    Uniform images (no frequency content) all hash to zero.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError(
            f"perceptual_hash needs a uint8 array, got {type(image).__name__} {getattr(image, 'dtype', '')}"
        )
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)) or 0 in image.shape:
        raise ValueError(f"perceptual_hash needs an HxWx3 RGB or HxW image, got shape {image.shape}")
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    side = (_THUMBNAIL_SIDE, _THUMBNAIL_SIDE)
    thumbnail = cv2.resize(gray, side, interpolation=cv2.INTER_AREA).astype(np.float32)
    frequencies = cv2.dct((thumbnail - thumbnail.mean()) * _WINDOW)[: _MAX_FREQUENCY + 1, : _MAX_FREQUENCY + 1]
    return np.packbits(_PROJECTION @ frequencies[_LOW_FREQUENCIES] > 0)


def signature_from_bytes(data: bytes, max_pixels: int, min_side: int) -> tuple[np.ndarray, int]:
    """Encoded image bytes -> ((8,) uint8 hash, source width * height).

    Decoded by `curation.images.decode_image` (its pixel and side limits, EXIF orientation, CMYK and
    16-bit handling), JPEGs at the reduced scale the hash needs; raises its ImageDecodeError.
    """
    image = decode_image(data, max_pixels=max_pixels, min_side=min_side, draft_side=_DRAFT_SIDE)
    with Image.open(io.BytesIO(data)) as header:  # the decoded image may be a reduced draft
        width, height = header.size
    return perceptual_hash(image), width * height


def _check_hashes(hashes: np.ndarray) -> None:
    if not isinstance(hashes, np.ndarray) or hashes.dtype != np.uint8 or hashes.ndim != 2:
        raise ValueError(f"hashes must be an (N, {HASH_BYTES}) uint8 array, got {type(hashes).__name__}")
    if hashes.shape[1] != HASH_BYTES:
        raise ValueError(f"hashes must be an (N, {HASH_BYTES}) uint8 array, got shape {hashes.shape}")


def _check_distance(max_distance: int) -> None:
    integer = isinstance(max_distance, (int, np.integer)) and not isinstance(max_distance, bool)
    if not integer or not 0 <= max_distance <= MAX_SEARCH_DISTANCE:
        raise ValueError(f"max_distance must be an integer in [0, {MAX_SEARCH_DISTANCE}] bits, got {max_distance!r}")


def _words(hashes: np.ndarray) -> np.ndarray:
    """(N, 8) uint8 -> (N,) uint64, the same 64 bits."""
    return np.ascontiguousarray(hashes).view("<u8").ravel()


def near_duplicate_pairs(hashes: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, 8) uint8 hashes -> every pair within `max_distance` bits, exactly.

    Returns (M, 2) int64 row pairs with i < j, each pair once, sorted; and (M,) int32 their Hamming
    distances. Cost: a fixed number of bucket probes per hash (1,130 at distance 9, 360 at 8, 1,800 at
    10), plus the check of every probe that lands in a filled bucket, whose share grows as N / 2**21:
    linear while it is small; from 100k to 1M random hashes the time grew 16-18 fold, about N**1.25
    (benchmarks/dedup_scale.py). Exact duplicates make one bucket: k equal hashes give k(k-1)/2 pairs
    (`decide` searches each distinct hash once).
    """
    _check_hashes(hashes)
    _check_distance(max_distance)
    words = _words(hashes)
    flips = _flips_per_substring(max_distance)
    found = [(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint8))]
    for substring, shift in enumerate(_SUBSTRING_SHIFTS):
        if flips[substring] < 0:
            continue
        order, sorted_keys, starts = _buckets(words, shift, _SUBSTRING_BITS[substring])
        sorted_words = words[order]  # probes run in key order: their gathers stay close in memory
        for rows, cols in _probe(sorted_keys, starts, _SUBSTRING_BITS[substring], flips[substring]):
            difference = sorted_words[rows] ^ sorted_words[cols]
            close = np.flatnonzero(np.bitwise_count(difference) <= max_distance)
            new = close[~_found_before(difference[close], substring, flips)]
            first, second = order[rows[new]], order[cols[new]]
            found.append((np.minimum(first, second), np.maximum(first, second), np.bitwise_count(difference[new])))
    first, second, distances = (np.concatenate(parts) for parts in zip(*found, strict=True))
    order = np.lexsort((second, first))
    return np.stack([first[order], second[order]], axis=1), distances[order].astype(np.int32)


def _flips_per_substring(max_distance: int) -> list[int]:
    """The bits to flip in each substring's probes (-1: not searched).

    With r = 3q + a, two hashes within r bits differ in at most q bits in one of the first a + 1
    substrings, or in at most q - 1 in one of the others (the refined pigeonhole principle of
    multi-index hashing, Norouzi et al. 2012): otherwise they would differ in at least r + 1 bits.
    """
    q, a = divmod(max_distance, len(_SUBSTRING_BITS))
    return [q if substring <= a else q - 1 for substring in range(len(_SUBSTRING_BITS))]


def _found_before(differences: np.ndarray, substring: int, flips: list[int]) -> np.ndarray:
    """(K,) uint64 XORs of candidate pairs -> (K,) bool: was the pair already found by an earlier
    substring's probes (within that substring's flips there)?"""
    found = np.zeros(differences.shape, bool)
    for earlier in range(substring):
        part = (differences >> np.uint64(_SUBSTRING_SHIFTS[earlier])) & np.uint64((1 << _SUBSTRING_BITS[earlier]) - 1)
        found |= np.bitwise_count(part) <= flips[earlier]
    return found


def _buckets(words: np.ndarray, shift: int, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N,) uint64 -> the `bits`-bit substring at `shift` as buckets: ((N,) int64 rows sorted by key,
    (N,) int32 sorted keys, (2**bits + 1,) int32/int64 first sorted position of each key)."""
    keys = ((words >> np.uint64(shift)) & np.uint64((1 << bits) - 1)).astype(np.int32)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    position_type = np.int32 if len(words) < 2**31 else np.int64  # a smaller table: fewer cache misses
    starts = np.zeros((1 << bits) + 1, position_type)
    np.cumsum(np.bincount(sorted_keys, minlength=1 << bits), out=starts[1:])
    return order, sorted_keys, starts


def _probe(
    sorted_keys: np.ndarray, starts: np.ndarray, bits: int, flips: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(N,) int32 sorted keys and their bucket starts -> batches of candidate pairs of sorted positions
    ((K,) int64, (K,) int64), each unordered pair once: all whose `bits`-bit keys differ in <= `flips` bits."""
    occupied = np.diff(starts) > 0
    positions = np.arange(len(sorted_keys))
    yield _expand(positions, positions + 1, starts[sorted_keys + 1])  # the rest of own bucket
    for top in range(bits):  # a mask with highest bit `top` is probed from keys with it clear
        probing = np.flatnonzero((sorted_keys >> top) & 1 == 0)
        probing_keys = sorted_keys[probing]
        for mask in _flip_masks(top, flips):
            buckets = probing_keys ^ mask
            hit = np.flatnonzero(occupied[buckets])
            buckets = buckets[hit]
            yield _expand(probing[hit], starts[buckets], starts[buckets + 1])


def _flip_masks(top: int, flips: int) -> Iterator[int]:
    """The masks with highest set bit `top` and at most `flips` bits set (none if flips is 0)."""
    for count in range(flips):
        for lower in itertools.combinations(range(top), count):
            yield (1 << top) | sum(1 << bit for bit in lower)


def _expand(queries: np.ndarray, first: np.ndarray, stop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Q,) int64 query positions with half-open ranges [first, stop) -> every (query, position) pair."""
    counts = stop - first
    offsets = np.cumsum(counts) - counts
    positions = np.arange(offsets[-1] + counts[-1] if len(counts) else 0) - np.repeat(offsets - first, counts)
    return np.repeat(queries, counts), positions


def decide(
    uris: Sequence[str],
    hashes: np.ndarray,
    pixels: np.ndarray,
    errors: Sequence[str],
    max_distance: int = DEFAULT_MAX_DISTANCE,
) -> pa.Table:
    """The keep/drop table (DEDUP_SCHEMA), one row per input, in input order.

    uris: N strings; hashes: (N, 8) uint8; pixels: (N,) integer source width * height; errors: N strings,
    non-empty for an input that could not be decoded ("unreadable": kept, for the later job to record its
    failure; its hash and pixels are ignored). Duplicate clusters are the connected components of
    `near_duplicate_pairs` among the readable rows (identical hashes are searched once, so a thousand
    copies of one stock "image unavailable" banner cost one hash, not half a million pairs), decided by
    `keep_drop_table`; `distance` is the Hamming distance to the kept image (which, through a chain of
    near-duplicates, may exceed max_distance).
    """
    _check_hashes(hashes)
    if not len(uris) == len(hashes) == len(errors):
        raise ValueError(
            f"uris, hashes and errors must have one entry per input, got lengths {len(uris)}, {len(hashes)}, "
            f"{len(errors)}"
        )
    readable = np.array([not error for error in errors], bool)
    words = _words(hashes)
    hex_digits = hashes.tobytes().hex()
    signatures = [hex_digits[16 * row : 16 * row + 16] if ok else "" for row, ok in enumerate(readable)]

    def hamming(rows: np.ndarray, kept: np.ndarray) -> np.ndarray:
        return np.bitwise_count(words[rows] ^ words[kept]).astype(np.int32)

    labels = _clusters(words[readable], max_distance)
    return keep_drop_table(uris, pixels, errors, labels, hamming, signatures)


def keep_drop_table(
    uris: Sequence[str],
    pixels: np.ndarray,
    errors: Sequence[str],
    labels: np.ndarray,
    distance: Callable[[np.ndarray, np.ndarray], np.ndarray],
    signatures: Sequence[str],
) -> pa.Table:
    """The keep/drop table (DEDUP_SCHEMA) of any near-duplicate method, one row per input, in input order.

    uris, errors, signatures: N strings (an error: the input is "unreadable", kept, its pixels ignored);
    pixels: (N,) integer source width * height; labels: (R,) integer cluster labels of the R readable rows,
    in order (`components`); distance(rows, kept): (K,) int32 method distances of rows to their kept rows.
    A cluster of one is "unique"; in a larger one the image with the most pixels is "kept" (ties: the
    smallest uri in code-point order, then the first row) and every other member is a "duplicate" of it.
    """
    pixels = np.asarray(pixels)
    if pixels.ndim != 1 or not np.issubdtype(pixels.dtype, np.integer):
        raise ValueError(f"pixels must be an (N,) integer array, got {pixels.dtype} with shape {pixels.shape}")
    if not len(uris) == len(pixels) == len(errors) == len(signatures):
        raise ValueError(
            "uris, pixels, errors and signatures must have one entry per input, got lengths "
            f"{len(uris)}, {len(pixels)}, {len(errors)}, {len(signatures)}"
        )
    uri_array = pa.array(uris, pa.string())
    readable = np.array([not error for error in errors], bool)
    rows = np.flatnonzero(readable)
    labels = np.asarray(labels)
    if labels.shape != rows.shape:
        raise ValueError(f"labels must have one entry per readable input ({len(rows)}), got shape {labels.shape}")
    keepers = rows[_keepers(labels, pixels[rows], pc.rank(uri_array.take(rows), tiebreaker="first").to_numpy())]
    cluster = np.full(len(uris), -1, np.int64)
    cluster[rows] = keepers
    alone = np.zeros(len(uris), bool)
    alone[rows] = np.bincount(labels)[labels] == 1
    duplicate = readable & (cluster != np.arange(len(uris)))
    matched = np.maximum(cluster, 0)
    distances = np.full(len(uris), -1, np.int32)
    distances[duplicate] = distance(np.flatnonzero(duplicate), cluster[duplicate])
    return pa.table(
        {
            "uri": uri_array,
            "keep": ~duplicate,
            "reason": np.select([~readable, duplicate, alone], ["unreadable", "duplicate", "unique"], "kept"),
            "matched_uri": pc.if_else(duplicate, uri_array.take(matched), ""),
            "distance": distances,
            "cluster": cluster,
            "pixels": np.where(readable, pixels, 0),
            "signature": pa.array(signatures, pa.string()),
            "error": pa.array(errors, pa.string()),
        },
        schema=DEDUP_SCHEMA,
    )


def components(n: int, pairs: np.ndarray) -> np.ndarray:
    """(M, 2) integer pairs of rows among `n` -> (n,) int32 labels of the connected components they make."""
    edges = (np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1]))
    return connected_components(coo_array(edges, shape=(n, n)), directed=False)[1]


def _clusters(words: np.ndarray, max_distance: int) -> np.ndarray:
    """(N,) uint64 hashes -> (N,) int32 cluster labels: connected components of the near-duplicate pairs."""
    distinct, inverse = np.unique(words, return_inverse=True)
    pairs, _ = near_duplicate_pairs(distinct.astype("<u8").view(np.uint8).reshape(-1, HASH_BYTES), max_distance)
    return components(len(distinct), pairs)[inverse]


def _keepers(labels: np.ndarray, pixels: np.ndarray, uri_rank: np.ndarray) -> np.ndarray:
    """(N,) cluster labels, (N,) pixels, (N,) uri ranks -> (N,) int64 index of each one's cluster keeper:
    the most pixels, then the lowest uri rank, then the lowest index."""
    order = np.lexsort((uri_rank, -pixels.astype(np.int64), labels))
    group_starts = np.flatnonzero(np.diff(labels[order], prepend=-1))
    keeper_of_label = np.empty(len(group_starts), np.int64)
    keeper_of_label[labels[order[group_starts]]] = order[group_starts]
    return keeper_of_label[labels]
