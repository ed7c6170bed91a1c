"""A release's image embeddings: `embeddings/<shard>.parquet` beside `index/images/<shard>.parquet`.

One row per released image of the shard: `image_id` int64 and `embedding`
fixed_size_list<float16>[D], a unit vector (`sam_core.pooled_embedding.POOLING`). Each file's
schema metadata key `sa_engine.embeddings` holds JSON {"model", "checkpoint_sha256", "pooling",
"dim"}. The main job writes them inside each shard's commit; `sa-engine embed` writes the same
files under another prefix for a release made before embeddings existed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation.retrying_fs import RetryingFileSystem

EMBEDDINGS_DIR = "embeddings"
METADATA_KEY = b"sa_engine.embeddings"
INFO_KEYS = ("model", "checkpoint_sha256", "pooling", "dim")
"""The keys of an embeddings file's info, in this order."""


class EmbeddingsError(ValueError):
    """Embeddings that are missing, malformed, or that do not belong to the release."""


@dataclass(frozen=True)
class ReleaseEmbeddings:
    """image_ids: N int64; vectors: NxD float16 unit vectors, row i of image `image_ids[i]`;
    info: {"model", "checkpoint_sha256", "pooling", "dim"} shared by every file read."""

    image_ids: np.ndarray
    vectors: np.ndarray
    info: dict[str, Any]

    def __len__(self) -> int:
        return len(self.image_ids)


def embedding_info(model: str, checkpoint_sha256: str, pooling: str, dim: int) -> dict[str, Any]:
    """The info recorded with every embeddings file (see `embeddings_table`)."""
    return {"model": model, "checkpoint_sha256": checkpoint_sha256, "pooling": pooling, "dim": int(dim)}


def embeddings_table(image_ids: np.ndarray, vectors: np.ndarray, info: dict[str, Any]) -> pa.Table:
    """The table of one embeddings file. image_ids: N ints; vectors: NxD (cast to float16);
    info: `embedding_info(...)`, whose "dim" must be D."""
    ids = np.asarray(image_ids, dtype=np.int64)
    values = np.asarray(vectors)
    if values.ndim != 2 or len(ids) != len(values) or ids.ndim != 1:
        raise EmbeddingsError(f"need N ids and NxD vectors, got ids {ids.shape} and vectors {values.shape}")
    missing = [key for key in INFO_KEYS if key not in info]
    if missing:
        raise EmbeddingsError(f"embeddings info lacks {missing}")
    if int(info["dim"]) != values.shape[1]:
        raise EmbeddingsError(f"info says dim {info['dim']} but the vectors have {values.shape[1]}")
    flat = pa.array(values.astype(np.float16).reshape(-1), type=pa.float16())
    column = pa.FixedSizeListArray.from_arrays(flat, values.shape[1])
    schema = pa.schema([("image_id", pa.int64()), ("embedding", column.type)]).with_metadata(
        {METADATA_KEY: json.dumps({key: info[key] for key in INFO_KEYS})}
    )
    return pa.table([pa.array(ids), column], schema=schema)


def parse_embeddings(table: pa.Table, source: str) -> ReleaseEmbeddings:
    """The ids, vectors and info of one embeddings file's `table`; `source` names it in errors."""
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    if raw is None or "image_id" not in table.column_names or "embedding" not in table.column_names:
        raise EmbeddingsError(f"{source} is not an embeddings file (no {METADATA_KEY.decode()} metadata or columns)")
    info = json.loads(raw)
    column_type = table.schema.field("embedding").type
    if not pa.types.is_fixed_size_list(column_type) or column_type.list_size != info.get("dim"):
        raise EmbeddingsError(f"{source}: embedding column {column_type} does not hold dim {info.get('dim')}")
    embedding = table["embedding"].combine_chunks()
    vectors = embedding.values.to_numpy(zero_copy_only=False).astype(np.float16, copy=False)
    ids = table["image_id"].to_numpy().astype(np.int64, copy=False)
    return ReleaseEmbeddings(ids, vectors.reshape(len(ids), column_type.list_size), info)


def read_embeddings_file(uri: str, storage_options: dict[str, Any] | None = None) -> ReleaseEmbeddings:
    """One embeddings file (any fsspec URI)."""
    fs = RetryingFileSystem(uri, storage_options)
    with fs.open(fs.root, "rb") as f:
        return parse_embeddings(pq.read_table(f), uri)


def embedding_shards(
    release: str, storage_options: dict[str, Any] | None = None, embeddings: str | None = None
) -> list[str]:
    """The URIs of `embeddings/*.parquet` under `embeddings` (default: the release itself), by
    shard name; EmbeddingsError when there are none."""
    prefix = embeddings or release
    fs = RetryingFileSystem(prefix, storage_options)
    paths = sorted(fs.glob(f"{fs.root.rstrip('/')}/{EMBEDDINGS_DIR}/*.parquet"))
    if not paths:
        raise EmbeddingsError(
            f"{prefix} holds no {EMBEDDINGS_DIR}/*.parquet: a release made before embeddings? run "
            f"`sa-engine embed --release {release} --output URI` and pass that URI as the embeddings"
        )
    return [fs.unstrip_protocol(p) for p in paths]


def release_image_ids(release: str, storage_options: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """{shard name: int64 ids of its released images} from the release's images index."""
    fs = RetryingFileSystem(release, storage_options)
    paths = sorted(fs.glob(f"{fs.root.rstrip('/')}/index/images/*.parquet"))
    found = {}
    for path in paths:
        with fs.open(path, "rb") as f:
            found[PurePosixPath(path).stem] = pq.read_table(f, columns=["image_id"])["image_id"].to_numpy()
    return found


def read_embeddings(
    release: str, storage_options: dict[str, Any] | None = None, embeddings: str | None = None
) -> ReleaseEmbeddings:
    """Every embedding of `release`, shard by shard, from the release or from the prefix
    `embeddings` (what `sa-engine embed` wrote for it). EmbeddingsError when there are none,
    when the files disagree on model, checkpoint, pooling or dim, or when a file's ids are not
    those of its shard in the release's images index (or a shard has no file)."""
    parts = {
        PurePosixPath(uri).stem: read_embeddings_file(uri, storage_options)
        for uri in embedding_shards(release, storage_options, embeddings)
    }
    infos = {json.dumps(part.info, sort_keys=True) for part in parts.values()}
    if len(infos) > 1:
        raise EmbeddingsError(f"the embeddings files of {embeddings or release} disagree: {sorted(infos)}")
    expected = release_image_ids(release, storage_options)
    if sorted(parts) != sorted(expected):
        missing, extra = sorted(set(expected) - set(parts)), sorted(set(parts) - set(expected))
        raise EmbeddingsError(
            f"embeddings of {embeddings or release} do not cover the release's shards: "
            f"missing {missing[:5]}, not in the release {extra[:5]}"
        )
    for shard, part in parts.items():
        if not np.array_equal(np.sort(part.image_ids), np.sort(expected[shard])):
            raise EmbeddingsError(f"embeddings of shard {shard}: image ids differ from the release's images index")
    ordered = [parts[name] for name in sorted(parts)]
    return ReleaseEmbeddings(
        np.concatenate([p.image_ids for p in ordered]),
        np.concatenate([p.vectors for p in ordered]),
        ordered[0].info,
    )
