"""`pipelines/semdedup.py` and a job given two keep/drop tables, on the curated run of
tests/pipelines/conftest.py (no job run of its own): an earlier release of the same inputs with real
`sae_tiny` embeddings, its semantic table (made by the Ray job), then the curated release made with the
hash table and the semantic one."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from curation.dedup_table import DedupTable
from curation.embeddings import embedding_info, embeddings_table, read_embeddings
from curation.release import iter_release
from curation.semdedup import assign, pairs_above, semdedup, spherical_kmeans
from pipelines.semdedup import assign_clusters, main, search_group, to_groups
from sam_core.pooled_embedding import POOLING
from tests.pipelines.conftest import SEMANTIC_THRESHOLD


def test_the_job_table_is_what_curation_semdedup_decides(curated):
    found = DedupTable.read(str(curated["semantic"]))
    earlier = curated["earlier"]
    embeddings = read_embeddings(earlier)
    index = pq.read_table(Path(earlier) / "index" / "images").sort_by("image_id")
    assert np.array_equal(index["image_id"].to_numpy(), np.sort(embeddings.image_ids))
    vectors = embeddings.vectors[np.argsort(embeddings.image_ids)]
    pixels = (index["source_width"].to_numpy() * index["source_height"].to_numpy()).astype(np.int64)
    expected, settings = semdedup(index["source"].to_pylist(), pixels, vectors, SEMANTIC_THRESHOLD, seed=0)
    assert pq.read_table(curated["semantic"]).equals(expected)  # the Ray job decides as the function does
    assert found.settings == {**settings, "release": earlier, "embeddings": embeddings.info}
    rows = {Path(row["uri"]).name: row for row in expected.to_pylist()}
    assert "empty.jpg" not in rows and len(rows) == 6  # it failed in the earlier release: no embedding
    assert rows["astronaut.jpg"]["reason"] == "kept"
    for name in ("astronaut_copy.jpg", "astronaut_mirrored.jpg"):
        assert rows[name]["reason"] == "duplicate" and rows[name]["matched_uri"] == rows["astronaut.jpg"]["uri"]
        assert 0 <= rows[name]["distance"] <= round(10000 * (1 - SEMANTIC_THRESHOLD))
    assert "[semdedup] done: 6 images" in curated["semdedup_log"]


def test_the_release_drops_what_either_table_drops_once(curated):
    out = curated["out"]
    failures = pq.read_table(out / "failures").to_pylist()
    assert Counter(Path(f["uri"]).name for f in failures) == {
        "astronaut_copy.jpg": 1, "astronaut_mirrored.jpg": 1, "empty.jpg": 1
    }  # fmt: skip
    by_name = {Path(f["uri"]).name: f for f in failures}
    mirrored, copy = by_name["astronaut_mirrored.jpg"], by_name["astronaut_copy.jpg"]
    assert mirrored["stage"] == copy["stage"] == "dedup"
    # Only the semantic table drops the mirror image; both drop the copy, with the first table's (the hash's) reason.
    assert (
        mirrored["error"].startswith("near-duplicate of ") and "(embeddings at cosine distance 0." in mirrored["error"]
    )
    assert copy["error"].endswith("/64 bits apart)")
    names = {Path(r.record["image"]["source"]).name for r in iter_release(str(out))}
    assert "astronaut.jpg" in names and not names & {"astronaut_copy.jpg", "astronaut_mirrored.jpg"}
    assert "the keep/drop tables drop 2 as near-duplicates" in curated["amg_log"]

    manifest = json.loads((out / "manifest.json").read_text())
    tables = manifest["summary"]["curation"]["dedup"]
    assert [t["method"] for t in tables] == ["phash", "semdedup"]
    assert [t["dropped"] for t in tables] == [1, 2] and [t["inputs"] for t in tables] == [7, 6]
    for number, (table, path) in enumerate(zip(tables, (curated["table"], curated["semantic"]), strict=True), 1):
        assert table["copy"] == f"dedup/keep_drop_{number}.parquet" and table["table"] == str(path)
        assert (out / table["copy"]).read_bytes() == path.read_bytes()
    assert manifest["settings"]["dedup_sha256"] == [t["sha256"] for t in tables]
    card = (out / "DATASET_CARD.md").read_text()
    assert "| | 1. phash | 2. semdedup |" in card and "| dropped as near-duplicates (in the table) | 1 | 2 |" in card
    assert f"made by `sa-engine semdedup` (image embeddings of a release) with cosine >= {SEMANTIC_THRESHOLD}" in card


def test_the_search_split_into_groups_finds_the_pairs_of_the_whole():
    """The job's stages in one process, with 5 clusters in 3 groups (the curated run has 1 of each):
    every image sent to the groups of the clusters it probes, each group searched alone."""
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((1500, 16))
    vectors[1200:] = vectors[:300] + 0.1 * rng.standard_normal((300, 16))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float16)
    ids = np.arange(1500) * 3 + 7  # image ids are not rows
    centroids = spherical_kmeans(vectors, 5, seed=0)
    batch = assign_clusters({"image_id": ids, "embedding": vectors}, centroids, probes=2, groups=3)
    sent = to_groups(batch)
    assert len(sent["group"]) <= 2 * len(ids) and len(set(zip(sent["group"], sent["image_id"]))) == len(sent["group"])
    found = [
        search_group({key: value[sent["group"] == g] for key, value in sent.items()}, 0.95, groups=3) for g in range(3)
    ]
    pairs = {(int(a), int(b)) for part in found for a, b in zip(part["first"], part["second"], strict=True)}
    rows, _ = pairs_above(vectors, 0.95, assign(vectors, centroids, probes=2))
    assert len(rows) > 250 and pairs == {(int(ids[a]), int(ids[b])) for a, b in rows}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--threshold", "1.5"], "error: --threshold must lie in (0, 1], got 1.5\n"),
        (["--threshold", "0.9", "--probes", "0"], "error: --probes must be >= 1, got 0\n"),
        (["--threshold", "0.9"], "holds no embeddings/*.parquet: a release made before embeddings?"),
    ],
)
def test_bad_flags_and_a_release_without_embeddings_exit_2_before_ray(tmp_path, capsys, flags, message):
    (tmp_path / "release").mkdir()
    _exits_2_with(tmp_path, capsys, flags, message)


def test_without_threshold_embeddings_of_an_unmeasured_model_exit_2_before_ray(tmp_path, capsys):
    info = embedding_info("vit_b", "cd" * 32, POOLING, 2 * 768)
    vectors = np.eye(3, 2 * 768, dtype=np.float16)
    (tmp_path / "release" / "embeddings").mkdir(parents=True)
    pq.write_table(
        embeddings_table(np.arange(3), vectors, info), tmp_path / "release" / "embeddings" / "sa_000000.parquet"
    )
    message = "no cosine threshold has been measured for embeddings of vit_b (checkpoint sha256 cdcdcdcdcdcd"
    _exits_2_with(tmp_path, capsys, [], message)


def _exits_2_with(tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str) -> None:
    """`sa-engine semdedup` on tmp_path/release with `flags` exits 2 with one error line holding `message`."""
    with pytest.raises(SystemExit) as exit_info:
        main(["--release", str(tmp_path / "release"), "--output", str(tmp_path / "t.parquet"), *flags])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and message in error and error.count("\n") == 1
