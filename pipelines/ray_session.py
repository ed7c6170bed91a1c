"""Joining Ray for a job: the job's cluster under `ray job submit`, else an embedded local Ray."""

from __future__ import annotations

import os
from collections.abc import Callable


def connect(ray_address: str | None, log: Callable[[str], None], dashboard: bool = True) -> None:
    """`ray.init` on `ray_address`, on RAY_ADDRESS (which `ray job submit` sets), or, when neither
    is given, on an embedded single-machine Ray whose servers listen on 127.0.0.1 only, with
    Ray's dashboard (unless `dashboard` is False) on 127.0.0.1 too, its address logged."""
    embedded = not (ray_address or os.environ.get("RAY_ADDRESS"))
    if embedded:
        # Ray's single-machine mode, read when ray is imported: its servers bind to 127.0.0.1 only.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray.data

    if embedded:
        log("no Ray cluster given: starting an embedded local Ray on 127.0.0.1")
        started = ray.init(address="local", include_dashboard=dashboard, dashboard_host="127.0.0.1")
        if dashboard:
            log(dashboard_line(started.dashboard_url))
    else:
        ray.init(address=ray_address)
    context = ray.data.DataContext.get_current()
    # The jobs log their own progress lines (images, masks, failures; pipelines/batch_progress.py),
    # which read the same in a terminal and in the log file of `ray job submit`. Ray Data's bars
    # count rows per operator, not images, masks and failures; in a terminal they redraw in place
    # among the worker output Ray forwards here, and without one they log a block of lines per
    # operator every 10 s. So they stay off.
    context.enable_progress_bars = False
    # Ray Data (2.60) fails a run in which no block moves for 30 min. One model call can take
    # longer (vit_h with the sa1b preset on a CPU, a CPU shared with other work), and the job shows
    # its own progress per batch and per committed shard, so that timeout is off.
    context.execution_no_progress_timeout_s = -1
    # Losing a node (docs/job.md#losing-a-node); both are Ray 2.60's defaults, set because the job
    # relies on them. A block that still fails after Ray's retries fails the run: never skipped,
    # so that no input is dropped silently.
    context.max_errored_blocks = 0
    # The model stage handles its own errors (a failed batch is retried image by image, a failing
    # image becomes a failure row); Ray retries an actor task only for a system failure (its actor
    # or node lost), not for an exception the stage raised.
    context.actor_task_retry_on_errors = False
    # A stage's own exception reaches the driver as itself (inside Ray's RayTaskError), not as Ray
    # Data's UserCodeException, so that the job can say a known error in one line
    # (`pipelines.job.known_error`).
    context.raise_original_map_exception = True


def dashboard_line(url: str | None) -> str:
    """Where the embedded Ray's dashboard is (`url`: host:port, empty when it did not start)."""
    if not url:
        return "Ray's dashboard did not start (Ray's own log above says why); the job runs on without it"
    # Ray turns token authentication on for a new local Ray unless RAY_AUTH_MODE says otherwise,
    # and then sets RAY_AUTH_MODE=token in this process.
    token = os.environ.get("RAY_AUTH_MODE") == "token"
    return f"Ray dashboard: http://{url}" + (" (it asks for the token `ray get-auth-token` prints)" if token else "")
