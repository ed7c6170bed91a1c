"""A release's embeddings files: written with each shard's commit, read back whole, and refused with
a reason when they are missing, of two models, or not the release's images."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from curation.embeddings import (
    EmbeddingsError,
    embedding_info,
    embedding_shards,
    embeddings_table,
    read_embeddings,
    read_embeddings_file,
)
from curation.release import ReleaseError, ReleaseImage, ReleaseWriter
from sam_core.pooled_embedding import POOLING
from tests.curation.test_release import _record

DIM = 16
INFO = embedding_info("sae_tiny", "ab" * 32, POOLING, DIM)
SHARDS = {0: [1, 2], 3: [3]}
"""Shard index -> the ids of its released images; image 4 failed in shard 3."""


def _unit_vectors(n: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).normal(size=(n, DIM))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float16)


def _images(ids: list[int]) -> list[ReleaseImage]:
    return [ReleaseImage(_record(i, 1), f"jpeg-{i}".encode()) for i in ids]


@pytest.fixture
def release(tmp_path: Path) -> tuple[Path, dict[int, np.ndarray]]:
    """A finished release of two shards with embeddings, and each image's vector."""
    writer = ReleaseWriter(str(tmp_path / "rel"))
    vectors, commits = {}, []
    for index, ids in SHARDS.items():
        shard_vectors = _unit_vectors(len(ids), seed=index)
        vectors.update(zip(ids, shard_vectors))
        failures = [{"image_id": 4, "uri": "file:///4.jpg", "stage": "decode", "error": "x"}] if index == 3 else []
        table = embeddings_table(np.array(ids), shard_vectors, INFO)
        commits.append(writer.commit_shard(index, _images(ids), failures, embeddings=table))
    writer.finish([c.shard for c in commits], {"preset": "test"}, "# card\n")
    return tmp_path / "rel", vectors


def test_the_embeddings_of_a_release_read_back_as_written(release):
    root, vectors = release
    found = read_embeddings(str(root))
    assert found.image_ids.tolist() == [1, 2, 3] and found.info == INFO
    assert found.vectors.dtype == np.float16 and found.vectors.shape == (3, DIM)
    np.testing.assert_array_equal(found.vectors, np.stack([vectors[i] for i in (1, 2, 3)]))
    assert [Path(u).name for u in embedding_shards(str(root))] == ["sa_000000.parquet", "sa_000003.parquet"]
    schema = pq.read_schema(root / "embeddings" / "sa_000000.parquet")
    assert (
        schema.field("embedding").type.list_size == DIM
        and str(schema.field("embedding").type.value_type) == "halffloat"
    )


def test_embeddings_kept_under_another_prefix_are_read_for_the_release(release, tmp_path):
    root, _ = release
    (tmp_path / "elsewhere").mkdir()
    shutil.move(root / "embeddings", tmp_path / "elsewhere" / "embeddings")
    with pytest.raises(EmbeddingsError, match=r"release made before embeddings\? run `sa-engine embed --release "):
        read_embeddings(str(root))
    found = read_embeddings(str(root), embeddings=str(tmp_path / "elsewhere"))
    assert found.image_ids.tolist() == [1, 2, 3]


def test_files_of_two_models_are_refused(release):
    root, _ = release
    other = embedding_info("vit_b", "cd" * 32, POOLING, DIM)
    pq.write_table(embeddings_table(np.array([3]), _unit_vectors(1, 9), other), root / "embeddings/sa_000003.parquet")
    with pytest.raises(EmbeddingsError, match="disagree"):
        read_embeddings(str(root))


def test_ids_that_are_not_the_releases_are_refused(release):
    root, _ = release
    path = root / "embeddings" / "sa_000003.parquet"
    pq.write_table(embeddings_table(np.array([4]), _unit_vectors(1, 9), INFO), path)
    with pytest.raises(EmbeddingsError, match="shard sa_000003: image ids differ"):
        read_embeddings(str(root))
    path.unlink()
    with pytest.raises(EmbeddingsError, match=r"missing \['sa_000003'\]"):
        read_embeddings(str(root))


def test_a_file_that_is_not_an_embeddings_file_is_refused(release):
    root, _ = release
    path = root / "embeddings" / "sa_000003.parquet"
    pq.write_table(pq.read_table(root / "index" / "images" / "sa_000003.parquet"), path)
    with pytest.raises(EmbeddingsError, match="is not an embeddings file"):
        read_embeddings_file(str(path))


@pytest.mark.parametrize(
    ("ids", "vectors", "info", "message"),
    [
        ([1, 2], np.zeros((3, DIM)), INFO, "need N ids and NxD vectors"),
        ([1], np.zeros((1, DIM + 1)), INFO, f"info says dim {DIM} but the vectors have {DIM + 1}"),
        ([1], np.zeros((1, DIM)), {"model": "m", "dim": DIM}, r"lacks \['checkpoint_sha256', 'pooling'\]"),
    ],
)
def test_a_table_is_made_only_from_matching_ids_vectors_and_info(ids, vectors, info, message):
    with pytest.raises(EmbeddingsError, match=message):
        embeddings_table(np.array(ids), vectors, info)


def test_a_shard_commits_only_embeddings_of_its_images_and_leftovers_are_removed(tmp_path):
    writer = ReleaseWriter(str(tmp_path / "rel"))
    wrong = embeddings_table(np.array([1, 9]), _unit_vectors(2, 0), INFO)
    with pytest.raises(ReleaseError, match="not its 2 images' ids"):
        writer.commit_shard(0, _images([1, 2]), [], embeddings=wrong)
    assert not (tmp_path / "rel" / "_progress").exists() and not (tmp_path / "rel" / "shards").exists()

    writer.commit_shard(5, _images([5]), [])  # a writer given no embeddings writes none
    assert not (tmp_path / "rel" / "embeddings").exists()
    # a run that died after writing shard 7's files, before its marker
    writer.write_shard(7, _images([7]))
    (tmp_path / "rel" / "embeddings").mkdir()
    pq.write_table(
        embeddings_table(np.array([7]), _unit_vectors(1, 7), INFO), tmp_path / "rel/embeddings/sa_000007.parquet"
    )
    removed = writer.remove_uncommitted()
    assert any(p.endswith("embeddings/sa_000007.parquet") for p in removed)
    assert not (tmp_path / "rel" / "embeddings" / "sa_000007.parquet").exists()


def test_hugging_face_datasets_reads_the_embeddings_config(release, tmp_path, monkeypatch):
    from datasets import load_dataset

    root, vectors = release
    assert "config_name: embeddings" in (root / "README.md").read_text()
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    rows = load_dataset(str(root), "embeddings", split="train").with_format("numpy")[:]
    assert sorted(rows["image_id"].tolist()) == [1, 2, 3]
    by_id = dict(zip(rows["image_id"].tolist(), rows["embedding"]))
    np.testing.assert_array_equal(np.stack([by_id[i] for i in (1, 2, 3)]), np.stack([vectors[i] for i in (1, 2, 3)]))
