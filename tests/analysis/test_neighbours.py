"""Nearest neighbours of a release's images against brute-force numpy, the index read from a
release's embeddings (its own, or those written for it under another prefix), and the groups of
keep/drop tables of both dedup methods."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from analysis.neighbours import HASH_BITS, NeighbourError, NeighbourIndex, groups_from_table
from curation.dedup import DEDUP_SCHEMA, decide
from curation.dedup_table import DedupTableError, dedup_table_bytes
from curation.embeddings import EmbeddingsError
from tests.analysis.conftest import KnownRelease
from tests.analysis.embedded_release import DIM, INFO, near_copy, unit_vectors, write_embeddings_beside


def brute_force_nearest(ids: np.ndarray, vectors: np.ndarray, image_id: int, k: int) -> tuple[list[int], np.ndarray]:
    """The k nearest of `image_id` by cosine over all other rows, in numpy float64."""
    unit = vectors.astype(np.float64)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    row = int(np.flatnonzero(ids == image_id)[0])
    cosines = unit @ unit[row]
    cosines[row] = -np.inf
    order = np.argsort(-cosines, kind="stable")[:k]
    return ids[order].tolist(), cosines[order]


def test_nearest_neighbours_equal_brute_force_search():
    rng = np.random.default_rng(3)
    vectors = unit_vectors(3000, 48, seed=1).astype(np.float16)  # stored as the release stores them
    ids = rng.permutation(np.arange(10, 10 + 3 * 3000, 3))  # ids neither sorted nor contiguous
    index = NeighbourIndex(ids, vectors, INFO)
    assert len(index) == 3000 and index.dim == 48 and index.memory_bytes == 3000 * (4 * 48 + 16)
    for image_id in rng.choice(ids, 25, replace=False):
        expected_ids, expected_cosines = brute_force_nearest(ids, vectors, int(image_id), 10)
        found = index.nearest(int(image_id), 10)
        assert [n for n, _ in found] == expected_ids
        assert [c for _, c in found] == pytest.approx(expected_cosines, abs=1e-5)
        assert int(image_id) not in {n for n, _ in found}


def test_planted_copies_come_first_and_the_image_itself_never():
    vectors = unit_vectors(200, DIM, seed=2)
    vectors[7] = vectors[3]  # an exact copy: a tie with the query itself
    vectors[11] = near_copy(vectors[3], 0.05, seed=4)
    ids = np.arange(200) + 1000
    index = NeighbourIndex(ids, vectors, INFO)
    found = index.nearest(1003, 3)
    assert [n for n, _ in found[:2]] == [1007, 1011]
    assert found[0][1] == pytest.approx(1.0, abs=1e-6) and 0.9 < found[1][1] < 1.0
    everything = index.nearest(1007, 199)
    assert everything[0][0] == 1003 and 1007 not in {n for n, _ in everything}
    assert len(index.nearest(1003, 500)) == 199  # every other image, no more
    assert 1003 in index and 5 not in index


@pytest.mark.parametrize(
    ("image_id", "k", "reason"),
    [(5, 3, "image 5 has no embedding"), (1000, 0, "k must be"), (1000, True, "k must be"), (1000, 2.0, "k must be")],
)
def test_a_bad_query_says_why(image_id, k, reason):
    index = NeighbourIndex(np.arange(1000, 1010), unit_vectors(10), INFO)
    with pytest.raises(NeighbourError, match=reason):
        index.nearest(image_id, k)


def test_the_index_refuses_ids_that_do_not_fit_its_vectors():
    with pytest.raises(NeighbourError, match="more than once"):
        NeighbourIndex(np.array([1, 2, 2]), unit_vectors(3), INFO)
    with pytest.raises(NeighbourError, match="one per image id"):
        NeighbourIndex(np.array([1, 2]), unit_vectors(3), INFO)
    with pytest.raises(NeighbourError, match="integer"):
        NeighbourIndex(np.array([1.0, 2.0, 3.0]), unit_vectors(3), INFO)


def test_the_index_of_a_release_reads_the_embeddings_written_for_it(known_release: KnownRelease, tmp_path: Path):
    with pytest.raises(EmbeddingsError, match="sa-engine embed"):  # made before embeddings
        NeighbourIndex.open(known_release.uri)
    vectors = dict(zip((1, 2, 3), unit_vectors(3, seed=5), strict=True))
    vectors[3] = near_copy(vectors[1], 0.1, seed=6)
    prefix = write_embeddings_beside(known_release.uri, tmp_path / "embedded", vectors)
    index = NeighbourIndex.open(known_release.uri, embeddings=prefix)
    assert index.info == INFO and sorted(index.image_ids.tolist()) == [1, 2, 3]
    (nearest, cosine), _ = index.nearest(1, 2)
    assert nearest == 3 and cosine == pytest.approx(float(vectors[1] @ vectors[3]), abs=2e-3)  # float16 storage


def _hash(*ones: int) -> np.ndarray:
    """A hash (8 packed uint8) whose bits `ones` are set."""
    bits = np.zeros(HASH_BITS, bool)
    bits[list(ones)] = True
    return np.packbits(bits)


def _write(path: Path, table: pa.Table, settings: dict) -> str:
    path.write_bytes(dedup_table_bytes(table, settings))
    return str(path)


def test_groups_of_a_perceptual_hash_table_largest_first(tmp_path: Path):
    far = tuple(range(20, 44))
    inputs = {  # uri: (hash, pixels)
        "s3://in/a.jpg": (_hash(), 100),
        "s3://in/a_small.jpg": (_hash(1, 2), 50),
        "s3://in/a_crop.jpg": (_hash(1, 2, 3, 4, 5), 60),
        "s3://in/b.jpg": (_hash(*far), 80),
        "s3://in/b_copy.jpg": (_hash(*far, 60), 80),
        "s3://in/c.jpg": (_hash(*range(44, 64)), 80),
        "s3://in/broken.jpg": (_hash(), 0),
    }
    uris = list(inputs)
    errors = ["cannot decode" if uri.endswith("broken.jpg") else "" for uri in uris]
    table = decide(uris, np.stack([h for h, _ in inputs.values()]), np.array([p for _, p in inputs.values()]), errors)
    uri = _write(tmp_path / "phash.parquet", table, {"max_distance": 9})  # made before tables named their method
    found = groups_from_table(uri)
    assert (found.method, found.n_groups, found.n_dropped) == ("phash", 2, 3)
    assert [(g.kept, g.duplicates) for g in found.groups] == [
        ("s3://in/a.jpg", (("s3://in/a_small.jpg", 2), ("s3://in/a_crop.jpg", 5))),
        ("s3://in/b.jpg", (("s3://in/b_copy.jpg", 1),)),
    ]
    assert found.similarity(5) == "5/64 bits apart" and found.rule() == "pairs within 9 of 64 bits"
    limited = groups_from_table(uri, limit=1)
    assert [g.kept for g in limited.groups] == ["s3://in/a.jpg"] and limited.n_groups == 2


def test_groups_of_a_semantic_table_read_as_cosines(tmp_path: Path):
    rows = [  # uri, keep, reason, matched_uri, distance
        ("x.jpg", True, "kept", "", -1),
        ("y.jpg", False, "duplicate", "x.jpg", 150),
        ("z.jpg", True, "unique", "", -1),
    ]
    columns = {name: [row[k] for row in rows] for k, name in enumerate(DEDUP_SCHEMA.names[:5])}
    columns.update(cluster=[0, 0, 2], pixels=[100, 90, 80], signature=["", "", ""], error=["", "", ""])
    uri = _write(tmp_path / "sem.parquet", pa.table(columns, schema=DEDUP_SCHEMA), {"method": "semdedup"})
    found = groups_from_table(uri)
    assert found.method == "semdedup" and [(g.kept, g.duplicates) for g in found.groups] == [
        ("x.jpg", (("y.jpg", 150),))
    ]
    assert found.similarity(150) == "cosine 0.9850" and found.rule() == ""  # no threshold in its settings
    (tmp_path / "other.parquet").write_bytes(b"not parquet")
    with pytest.raises(DedupTableError, match="cannot read the keep/drop table"):
        groups_from_table(str(tmp_path / "other.parquet"))
