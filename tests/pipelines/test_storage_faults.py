"""pipelines/amg.py over flaky object storage: inputs and release on S3 (moto) behind the fault
proxy (tests/fault_proxy.py). Access denied on the output stops the job with one line naming the
URI; a rerun through transient faults on a quarter of the requests resumes, retries them, counts
the retries, and finishes exactly once."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import s3fs

from tests.fault_proxy import MOTO_CREDENTIALS, FaultProxy
from tests.image_zoo import photo_files, write_files
from tests.pipelines.conftest import UNCROPPED_FLAGS, run_pipeline, run_script
from tests.pipelines.exactly_once import check_exactly_once

pytestmark = pytest.mark.slow  # runs the job twice on a Ray cluster through faults

N_PHOTOS = 9


@pytest.fixture(scope="module")
def store(shared_image_paths, tmp_path_factory):
    """The proxy (no faults yet) over moto, whose bucket `photos` holds N_PHOTOS photos under
    `in/`; `direct` reads moto without faults."""
    folder = tmp_path_factory.mktemp("photos")
    photos = list(photo_files(shared_image_paths).values())
    write_files(folder, {f"p{i:02d}.jpg": photos[i % len(photos)] for i in range(N_PHOTOS)})
    with FaultProxy(seed=43) as proxy:
        s3fs.S3FileSystem.clear_instance_cache()
        direct = s3fs.S3FileSystem(key="moto", secret="moto", client_kwargs={"endpoint_url": proxy.moto_endpoint})
        direct.mkdir("photos")
        direct.put(str(folder) + "/", "photos/in/", recursive=True)
        yield proxy, direct


def _job_args(proxy: FaultProxy, output: str) -> list[str]:
    options = json.dumps({"client_kwargs": {"endpoint_url": proxy.endpoint}})
    return ["--input", "s3://photos/in/", "--output", output, *UNCROPPED_FLAGS, "--batch-size", "2", "--shard-size", "3",
            "--storage-options", options, "--no-dashboard"]  # fmt: skip


def _local_copy(direct: s3fs.S3FileSystem, release: str, folder: Path) -> Path:
    direct.invalidate_cache()
    direct.get(f"photos/{release}/", str(folder) + "/", recursive=True)
    return folder


def _stop_on_access_denied(proxy: FaultProxy, direct: s3fs.S3FileSystem, release: str) -> None:
    """Run the job on `release` and deny writes to its shards once its first shard is committed:
    the job stops mid-run with one line naming the refused URI."""

    def deny_after_the_first_commit(stop: threading.Event) -> None:
        while not stop.is_set():
            direct.invalidate_cache()
            if direct.glob(f"photos/{release}/_progress/*.json"):
                # The shards, not the whole prefix: a denied lease stops the job too, but the
                # line would name the lease or a shard, whichever call came first.
                proxy.deny("photos", f"{release}/shards/")
                return
            stop.wait(0.1)

    stop = threading.Event()
    watcher = threading.Thread(target=deny_after_the_first_commit, args=(stop,), daemon=True)
    watcher.start()
    try:
        done = run_script("amg.py", *_job_args(proxy, f"s3://photos/{release}"), env=MOTO_CREDENTIALS)
    finally:
        stop.set()
        watcher.join()
    assert proxy.injected["denied"] > 0, "the job finished before the fault: the test proves nothing"
    assert done.returncode == 2, done.stderr[-4000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: storage refused s3://photos/{release}/shards/sa_") and "access denied" in last, last
    direct.invalidate_cache()
    assert 1 <= len(direct.glob(f"photos/{release}/_progress/*.json")) < 3  # stopped mid-run


def test_access_denied_stops_the_job_and_a_rerun_through_flaky_storage_finishes_exactly_once(store, tmp_path):
    proxy, direct = store
    release = "denied"
    _stop_on_access_denied(proxy, direct, release)

    proxy.allow()
    proxy.injected.clear()
    proxy.requests = 0
    proxy.rate = 0.25
    try:
        log = run_pipeline("amg.py", *_job_args(proxy, f"s3://photos/{release}"), env=MOTO_CREDENTIALS)
    finally:
        proxy.rate = 0.0
    assert "[amg] resuming" in log
    injected = sum(proxy.injected.values())
    assert injected > 20 and len(proxy.injected) == 4, proxy.injected  # every kind, on many requests

    out = _local_copy(direct, release, tmp_path / release)
    check_exactly_once(out, N_PHOTOS)
    storage = json.loads((out / "manifest.json").read_text())["summary"]["storage"]
    assert 0 < storage["retries"] <= injected  # counted, and bounded: no retry without a fault
    assert storage["retries"] == sum(storage["by_kind"].values()) == storage["in_shards"] + storage["in_driver"]
    assert storage["in_shards"] > 0 and storage["policy"]["attempts"] >= 6
    print(
        f"rerun: {proxy.requests} requests, {injected} faults {dict(proxy.injected)}, {storage['retries']} retries counted"
    )
