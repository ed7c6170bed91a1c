"""The frame of every Ray job's command line: parse, build the settings, join Ray, run, and
turn the errors a user can fix into one line and exit status 2 (bad flags exit 2 through argparse)."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from pipelines.ray_session import connect


class JobSettings(Protocol):
    ray_address: str | None
    """The Ray cluster to join; None: the job's cluster under `ray job submit`, else an embedded local Ray."""


Settings = TypeVar("Settings", bound=JobSettings)


def run_job(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    configure: Callable[[argparse.Namespace], Settings],
    run: Callable[[Settings], Any],
    known_errors: tuple[type[Exception], ...],
    log: Callable[[str], None],
) -> int:
    """Parse `argv`, build the job's settings with `configure` (its ValueError or OSError is a
    usage error), connect to Ray and `run`; one of `known_errors` is logged as `error: ...` and
    gives exit status 2. Returns the exit status."""
    args = parser.parse_args(argv)
    try:
        settings = configure(args)
    except (ValueError, OSError) as error:
        parser.error(str(error))
    connect(settings.ray_address, log)
    try:
        run(settings)
    except known_errors as error:
        log(f"error: {error}")
        return 2
    return 0
