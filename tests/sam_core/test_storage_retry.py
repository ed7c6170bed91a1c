"""The storage retry policy against what s3fs really raises: a moto server behind the fault proxy
(tests/fault_proxy.py) answering 503 SlowDown, 500 InternalError, resets, truncated bodies and
403 AccessDenied."""

from __future__ import annotations

import hashlib
import random
import time

import boto3
import pytest
import s3fs
import torch

from parity.models import TINY, randomize
from sam_core.checkpoints import fetch_checkpoint, load_sam
from sam_core.storage_retry import (
    POLICY,
    RetryPolicy,
    StorageUnavailableError,
    access_problem,
    counting_retries,
    filesystem,
    retry_summary,
    storage_options_for,
    transient_kind,
    with_retries,
)
from tests.fault_proxy import MOTO_CREDENTIALS, FaultProxy

BODY = bytes(range(256)) * 400  # 100 kB: long enough to cut in the middle


@pytest.fixture()
def proxy(monkeypatch):
    """A fault proxy (no faults until a test sets them) over moto, with the bucket `bkt` holding
    `data/k` (BODY); credentials and the proxy's endpoint in the environment, as a job has them."""
    for name, value in MOTO_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    with FaultProxy(seed=7) as proxy:
        monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)  # for fetch_checkpoint, which takes no options
        s3 = boto3.client("s3", endpoint_url=proxy.moto_endpoint)
        s3.create_bucket(Bucket="bkt")
        s3.put_object(Bucket="bkt", Key="data/k", Body=BODY)
        s3fs.S3FileSystem.clear_instance_cache()  # each test's proxy has its own port
        yield proxy


def _fs(proxy: FaultProxy):
    return filesystem("s3://bkt", {"client_kwargs": {"endpoint_url": proxy.endpoint}})[0]


def _raised(call) -> BaseException:
    with pytest.raises(Exception) as caught:
        call()
    return caught.value


@pytest.mark.parametrize(
    ("fault", "operation", "kind"),
    [
        ("slow_down", "put", "slow_down"),
        ("slow_down", "get", "slow_down"),  # the HEAD before the GET: botocore reports a bare 503
        ("internal_error", "put", "internal_error"),
        ("reset", "put", "connection"),
        ("reset", "get", "connection"),  # the HEAD's response cut, then a reset
        ("truncated", "list", "truncated"),  # botocore's ConnectionClosedError over aiohttp's ContentLengthError
        ("truncated", "get", "truncated"),
    ],
)
def test_what_s3fs_raises_for_each_transient_fault_is_classified_transient(proxy, fault, operation, kind):
    fs = _fs(proxy)
    proxy.faults, proxy.rate, proxy.max_faults_per_request = (fault,), 1.0, 2
    calls = {
        "put": lambda: fs.pipe_file("bkt/data/new", b"x" * 1000),
        "get": lambda: fs.cat_file("bkt/data/k"),
        "list": lambda: fs.ls("bkt/data", refresh=True),
    }
    error = _raised(calls[operation])
    assert transient_kind(error) == kind, repr(error)
    # s3fs and botocore did not retry it; aiohttp sends an idempotent request once more when the
    # connection was reset before any response (RFC 9112, 9.3.1), which nothing can count
    assert sum(proxy.injected.values()) == (2 if fault == "reset" else 1)  # (the cap is 2 a request)


def test_permanent_errors_are_never_retried(proxy):
    fs = _fs(proxy)
    missing = _raised(lambda: with_retries(lambda: fs.cat_file("bkt/data/nothing"), "s3://bkt/data/nothing"))
    assert isinstance(missing, FileNotFoundError) and transient_kind(missing) is None
    assert access_problem(missing) is None

    proxy.deny("bkt", "data/")
    before = proxy.requests
    denied = _raised(lambda: with_retries(lambda: fs.cat_file("bkt/data/k"), "s3://bkt/data/k"))
    assert isinstance(denied, PermissionError) and transient_kind(denied) is None
    assert access_problem(denied) == "access denied" and proxy.requests == before + 1
    proxy.allow()

    proxy.delete_bucket("bkt")
    gone = _raised(lambda: with_retries(lambda: fs.pipe_file("bkt/data/k", b"x"), "s3://bkt/data/k"))
    assert isinstance(gone, FileNotFoundError) and access_problem(gone) == "the bucket does not exist"


def test_every_fault_costs_one_counted_retry_and_the_data_arrives_whole(proxy):
    fs = _fs(proxy)
    proxy.rate = 0.5
    payloads = {f"bkt/data/o{i}": hashlib.sha256(bytes([i])).digest() * 2000 for i in range(8)}
    with counting_retries() as retries:
        for path, data in payloads.items():
            with_retries(lambda: fs.pipe_file(path, data), path)  # noqa: B023 - called at once
        read = {path: with_retries(lambda: fs.cat_file(path), path) for path in payloads}  # noqa: B023
    assert read == payloads
    assert sum(proxy.injected.values()) >= 8, proxy.injected  # many faults, of several kinds
    assert len(proxy.injected) >= 3, proxy.injected
    injected = sum(proxy.injected.values())  # each fault fails one try, counted once, but for
    assert injected - proxy.injected["reset"] <= retries.total() <= injected  # aiohttp's own resend
    assert set(retries) <= {"slow_down", "internal_error", "connection", "truncated"}


def test_a_fault_that_persists_ends_after_the_policy_s_tries_naming_the_uri(proxy):
    fs = _fs(proxy)
    proxy.faults, proxy.rate, proxy.max_faults_per_request = ("slow_down",), 1.0, 1000
    policy = RetryPolicy(attempts=4, base_seconds=0.05, cap_seconds=0.1)
    started = time.monotonic()
    with counting_retries() as retries:
        error = _raised(lambda: with_retries(lambda: fs.pipe_file("bkt/data/x", b"x"), "s3://bkt/data/x", policy))
    elapsed = time.monotonic() - started
    assert isinstance(error, StorageUnavailableError) and "s3://bkt/data/x" in str(error)
    assert "slow_down" in str(error) and "all 4 tries" in str(error)
    assert proxy.requests == 4 and retries == {"slow_down": 3}
    assert elapsed < 0.05 + 0.1 + 0.1 + 2.0  # the pauses are bounded by base * 2**n and the cap


def test_backoff_is_exponential_with_full_jitter_under_a_cap():
    rng = random.Random(3)
    for attempt in range(1, 12):
        ceiling = min(POLICY.cap_seconds, POLICY.base_seconds * 2 ** (attempt - 1))
        delays = [POLICY.delay(attempt, rng) for _ in range(200)]
        assert 0 <= min(delays) and max(delays) <= ceiling
        assert max(delays) > 0.8 * ceiling  # spread over the whole range, not a fixed pause
    assert POLICY.attempts >= 6 and POLICY.cap_seconds <= 10


def test_our_defaults_sit_under_the_user_s_storage_options():
    given = {"client_kwargs": {"endpoint_url": "http://x"}, "config_kwargs": {"connect_timeout": 3}}
    merged = storage_options_for("s3://bkt/a", given)
    assert merged["config_kwargs"] == {"retries": {"total_max_attempts": 1}, "connect_timeout": 3}
    assert merged["client_kwargs"] == given["client_kwargs"] and merged["use_listings_cache"] is False
    own = {"config_kwargs": {"retries": {"total_max_attempts": 3}}}
    assert storage_options_for("s3://bkt/a", own)["config_kwargs"] == own["config_kwargs"]  # the user wins
    assert storage_options_for("/local/path", given) == given and storage_options_for("gs://b/a", {}) == {}


def test_the_summary_adds_the_shards_and_the_driver_s_retries():
    summary = retry_summary({"storage_retries.slow_down": 3, "masks_removed.area": 9}, {"slow_down": 1, "timeout": 2})
    assert summary["retries"] == 6 and summary["by_kind"] == {"slow_down": 4, "timeout": 2}
    assert (summary["in_shards"], summary["in_driver"]) == (3, 3)
    assert summary["policy"] == {"attempts": POLICY.attempts, "base_seconds": 0.1, "cap_seconds": 5.0}


def test_a_checkpoint_is_fetched_whole_through_faults(proxy, tmp_path):
    model = load_sam(TINY)
    randomize(model, seed=5)
    weights = tmp_path / "tiny.pth"
    torch.save(model.state_dict(), weights)
    boto3.client("s3", endpoint_url=proxy.moto_endpoint).upload_file(str(weights), "bkt", "models/tiny.pth")
    proxy.faults, proxy.rate = ("slow_down", "reset", "truncated"), 0.6
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    fetched = fetch_checkpoint("s3://bkt/models/tiny.pth", tmp_path / "cache", expected_sha256=digest)
    assert hashlib.sha256(fetched.read_bytes()).hexdigest() == digest
    assert sum(proxy.injected.values()) > 0, "no fault was injected: the test proves nothing"
