"""pipelines/amg.py as a Ray job: `ray start --head` and `ray job submit` on 127.0.0.1, local and S3
(moto's server) storage, a killed driver, a killed model actor, a second submission on a running output."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray
import webdataset as wds
from pycocotools import mask as coco_mask

from curation.embeddings import read_embeddings
from curation.release import iter_release
from tests.pipelines.conftest import UNCROPPED_FLAGS, released_names
from tests.pipelines.exactly_once import accounted_ids as _accounted_ids
from tests.pipelines.exactly_once import check_exactly_once as _check_exactly_once
from tests.pipelines.job_runs import photo_folder as _photo_folder
from tests.pipelines.job_runs import start_and_wait_for_a_commit as _start_and_wait_for_a_commit
from tests.ray_cluster import RayCluster, free_port, kill, processes_matching


@pytest.fixture(scope="module")
def cluster():
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths live under it
    head = RayCluster(temp)
    yield head
    head.stop()
    shutil.rmtree(temp, ignore_errors=True)


def _succeeded(cluster: RayCluster, submission: str) -> str:
    logs = cluster.logs(submission)
    assert cluster.status(submission) == "SUCCEEDED", logs[-4000:]
    return logs


def test_job_releases_a_folder_of_photos_and_records_every_bad_file(cluster, zoo, tmp_path):
    out = tmp_path / "release"
    # Uncropped: this test is about the files' fates and the shards' formats; the job's crops are run
    # by the curated release's job (tests/pipelines/conftest.py) and test_amg_direct.py.
    args = ["--input", str(zoo["manifest"]), "--output", str(out), *UNCROPPED_FLAGS, "--shard-size", "4"]
    args += ["--batch-size", "2"]
    logs = _succeeded(cluster, cluster.submit(args))
    assert "[amg] done:" in logs

    manifest = json.loads((out / "manifest.json").read_text())
    assert (out / "_SUCCESS").exists() and (out / "DATASET_CARD.md").exists()
    assert manifest["n_images"] == len(zoo["released"]) and manifest["summary"]["n_failed"] == len(zoo["failed"])
    assert manifest["settings"]["model"] == "sae_tiny" and len(manifest["settings"]["checkpoint_sha256"]) == 64
    tars = sorted((out / "shards").glob("*.tar"))
    assert [t.stem for t in tars] == [s["name"] for s in manifest["shards"]]
    for tar, shard in zip(tars, manifest["shards"]):
        assert hashlib.sha256(tar.read_bytes()).hexdigest() == shard["sha256"] and tar.stat().st_size == shard["bytes"]

    # WebDataset reads the shards; each sample is an SA-1B record with its JPEG
    samples = list(wds.WebDataset([str(t) for t in tars], shardshuffle=False))
    records = [json.loads(s["json"]) for s in samples]
    assert released_names(records) == zoo["released"]
    assert all(
        s["jpg"][:2] == b"\xff\xd8" and s["__key__"] == f"sa_{r['image']['image_id']}" for s, r in zip(samples, records)
    )
    n_masks = 0
    for record in records:
        image = record["image"]
        assert set(image) >= {"image_id", "width", "height", "file_name", "source", "source_sha256", "country"}
        for ann in record["annotations"]:
            rle = {"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode()}
            mask = coco_mask.decode(rle)
            assert mask.shape == (image["height"], image["width"]) and int(mask.sum()) == ann["area"] > 0
            x, y, w, _ = coco_mask.toBbox(rle)
            assert [x, y] == ann["bbox"][:2] and abs(w - 1 - ann["bbox"][2]) < 1e-6
            n_masks += 1
    assert n_masks == manifest["n_masks"] > len(records)

    # Ray Data reads them too
    ray.init(address=cluster.gcs_address, ignore_reinit_error=True)
    try:
        rows = ray.data.read_webdataset([str(t) for t in tars]).take_all()
    finally:
        ray.shutdown()
    assert sorted(r["__key__"] for r in rows) == sorted(s["__key__"] for s in samples)

    failures = pq.read_table(out / "failures").to_pylist()
    assert {Path(f["uri"]).name: f["stage"] for f in failures} == zoo["failed"]
    assert _accounted_ids(out) == list(range(len(zoo["released"]) + len(zoo["failed"])))

    # resubmitting a finished release changes nothing
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert "already a finished release" in _succeeded(cluster, cluster.submit(args))
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}


def test_job_reads_and_writes_s3_through_a_local_moto_server(cluster, shared_image_paths, tmp_path):
    import boto3
    import s3fs
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port())
    server.start()
    try:  # moto's buckets live in this process: a bucket name no other test uses
        endpoint = f"http://127.0.0.1:{server._port}"
        credentials = {"AWS_ACCESS_KEY_ID": "moto", "AWS_SECRET_ACCESS_KEY": "moto", "AWS_DEFAULT_REGION": "us-east-1"}
        options = {"client_kwargs": {"endpoint_url": endpoint}}
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="moto",
                     aws_secret_access_key="moto").create_bucket(Bucket="s3-job")  # fmt: skip
        fs = s3fs.S3FileSystem(key="moto", secret="moto", **options)
        count = _photo_folder(tmp_path / "in", shared_image_paths, 4)
        (tmp_path / "in" / "broken.jpg").write_bytes(b"not a jpeg")
        fs.put(str(tmp_path / "in") + "/", "s3-job/in/", recursive=True)

        args = [
            "--input",
            "s3://s3-job/in/",
            "--output",
            "s3://s3-job/release",
            *UNCROPPED_FLAGS,
            "--storage-options",
            json.dumps(options),
        ]
        logs = _succeeded(cluster, cluster.submit(args, env_vars=credentials))
        assert "moto" not in logs  # credentials come from the environment and are never printed

        assert fs.exists("s3-job/release/_SUCCESS")
        manifest = json.loads(fs.cat("s3-job/release/manifest.json"))
        assert manifest["n_images"] == count and manifest["summary"]["n_failed"] == 1
        storage = {"key": "moto", "secret": "moto", **options}
        records = [item.record for item in iter_release("s3://s3-job/release", storage)]
        assert len(records) == count and all(r["image"]["source"].startswith("s3://s3-job/in/p") for r in records)
        with fs.open(fs.glob("s3-job/release/failures/*.parquet")[0], "rb") as f:
            assert pq.read_table(f).to_pylist()[0]["uri"] == "s3://s3-job/in/broken.jpg"
    finally:
        server.stop()


def test_a_sam2_model_runs_with_nothing_else_changed(cluster, shared_image_paths, tmp_path):
    """`--model sam2.1_hiera_t` on the cluster (random weights: the official files cannot be fetched
    here), the filters off so that its masks reach the release."""
    photo = next(p for p in shared_image_paths if p.name == "picture1.jpg")
    (tmp_path / "in").mkdir()
    shutil.copy(photo, tmp_path / "in" / photo.name)
    out = tmp_path / "release"
    args = ["--input", str(tmp_path / "in"), "--output", str(out), "--model", "sam2.1_hiera_t", *UNCROPPED_FLAGS,
            "--points-per-side=4", "--pred-iou-thresh=0", "--stability-score-thresh=0"]  # fmt: skip
    logs = _succeeded(cluster, cluster.submit(args))
    assert "no checkpoint: sam2.1_hiera_t keeps random weights" in logs
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["model"] == "sam2.1_hiera_t" and manifest["n_images"] == 1
    (record,) = [item.record for item in iter_release(str(out))]
    size = [record["image"]["height"], record["image"]["width"]]
    assert record["annotations"] and all(a["segmentation"]["size"] == size for a in record["annotations"])
    embeddings = read_embeddings(str(out))
    assert embeddings.info["model"] == "sam2.1_hiera_t" and embeddings.vectors.shape == (
        1,
        2 * 768,
    )  # Hiera-T's last stage


def test_a_killed_driver_is_resumed_exactly_once(cluster, shared_image_paths, tmp_path):
    n = 10
    first, args, out = _start_and_wait_for_a_commit(cluster, shared_image_paths, tmp_path, n)
    drivers = processes_matching(f"--output {out} ")
    assert drivers, "driver process not found"
    for pid in drivers:
        kill(pid)
    assert cluster.wait(first) in ("FAILED", "STOPPED")
    assert not (out / "_SUCCESS").exists()
    committed = len(list((out / "_progress").glob("*.json")))
    assert committed < n / 2, "the job finished before it was killed; the test proves nothing"

    logs = _succeeded(cluster, cluster.submit(args))
    assert "[amg] resuming" in logs
    _check_exactly_once(out, n)


def test_a_killed_model_actor_is_replaced_and_a_second_submission_meanwhile_is_refused(
    cluster, shared_image_paths, tmp_path
):
    n = 10  # as many as the killed-driver test: the first job is still running when the second starts
    first, args, out = _start_and_wait_for_a_commit(cluster, shared_image_paths, tmp_path, n)
    actors = processes_matching("MapBatches(MaskStage)")
    assert actors, "model actor process not found"
    for pid in actors:
        kill(pid)  # mid-batch: the next image was handed to it as soon as the last one left
    committed = len(list((out / "_progress").glob("*.json")))
    assert committed < n / 2, "the job finished before its actor was killed; the test proves nothing"

    second = cluster.submit(args)
    logs = cluster.logs(second)
    assert cluster.status(second) == "FAILED", logs[-4000:]
    assert f"error: output {out} is held by another job (Ray job {first}, pid " in logs
    assert f"wait for it, or stop it with ray job stop {first}" in logs
    _succeeded(cluster, cluster.wait(first) and first)
    assert not set(processes_matching("MapBatches(MaskStage)")) & set(actors)
    _check_exactly_once(out, n)
    assert not (out / "_lease.json").exists()
