"""The one retry policy for the jobs' storage calls: which errors are worth another try, how many
tries, how long between them, and a count of the retries by kind.

Object stores answer 503 SlowDown under load, reset connections, cut bodies short. Those are
transient: the same call, made again from the start, succeeds. Everything else is permanent and
raised at once: no such key (FileNotFoundError), no such bucket, access denied (PermissionError),
a bad request. A call is always a whole operation (read an object from its first byte, write an
object from bytes in memory), so a retry never resumes half-way.

For S3, our policy replaces s3fs's and botocore's own retries (`filesystem` turns both off):
they would retry invisibly, uncounted, and multiply with ours (s3fs 5 x botocore 5 x ours).
One loop here bounds every call and counts every retry.
"""

from __future__ import annotations

import copy
import logging
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

log = logging.getLogger(__name__)

_S3_CODES = {
    "SlowDown": "slow_down",
    "ServiceUnavailable": "slow_down",
    "503": "slow_down",
    "InternalError": "internal_error",
    "500": "internal_error",
    "RequestTimeout": "timeout",
    "RequestTimeoutException": "timeout",
}
"""S3 error codes (and bare HTTP statuses, as botocore reports a HEAD's) that are transient, by kind."""
_ERROR_TYPES = {
    # a connection refused, reset or closed before the response was complete
    "ConnectionError": "connection",  # builtins (reset, refused, broken pipe) and botocore's
    "ClientOSError": "connection",
    "ServerDisconnectedError": "connection",
    "EndpointConnectionError": "connection",
    "ConnectionClosedError": "connection",
    # a body shorter than its Content-Length
    "ClientPayloadError": "truncated",
    "ContentLengthError": "truncated",
    "IncompleteRead": "truncated",
    "IncompleteReadError": "truncated",
    "ResponseStreamingError": "truncated",
    # no answer in time
    "TimeoutError": "timeout",
    "ReadTimeoutError": "timeout",
    "ConnectTimeoutError": "timeout",
    "FSTimeoutError": "timeout",
    "ServerTimeoutError": "timeout",
    # an unparseable answer (S3 under load can send broken XML; s3fs retries these too)
    "ResponseParserError": "bad_response",
}
"""Transient errors by the name of their class or of one of its bases: botocore, aiohttp,
http.client and the builtins, matched by name so that sam_core needs none of them."""
S3_DEFAULTS: dict[str, Any] = {"config_kwargs": {"retries": {"total_max_attempts": 1}}, "use_listings_cache": False}
"""Storage options merged under the user's for s3:// URIs: botocore tries each request once, and
listings are never served from s3fs's cache (other processes write the same prefix meanwhile: a
cached listing of the output misses their commit markers)."""
S3FS_RETRIES = 1
"""s3fs's own retry loop (a class attribute, not a storage option) set on each S3 filesystem."""


@dataclass(frozen=True)
class RetryPolicy:
    """Up to `attempts` tries of a call; before try n+1 a pause drawn uniformly from
    [0, min(cap_seconds, base_seconds * 2**(n-1))] ("full jitter": many workers hitting one
    slow store spread out instead of retrying in step). The defaults wait at most
    0.1 + 0.2 + 0.4 + 0.8 + 1.6 + 3.2 + 5 = 11.3 s over 8 tries."""

    attempts: int = 8
    base_seconds: float = 0.1
    cap_seconds: float = 5.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait after failed try number `attempt` (1-based)."""
        return rng.uniform(0.0, min(self.cap_seconds, self.base_seconds * 2 ** (attempt - 1)))

    def describe(self) -> dict[str, Any]:
        return asdict(self)


POLICY = RetryPolicy()


class StorageUnavailableError(OSError):
    """A storage call that kept failing with transient errors for every try of the policy."""


_process_retries: Counter[str] = Counter()
_process_lock = threading.Lock()
_scopes: ContextVar[tuple[Counter[str], ...]] = ContextVar("storage_retry_scopes", default=())
_rng = random.Random()

T = TypeVar("T")


def transient_kind(error: BaseException, handling: BaseException | None = None) -> str | None:
    """The kind of a transient storage error ("slow_down", "internal_error", "timeout",
    "connection", "truncated", "bad_response"), or None for a permanent one. The error's chain
    of causes is searched, the root cause first: s3fs wraps botocore's errors in OSError. The
    search stops at `handling`, the exception being handled when the call was made: an error
    raised in an `except` block or an `__exit__` carries it as its context, not as its cause."""
    chain = []
    while error is not None and error not in chain and error is not handling:
        chain.append(error)
        error = error.__cause__ or error.__context__
    if any(isinstance(link, (FileNotFoundError, PermissionError, StorageUnavailableError)) for link in chain):
        return None  # s3fs's translation of NoSuchKey, NoSuchBucket, AccessDenied, 403, 404; or retried already
    for link in reversed(chain):
        response = getattr(link, "response", None)
        if isinstance(response, dict) and "Error" in response:  # botocore's ClientError
            code = str(response["Error"].get("Code", ""))
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            return _S3_CODES.get(code) or ("server_error" if status >= 500 else None)
        kind = next((_ERROR_TYPES[c.__name__] for c in type(link).__mro__ if c.__name__ in _ERROR_TYPES), None)
        if kind:
            return kind
    return None


def with_retries(call: Callable[[], T], target: str, policy: RetryPolicy = POLICY) -> T:
    """`call()`, tried again after each transient error (see `transient_kind`) up to
    `policy.attempts` tries in all; a permanent error is raised at once, and the last transient
    one as StorageUnavailableError naming `target` (the URI or path the call is about)."""
    handling = sys.exception()
    for attempt in range(1, policy.attempts + 1):
        try:
            return call()
        except Exception as error:
            kind = transient_kind(error, handling)
            if kind is None:
                raise
            if attempt == policy.attempts:
                raise StorageUnavailableError(
                    f"storage kept failing for {target}: {kind} ({type(error).__name__}: {error}) on all "
                    f"{policy.attempts} tries; rerun the job once the store answers again: it resumes where it stopped"
                ) from error
            _count(kind)
            log.debug("retrying %s after %s: %s", target, kind, error)
            time.sleep(policy.delay(attempt, _rng))
    raise AssertionError("unreachable: the loop returns or raises")


def _count(kind: str) -> None:
    with _process_lock:
        _process_retries[kind] += 1
    for scope in _scopes.get():
        scope[kind] += 1


def process_retries() -> dict[str, int]:
    """Retries by kind made in this process since it started."""
    with _process_lock:
        return dict(sorted(_process_retries.items()))


@contextmanager
def counting_retries() -> Iterator[Counter[str]]:
    """A Counter of the retries, by kind, that this thread makes inside the `with` block."""
    counts: Counter[str] = Counter()
    token = _scopes.set((*_scopes.get(), counts))
    try:
        yield counts
    finally:
        _scopes.reset(token)


TALLY_PREFIX = "storage_retries."
"""Shard-commit tallies `storage_retries.<kind>`: the retries made reading a shard's inputs and
writing its files, summed by the job into its manifest."""


def add_to_tallies(tallies: dict[str, int], retries: dict[str, int]) -> dict[str, int]:
    """`tallies` with `retries` (by kind) added under TALLY_PREFIX + kind."""
    out = dict(tallies)
    for kind, n in retries.items():
        out[TALLY_PREFIX + kind] = out.get(TALLY_PREFIX + kind, 0) + n
    return out


def retry_summary(tallies: dict[str, int], driver: dict[str, int]) -> dict[str, Any]:
    """The manifest's `storage` entry: retries in all, by kind, those of the committed shards
    (from their `tallies`) and of the `driver`, and the policy they were made under."""
    shards = {k.removeprefix(TALLY_PREFIX): n for k, n in tallies.items() if k.startswith(TALLY_PREFIX)}
    by_kind = Counter(shards) + Counter(driver)
    return {
        "retries": by_kind.total(),
        "by_kind": dict(sorted(by_kind.items())),
        "in_shards": sum(shards.values()),
        "in_driver": sum(driver.values()),
        "policy": POLICY.describe(),
    }


def storage_options_for(uri: str, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """`storage_options` with S3_DEFAULTS merged under them for an s3:// URI (the user's own
    values win, nested dicts merged key by key); other URIs' options unchanged."""
    options = dict(storage_options or {})
    protocol, _, rest = uri.partition("://")
    return _merged(S3_DEFAULTS, options) if rest and protocol in ("s3", "s3a") else options


def _merged(defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """A new dict: `given` over a deep copy of `defaults` (botocore changes the dicts it is given)."""
    out = copy.deepcopy(defaults)
    for key, value in given.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _merged(out[key], value) if both else value
    return out


def filesystem(uri: str, storage_options: dict[str, Any] | None = None) -> tuple[Any, str]:
    """(the fsspec filesystem, the path) of `uri`, set up so that this module's policy is the only
    retry loop: `storage_options_for`, and s3fs's own loop cut to one try."""
    import fsspec  # lazily: sam_core does no storage I/O except through here (checkpoints)

    fs, path = fsspec.core.url_to_fs(uri, **storage_options_for(uri, storage_options))
    if "s3" in fs.protocol:
        fs.retries = S3FS_RETRIES
    return fs, path


def read_bytes(uri: str, storage_options: dict[str, Any] | None = None) -> bytes:
    """The whole object at `uri`, read from its start on every try."""
    fs, path = filesystem(uri, storage_options)
    return with_retries(lambda: fs.cat_file(path), uri)


class StorageAccessError(OSError):
    """A storage call refused for good: access denied, or the bucket does not exist."""


_ACCESS_CODES = {"AccessDenied": "access denied", "403": "access denied", "NoSuchBucket": "the bucket does not exist"}
_ACCESS_ADVICE = {
    "access denied": "check the credentials and the bucket's policy for this prefix",
    "the bucket does not exist": "create the bucket or correct the URI",
}


def access_problem(error: BaseException) -> str | None:
    """The problem, "access denied" or "the bucket does not exist", when `error` (or one of its causes) says
    so; None for anything else (a missing key included: callers expect FileNotFoundError there)."""
    while error is not None:
        response = getattr(error, "response", None)
        if isinstance(response, dict) and "Error" in response:
            return _ACCESS_CODES.get(str(response["Error"].get("Code", "")))
        if isinstance(error, PermissionError):
            return "access denied"
        error = error.__cause__ or error.__context__
    return None


def refused(target: str, problem: str, error: BaseException) -> StorageAccessError:
    """The StorageAccessError for `target`, saying what to do before a rerun."""
    return StorageAccessError(
        f"storage refused {target}: {problem} ({type(error).__name__}: {error}); "
        f"{_ACCESS_ADVICE[problem]}, then rerun the job: it resumes where it stopped"
    )
