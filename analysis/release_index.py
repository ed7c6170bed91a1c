"""Streaming reads of a release's Parquet indexes (`index/images`, `index/masks`) and of its
failures table (`failures/`) through fsspec.

Nothing here holds more than one record batch: statistics over an 11M-image, 1B-mask release
are accumulated batch by batch (see `analysis.accumulators`). Images index files may differ in
their extra metadata columns (each shard keeps the metadata its inputs had); a column asked for
but absent from a file comes back as nulls.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation.release import FAILURE_SCHEMA, MASK_SCHEMA, ReleaseError, read_manifest

SIZE_LABELS = ("small", "medium", "large")
SIZE_EDGES = (0.05, 0.2)
"""Mask size classes by relative size sqrt(mask area / image area): small < 0.05 <= medium < 0.2 <= large."""
DEFAULT_BATCH_ROWS = 1 << 16


def relative_size(area: np.ndarray, height: np.ndarray, width: np.ndarray) -> np.ndarray:
    """sqrt(mask area / image area), the SAM paper's relative mask size; float64 in [0, 1]."""
    return np.sqrt(np.asarray(area, np.float64) / (np.asarray(height, np.float64) * np.asarray(width, np.float64)))


def size_class(rel_size: np.ndarray) -> np.ndarray:
    """Index into SIZE_LABELS for each relative size (int64)."""
    return np.digitize(np.asarray(rel_size, np.float64), SIZE_EDGES).astype(np.int64)


class ReleaseIndex:
    """The images and masks indexes of one finished release (any fsspec URI)."""

    def __init__(self, uri: str, storage_options: dict[str, Any] | None = None) -> None:
        self.uri = uri.rstrip("/")
        self.storage_options = storage_options or {}
        self.manifest = read_manifest(self.uri, self.storage_options)
        self._fs, root = fsspec.core.url_to_fs(self.uri, **self.storage_options)
        self._root = root.rstrip("/")
        self.image_files = self._files("images")
        self.mask_files = self._files("masks")
        self.failure_files = sorted(self._fs.glob(f"{self._root}/failures/*.parquet"))

    def _files(self, kind: str) -> list[str]:
        files = sorted(self._fs.glob(f"{self._root}/index/{kind}/*.parquet"))
        if not files and self.manifest.get("shards"):
            raise ReleaseError(f"{self.uri}: the manifest lists shards but index/{kind}/ holds no Parquet files")
        return files

    def shard_uri(self, shard: str) -> str:
        """The tar of `shard`: under shards/ of the release, or, for an index of SA-1B tars
        (`analysis.sa1b_index`), in the folder its manifest names."""
        folder = self.manifest.get("settings", {}).get("shards_uri") or f"{self.uri}/shards"
        return f"{folder}/{shard}.tar"

    def image_columns(self) -> list[str]:
        """Every column that appears in at least one images index file (metadata included)."""
        seen: dict[str, None] = {}
        for path in self.image_files:
            with self._fs.open(path, "rb") as f:
                seen.update(dict.fromkeys(pq.ParquetFile(f).schema_arrow.names))
        return list(seen)

    def iter_images(self, columns: Sequence[str], batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[pa.Table]:
        """Batches of the images index with exactly `columns` (nulls where a file lacks one)."""
        yield from self._iter(self.image_files, columns, batch_rows)

    def iter_masks(self, columns: Sequence[str], batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[pa.Table]:
        """Batches of the masks index (columns of curation.release.MASK_SCHEMA)."""
        _check_columns("the masks index", MASK_SCHEMA, columns)
        yield from self._iter(self.mask_files, columns, batch_rows)

    def iter_failures(self, columns: Sequence[str], batch_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[pa.Table]:
        """Batches of the failures table (columns of curation.release.FAILURE_SCHEMA): one row per
        input that was not released, with the stage and the reason."""
        _check_columns("the failures table", FAILURE_SCHEMA, columns)
        yield from self._iter(self.failure_files, columns, batch_rows)

    def _iter(self, files: list[str], columns: Sequence[str], batch_rows: int) -> Iterator[pa.Table]:
        for path in files:
            with self._fs.open(path, "rb") as f:
                parquet = pq.ParquetFile(f)
                present = [c for c in columns if c in parquet.schema_arrow.names]
                for batch in parquet.iter_batches(batch_size=batch_rows, columns=present):
                    table = pa.Table.from_batches([batch])
                    for name in columns:
                        if name not in present:
                            table = table.append_column(name, pa.nulls(len(table)))
                    yield table.select(list(columns))


def _check_columns(what: str, schema: pa.Schema, columns: Sequence[str]) -> None:
    unknown = sorted(set(columns) - set(schema.names))
    if unknown:
        raise ValueError(f"{what} has no columns {unknown}; it has {schema.names}")
