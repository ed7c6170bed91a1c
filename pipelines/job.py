"""The frame of every Ray job's command line: parse, build the settings, join Ray, run, and
turn the errors a user can fix into one line `error: ...` and exit status 2, as bad flags are."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from pipelines.ray_session import connect
from sam_core.command_line import input_error
from sam_core.console import configure_logging


class JobSettings(Protocol):
    ray_address: str | None
    """The Ray cluster to join; None: the job's cluster under `ray job submit`, else an embedded local Ray."""
    dashboard: bool
    """Whether an embedded local Ray starts its dashboard (on 127.0.0.1)."""


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
    usage error), connect to Ray and `run`; one of `known_errors` is said as `error: ...` and
    gives exit status 2. Returns the exit status."""
    args = parser.parse_args(argv)
    configure_logging()
    try:
        settings = configure(args)
    except (ValueError, OSError) as error:
        parser.error(str(error))
    connect(settings.ray_address, log, settings.dashboard)
    try:
        run(settings)
    except known_errors as error:
        return input_error(str(error))
    return 0
