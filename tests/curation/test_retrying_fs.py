"""The release's filesystem calls under the storage retry policy, against moto behind the fault
proxy: whole-object reads and writes through faults, refusals named, no bucket created."""

from __future__ import annotations

import pytest
import s3fs

from curation.release import ReleaseImage, ReleaseWriter
from curation.retrying_fs import RetryingFileSystem
from sam_core.storage_retry import TALLY_PREFIX, StorageAccessError
from tests.fault_proxy import MOTO_CREDENTIALS, FaultProxy


@pytest.fixture()
def proxy(monkeypatch):
    for name, value in MOTO_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    with FaultProxy(seed=11) as proxy:
        s3fs.S3FileSystem.clear_instance_cache()
        s3fs.S3FileSystem(client_kwargs={"endpoint_url": proxy.moto_endpoint}).mkdir("bkt")
        yield proxy


def _options(proxy: FaultProxy) -> dict:
    return {"client_kwargs": {"endpoint_url": proxy.endpoint}}


def test_objects_go_and_come_back_whole_through_faults(proxy):
    fs = RetryingFileSystem("s3://bkt/out", _options(proxy))
    proxy.rate = 0.5
    payloads = {f"bkt/out/m/{i}.json": bytes([i]) * (1000 + i) for i in range(10)}
    for path, data in payloads.items():
        with fs.open(path, "wb") as f:
            f.write(data)
    assert fs.cat(sorted(payloads)) == payloads  # concurrent reads; a try refetches only what failed
    assert sorted(fs.glob("bkt/out/m/*.json")) == sorted(payloads)
    assert sum(proxy.injected.values()) >= 5, proxy.injected


def test_a_write_whose_block_raised_writes_nothing(proxy):
    fs = RetryingFileSystem("s3://bkt/out", _options(proxy))
    with pytest.raises(RuntimeError), fs.open("bkt/out/half", "wb") as f:
        f.write(b"half of it")
        raise RuntimeError("the writer died")
    assert not fs.exists("bkt/out/half")


def test_a_shard_commit_counts_the_retries_of_its_writes(proxy):
    writer = ReleaseWriter("s3://bkt/release", _options(proxy))
    proxy.faults, proxy.rate = ("slow_down",), 1.0  # every request faulted twice (the proxy's cap), then through
    record = {"image": {"image_id": 3, "width": 4, "height": 4, "file_name": "sa_3.jpg"}, "annotations": []}
    commit = writer.commit_shard(3, [ReleaseImage(record, b"jpeg")], [], {"masks_removed.area": 1})
    retried = {k: v for k, v in commit.tallies.items() if k.startswith(TALLY_PREFIX)}
    assert retried == {TALLY_PREFIX + "slow_down": 2 * 4}  # the tar, two index files, the failures file
    assert commit.tallies["masks_removed.area"] == 1
    assert [c.name for c in writer.commits()] == ["sa_000003"]


def test_a_gone_bucket_or_denied_prefix_is_named_and_no_bucket_is_made(proxy):
    writer = ReleaseWriter("s3://bkt/release", _options(proxy))
    proxy.deny("bkt", "release/")
    with pytest.raises(StorageAccessError, match=r"storage refused s3://bkt/release/_progress/sa_000000.json: access"):
        writer.write_bytes(("_progress", "sa_000000.json"), b"{}")
    proxy.allow()
    proxy.delete_bucket("bkt")
    writer = ReleaseWriter("s3://bkt/release", _options(proxy))  # makes no folder, so no bucket
    with pytest.raises(StorageAccessError, match=r"s3://bkt/release/manifest.json: the bucket does not exist"):
        writer.write_bytes(("manifest.json",), b"{}")
    assert "bkt" not in [
        b.rstrip("/") for b in s3fs.S3FileSystem(client_kwargs={"endpoint_url": proxy.moto_endpoint}).ls("")
    ]


def test_a_listing_through_faults_is_whole_or_an_error_never_short(proxy):
    fs = RetryingFileSystem("s3://bkt/out", _options(proxy))
    folders = [f"bkt/out/listed/{i}" for i in range(6)]
    for folder in folders:
        fs.pipe_file(f"{folder}/a.json", b"{}")
        fs.pipe_file(f"{folder}/b.json", b"{}")
    proxy.faults, proxy.rate = ("slow_down",), 0.3  # fsspec's walk skips a listing that fails: fewer paths
    assert [len(fs.glob(f"{folder}/*.json")) for folder in folders] == [2] * len(folders)
    assert fs.glob("bkt/out/unlisted/*.json") == []
    assert proxy.injected["slow_down"] >= 5, proxy.injected
