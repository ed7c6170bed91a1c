"""One writer per output: the lease a job holds on its output prefix while it writes there.

`<output>/_lease.json` names the holder: host, pid, Ray job submission id, a random token, and
when the lease was taken, last renewed and expires (Unix seconds). A second job on the same
output finds it and stops with OutputHeldError rather than interleave its shards with the
first's. The shard writers get the token and, just before each commit marker, check that the
lease still carries it (`confirm_lease`): a job whose lease another job took over commits nothing
more.

How the lease is taken depends on the store:

- S3 (conditional writes): created with PutObject If-None-Match "*"; renewed, or taken over once
  expired, with If-Match on the ETag read; released with DeleteObject If-Match. Of two jobs racing
  for a free or expired lease exactly one wins. The holder renews it every TTL/4 from a daemon
  thread; it expires TTL after the last renewal. A lease whose holder has missed two renewals
  (not renewed for half its TTL) is waited out, then taken over; a fresher one is refused at once.
- a local folder: an exclusive `flock` on `_lease.json` held by the driver process, which the
  operating system drops when that process ends; no expiry, no renewal.
- any other fsspec store: as S3, each conditional write emulated by read, write, wait
  SETTLE_SECONDS, read back. Best effort: two jobs that start within that time may both go on.

Every call on the store (read, create, replace, delete; `read_holder` and `confirm_lease` too)
goes through the storage retry policy (`curation.retrying_fs`) and is counted with the process's
other retries. A conditional write whose try was stored but whose answer was lost (a connection
reset mid-response) meets itself on the retry and is refused: 412, the lease exists (a create) or
its ETag changed (a replace). A refused write therefore reads the lease back: if it carries this
job's token (written by no one else) the lease is ours as stored, and its version becomes ours;
anything else is another job's. A retried delete that finds no lease is done. A lease that stays
unreadable through the retries raises StorageUnavailableError, never LeaseLostError: a shard
writer that cannot confirm commits nothing, and its error stops the job (a rerun resumes).

Expiry compares the holder's clock with the taker's: hosts' clocks must agree to a few seconds.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from types import TracebackType
from typing import Any, Self

from fsspec.asyn import sync

from curation.retrying_fs import RetryingFileSystem

LEASE = "_lease.json"
TTL_SECONDS = 60.0
SETTLE_SECONDS = 2.0
"""How long a store without conditional writes is given to show a competing write."""
_S3_CONFLICTS = {"PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey", "412", "409"}
"""S3 error codes that mean: the lease is no longer the version a conditional request named."""


class OutputHeldError(RuntimeError):
    """Another job holds the output's lease; the message names it and says how to stop it."""


class LeaseLostError(RuntimeError):
    """This job's lease is gone (taken over by another job): it must commit nothing more."""


@dataclass(frozen=True)
class Holder:
    """The content of `_lease.json`. `expires` is None for a local lock (held while its process lives)."""

    host: str
    pid: int
    job: str | None
    """The Ray job submission id (what `ray job stop` takes); None outside `ray job submit`."""
    token: str
    taken: float
    renewed: float
    expires: float | None

    @classmethod
    def new(cls, job: str | None, ttl: float | None) -> Holder:
        now = time.time()
        expires = now + ttl if ttl is not None else None
        return cls(socket.gethostname(), os.getpid(), job, secrets.token_hex(16), now, now, expires)

    @classmethod
    def decode(cls, raw: bytes, path: str) -> Holder:
        try:
            return cls(**json.loads(raw))
        except (ValueError, TypeError) as error:
            raise OutputHeldError(
                f"{path} is not a lease this engine wrote ({error}); if no job writes this output, delete it"
            ) from error

    def encode(self) -> bytes:
        return json.dumps(asdict(self), indent=2).encode()

    def taken_now(self) -> Holder:
        """This holder's record for a lease taken now (a taker may have waited since `new`)."""
        now = time.time()
        return replace(self, taken=now, renewed=now, expires=self._expiry(now))

    def renewed_now(self) -> Holder:
        now = time.time()
        return replace(self, renewed=now, expires=self._expiry(now))

    def _expiry(self, now: float) -> float | None:
        return now + (self.expires - self.renewed) if self.expires is not None else None

    def expired(self, now: float) -> bool:
        return self.expires is not None and self.expires <= now

    def seems_alive(self, now: float) -> bool:
        """False once the holder has missed two renewals (one every TTL/4)."""
        return self.expires is None or now - self.renewed < (self.expires - self.renewed) / 2

    def describe(self, now: float) -> str:
        job = f"Ray job {self.job}, " if self.job else ""
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.taken))
        if self.expires is None:
            ends = "its lock ends with its process"
        else:
            ends = f"its lease expires in {max(0, round(self.expires - now))} s unless renewed"
        return f"{job}pid {self.pid} on {self.host}, since {since}; {ends}"

    def stop_command(self) -> str:
        return f"ray job stop {self.job}" if self.job else f"kill {self.pid} (on {self.host})"


def held_error(uri: str, holder: Holder | None) -> OutputHeldError:
    if holder is None:  # a local holder between taking its lock and writing its record
        return OutputHeldError(f"output {uri} is held by another job that is starting; wait for it")
    return OutputHeldError(
        f"output {uri} is held by another job ({holder.describe(time.time())}); "
        f"wait for it, or stop it with {holder.stop_command()}"
    )


def lease_path(uri: str, storage_options: dict[str, Any] | None) -> tuple[RetryingFileSystem, str]:
    """(the filesystem of output `uri`, the path of its lease file)."""
    fs = RetryingFileSystem(uri, storage_options)
    return fs, f"{fs.root.rstrip('/')}/{LEASE}"


def read_holder(fs: RetryingFileSystem, path: str) -> Holder | None:
    """The lease's holder as stored now (read afresh, no cache); None if there is no lease."""
    try:
        raw = fs.cat_file(path)
    except FileNotFoundError:
        return None
    return Holder.decode(raw, path) if raw else None


def confirm_lease(uri: str, storage_options: dict[str, Any] | None, token: str, what: str) -> None:
    """LeaseLostError unless the lease of output `uri` still carries `token`; StorageUnavailableError
    if it cannot be read through the retries. `what`: what the caller is about to commit (a
    shard's name), for the message."""
    fs, path = lease_path(uri, storage_options)
    holder = read_holder(fs, path)
    if holder is None or holder.token != token:
        now_held = f"now held by {holder.describe(time.time())}" if holder else "it was released"
        raise LeaseLostError(
            f"this job no longer holds the lease of output {uri} ({now_held}); stopped before committing {what}"
        )


class OutputLease:
    """`with OutputLease(uri, options, job, log) as lease:` holds the output's lease for the block
    (OutputHeldError if another job holds it) and releases it after, also on error. An error
    raised while the lease had been taken over becomes LeaseLostError. `lease.token` goes to the
    shard writers. `ttl`: seconds (ignored for a local folder)."""

    def __init__(
        self,
        uri: str,
        storage_options: dict[str, Any] | None,
        job: str | None,
        log: Callable[[str], None],
        ttl: float = TTL_SECONDS,
    ) -> None:
        self.uri, self.storage_options = uri, storage_options
        fs, path = lease_path(uri, storage_options)
        self.holder = Holder.new(job, None if fs.is_local else ttl)
        self._keeper = _LocalLock(fs, path) if fs.is_local else _RenewedLease(_store(fs, path), log)

    @property
    def token(self) -> str:
        return self.holder.token

    def confirm(self, what: str) -> None:
        confirm_lease(self.uri, self.storage_options, self.token, what)

    def __enter__(self) -> Self:
        self._keeper.take(self.holder, self.uri)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        lost: LeaseLostError | None = None
        if error is not None:  # e.g. a shard task's LeaseLostError, as Ray Data passes it on
            try:
                self.confirm("the rest of the release")
            except LeaseLostError as found:
                lost = found
            except OSError:
                pass  # the lease unreadable now: the error at hand says more
        self._keeper.release()
        if lost is not None:
            raise lost from error


class _Keeper(ABC):
    """Takes and releases one lease file."""

    @abstractmethod
    def take(self, holder: Holder, uri: str) -> None: ...

    @abstractmethod
    def release(self) -> None: ...


class _LocalLock(_Keeper):
    """An exclusive flock on the lease file, for as long as this process lives or until release."""

    def __init__(self, fs: RetryingFileSystem, path: str) -> None:
        self.fs, self.path = fs, path
        self.fd: int | None = None

    def take(self, holder: Holder, uri: str) -> None:
        self.fs.makedirs(self.path.rsplit("/", 1)[0], exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise held_error(uri, read_holder(self.fs, self.path)) from None
            if self._still_at_path(fd):
                break
            os.close(fd)  # its last holder deleted it between our open and our lock: lock the new one
        os.ftruncate(fd, 0)
        os.write(fd, holder.taken_now().encode())
        self.fd = fd

    def _still_at_path(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        if self.fd is not None:
            os.unlink(self.path)  # before unlocking, so that no one locks a file that is going away
            os.close(self.fd)
            self.fd = None


class _Conflict(Exception):
    """A conditional write whose condition did not hold: another job changed the lease first."""


class _Store(ABC):
    """The lease file with compare-and-swap writes, each call under the retry policy. A version
    (an opaque string) names one content of the file; each write names the version it expects
    and returns the new one, or raises _Conflict when the file is not at that version (or, for
    `create`, exists). A refused write may have been this write's own earlier try (see the
    module's docstring): the caller reads the lease back to tell."""

    @abstractmethod
    def read(self) -> tuple[bytes, str] | None: ...

    @abstractmethod
    def create(self, data: bytes) -> str: ...

    @abstractmethod
    def replace(self, data: bytes, version: str) -> str: ...

    @abstractmethod
    def delete(self, version: str) -> None: ...


def _store(fs: RetryingFileSystem, path: str) -> _Store:
    protocols = {fs.fs.protocol} if isinstance(fs.fs.protocol, str) else set(fs.fs.protocol)
    return _S3Store(fs, path) if protocols & {"s3", "s3a"} else _SettlingStore(fs, path)


class _S3Store(_Store):
    """S3's own conditional requests; the version is the object's ETag."""

    def __init__(self, fs: RetryingFileSystem, path: str) -> None:
        self.fs, self.path, self.s3 = fs, path, fs.fs
        self.bucket, self.key, _ = self.s3.split_path(path)

    def read(self) -> tuple[bytes, str] | None:
        async def get() -> tuple[bytes, str] | None:  # body and ETag from one request
            try:
                found = await self.s3._call_s3("get_object", Bucket=self.bucket, Key=self.key)
            except FileNotFoundError:
                return None
            try:
                return await found["Body"].read(), found["ETag"]
            finally:
                found["Body"].close()

        return self.fs.call(self.path, lambda: sync(self.s3.loop, get))

    def create(self, data: bytes) -> str:
        return self._call("put_object", Body=data, IfNoneMatch="*")["ETag"]

    def replace(self, data: bytes, version: str) -> str:
        return self._call("put_object", Body=data, IfMatch=version)["ETag"]

    def delete(self, version: str) -> None:
        """_Conflict also when the lease is gone (NoSuchKey): see `_RenewedLease.release`."""
        self._call("delete_object", IfMatch=version)

    def _call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return self.fs.call(self.path, lambda: self.s3.call_s3(method, Bucket=self.bucket, Key=self.key, **kwargs))
        except OSError as error:  # s3fs keeps botocore's error as the cause
            response = getattr(error.__cause__, "response", None) or {}
            if response.get("Error", {}).get("Code") in _S3_CONFLICTS:
                raise _Conflict from error
            raise


class _SettlingStore(_Store):
    """Stores without conditional writes: a write counts if it reads back unchanged after
    SETTLE_SECONDS (best effort). The version is the content's sha256."""

    def __init__(self, fs: RetryingFileSystem, path: str, settle: float = SETTLE_SECONDS) -> None:
        self.fs, self.path, self.settle = fs, path, settle

    def read(self) -> tuple[bytes, str] | None:
        try:
            data = self.fs.cat_file(self.path)
        except FileNotFoundError:
            return None
        return data, hashlib.sha256(data).hexdigest()

    def create(self, data: bytes) -> str:
        if self.read() is not None:
            raise _Conflict
        return self._write(data)

    def replace(self, data: bytes, version: str) -> str:
        self._expect(version)
        return self._write(data)

    def delete(self, version: str) -> None:
        self._expect(version)
        try:
            self.fs.rm_file(self.path)
        except FileNotFoundError:
            pass  # deleted by an earlier try whose answer was lost

    def _expect(self, version: str) -> None:
        found = self.read()
        if found is None or found[1] != version:
            raise _Conflict

    def _write(self, data: bytes) -> str:
        self.fs.pipe_file(self.path, data)
        time.sleep(self.settle)
        found = self.read()
        if found is None or found[0] != data:
            raise _Conflict
        return found[1]


class _RenewedLease(_Keeper):
    """A lease with a TTL in a store with (real or emulated) conditional writes, renewed every
    TTL/4 by a daemon thread until release."""

    def __init__(self, store: _Store, log: Callable[[str], None]) -> None:
        self.store, self.log = store, log
        self.holder: Holder | None = None
        self.version = ""
        self.uri = ""
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew_until_stopped, name="output-lease", daemon=True)

    def take(self, holder: Holder, uri: str) -> None:
        self.uri = uri
        taken = None
        while taken is None:
            taken = self._try_take(holder.taken_now(), uri)
        self.holder, self.version = taken
        self._renewer.start()

    def _try_take(self, holder: Holder, uri: str) -> tuple[Holder, str] | None:
        """(the holder stored, its version) if the lease was free or expired; None after a lost
        race or a wait for an abandoned lease to expire (look again); OutputHeldError for a live
        holder."""
        found = self.store.read()
        if found is None:
            return self._write(self.store.create, holder)
        current, now = Holder.decode(found[0], uri), time.time()
        if current.expired(now):
            self.log(f"taking over the expired lease of {uri} ({current.describe(now)})")
            return self._write(self.store.replace, holder, found[1])
        if current.seems_alive(now):
            raise held_error(uri, current)
        assert current.expires is not None  # only a timed lease is ever abandoned
        self.log(
            f"waiting {current.expires - now:.0f} s for the lease of {uri} to expire: its holder "
            f"({current.describe(now)}) has not renewed it for {now - current.renewed:.0f} s"
        )
        time.sleep(current.expires - now + 0.1)
        return None

    def _write(self, write: Callable[..., str], holder: Holder, *version: str) -> tuple[Holder, str] | None:
        """(`holder`, the version made) by `write(holder.encode(), *version)` (a create or a
        replace); after a refusal, the stored lease if it is still ours, else None (another job
        wrote first)."""
        try:
            return holder, write(holder.encode(), *version)
        except _Conflict:
            return self._adopt_stored_version(holder.token)

    def _adopt_stored_version(self, token: str) -> tuple[Holder, str] | None:
        """(the stored holder, its version) if the stored lease carries `token`, else None. After
        a refused write: one of its tries (or of an earlier renewal given up after every retry)
        was stored but its answer lost, and its retry met it. Only this job writes its token, so
        the lease is ours as stored."""
        found = self.store.read()
        if found is None:
            return None
        stored = Holder.decode(found[0], self.uri)
        return (stored, found[1]) if stored.token == token else None

    def _renew_until_stopped(self) -> None:
        assert self.holder is not None and self.holder.expires is not None
        period = (self.holder.expires - self.holder.renewed) / 4
        while not self._stop.wait(period):
            try:
                renewed = self._write(self.store.replace, self.holder.renewed_now(), self.version)
            except OSError as error:  # the store unreachable through every retry: try again next period
                self.log(f"could not renew the lease of {self.uri} ({error}); trying again in {period:.0f} s")
                continue
            if renewed is None:
                self.log(f"lost the lease of {self.uri} to another job: this job will commit no more shards")
                return
            self.holder, self.version = renewed

    def release(self) -> None:
        self._stop.set()
        if self._renewer.is_alive():
            self._renewer.join()
        try:
            self.store.delete(self.version)
        except _Conflict:
            pass  # another job's now (leave it alone), or gone: deleted by an earlier try whose answer was lost
        except OSError as error:
            self.log(f"could not delete the lease of {self.uri} ({error}); it expires on its own")
