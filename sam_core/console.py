"""Messages of the command lines, through `logging`: one line each on stderr in one format, so that
stdout keeps only results. The command lines call `configure_logging` once; a program that imports
the packages configures logging its own way."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import TextIO

LOGGER = "sa_engine"
"""The parent of the messages' loggers: `stderr_line` logs to it, `stderr_logger(name)` to its child `name`."""
PACKAGES = ("sa_engine", "sam_core", "curation", "synthetic", "pipelines", "tools", "analysis")
"""Loggers whose INFO messages the command lines show (their modules' `logging.getLogger(__name__)` included)."""
FORMAT = "%(asctime)s [%(module)s] %(message)s"
"""One line per message: when, the module that said it (e.g. `[amg]`), what."""
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a message comes (a test's capture, a redirect)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def configure_logging() -> None:
    """One stderr handler in FORMAT on the root logger: the project's loggers at INFO, any other
    library's at WARNING. Calling it again changes nothing."""
    root = logging.getLogger()
    if not any(isinstance(handler, _StderrHandler) for handler in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
        root.addHandler(handler)
    for name in PACKAGES:
        logging.getLogger(name).setLevel(logging.INFO)


def stderr_line(message: str) -> None:
    """Log `message` at INFO, as said by the caller's module (on stderr once `configure_logging` ran)."""
    logging.getLogger(LOGGER).info(message, stacklevel=2)


def stderr_logger(name: str) -> Callable[[str], None]:
    """A function that logs each message at INFO to the logger `sa_engine.<name>`."""
    return logging.getLogger(f"{LOGGER}.{name}").info
