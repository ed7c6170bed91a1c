"""`curation.verify` on a small release written without Ray (generated scenes: real records with real
masks, a saved plan, a failure), then on copies of it with one thing broken each."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from analysis.sa1b_index import index_tars
from curation.embeddings import embedding_info, embeddings_table
from curation.inputs import PLAN_SCHEMA
from curation.job_plan import load_or_create_plan
from curation.release import ReleaseImage, ReleaseWriter, ShardSummary
from curation.verify import main, verify_release
from sam_core.pooled_embedding import POOLING
from sam_core.storage_retry import counting_retries
from synthetic.scene_release import scene_record
from synthetic.scenes import SceneSettings
from tests.fault_proxy import FaultProxy

N_PLANNED = 6
"""Images 0-3 released in shards sa_000000 (0, 1) and sa_000002 (2, 3); 4 failed in sa_000002,
5 in sa_000005, a shard of failures only."""


def _scene(image_id: int) -> ReleaseImage:
    return scene_record(image_id, seed=7, index=image_id, settings=SceneSettings(max_objects=6))


def _failure(image_id: int) -> dict:
    return {"image_id": image_id, "uri": f"file:///in/{image_id}.jpg", "stage": "decode", "error": "truncated"}


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("verify") / "release"
    writer = ReleaseWriter(str(root))
    plan = pa.table(
        {
            "image_id": range(N_PLANNED),
            "uri": [f"file:///in/{i}.jpg" for i in range(N_PLANNED)],
            "metadata": ["{}"] * N_PLANNED,
        },
        schema=PLAN_SCHEMA,
    )
    load_or_create_plan(writer, {"input": "file:///in"}, lambda f: pq.write_table(plan, f))
    commits = [
        writer.commit_shard(0, [_scene(0), _scene(1)], []),
        writer.commit_shard(2, [_scene(2), _scene(3)], [_failure(4)]),
        writer.commit_shard(5, [], [_failure(5)]),
    ]
    writer.finish([c.shard for c in commits if c.shard], {"preset": "test"}, "# card\n")
    return root


@pytest.fixture
def copy(release: Path, tmp_path: Path) -> Path:
    """A copy of the good release, for a test to break."""
    return Path(shutil.copytree(release, tmp_path / "release"))


def _manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def _rewrite_shard(root: Path, index: int, images: list[ReleaseImage]) -> None:
    """Shard `index` (re)written with `images`, and the manifest rewritten to list it: a release
    whose checksums agree, with the damage in its content."""
    writer = ReleaseWriter(str(root))
    summary = writer.write_shard(index, images)
    others = [ShardSummary(**s) for s in _manifest(root)["shards"] if s["name"] != summary.name]
    writer.finish([*others, summary], {"preset": "test"}, "# card\n")


def _n_masks(release: Path) -> int:
    return _manifest(release)["n_masks"]


def test_a_good_release_verifies(release: Path) -> None:
    report = verify_release(str(release))
    assert report.problems == [] and report.not_checked == []
    assert (report.n_shards, report.n_images, report.n_masks, report.n_failures) == (2, 4, _n_masks(release), 2)
    assert report.summary() == f"ok: 2 shards, 4 images, {_n_masks(release)} masks, 2 failures verified"


def _truncate(root: Path) -> None:
    tar = root / "shards" / "sa_000002.tar"
    tar.write_bytes(tar.read_bytes()[:3000])


def _flip_a_jpeg_byte(root: Path) -> None:
    tar = root / "shards" / "sa_000000.tar"
    data = bytearray(tar.read_bytes())
    data[512 + 700] ^= 0xFF  # inside the first member, sa_0.jpg (its data starts after one 512-byte header)
    tar.write_bytes(bytes(data))


def _release_an_image_twice(root: Path) -> None:
    _rewrite_shard(root, 7, [_scene(1)])


def _misreport_an_rle_size(root: Path) -> None:
    image = _scene(0)
    annotation = image.record["annotations"][1]
    annotation["segmentation"]["size"] = [annotation["segmentation"]["size"][0], 100]
    _rewrite_shard(root, 0, [image, _scene(1)])


def _change_an_area_in_the_masks_index(root: Path) -> None:
    index = root / "index" / "masks" / "sa_000002.parquet"
    table = pq.read_table(index)
    areas = table["area"].to_pylist()
    pq.write_table(table.set_column(3, "area", pa.array([areas[0] + 1, *areas[1:]], pa.int64())), index)


def _list_no_shard(root: Path) -> None:
    shutil.copy(root / "shards" / "sa_000000.tar", root / "shards" / "sa_000009.tar")


DEFECTS: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "truncated tar": (
        _truncate,
        [
            "shards/sa_000002.tar: 3000 bytes, manifest.json says ",
            "shards/sa_000002.tar: unreadable after 0 images: unexpected end of data",
            *(f"image {i} (file:///in/{i}.jpg) of _plan/inputs.parquet is in no readable shard" for i in (2, 3)),
        ],
    ),
    "flipped byte": (_flip_a_jpeg_byte, ["shards/sa_000000.tar: sha256 "]),
    "missing index": (
        lambda root: (root / "index" / "masks" / "sa_000000.parquet").unlink(),
        ["index/masks/sa_000000.parquet: missing"],
    ),
    "image released twice": (
        _release_an_image_twice,
        ["image 1 is in 2 places: shards/sa_000000.tar, shards/sa_000007.tar (an input is released or failed, once)"],
    ),
    "masks index row": (
        _change_an_area_in_the_masks_index,
        ["index/masks/sa_000002.parquet: annotation 2000000: area not as its record in shards/sa_000002.tar has it"],
    ),
    "unlisted shard": (_list_no_shard, ["shards/sa_000009.tar: shard sa_000009 is not in manifest.json"]),
    "planned input nowhere": (
        lambda root: (root / "failures" / "sa_000005.parquet").unlink(),
        ["image 5 (file:///in/5.jpg) of _plan/inputs.parquet is in no readable shard and no failures file"],
    ),
    "RLE size": (
        _misreport_an_rle_size,
        [
            "shards/sa_000000.tar: image 0: annotation 1: RLE size [256, 100] is not the image's [height, width] [256, 176]"
        ],
    ),
    "index of another shard": (
        lambda root: shutil.copy(root / "index/images/sa_000000.parquet", root / "index/images/sa_000002.parquet"),
        [
            "index/images/sa_000002.parquet: rows name shard sa_000000, not sa_000002",
            "index/images/sa_000002.parquet: image 0 has 1 row(s) more than shards/sa_000002.tar has images",
            "index/images/sa_000002.parquet: image 1 has 1 row(s) more than shards/sa_000002.tar has images",
            "index/images/sa_000002.parquet: no row for image 2 of shards/sa_000002.tar",
            "index/images/sa_000002.parquet: no row for image 3 of shards/sa_000002.tar",
        ],
    ),
    "unfinished": (
        lambda root: (root / "_SUCCESS").unlink(),
        ["_SUCCESS is missing: the release is unfinished (rerun the job that made it)"],
    ),
}


@pytest.mark.parametrize("defect", DEFECTS)
def test_each_defect_is_found_and_named(copy: Path, defect: str) -> None:
    damage, expected = DEFECTS[defect]
    damage(copy)
    problems = verify_release(str(copy)).problems
    assert len(problems) == len(expected) and all(p.startswith(e) for p, e in zip(problems, expected)), problems


def test_a_release_without_a_plan_says_what_it_could_not_check(copy: Path) -> None:
    shutil.rmtree(copy / "_plan")
    report = verify_release(str(copy))
    assert report.ok
    assert report.not_checked == [
        "every planned input in exactly one place: there is no _plan/inputs.parquet (a release made by a tool)"
    ]


def test_the_command_line_prints_every_problem_and_its_exit_status(
    release: Path, copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(release)]) == 0
    out, err = capsys.readouterr()
    assert out == f"ok: 2 shards, 4 images, {_n_masks(release)} masks, 2 failures verified\n"
    assert "[verify] verified 2/2 shards | " in err and " | 0 problems so far" in err

    _flip_a_jpeg_byte(copy)
    (copy / "index" / "images" / "sa_000002.parquet").unlink()
    assert main([str(copy)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("shards/sa_000000.tar: sha256 ")
    assert lines[1] == "index/images/sa_000002.parquet: missing"
    assert lines[2] == f"2 problems in {copy} (2 shards, 4 images, {_n_masks(release)} masks, 2 failures read)"

    missing = tmp_path / "no_release"
    assert main([str(missing)]) == 2
    assert capsys.readouterr().err == f"error: {missing}: no such folder or prefix; give the URI of a release\n"
    index_tars(str(release / "shards"), str(tmp_path / "sa1b_index"))
    assert main([str(tmp_path / "sa1b_index")]) == 2
    assert "is an index of SA-1B tars (sa-engine sa1b-index), not a release" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main([str(release), "--storage-options", "[]"])
    assert exit_info.value.code == 2


def test_a_release_on_s3_verifies_through_flaky_storage(release: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import s3fs

    with FaultProxy(seed=5) as proxy:
        direct = {"key": "moto", "secret": "moto", "client_kwargs": {"endpoint_url": proxy.moto_endpoint}}
        options = {**direct, "client_kwargs": {"endpoint_url": proxy.endpoint}}
        s3 = s3fs.S3FileSystem(skip_instance_cache=True, **direct)
        s3.mkdir("verify-test")
        s3.put(f"{release}/", "verify-test/good/", recursive=True)
        proxy.rate = 0.3  # 503s, 500s, resets and cut bodies: retried, none reported as a damaged file
        with counting_retries() as retried:
            assert main(["s3://verify-test/good", "--storage-options", json.dumps(options)]) == 0
        assert capsys.readouterr().out.startswith("ok: 2 shards, 4 images, ")
        assert retried.total() >= 5, (retried, proxy.injected)
        proxy.rate = 0.0
        s3.rm("verify-test/good/shards/sa_000002.tar")
        report = verify_release("s3://verify-test/good", options)
    assert report.problems == [
        "shards/sa_000002.tar: missing (listed in manifest.json)",
        *(
            f"image {i} (file:///in/{i}.jpg) of _plan/inputs.parquet is in no readable shard and no failures file"
            for i in (2, 3)
        ),
    ]


EMBEDDING_INFO = embedding_info("sae_tiny", "ab" * 32, POOLING, 8)


def _write_embeddings(root: Path, shard: str, ids: list[int], scale: float = 1.0, info: dict | None = None) -> None:
    vectors = np.random.default_rng(ids[0]).normal(size=(len(ids), 8))
    vectors = scale * vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    (root / "embeddings").mkdir(exist_ok=True)
    table = embeddings_table(np.array(ids), vectors, info or EMBEDDING_INFO)
    pq.write_table(table, root / "embeddings" / f"{shard}.parquet")


@pytest.fixture
def with_embeddings(copy: Path) -> Path:
    """The good release with an embeddings file per shard, as the job writes them."""
    _write_embeddings(copy, "sa_000000", [0, 1])
    _write_embeddings(copy, "sa_000002", [2, 3])
    return copy


EMBEDDING_DEFECTS: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "missing file": (
        lambda root: (root / "embeddings" / "sa_000002.parquet").unlink(),
        ["embeddings/sa_000002.parquet: missing"],
    ),
    "ids of another shard": (
        lambda root: _write_embeddings(root, "sa_000002", [0, 3]),
        [
            "embeddings/sa_000002.parquet: image 0 has 1 row(s) more than shards/sa_000002.tar has images",
            "embeddings/sa_000002.parquet: no embedding for image 2 of shards/sa_000002.tar",
        ],
    ),
    "another model": (
        lambda root: _write_embeddings(root, "sa_000002", [2, 3], info=embedding_info("vit_b", "cd", POOLING, 8)),
        ["embeddings/sa_000002.parquet: made with {'model': 'vit_b'"],
    ),
    "not unit norm": (
        lambda root: _write_embeddings(root, "sa_000000", [0, 1], scale=1.5),
        ["embeddings/sa_000000.parquet: the embeddings of 2 images are not of unit norm (e.g. image 0)"],
    ),
    "not finite": (
        lambda root: _write_embeddings(root, "sa_000000", [0, 1], scale=np.inf),
        ["embeddings/sa_000000.parquet: the embeddings of 2 images are not finite (e.g. image 0)"],
    ),
    "unlisted file": (
        lambda root: _write_embeddings(root, "sa_000009", [9]),
        ["embeddings/sa_000009.parquet: shard sa_000009 is not in manifest.json"],
    ),
}


def test_a_release_with_embeddings_verifies(with_embeddings: Path) -> None:
    report = verify_release(str(with_embeddings))
    assert report.problems == [] and report.n_images == 4


@pytest.mark.parametrize("defect", EMBEDDING_DEFECTS)
def test_each_embeddings_defect_is_found_and_named(with_embeddings: Path, defect: str) -> None:
    damage, expected = EMBEDDING_DEFECTS[defect]
    damage(with_embeddings)
    problems = verify_release(str(with_embeddings)).problems
    assert len(problems) == len(expected) and all(p.startswith(e) for p, e in zip(problems, expected)), problems
