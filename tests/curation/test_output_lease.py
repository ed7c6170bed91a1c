"""The output lease on a local folder (flock), on S3 (a real moto server on 127.0.0.1: conditional
writes) and on a store without conditional writes (fsspec's memory filesystem: best effort)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace
from functools import partial
from pathlib import Path

import fsspec
import pytest

from curation.output_lease import (
    LEASE,
    SETTLE_SECONDS,
    Holder,
    LeaseLostError,
    OutputHeldError,
    OutputLease,
    confirm_lease,
)
from curation.release import ReleaseWriter
from tests.ray_cluster import free_port

REPO = Path(__file__).resolve().parents[2]
TTL = 1.0
"""Seconds: short, so that renewals (every TTL/4) and expiry happen within a test."""


@pytest.fixture(scope="module")
def s3_options():
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{server._port}"
    boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="moto", aws_secret_access_key="moto"
    ).create_bucket(Bucket="leases")
    yield {"key": "moto", "secret": "moto", "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
    server.stop()


@pytest.fixture(params=["local", "s3"])
def output(request, tmp_path) -> tuple[str, dict]:
    """(an output URI, its storage options) on each store with real exclusive writes."""
    if request.param == "local":
        return str(tmp_path / "release"), {}
    return f"s3://leases/{uuid.uuid4().hex}", request.getfixturevalue("s3_options")


def _lease_file(uri: str, options: dict) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, root = fsspec.core.url_to_fs(uri, **options)
    return fs, f"{root}/{LEASE}"


def _holder_in_another_process(uri: str, options: dict) -> tuple[subprocess.Popen, str]:
    """A process that takes the lease (TTL seconds) and holds it until killed; (it, its token)."""
    code = (
        "import json, sys, time; from curation.output_lease import OutputLease\n"
        "lease = OutputLease(sys.argv[1], json.loads(sys.argv[2]), None, print, ttl=float(sys.argv[3])).__enter__()\n"
        "print(lease.token, flush=True); time.sleep(600)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, uri, json.dumps(options), str(TTL)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    return holder, holder.stdout.readline().strip()


def test_a_second_taker_is_refused_with_the_holder_named_until_the_first_releases(output):
    uri, options = output
    fs, path = _lease_file(uri, options)
    with OutputLease(uri, options, "amg-first", print, ttl=TTL) as first:
        stored = json.loads(fs.cat_file(path))
        assert stored["token"] == first.token and stored["job"] == "amg-first" and stored["pid"] == os.getpid()
        with pytest.raises(OutputHeldError) as refused:
            OutputLease(uri, options, "amg-second", print, ttl=TTL).__enter__()
        expected = rf"output {uri} is held by another job \(Ray job amg-first, pid {os.getpid()} on .+, since 20\d\d-\d\d-\d\d \d\d:\d\d:\d\d UTC; "
        assert refused.match(expected) and str(refused.value).endswith(
            "; wait for it, or stop it with ray job stop amg-first"
        )
        first.confirm("a shard")  # still ours
    assert not fs.exists(path)
    with OutputLease(uri, options, "amg-second", print, ttl=TTL) as second:
        assert json.loads(fs.cat_file(path))["token"] == second.token != first.token


def test_a_store_without_conditional_writes_gets_the_same_lease_at_best_effort():
    uri = f"memory://leases/{uuid.uuid4().hex}"
    held = pytest.raises(OutputHeldError, match=rf"or stop it with kill {os.getpid()} \(on ")
    with OutputLease(uri, {}, None, print, ttl=10 * SETTLE_SECONDS), held:  # each write waits SETTLE_SECONDS
        OutputLease(uri, {}, None, print).__enter__()
    assert not fsspec.filesystem("memory").exists(_lease_file(uri, {})[1])


def test_a_live_holder_renews_its_lease_past_its_ttl(s3_options):
    uri = f"s3://leases/{uuid.uuid4().hex}"
    fs, path = _lease_file(uri, s3_options)
    with OutputLease(uri, s3_options, None, print, ttl=TTL) as lease:
        time.sleep(2.5 * TTL)
        stored = Holder(**json.loads(fs.cat_file(path)))
        assert stored.token == lease.token and stored.renewed > stored.taken + TTL and stored.expires > time.time()
        with pytest.raises(OutputHeldError, match="its lease expires in 1 s unless renewed"):
            OutputLease(uri, s3_options, None, print, ttl=TTL).__enter__()


def test_an_expired_lease_is_taken_over_by_exactly_one_of_two_racing_jobs(s3_options):
    uri = f"s3://leases/{uuid.uuid4().hex}"
    fs, path = _lease_file(uri, s3_options)
    dead = replace(
        Holder.new("amg-dead", TTL), taken=time.time() - 10, renewed=time.time() - 10, expires=time.time() - 9
    )
    fs.pipe_file(path, dead.encode())
    start, won, refused, logged = threading.Barrier(2), [], [], []

    def take(job: str) -> None:
        lease = OutputLease(uri, s3_options, job, logged.append, ttl=30)
        start.wait()
        try:
            won.append(lease.__enter__())
        except OutputHeldError as error:
            refused.append(str(error))

    racers = [threading.Thread(target=take, args=(job,)) for job in ("amg-a", "amg-b")]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join()
    assert len(won) == 1 and len(refused) == 1, (won, refused)
    winner = won[0]
    assert f"Ray job {winner.holder.job}" in refused[0] and any("taking over the expired lease" in m for m in logged)
    assert json.loads(fs.cat_file(path))["token"] == winner.token
    winner.__exit__(None, None, None)


def test_a_killed_holder_blocks_no_one_for_long_and_can_no_longer_commit(output, tmp_path):
    uri, options = output
    holder, dead_token = _holder_in_another_process(uri, options)
    holder.kill()
    holder.wait()
    if uri.startswith("s3://"):  # a lease not renewed for TTL/2 is waited out; a fresher one is refused
        with pytest.raises(OutputHeldError):
            OutputLease(uri, options, None, print, ttl=TTL).__enter__()
        time.sleep(TTL / 2)
    waited: list[str] = []
    started = time.monotonic()
    with OutputLease(uri, options, "amg-next", waited.append, ttl=TTL) as lease:
        assert time.monotonic() - started < 1.5 * TTL
        assert any(m.startswith("waiting ") for m in waited) == uri.startswith("s3://")
        writer = ReleaseWriter(uri, options)
        failure = {"image_id": 0, "uri": "a.jpg", "stage": "read", "error": "gone"}
        fence = partial(confirm_lease, uri, options, dead_token)  # the dead job's shard writer
        with pytest.raises(
            LeaseLostError, match=rf"no longer holds the lease of output {uri} \(now held by Ray job amg-next"
        ):
            writer.commit_shard(0, [], [failure], before_marker=fence)
        assert writer.commits() == []
        ours = partial(confirm_lease, uri, options, lease.token)
        writer.commit_shard(0, [], [failure], before_marker=ours)
        assert [c.name for c in writer.commits()] == ["sa_000000"]


def test_a_job_whose_lease_was_taken_over_stops_with_a_clear_error(s3_options):
    uri = f"s3://leases/{uuid.uuid4().hex}"
    fs, path = _lease_file(uri, s3_options)
    other = Holder.new("amg-other", 30)
    logged: list[str] = []
    with (
        pytest.raises(LeaseLostError, match="now held by Ray job amg-other") as stopped,
        OutputLease(uri, s3_options, "amg-mine", logged.append, ttl=TTL),
    ):
        fs.pipe_file(path, other.encode())  # the other job took it over while this one stalled
        time.sleep(TTL / 2)  # a renewal falls due and is refused
        raise RuntimeError("a shard task failed")
    assert isinstance(stopped.value.__cause__, RuntimeError)
    assert any("lost the lease" in m for m in logged)
    assert json.loads(fs.cat_file(path))["token"] == other.token  # the other job's lease left alone
