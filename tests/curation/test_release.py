import hashlib
import io
import json
import tarfile

import pytest

from curation.release import ReleaseError, ReleaseImage, ReleaseWriter, iter_release, iter_shard, read_manifest


def _record(image_id: int, n_masks: int) -> dict:
    annotation = {
        "segmentation": {"size": [4, 4], "counts": "04L"},
        "bbox": [0.0, 0.0, 1.0, 3.0],
        "area": 4,
        "predicted_iou": 0.9,
        "stability_score": 0.97,
        "crop_box": [0.0, 0.0, 4.0, 4.0],
        "point_coords": [[0.0, 1.0]],
    }
    return {
        "image": {"image_id": image_id, "width": 4, "height": 4, "file_name": f"sa_{image_id}.jpg", "country": "NZ"},
        "annotations": [{**annotation, "id": i} for i in range(n_masks)],
    }


def _write(tmp_path):
    writer = ReleaseWriter(str(tmp_path / "rel"))
    shards = [
        writer.write_shard(0, [ReleaseImage(_record(1, 2), b"jpeg-1"), ReleaseImage(_record(2, 0), b"jpeg-2")]),
        writer.write_shard(1, [ReleaseImage(_record(3, 1), b"jpeg-3")]),
    ]
    writer.write_failures("part-0", [{"uri": "file:///x.jpg", "stage": "decode", "error": "truncated"}])
    return writer.finish(shards, {"preset": "test"}, "# card\n")


def test_release_layout_manifest_and_checksums(tmp_path):
    import pyarrow.parquet as pq

    manifest = _write(tmp_path)
    root = tmp_path / "rel"
    assert (root / "_SUCCESS").exists() and (root / "DATASET_CARD.md").read_text() == "# card\n"
    assert manifest == read_manifest(str(root))
    assert (manifest["n_images"], manifest["n_masks"]) == (3, 3)
    for shard in manifest["shards"]:
        data = (root / "shards" / f"{shard['name']}.tar").read_bytes()
        assert shard["bytes"] == len(data) and shard["sha256"] == hashlib.sha256(data).hexdigest()
    images = pq.read_table(root / "index" / "images").to_pandas().sort_values("image_id")
    assert images["n_masks"].tolist() == [2, 0, 1] and images["country"].tolist() == ["NZ"] * 3
    assert images["shard"].tolist() == ["sa_000000", "sa_000000", "sa_000001"]
    masks = pq.read_table(root / "index" / "masks").to_pandas()
    assert sorted(zip(masks.image_id, masks.ann_id)) == [(1, 0), (1, 1), (3, 0)]
    assert pq.read_table(root / "failures").to_pylist()[0]["error"] == "truncated"


def test_release_reads_back_in_order(tmp_path):
    _write(tmp_path)
    items = list(iter_release(str(tmp_path / "rel")))
    assert [i.record["image"]["image_id"] for i in items] == [1, 2, 3]
    assert [i.image_bytes for i in items] == [b"jpeg-1", b"jpeg-2", b"jpeg-3"]
    assert items[0].record == _record(1, 2)


def test_unfinished_release_is_refused(tmp_path):
    _write(tmp_path)
    (tmp_path / "rel" / "_SUCCESS").unlink()
    with pytest.raises(ReleaseError, match="_SUCCESS"):
        read_manifest(str(tmp_path / "rel"))


def _tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_a_folder_of_sa1b_style_tars_reads_without_manifest(tmp_path):
    record = json.dumps(_record(9, 1)).encode()
    _tar(tmp_path / "sa_000020.tar", [("./sa_9.jpg", b"jpeg-9"), ("./sa_9.json", record)])
    (item,) = iter_release(str(tmp_path))
    assert item.image_bytes == b"jpeg-9" and item.record["image"]["image_id"] == 9


@pytest.mark.parametrize("name", ["../evil.json", "/etc/evil.json", "sub/dir/x.json"])
def test_member_names_that_leave_the_shard_are_refused(tmp_path, name):
    _tar(tmp_path / "bad.tar", [(name, b"{}")])
    with pytest.raises(ReleaseError, match="refusing member"):
        list(iter_shard(str(tmp_path / "bad.tar")))


def test_a_record_without_its_image_is_an_error(tmp_path):
    _tar(tmp_path / "half.tar", [("sa_1.json", json.dumps(_record(1, 0)).encode())])
    with pytest.raises(ReleaseError, match="without both"):
        list(iter_shard(str(tmp_path / "half.tar")))


def test_committed_shards_survive_and_leftovers_are_removed(tmp_path):
    writer = ReleaseWriter(str(tmp_path / "rel"))
    failure = {"image_id": 4, "uri": "file:///bad.jpg", "stage": "decode", "error": "empty file (0 bytes)"}
    first = writer.commit_shard(1, [ReleaseImage(_record(1, 2), b"jpeg-1")], [failure])
    only_failures = writer.commit_shard(5, [], [{**failure, "image_id": 5}])
    assert first.image_ids == [1, 4] and first.n_failed == 1 and first.shard.n_masks == 2
    assert only_failures.shard is None and not (tmp_path / "rel" / "shards" / "sa_000005.tar").exists()
    # a run that died while writing shard 9: files but no commit marker
    writer.write_shard(9, [ReleaseImage(_record(9, 1), b"jpeg-9")])
    writer.write_failures("sa_000009", [])
    removed = writer.remove_uncommitted()
    assert sorted(p.rsplit("/", 2)[-2] + "/" + p.rsplit("/", 1)[-1] for p in removed) == [
        "failures/sa_000009.parquet",
        "images/sa_000009.parquet",
        "masks/sa_000009.parquet",
        "shards/sa_000009.tar",
    ]
    assert writer.commits() == [first, only_failures]
    assert writer.failure_counts() == {"decode": 2}
    assert (tmp_path / "rel" / "shards" / "sa_000001.tar").exists()


def test_a_shard_that_lost_nothing_still_has_its_failures_file(tmp_path):
    import pyarrow.parquet as pq

    writer = ReleaseWriter(str(tmp_path / "rel"))
    writer.commit_shard(0, [ReleaseImage(_record(0, 1), b"jpeg-0")], [])
    writer.commit_shard(5, [], [{"image_id": 5, "uri": "file:///x.jpg", "stage": "read", "error": "gone"}])
    clean, failed = (
        tmp_path / "rel" / "failures" / "sa_000000.parquet",
        tmp_path / "rel" / "failures" / "sa_000005.parquet",
    )
    assert pq.read_table(clean).num_rows == 0 and pq.read_table(clean).schema.names == [
        "image_id",
        "uri",
        "stage",
        "error",
    ]
    assert pq.ParquetFile(clean).metadata.num_row_groups == 0  # what Hugging Face `datasets` can skip
    assert pq.read_table(failed)["error"].to_pylist() == ["gone"]
    assert writer.failure_counts() == {"read": 1}


def test_the_readme_header_names_a_config_per_data_file_and_failures_only_when_there_are_some(tmp_path):
    import yaml

    manifest = _write(tmp_path)
    readme = (tmp_path / "rel" / "README.md").read_text()
    _, header, card = readme.split("---\n", 2)
    configs = {c["config_name"]: c for c in yaml.safe_load(header)["configs"]}
    assert {name: c["data_files"][0]["path"] for name, c in configs.items()} == {
        "images": "index/images/*.parquet",
        "masks": "index/masks/*.parquet",
        "failures": "failures/*.parquet",
    }
    assert configs["images"]["default"] and card.strip() == "# card"
    assert manifest["engine"]["name"] == "sa-engine" and manifest["engine"]["version"]
    clean = ReleaseWriter(str(tmp_path / "clean"))
    clean.finish([clean.write_shard(0, [ReleaseImage(_record(1, 1), b"jpeg-1")])], {}, "# card\n")
    assert "failures" not in (tmp_path / "clean" / "README.md").read_text()
    assert "embeddings" not in readme  # a release without embeddings offers no such config


def test_every_shard_index_has_the_releases_metadata_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    metadata = pa.schema([("country", pa.string()), ("lat", pa.float64()), ("tags", pa.string())])
    with_all = _record(1, 1)
    with_all["image"].update(lat=3, tags=["a", "b"], blurred_regions=[{"kind": "face", "bbox": [1, 2, 3, 4]}])
    without = _record(2, 1)
    del without["image"]["country"]
    writer = ReleaseWriter(str(tmp_path / "rel"))
    writer.write_shard(0, [ReleaseImage(with_all, b"jpeg-1")], metadata)
    writer.write_shard(1, [ReleaseImage(without, b"jpeg-2")], metadata)
    first, second = (pq.read_table(tmp_path / "rel" / "index" / "images" / f"sa_00000{i}.parquet") for i in (0, 1))
    assert first.schema.names[-5:] == ["country", "lat", "tags", "shard", "n_masks"]
    assert second.schema.names == [n for n in first.schema.names if n != "blurred_regions"]
    assert second.schema.field("lat").type == first.schema.field("lat").type == pa.float64()
    assert first.to_pylist()[0]["tags"] == '["a","b"]' and first.to_pylist()[0]["lat"] == 3.0
    assert json.loads(first.to_pylist()[0]["blurred_regions"]) == [{"kind": "face", "bbox": [1, 2, 3, 4]}]
    assert second.to_pylist()[0]["country"] is None and second.to_pylist()[0]["tags"] is None
