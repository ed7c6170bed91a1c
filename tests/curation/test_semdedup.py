"""Semantic near-duplicates (curation/semdedup.py): the exact pair search against brute force on planted
duplicates, the cluster rule, the keep rule shared with the hash dedup, the table's metadata, and merging
the two kinds of keep/drop table (curation/dedup_table.py)."""

from __future__ import annotations

import faiss
import numpy as np
import pyarrow as pa
import pytest

from curation.dedup import DEDUP_SCHEMA
from curation.dedup import decide as hash_decide
from curation.dedup_table import DedupTable, DedupTableError, dedup_table_bytes, dropped_by_any
from curation.embeddings import embedding_info
from curation.semdedup import (
    CLUSTER_SIZE,
    POINTS_PER_CLUSTER,
    SemDedupError,
    assign,
    decide,
    inner_products,
    measured_threshold,
    n_clusters,
    pairs_above,
    semdedup,
    spherical_kmeans,
    training_rows,
)
from sam_core.checkpoints import bundled_checkpoint, file_sha256
from sam_core.pooled_embedding import POOLING

DIM = 64
THRESHOLD = 0.9


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _planted(n_background: int, n_groups: int, seed: int = 0) -> tuple[np.ndarray, set[tuple[int, int]]]:
    """(N, DIM) float16 unit vectors: random ones, then 1-3 noisy copies of each of the first `n_groups`
    (each at cosine >= 0.969 to its original); and the planted pairs (i < j) within each original and
    its copies."""
    rng = np.random.default_rng(seed)
    vectors = [_unit(rng.standard_normal((n_background, DIM)))]
    groups, row = [], n_background
    for original in range(n_groups):
        copies = rng.integers(1, 4)
        noise = rng.standard_normal((copies, DIM))
        noise -= np.outer(noise @ vectors[0][original], vectors[0][original])  # orthogonal to the original
        angle = rng.uniform(0.05, 0.25, (copies, 1))  # radians: cosine 0.969..0.999 (0.939+ between copies)
        vectors.append(np.cos(angle) * vectors[0][original] + np.sin(angle) * _unit(noise))
        groups.append([original, *range(row, row + copies)])
        row += copies
    planted = {(a, b) for group in groups for a in group for b in group if a < b}
    return np.concatenate(vectors).astype(np.float16), planted


def _brute_force(vectors: np.ndarray, threshold: float) -> dict[tuple[int, int], float]:
    """Every pair (i < j) with cosine >= threshold, from the full Gram matrix of the float32 vectors."""
    as_float = vectors.astype(np.float32)
    gram = as_float @ as_float.T
    first, second = np.nonzero(np.triu(gram >= threshold, k=1))
    return {(int(a), int(b)): float(gram[a, b]) for a, b in zip(first, second, strict=True)}


def test_the_cluster_rule_aims_at_cluster_size_images_per_cluster():
    assert [n_clusters(n) for n in (0, 1, 10, CLUSTER_SIZE, 3 * CLUSTER_SIZE, 10**6)] == [1, 1, 1, 1, 3, 500]
    assert n_clusters(int(2.6 * CLUSTER_SIZE)) == 3
    with pytest.raises(SemDedupError, match="non-negative integer"):
        n_clusters(-1)


def test_pairs_above_finds_exactly_the_brute_force_pairs():
    vectors, planted = _planted(3000, 150)
    expected = _brute_force(vectors, THRESHOLD)
    assert planted <= set(expected) and len(expected) == len(planted)  # random 64-d vectors never reach 0.9
    centroids = spherical_kmeans(vectors, 16, seed=1)
    # Searching every cluster from every image is the brute force, cluster by cluster.
    pairs, cosines = pairs_above(vectors, THRESHOLD, assign(vectors, centroids, probes=16))
    assert {tuple(p) for p in pairs.tolist()} == set(expected)
    np.testing.assert_allclose(cosines, [expected[tuple(p)] for p in pairs.tolist()], atol=1e-5)
    assert pairs.dtype == np.int64 and np.all(pairs[:, 0] < pairs[:, 1])
    assert np.array_equal(pairs, np.unique(pairs, axis=0))  # sorted, each once
    # Two probes: every planted pair still found, though a pair's images may belong to different clusters.
    assignments = assign(vectors, centroids, probes=2)
    split = [(a, b) for a, b in planted if assignments[a, 0] != assignments[b, 0]]
    assert split, "no planted pair straddles two clusters: the test would not test the probes"
    pairs, _ = pairs_above(vectors, THRESHOLD, assignments)
    assert {tuple(p) for p in pairs.tolist()} == set(expected)
    # One probe misses the straddling pairs, and only them.
    pairs, _ = pairs_above(vectors, THRESHOLD, assignments[:, :1])
    assert set(expected) - {tuple(p) for p in pairs.tolist()} == set(split)


def test_the_search_split_by_clusters_adds_up_to_the_whole():
    vectors, _ = _planted(2000, 100, seed=3)
    assignments = assign(vectors, spherical_kmeans(vectors, 8, seed=0), probes=2)
    whole, _ = pairs_above(vectors, THRESHOLD, assignments)
    parts = [pairs_above(vectors, THRESHOLD, assignments, clusters=np.arange(8)[part::3])[0] for part in range(3)]
    assert np.array_equal(np.unique(np.concatenate(parts), axis=0), whole)
    assert len(pairs_above(vectors, THRESHOLD, assignments, clusters=np.array([99]))[0]) == 0


def test_kmeans_is_seeded_and_equal_on_its_training_rows_alone():
    vectors, _ = _planted(3000, 50, seed=4)
    k = 4
    centroids = spherical_kmeans(vectors, k, seed=7)
    assert centroids.shape == (k, DIM) and centroids.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(centroids, spherical_kmeans(vectors, k, seed=7))
    assert not np.array_equal(centroids, spherical_kmeans(vectors, k, seed=8))
    rows = training_rows(len(vectors), k, seed=7)
    assert len(rows) == POINTS_PER_CLUSTER * k and np.all(np.diff(rows) > 0)
    assert np.array_equal(spherical_kmeans(vectors[rows], k, seed=7), centroids)  # what a job gathers
    nearest = assign(vectors, centroids, probes=3)
    brute = np.argsort(-(vectors.astype(np.float32) @ centroids.T), axis=1, kind="stable")[:, :3]
    assert nearest.shape == (len(vectors), 3) and np.mean(nearest == brute) > 0.999  # ties aside
    assert assign(vectors, centroids, probes=10).shape == (len(vectors), k)


def test_the_keep_rule_and_distances_match_the_hash_dedup():
    """a, b, c form a chain (a~b, b~c, not a~c); d is alone; e and f tie on pixels."""
    angles = np.array([0.0, 0.3, 0.6, 0.0, 0.0, 0.2])  # radians: cos(0.3) = 0.955, cos(0.6) = 0.825
    planes = [(0, 1), (0, 1), (0, 1), (2, 3), (4, 5), (4, 5)]  # a, b, c in one plane; d alone; e, f in another
    vectors = np.zeros((6, DIM), np.float32)
    for row, ((x, y), angle) in enumerate(zip(planes, angles, strict=True)):
        vectors[row, x], vectors[row, y] = np.cos(angle), np.sin(angle)
    vectors = vectors.astype(np.float16)
    uris = ["s3://a", "s3://b", "s3://c", "s3://d", "s3://f", "s3://e"]
    pixels = np.array([100, 400, 100, 900, 50, 50])
    pairs, _ = pairs_above(vectors, THRESHOLD, np.zeros((6, 1), np.int32))
    assert pairs.tolist() == [[0, 1], [1, 2], [4, 5]]
    table = decide(uris, pixels, pairs, inner_products(vectors))
    assert table.schema.equals(DEDUP_SCHEMA)
    rows = table.to_pylist()
    assert [r["reason"] for r in rows] == ["duplicate", "kept", "duplicate", "unique", "duplicate", "kept"]
    assert [r["cluster"] for r in rows] == [1, 1, 1, 3, 5, 5]  # the most pixels; then the smaller uri s3://e
    assert rows[0]["matched_uri"] == rows[2]["matched_uri"] == "s3://b" and rows[4]["matched_uri"] == "s3://e"
    as_float = vectors.astype(np.float32)
    assert rows[0]["distance"] == round(10000 * (1 - float(as_float[0] @ as_float[1])))
    assert [r["distance"] for r in rows if r["keep"]] == [-1, -1, -1]
    assert {r["signature"] for r in rows} == {""} and {r["error"] for r in rows} == {""}
    # The hash dedup decides the same groups and keepers through the same code.
    hashes = np.zeros((6, 8), np.uint8)
    hashes[[0, 1, 2], 0], hashes[3] = 1, 255
    hashes[[4, 5], 1] = 7
    by_hash = hash_decide(uris, hashes, pixels, [""] * 6, 0).to_pylist()
    for field in ("keep", "reason", "matched_uri", "cluster"):
        assert [r[field] for r in by_hash] == [r[field] for r in rows]


def test_semdedup_end_to_end_and_its_metadata():
    vectors, planted = _planted(500, 20, seed=5)
    uris = [f"s3://photos/{i:04d}.jpg" for i in range(len(vectors))]
    pixels = np.full(len(vectors), 1000)
    table, settings = semdedup(uris, pixels, vectors, THRESHOLD, seed=3)
    assert settings == {
        "method": "semdedup", "threshold": THRESHOLD, "clusters": 1, "probes": 2, "seed": 3,
        "faiss": faiss.__version__, "description": settings["description"],
    }  # fmt: skip
    assert settings["description"].startswith(f"cosine >= {THRESHOLD} between image embeddings")
    assert len(planted) >= 20
    # Equal pixels: each group keeps its smallest uri, the original (the copies come after the 500).
    kept = {r["uri"] for r in table.to_pylist() if r["reason"] == "kept"}
    assert kept == {uris[original] for original in range(20)}
    assert table.num_rows == len(vectors) and sum(not k for k in table["keep"].to_pylist()) == len(vectors) - 500


def test_bad_input_is_refused_with_a_reason():
    vectors, _ = _planted(20, 2)
    with pytest.raises(SemDedupError, match="float16 or float32"):
        assign(vectors.astype(np.float64), spherical_kmeans(vectors, 2, 0))
    with pytest.raises(SemDedupError, match="k must be an integer"):
        spherical_kmeans(vectors, len(vectors) + 1, 0)
    with pytest.raises(SemDedupError, match="dimensions"):
        assign(vectors, np.ones((2, DIM + 1), np.float32))
    with pytest.raises(SemDedupError, match="probes"):
        assign(vectors, spherical_kmeans(vectors, 2, 0), probes=0)
    with pytest.raises(SemDedupError, match="threshold"):
        pairs_above(vectors, 1.5, np.zeros((len(vectors), 1), np.int32))
    with pytest.raises(SemDedupError, match="assignments"):
        pairs_above(vectors, 0.9, np.zeros((3, 1), np.int32))
    with pytest.raises(SemDedupError, match="one entry per image"):
        semdedup(["a"], np.array([1]), vectors, 0.9)
    with pytest.raises(SemDedupError, match="pairs must be rows"):
        decide(["a", "b"], np.array([1, 2]), np.array([[0, 5]]), inner_products(vectors))


def _table_file(tmp_path, name: str, table: pa.Table, settings: dict) -> str:
    path = tmp_path / name
    path.write_bytes(dedup_table_bytes(table, settings))
    return str(path)


def test_two_tables_merge_and_a_semantic_table_need_not_cover_every_input(tmp_path):
    """Inputs a..e: the hash table drops b (for a); the semantic one (of a release without e,
    which failed there) finds a, b, c, d alike and drops b, c and d (for a, the most pixels)."""
    uris = [f"s3://in/{name}.jpg" for name in "abcde"]
    hashes = np.zeros((5, 8), np.uint8)
    hashes[2:, 0] = [15, 63, 255]  # c, d, e: 4+ bits apart
    hashed = hash_decide(uris, hashes, np.array([900, 100, 400, 100, 100]), [""] * 5, 1)
    phash = DedupTable.read(_table_file(tmp_path, "phash.parquet", hashed, {"method": "phash"}))
    vectors = np.zeros((4, DIM), np.float16)
    vectors[:, 0] = 1  # a, b, c, d: one vector
    semantic = decide(
        uris[:4], np.array([900, 100, 400, 100]), np.array([[0, 1], [0, 2], [2, 3]]), inner_products(vectors)
    )
    sem = DedupTable.read(_table_file(tmp_path, "sem.parquet", semantic, {"method": "semdedup", "threshold": 0.9}))
    assert (phash.method, sem.method) == ("phash", "semdedup")
    older = DedupTable.read(_table_file(tmp_path, "old.parquet", hashed, {"method": "a 64-bit windowed ... hash"}))
    assert older.method == "phash" and sem.summary()["method"] == "semdedup"
    plan = pa.table({"image_id": [10, 11, 12, 13, 14], "uri": uris})
    assert sem.dropped(plan).to_pylist() == [
        {"image_id": 11, "error": "near-duplicate of s3://in/a.jpg (embeddings at cosine distance 0)"},
        {"image_id": 12, "error": "near-duplicate of s3://in/a.jpg (embeddings at cosine distance 0)"},
        {"image_id": 13, "error": "near-duplicate of s3://in/a.jpg (embeddings at cosine distance 0)"},
    ]
    merged = dropped_by_any([phash, sem], plan)
    assert merged["image_id"].to_pylist() == [11, 12, 13]  # each once, by id
    assert merged["error"][0].as_py() == "near-duplicate of s3://in/a.jpg (hashes 0/64 bits apart)"  # the first table's
    assert dropped_by_any([], plan).num_rows == 0
    # A hash table is made from the input listing: one that lacks an input is refused.
    with pytest.raises(DedupTableError, match="lacks 1 of the 6 inputs"):
        dropped_by_any([sem, phash], pa.table({"image_id": range(6), "uri": [*uris, "s3://in/new.jpg"]}))


def test_the_measured_threshold_is_the_shipped_models_and_no_other():
    shipped = embedding_info("sae_tiny", file_sha256(bundled_checkpoint("sae_tiny")), POOLING, 384)
    assert measured_threshold(shipped) == 0.996  # docs/curation.md, benchmarks/semdedup_threshold.py
    retrained = {**shipped, "checkpoint_sha256": "ef" * 32}
    with pytest.raises(SemDedupError, match="no cosine threshold has been measured for embeddings of sae_tiny"):
        measured_threshold(retrained)
    with pytest.raises(SemDedupError, match="pooling 'mean over"):
        measured_threshold({**shipped, "pooling": "mean over the cells of the neck output"})  # as the first releases
