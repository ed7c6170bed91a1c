"""Joining Ray for a job: the job's cluster under `ray job submit`, else an embedded local Ray."""

from __future__ import annotations

import os
from collections.abc import Callable


def connect(ray_address: str | None, log: Callable[[str], None]) -> None:
    """`ray.init` on `ray_address`, on RAY_ADDRESS (which `ray job submit` sets), or, when neither
    is given, on an embedded single-machine Ray whose servers listen on 127.0.0.1 only."""
    embedded = not (ray_address or os.environ.get("RAY_ADDRESS"))
    if embedded:
        # Ray's single-machine mode, read when ray is imported: its servers bind to 127.0.0.1 only.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray.data

    if embedded:
        log("no Ray cluster given: starting an embedded local Ray on 127.0.0.1")
        ray.init(address="local", include_dashboard=False)
    else:
        ray.init(address=ray_address)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    # Ray Data (2.60) fails a run in which no block moves for 30 min. One model call can take
    # longer (vit_h with the sa1b preset on a CPU, a CPU shared with other work), and the job shows
    # its own progress per committed shard, so that timeout is off.
    context.execution_no_progress_timeout_s = -1
