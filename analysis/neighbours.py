"""Similar images of a release: the nearest neighbours of any image by its embedding, and the groups
of a near-duplicate keep/drop table, for the report and the review app.

`NeighbourIndex` holds every embedding of a release (`curation.embeddings.read_embeddings`: the
release's own `embeddings/`, or those `sa-engine embed` wrote for an older release) in a faiss
`IndexFlatIP` over float32 unit vectors: an exact search, whose inner products are the cosines.
Memory: 4 * D bytes per image (1 KiB at D = 256: about 11 GB for SA-1B's 11M images), plus 16 bytes
per image for the ids and their order; one query scans every vector.

`groups_from_table` reads a keep/drop table of either dedup (`pipelines/dedup.py`, perceptual hash;
`pipelines/semdedup.py`, embeddings) and returns its groups of near-duplicates, largest first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np
import pyarrow.compute as pc

from curation.dedup import HASH_BYTES, SEMANTIC_DISTANCE_SCALE
from curation.dedup_table import DedupTable
from curation.embeddings import read_embeddings

HASH_BITS = 8 * HASH_BYTES
_ADD_ROWS = 1 << 16
"""Embeddings converted to float32 and added to the index per step: the float32 copy of the whole
release is the index itself, never a second array beside it."""


class NeighbourError(ValueError):
    """A neighbour query that cannot be answered (an image without an embedding, a bad k)."""


class NeighbourIndex:
    """Exact cosine nearest neighbours among the images of one release.

    image_ids: (N,) int64, unique; vectors: (N, D) float (float16 as stored), each row L2-normalised
    again in float32 here so that inner products are cosines; info: the embeddings' metadata
    (model, checkpoint_sha256, pooling, dim)."""

    def __init__(self, image_ids: np.ndarray, vectors: np.ndarray, info: dict[str, Any]) -> None:
        image_ids = np.asarray(image_ids)
        if image_ids.ndim != 1 or not np.issubdtype(image_ids.dtype, np.integer):
            raise NeighbourError(f"image_ids must be an (N,) integer array, got {image_ids.dtype} {image_ids.shape}")
        if vectors.ndim != 2 or len(vectors) != len(image_ids) or vectors.shape[1] < 1:
            raise NeighbourError(f"vectors must be ({len(image_ids)}, D), one per image id, got {vectors.shape}")
        self._order = np.argsort(image_ids, kind="stable")
        self._sorted_ids = image_ids[self._order].astype(np.int64)
        repeated = self._sorted_ids[1:][self._sorted_ids[1:] == self._sorted_ids[:-1]]
        if len(repeated):
            raise NeighbourError(f"image ids appear more than once among the embeddings: {repeated[:5].tolist()}")
        self.image_ids = image_ids.astype(np.int64)
        self.info = info
        self.dim = int(vectors.shape[1])
        self._index = faiss.IndexFlatIP(self.dim)
        for start in range(0, len(vectors), _ADD_ROWS):
            chunk = np.ascontiguousarray(vectors[start : start + _ADD_ROWS], dtype=np.float32)
            faiss.normalize_L2(chunk)
            self._index.add(chunk)

    @classmethod
    def open(
        cls, release: str, storage_options: dict[str, Any] | None = None, embeddings: str | None = None
    ) -> NeighbourIndex:
        """The index of `release`'s embeddings (or of those under the prefix `embeddings`);
        `curation.embeddings.EmbeddingsError` when there are none or they do not fit the release."""
        found = read_embeddings(release, storage_options, embeddings)
        return cls(found.image_ids, found.vectors, found.info)

    def __len__(self) -> int:
        return len(self.image_ids)

    def __contains__(self, image_id: int) -> bool:
        return self._row(image_id) is not None

    @property
    def memory_bytes(self) -> int:
        """The index's vectors and the ids: (4 * D + 16) bytes per image."""
        return len(self) * (4 * self.dim + 16)

    def _row(self, image_id: int) -> int | None:
        at = int(np.searchsorted(self._sorted_ids, image_id))
        if at < len(self._sorted_ids) and self._sorted_ids[at] == image_id:
            return int(self._order[at])
        return None

    def nearest(self, image_id: int, k: int) -> list[tuple[int, float]]:
        """The k images most similar to `image_id` (itself left out) as (image id, cosine), most
        similar first; fewer when the release has fewer other images. NeighbourError for an
        image without an embedding or k < 1."""
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise NeighbourError(f"k must be a whole number >= 1, got {k!r}")
        row = self._row(image_id)
        if row is None:
            raise NeighbourError(f"image {image_id} has no embedding in this release")
        query = self._index.reconstruct(row).reshape(1, -1)
        cosines, rows = self._index.search(query, min(k + 1, len(self)))
        found = [(int(r), float(c)) for r, c in zip(rows[0], cosines[0], strict=True) if r >= 0 and r != row]
        return [(int(self.image_ids[r]), cosine) for r, cosine in found[:k]]


@dataclass(frozen=True)
class DuplicateGroup:
    """One group of a keep/drop table: the uri of the input kept, and each dropped input with its
    `distance` column to the kept one, closest first (then by uri)."""

    kept: str
    duplicates: tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class DuplicateGroups:
    """The groups of a keep/drop table. method: "phash" (distance in Hamming bits of 64) or
    "semdedup" (distance = round(10000 * (1 - cosine))); settings: the table's metadata;
    n_groups and n_dropped: over the whole table; groups: the largest `limit` of them."""

    uri: str
    method: str
    settings: dict[str, Any]
    n_groups: int
    n_dropped: int
    groups: list[DuplicateGroup]

    def rule(self) -> str:
        """The table's pair rule in words from its settings ("" when they do not say)."""
        if self.method == "semdedup" and "threshold" in self.settings:
            return f"pairs at cosine >= {self.settings['threshold']}"
        if self.method == "phash" and "max_distance" in self.settings:
            return f"pairs within {self.settings['max_distance']} of {HASH_BITS} bits"
        return ""

    def similarity(self, distance: int) -> str:
        """A distance of this table in words: "cosine 0.9731" or "5/64 bits apart"."""
        if self.method == "semdedup":
            return f"cosine {1 - distance / SEMANTIC_DISTANCE_SCALE:.4f}"
        return f"{distance}/{HASH_BITS} bits apart"


def groups_from_table(
    uri: str, storage_options: dict[str, Any] | None = None, limit: int | None = None
) -> DuplicateGroups:
    """The near-duplicate groups of the keep/drop table at `uri` (either method): each kept input
    with the inputs dropped as its duplicates, the largest groups first (ties: the kept uri in
    code-point order); only the first `limit` are built (None: all). DedupTableError for a file
    that is not a keep/drop table. The grouping runs in Arrow: only the returned groups become
    Python objects."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    table = DedupTable.read(uri, storage_options)
    dropped = table.table.filter(pc.equal(table.table["reason"], "duplicate"))
    sizes = dropped.group_by("matched_uri").aggregate([("uri", "count")])
    sizes = sizes.sort_by([("uri_count", "descending"), ("matched_uri", "ascending")])
    chosen = sizes["matched_uri"] if limit is None else sizes["matched_uri"][:limit]
    members = dropped.filter(pc.is_in(dropped["matched_uri"], value_set=chosen))
    members = members.sort_by([("matched_uri", "ascending"), ("distance", "ascending"), ("uri", "ascending")])
    by_kept: dict[str, list[tuple[str, int]]] = {}
    for kept, duplicate, distance in zip(*(members[c].to_pylist() for c in ("matched_uri", "uri", "distance"))):
        by_kept.setdefault(kept, []).append((duplicate, distance))
    groups = [DuplicateGroup(kept, tuple(by_kept[kept])) for kept in chosen.to_pylist()]
    return DuplicateGroups(uri, table.method, table.settings, sizes.num_rows, dropped.num_rows, groups)
