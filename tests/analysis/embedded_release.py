"""Releases with embeddings, written as the job writes them: each shard committed by
`ReleaseWriter.commit_shard` with its embeddings table (`curation.embeddings.embeddings_table`).
The vectors are seeded unit vectors with planted near neighbours, not a model's: the tests know
the answers without running one."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from curation.embeddings import EMBEDDINGS_DIR, embedding_info, embeddings_table, release_image_ids
from curation.release import ReleaseImage, ReleaseWriter
from sam_core.pooled_embedding import POOLING

DIM = 32
INFO = embedding_info("sae_tiny", "ab" * 32, POOLING, DIM)


def unit_vectors(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    """n x dim float32 seeded Gaussian directions, L2-normalised."""
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def near_copy(vector: np.ndarray, noise: float, seed: int) -> np.ndarray:
    """`vector` plus seeded Gaussian noise of scale `noise` per component, L2-normalised."""
    moved = vector + noise * np.random.default_rng(seed).standard_normal(vector.shape).astype(np.float32)
    return moved / np.linalg.norm(moved)


def write_embedded_release(root: Path, images: list[ReleaseImage], vectors: np.ndarray, per_shard: int = 4) -> str:
    """`images` in shards of `per_shard`, each committed with its embeddings (row i of the N x D
    `vectors` is image i's); returns the release's URI."""
    writer = ReleaseWriter(str(root))
    shards = []
    for index, start in enumerate(range(0, len(images), per_shard)):
        part = images[start : start + per_shard]
        ids = [item.record["image"]["image_id"] for item in part]
        table = embeddings_table(np.array(ids), vectors[start : start + per_shard], INFO)
        shards.append(writer.commit_shard(index, part, [], embeddings=table).shard)
    writer.finish([s for s in shards if s is not None], {"generator": "tests/analysis/embedded_release.py"}, "# e\n")
    return str(root)


def write_embeddings_beside(release: str, prefix: Path, vectors: dict[int, np.ndarray]) -> str:
    """What `sa-engine embed` writes for a release made before embeddings: `prefix`/embeddings/<shard>.parquet
    for each shard of `release`, `vectors` by image id; returns the prefix."""
    (prefix / EMBEDDINGS_DIR).mkdir(parents=True, exist_ok=True)
    for shard, ids in release_image_ids(release).items():
        table = embeddings_table(ids, np.stack([vectors[int(i)] for i in ids]), INFO)
        pq.write_table(table, prefix / EMBEDDINGS_DIR / f"{shard}.parquet")
    return str(prefix)
