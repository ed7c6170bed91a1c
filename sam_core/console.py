"""Messages of the command lines: one line each on stderr, so that stdout keeps only results."""

from __future__ import annotations

import sys
from collections.abc import Callable


def stderr_line(message: str) -> None:
    """Print `message` as one line on stderr, flushed at once (a long job's progress shows as it goes)."""
    print(message, file=sys.stderr, flush=True)


def stderr_logger(name: str) -> Callable[[str], None]:
    """A function that prints each message as `[name] message` on stderr."""

    def log(message: str) -> None:
        stderr_line(f"[{name}] {message}")

    return log
