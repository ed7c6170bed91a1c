"""The calls a release's writer and readers (and the output lease) make on an fsspec filesystem,
each under the storage retry policy (`sam_core.storage_retry`), and each a whole operation: an
object is read from its start into memory, or in ranges each read from its first byte
(`open_ranged`), and written from bytes in memory when its file is closed, so a retry never
resumes half-way.

A refusal for good (access denied, no such bucket) is raised as StorageAccessError naming the
URI; a missing key stays FileNotFoundError, which callers expect. Folders are made only on a
local filesystem: on an object store there are none, and s3fs's `makedirs` would create a
missing bucket, hiding a deleted output behind a new, empty one.
"""

from __future__ import annotations

import io
import posixpath
from collections.abc import Callable
from typing import Any, TypeVar

from fsspec.implementations.local import LocalFileSystem

from sam_core.storage_retry import access_problem, filesystem, refused, with_retries

T = TypeVar("T")
RANGE_BYTES = 8 << 20
"""The size of each ranged read of `open_ranged`."""


class RetryingFileSystem:
    """The filesystem of `uri` (`storage_options` as for fsspec); `root` is `uri`'s path on it."""

    def __init__(self, uri: str, storage_options: dict[str, Any] | None = None) -> None:
        self.fs, self.root = filesystem(uri, storage_options)

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def call(self, path: str, operation: Callable[[], T]) -> T:
        """`operation()` (a call on `self.fs` about `path`) under the retry policy; access refused
        -> StorageAccessError naming `path`'s URI."""
        target = self.fs.unstrip_protocol(path)
        try:
            return with_retries(operation, target)
        except Exception as error:
            problem = access_problem(error)
            if problem is None:
                raise
            raise refused(target, problem, error) from error

    def unstrip_protocol(self, path: str) -> str:
        return self.fs.unstrip_protocol(path)

    def exists(self, path: str) -> bool:
        return self.call(path, lambda: self.fs.exists(path))

    def glob(self, pattern: str) -> list[str]:
        """The paths that match `pattern`. A listing that fails raises (fsspec's walk would skip it
        and return fewer paths, an empty list for a 503); a missing folder lists as nothing."""
        return self.call(pattern, lambda: self.fs.glob(pattern, on_error=_raise_unless_missing))

    def ls(self, path: str, detail: bool = False) -> list[Any]:
        return self.call(path, lambda: self.fs.ls(path, detail=detail))

    def size(self, path: str) -> int:
        return self.call(path, lambda: self.fs.size(path))

    def cat_file(self, path: str, start: int | None = None, end: int | None = None) -> bytes:
        """The object's bytes, or those of [start, end)."""
        return self.call(path, lambda: self.fs.cat_file(path, start=start, end=end))

    def cat(self, paths: list[str]) -> dict[str, bytes]:
        """{path: bytes} of every path, fetched concurrently; each try fetches again only the
        objects the last one failed on."""
        found: dict[str, bytes] = {}

        def fetch_missing() -> dict[str, bytes]:
            got = self.fs.cat([p for p in paths if p not in found], on_error="return")
            found.update({p: v for p, v in got.items() if not isinstance(v, BaseException)})
            failed = [v for v in got.values() if isinstance(v, BaseException)]
            if failed:
                raise failed[0]
            return found

        return self.call(posixpath.commonpath(paths), fetch_missing) if paths else {}

    def pipe_file(self, path: str, data: bytes) -> None:
        self.call(path, lambda: self.fs.pipe_file(path, data))

    def rm_file(self, path: str) -> None:
        self.call(path, lambda: self.fs.rm_file(path))

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        """Folders on a local filesystem; nothing elsewhere (see the module's docstring)."""
        if self.is_local:
            self.fs.makedirs(path, exist_ok=exist_ok)

    def open(self, path: str, mode: str = "rb") -> io.BytesIO:
        """Mode "rb": the whole object in memory; mode "wb": a buffer written to `path` when closed
        (by `with`, only when its block raised nothing)."""
        if mode == "rb":
            return io.BytesIO(self.cat_file(path))
        if mode == "wb":
            return _UploadOnClose(lambda data: self.pipe_file(path, data))
        raise ValueError(f"mode {mode!r}: only whole-object reads ('rb') and writes ('wb')")

    def open_ranged(self, path: str) -> io.BufferedReader:
        """`path` for reading, seekable, fetched in ranges of RANGE_BYTES: an object too large to
        hold whole in memory (a shard's tar, a Parquet file read in part). FileNotFoundError at
        once if there is no such object."""
        return io.BufferedReader(_RangedReader(self, path, self.size(path)), buffer_size=RANGE_BYTES)


def _raise_unless_missing(error: BaseException) -> None:
    if not isinstance(error, FileNotFoundError):
        raise error


class _RangedReader(io.RawIOBase):
    """The raw file under `RetryingFileSystem.open_ranged`: each read is one ranged read of
    `size`-byte object `path`, under the retry policy."""

    def __init__(self, fs: RetryingFileSystem, path: str, size: int) -> None:
        super().__init__()
        self.fs, self.path, self.size, self.position = fs, path, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer: Any) -> int:
        end = min(self.position + len(buffer), self.size)
        if end <= self.position:
            return 0
        data = self.fs.cat_file(self.path, self.position, end)
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)


class _UploadOnClose(io.BytesIO):
    """An in-memory file whose bytes `upload` takes when it is closed, once; a `with` block that
    raises closes it without uploading."""

    def __init__(self, upload: Callable[[bytes], None]) -> None:
        super().__init__()
        self._upload, self._aborted = upload, False

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        self._aborted = exc_type is not None
        self.close()

    def close(self) -> None:
        if self.closed:
            return
        data, upload = self.getvalue(), not self._aborted
        super().close()  # closed first: a failed upload is never tried again by the garbage collector
        if upload:
            self._upload(data)
