"""The output lease on a local folder (flock), on S3 (a real moto server on 127.0.0.1 behind the
fault proxy: conditional writes, through transient faults) and on a store without conditional
writes (fsspec's memory filesystem: best effort)."""

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

import boto3
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
from sam_core.storage_retry import StorageUnavailableError, counting_retries
from tests.fault_proxy import FAULTS, FaultProxy

REPO = Path(__file__).resolve().parents[2]
TTL = 1.0
"""Seconds: short, so that renewals (every TTL/4) and expiry happen within a test."""
HELD_TTL = 30.0
"""Seconds: for a test about refusal and release, a lease that no pause of a loaded machine lets expire."""


_MOTO_KEYS = {"aws_access_key_id": "moto", "aws_secret_access_key": "moto"}


def _moto_options(endpoint: str) -> dict:
    return {"key": "moto", "secret": "moto", "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}


@pytest.fixture(scope="module")
def proxy():
    """The fault proxy in front of moto, bucket `leases`; no faults unless a test sets them."""
    with FaultProxy(seed=43) as proxy:
        s3 = boto3.client("s3", endpoint_url=proxy.moto_endpoint, region_name="us-east-1", **_MOTO_KEYS)
        s3.create_bucket(Bucket="leases")
        yield proxy


@pytest.fixture(scope="module")
def s3_options(proxy):
    """Storage options that reach moto itself, without faults."""
    return _moto_options(proxy.moto_endpoint)


@pytest.fixture(scope="module")
def flaky_options(proxy):
    """Storage options that reach moto through the proxy, and its faults."""
    return _moto_options(proxy.endpoint)


@pytest.fixture
def faults(proxy):
    """`faults(*kinds)`: each request faulted (at most twice, the proxy's bound) with one of `kinds`
    from now until the test ends."""

    def set_faults(*kinds: str) -> None:
        proxy.faults, proxy.rate = kinds, 1.0

    bound = proxy.max_faults_per_request
    yield set_faults
    proxy.faults, proxy.rate, proxy.max_faults_per_request = FAULTS, 0.0, bound


@pytest.fixture(params=["local", "s3"])
def output(request, tmp_path) -> tuple[str, dict]:
    """(an output URI, its storage options) on each store with real exclusive writes."""
    if request.param == "local":
        return str(tmp_path / "release"), {}
    return f"s3://leases/{uuid.uuid4().hex}", request.getfixturevalue("s3_options")


def _lease_file(uri: str, options: dict) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, root = fsspec.core.url_to_fs(uri, **options)
    return fs, f"{root}/{LEASE}"


def _holder_in_another_process(uri: str, options: dict, ttl: float = TTL) -> tuple[subprocess.Popen, str]:
    """A process that takes the lease (`ttl` seconds) and holds it until killed; (it, its token)."""
    code = (
        "import json, sys, time; from curation.output_lease import OutputLease\n"
        "lease = OutputLease(sys.argv[1], json.loads(sys.argv[2]), None, print, ttl=float(sys.argv[3])).__enter__()\n"
        "print(lease.token, flush=True); time.sleep(600)"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, uri, json.dumps(options), str(ttl)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    return holder, holder.stdout.readline().strip()


def test_a_second_taker_is_refused_with_the_holder_named_until_the_first_releases(output):
    uri, options = output
    fs, path = _lease_file(uri, options)
    with OutputLease(uri, options, "amg-first", print, ttl=HELD_TTL) as first:
        stored = json.loads(fs.cat_file(path))
        assert stored["token"] == first.token and stored["job"] == "amg-first" and stored["pid"] == os.getpid()
        with pytest.raises(OutputHeldError) as refused:
            OutputLease(uri, options, "amg-second", print, ttl=HELD_TTL).__enter__()
        expected = rf"output {uri} is held by another job \(Ray job amg-first, pid {os.getpid()} on .+, since 20\d\d-\d\d-\d\d \d\d:\d\d:\d\d UTC; "
        assert refused.match(expected) and str(refused.value).endswith(
            "; wait for it, or stop it with ray job stop amg-first"
        )
        first.confirm("a shard")  # still ours
    assert not fs.exists(path)
    with OutputLease(uri, options, "amg-second", print, ttl=HELD_TTL) as second:
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


def _race(uri: str, options: dict, log) -> tuple[list[OutputLease], list[str]]:
    """Jobs amg-a and amg-b take the lease of `uri` at the same moment: (the leases taken, the
    refusals' messages)."""
    start, won, refused = threading.Barrier(2), [], []

    def take(job: str) -> None:
        lease = OutputLease(uri, options, job, log, ttl=30)
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
    return won, refused


def test_an_expired_lease_is_taken_over_by_exactly_one_of_two_racing_jobs(s3_options):
    uri = f"s3://leases/{uuid.uuid4().hex}"
    fs, path = _lease_file(uri, s3_options)
    dead = replace(
        Holder.new("amg-dead", TTL), taken=time.time() - 10, renewed=time.time() - 10, expires=time.time() - 9
    )
    fs.pipe_file(path, dead.encode())
    logged: list[str] = []
    won, refused = _race(uri, s3_options, logged.append)
    assert len(won) == 1 and len(refused) == 1, (won, refused)
    winner = won[0]
    assert f"Ray job {winner.holder.job}" in refused[0] and any("taking over the expired lease" in m for m in logged)
    assert json.loads(fs.cat_file(path))["token"] == winner.token
    winner.__exit__(None, None, None)


def test_a_killed_holder_blocks_no_one_for_long_and_can_no_longer_commit(output, tmp_path):
    uri, options = output
    ttl = 6.0  # renewed every 1.5 s: seconds to spare between each step below and the next
    holder, dead_token = _holder_in_another_process(uri, options, ttl)
    holder.kill()
    holder.wait()
    if uri.startswith("s3://"):  # a lease not renewed for ttl/2 is waited out; a fresher one is refused
        with pytest.raises(OutputHeldError):
            OutputLease(uri, options, None, print, ttl=TTL).__enter__()
        fs, path = _lease_file(uri, options)
        last_renewed = json.loads(fs.cat_file(path))["renewed"]
        time.sleep(max(0.0, last_renewed + ttl / 2 + 0.1 - time.time()))  # abandoned now, not yet expired
    waited: list[str] = []
    started = time.monotonic()
    with OutputLease(uri, options, "amg-next", waited.append, ttl=TTL) as lease:
        assert time.monotonic() - started < ttl
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


def _s3_output() -> tuple[str, str]:
    """(a fresh output URI in bucket `leases`, its lease's "bucket/key")."""
    name = uuid.uuid4().hex
    return f"s3://leases/{name}", f"leases/{name}/{LEASE}"


def test_a_lease_whose_create_answer_was_lost_is_taken_by_this_job(proxy, s3_options, flaky_options, faults):
    uri, key = _s3_output()
    fs, path = _lease_file(uri, s3_options)
    faults("reset")  # the create is stored, its answer cut; the retry is refused: the lease exists
    with counting_retries() as retried, OutputLease(uri, flaky_options, "amg-mine", print, ttl=TTL) as lease:
        assert json.loads(fs.cat_file(path))["token"] == lease.token
        assert proxy.faults_on("PUT", key) == 2 and retried.total() >= 2
    assert not fs.exists(path)  # released: a delete whose retry found the lease gone is done


def test_a_renewal_whose_answer_was_lost_keeps_the_lease(proxy, s3_options, flaky_options, faults):
    uri, key = _s3_output()
    fs, path = _lease_file(uri, s3_options)
    logged: list[str] = []
    with OutputLease(uri, flaky_options, "amg-mine", logged.append, ttl=TTL) as lease:
        faults("reset")  # from the next renewal on: stored, answer cut; its retry is refused (new ETag)
        deadline = time.monotonic() + 10 * TTL
        while proxy.faults_on("PUT", key) < 2 and time.monotonic() < deadline:
            time.sleep(TTL / 10)
        faulted_at = time.time()
        while (stored := Holder(**json.loads(fs.cat_file(path)))).renewed < faulted_at and time.monotonic() < deadline:
            time.sleep(TTL / 10)
        assert proxy.faults_on("PUT", key) == 2
        assert stored.token == lease.token and stored.renewed > faulted_at  # renewed since: still ours
        lease.confirm("a shard")
    assert not any("lost the lease" in m or "could not" in m for m in logged), logged
    assert not fs.exists(path)


def test_another_jobs_lease_is_still_refused_through_faults(proxy, s3_options, flaky_options, faults):
    uri, _ = _s3_output()
    fs, path = _lease_file(uri, s3_options)
    fs.pipe_file(path, Holder.new("amg-other", 30).encode())
    faults("reset", "slow_down")
    with pytest.raises(OutputHeldError, match=r"held by another job \(Ray job amg-other, "):
        OutputLease(uri, flaky_options, "amg-mine", print, ttl=TTL).__enter__()
    fs.rm_file(path)

    faults("reset", "slow_down")  # two jobs race for the free lease; a refused create may be either's own
    won, refused = _race(uri, flaky_options, print)
    assert len(won) == 1 and len(refused) == 1 and f"Ray job {won[0].holder.job}" in refused[0], (won, refused)
    assert json.loads(fs.cat_file(path))["token"] == won[0].token
    won[0].__exit__(None, None, None)


def test_confirm_lease_reads_through_faults_and_never_mistakes_an_outage_for_a_loss(
    proxy, s3_options, flaky_options, faults
):
    uri, _ = _s3_output()
    fs, path = _lease_file(uri, s3_options)
    ours = Holder.new("amg-mine", 30)
    fs.pipe_file(path, ours.encode())
    faults("slow_down", "reset", "truncated")
    with counting_retries() as retried:
        confirm_lease(uri, flaky_options, ours.token, "sa_000000")
    assert retried.total() >= 2, retried
    with pytest.raises(LeaseLostError, match="now held by Ray job amg-mine"):
        confirm_lease(uri, flaky_options, "another token", "sa_000000")

    faults("slow_down")
    proxy.max_faults_per_request = 100  # the store answers 503 to every try of the policy
    with pytest.raises(StorageUnavailableError, match=rf"storage kept failing for {uri}/{LEASE}: slow_down"):
        confirm_lease(uri, flaky_options, ours.token, "sa_000000")


def test_a_job_stopped_by_an_outage_still_confirms_and_releases_its_lease_through_faults(
    proxy, s3_options, flaky_options, faults
):
    uri, _ = _s3_output()
    fs, path = _lease_file(uri, s3_options)
    logged: list[str] = []
    with (
        pytest.raises(StorageUnavailableError, match="the store went away"),
        OutputLease(uri, flaky_options, "amg-mine", logged.append, ttl=TTL),
    ):
        faults("reset")  # on the way out: the confirm read and the delete, made while the job's error is handled
        raise StorageUnavailableError("the store went away")
    assert not fs.exists(path) and not any("could not" in m for m in logged), logged
