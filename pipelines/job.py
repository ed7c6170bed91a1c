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


def add_ray_flags(parser: argparse.ArgumentParser) -> None:
    """--ray-address and --dashboard, the JobSettings every job's command line takes."""
    parser.add_argument("--ray-address", default=None, help="Ray cluster to join (default: embedded local Ray)")
    parser.add_argument("--dashboard", action=argparse.BooleanOptionalAction, default=True,
                        help="start Ray's dashboard on 127.0.0.1 with the embedded local Ray and log its address")  # fmt: skip


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
    except Exception as error:
        known = known_error(error, known_errors)
        if known is None:
            raise
        return input_error(str(known).splitlines()[0])
    return 0


def known_error(error: BaseException, known_errors: tuple[type[Exception], ...]) -> BaseException | None:
    """`error`, or the exception raised in a Ray task that it stands for, if one of `known_errors`.
    A task's exception reaches the driver as a RayTaskError holding it as `cause` (Ray Data raises
    a stage's own exception, not a UserCodeException, with `raise_original_map_exception`, and
    adds lines of its own after the message: hence the first line only)."""
    while isinstance(getattr(error, "cause", None), BaseException):
        error = error.cause
    return error if isinstance(error, known_errors) else None
