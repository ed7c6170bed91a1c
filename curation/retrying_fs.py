"""The calls a release's writer and readers make on an fsspec filesystem, each under the storage
retry policy (`sam_core.storage_retry`), and each a whole operation: an object is read from its
start into memory, and written from bytes in memory when its file is closed, so a retry never
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


class RetryingFileSystem:
    """The filesystem of `uri` (`storage_options` as for fsspec); `root` is `uri`'s path on it."""

    def __init__(self, uri: str, storage_options: dict[str, Any] | None = None) -> None:
        self.fs, self.root = filesystem(uri, storage_options)

    def _call(self, path: str, call: Callable[[], T]) -> T:
        """`call()` under the retry policy; access refused -> StorageAccessError naming `path`'s URI."""
        target = self.fs.unstrip_protocol(path)
        try:
            return with_retries(call, target)
        except Exception as error:
            problem = access_problem(error)
            if problem is None:
                raise
            raise refused(target, problem, error) from error

    def unstrip_protocol(self, path: str) -> str:
        return self.fs.unstrip_protocol(path)

    def exists(self, path: str) -> bool:
        return self._call(path, lambda: self.fs.exists(path))

    def glob(self, pattern: str) -> list[str]:
        return self._call(pattern, lambda: self.fs.glob(pattern))

    def ls(self, path: str, detail: bool = False) -> list[Any]:
        return self._call(path, lambda: self.fs.ls(path, detail=detail))

    def cat_file(self, path: str) -> bytes:
        return self._call(path, lambda: self.fs.cat_file(path))

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

        return self._call(posixpath.commonpath(paths), fetch_missing) if paths else {}

    def pipe_file(self, path: str, data: bytes) -> None:
        self._call(path, lambda: self.fs.pipe_file(path, data))

    def rm_file(self, path: str) -> None:
        self._call(path, lambda: self.fs.rm_file(path))

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        """Folders on a local filesystem; nothing elsewhere (see the module's docstring)."""
        if isinstance(self.fs, LocalFileSystem):
            self.fs.makedirs(path, exist_ok=exist_ok)

    def open(self, path: str, mode: str = "rb") -> io.BytesIO:
        """Mode "rb": the whole object in memory; mode "wb": a buffer written to `path` when closed
        (by `with`, only when its block raised nothing)."""
        if mode == "rb":
            return io.BytesIO(self.cat_file(path))
        if mode == "wb":
            return _UploadOnClose(lambda data: self.pipe_file(path, data))
        raise ValueError(f"mode {mode!r}: only whole-object reads ('rb') and writes ('wb')")


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
