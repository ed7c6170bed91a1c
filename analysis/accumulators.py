"""Bounded-memory accumulators for statistics over a stream of record batches.

Each holds a fixed-size state (histogram counts, or k sampled items per stratum) however many
rows it is fed, and two of the same kind can be merged, so a summary of 1B masks costs what a
summary of 1M costs in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def seeded_hash(keys: np.ndarray, seed: int) -> np.ndarray:
    """splitmix64 of each int64 key mixed with `seed`: uint64, the same on every machine and run.

    Sorting by it gives a uniform random order of the keys that does not depend on the order in
    which they were read, which is what streaming samples (bottom-k) need.
    """
    with np.errstate(over="ignore"):
        z = np.asarray(keys).astype(np.uint64) ^ np.uint64(seed & 0xFFFFFFFFFFFFFFFF)
        z = (z + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return z ^ (z >> np.uint64(31))


def pair_key(high: np.ndarray, low: np.ndarray) -> np.ndarray:
    """One int64 key for (image id, annotation id) pairs, for `seeded_hash`."""
    with np.errstate(over="ignore"):
        return np.asarray(high).astype(np.int64) * np.int64(1_000_003) + np.asarray(low).astype(np.int64)


@dataclass
class Histogram:
    """Counts of values in fixed bins `edges` (len B+1); values outside are clipped into the end bins."""

    edges: np.ndarray
    counts: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.edges = np.asarray(self.edges, np.float64)
        if self.edges.ndim != 1 or len(self.edges) < 2 or np.any(np.diff(self.edges) <= 0):
            raise ValueError("histogram edges must be a 1-D increasing sequence of at least 2 values")
        self.counts = np.zeros(len(self.edges) - 1, np.int64)

    def add(self, values: np.ndarray) -> None:
        values = np.asarray(values, np.float64)
        values = values[np.isfinite(values)]
        bins = np.clip(np.searchsorted(self.edges, values, side="right") - 1, 0, len(self.counts) - 1)
        self.counts += np.bincount(bins, minlength=len(self.counts))

    def merge(self, other: Histogram) -> None:
        if not np.array_equal(self.edges, other.edges):
            raise ValueError("cannot merge histograms with different edges")
        self.counts += other.counts

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def shares(self) -> np.ndarray:
        """Fraction of all counted values in each bin (zeros when empty)."""
        return self.counts / max(self.total, 1)


@dataclass
class Histogram2D:
    """Counts of (x, y) points on a fixed `bins` x `bins` grid over [0, 1]^2 (rows are y)."""

    bins: int = 50
    counts: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        if self.bins < 1:
            raise ValueError(f"bins must be >= 1, got {self.bins}")
        self.counts = np.zeros((self.bins, self.bins), np.int64)

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        keep = np.isfinite(x) & np.isfinite(y)
        col = np.clip((x[keep] * self.bins).astype(np.int64), 0, self.bins - 1)
        row = np.clip((y[keep] * self.bins).astype(np.int64), 0, self.bins - 1)
        self.counts += np.bincount(row * self.bins + col, minlength=self.bins**2).reshape(self.bins, self.bins)

    def density(self) -> np.ndarray:
        """bins x bins float64 summing to 1 (zeros when empty)."""
        return self.counts / max(int(self.counts.sum()), 1)


@dataclass
class StratifiedSample:
    """A uniform sample without replacement of at most `k` items per stratum, streaming.

    Bottom-k sampling: an item is kept when its seeded hash is among the k smallest of its stratum
    so far. The result depends only on the keys, the seed and k, not on batch sizes or order.
    """

    k: int
    n_strata: int
    seed: int = 0
    _hashes: list[np.ndarray] = field(init=False, repr=False)
    _items: list[list[Any]] = field(init=False, repr=False)
    seen: np.ndarray = field(init=False)

    repeated: int = field(init=False, default=0)
    """Items not added because their key was already in the sample (a key listed twice)."""

    def __post_init__(self) -> None:
        if self.k < 1 or self.n_strata < 1:
            raise ValueError(f"k and n_strata must be >= 1, got {self.k} and {self.n_strata}")
        self._hashes = [np.empty(0, np.uint64) for _ in range(self.n_strata)]
        self._items = [[] for _ in range(self.n_strata)]
        self.seen = np.zeros(self.n_strata, np.int64)

    def add(self, keys: np.ndarray, strata: np.ndarray, payload: Callable[[int], Any]) -> None:
        """keys: N int64 unique item keys; strata: N ints in [0, n_strata); payload(i): the item
        to keep for row i, called only for rows that enter the sample."""
        hashes = seeded_hash(keys, self.seed)
        strata = np.asarray(strata, np.int64)
        self.seen += np.bincount(strata, minlength=self.n_strata)
        for s in range(self.n_strata):
            rows = np.flatnonzero(strata == s)
            rows = rows[np.argsort(hashes[rows], kind="stable")[: self.k]]  # at most k new rows can enter
            if len(self._hashes[s]) >= self.k:  # and only those below the current k-th hash
                rows = rows[hashes[rows] < self._hashes[s][-1]]
            if len(rows) == 0:
                continue
            merged_hashes = np.concatenate([self._hashes[s], hashes[rows]])
            merged_items = self._items[s] + [payload(int(i)) for i in rows]
            # splitmix64 is a bijection: an equal hash is the same key again, kept once (the first)
            _, first = np.unique(merged_hashes, return_index=True)
            self.repeated += len(merged_hashes) - len(first)
            order = first[np.argsort(merged_hashes[first], kind="stable")][: self.k]
            self._hashes[s] = merged_hashes[order]
            self._items[s] = [merged_items[i] for i in order]

    def items(self, stratum: int) -> list[Any]:
        """The sampled payloads of `stratum`, in hash order."""
        return list(self._items[stratum])
