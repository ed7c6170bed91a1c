"""Live progress of the mask job between shard commits: each model actor reports every batch it
finishes (images with mask proposals, failed inputs, masks proposed) to one small tally actor,
and a driver thread logs a line from the tally's totals when they change (the first at once,
then at most one every few seconds, and a last one at the end).

Best effort by design: a report is sent without waiting for it, and a tally that cannot be
reached costs progress lines, never the job. A batch that Ray Data retries after losing its
actor may be counted twice; the shard lines and the final summary are exact.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Self

from sam_core.pace import Pace

if TYPE_CHECKING:
    from ray.actor import ActorHandle

POLL_SECONDS = 0.5
"""How often the driver reads the tally: a line follows a batch by at most this much."""
READ_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 30.0


class BatchTally:
    """The tally actor's state: the totals of the batches reported so far."""

    def __init__(self) -> None:
        self.images = self.failed = self.masks = 0

    def add(self, images: int, failed: int, masks: int) -> None:
        self.images += images
        self.failed += failed
        self.masks += masks

    def totals(self) -> tuple[int, int, int]:
        """(images, failed, masks)."""
        return self.images, self.failed, self.masks


def report_batch(tally: ActorHandle | None, images: int, failed: int, masks: int) -> None:
    """Send one finished batch's counts to `tally` (None: nothing to do) without waiting for it."""
    if tally is None:
        return
    with contextlib.suppress(Exception):  # progress is best effort: the batch's own work goes on
        tally.add.remote(images, failed, masks)


class BatchProgress:
    """On the driver, around the run of a dataset of `total` inputs: `with BatchProgress(n, log)
    as live:` starts the tally actor (`live.tally`, None when it could not start, for the model
    stage) and the thread that logs its totals; leaving stops both after a last line."""

    def __init__(self, total: int, log: Callable[[str], None]) -> None:
        self.pace = Pace(total, "inputs")
        self.log = log
        self.tally: ActorHandle | None = None
        self._shown = (0, 0, 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="batch-progress", daemon=True)

    def __enter__(self) -> Self:
        import ray

        try:
            self.tally = ray.remote(num_cpus=0)(BatchTally).remote()
        except Exception as error:  # noqa: BLE001 - the job runs on without live progress
            self.log(f"no progress per batch ({type(error).__name__}: {error}); one line per shard only")
            return self
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        import ray

        if self.tally is None:
            return
        self._stop.set()
        self._thread.join(timeout=STOP_TIMEOUT_SECONDS)
        with contextlib.suppress(Exception):  # a tally that is already gone needs no end
            ray.kill(self.tally)

    def _watch(self) -> None:
        """Read the tally every POLL_SECONDS until stopped, then once more for the last line."""
        while True:
            stopping = self._stop.wait(POLL_SECONDS)
            if not self._show(last=stopping) or stopping:
                return

    def _show(self, last: bool) -> bool:
        """Log a line when the totals changed and one is due (or it is the `last`); False when the
        tally cannot be read any more."""
        import ray
        from ray.exceptions import GetTimeoutError

        try:
            totals = ray.get(self.tally.totals.remote(), timeout=READ_TIMEOUT_SECONDS)
        except GetTimeoutError:
            return True
        except Exception as error:  # noqa: BLE001 - the job runs on without live progress
            self.log(f"progress per batch stopped ({type(error).__name__}: {error}); one line per shard only")
            return False
        images, failed, masks = totals
        if totals != self._shown and (last or self.pace.due(images + failed)):
            self._shown = totals
            self.log(
                f"through the model: {self.pace.describe(images + failed)} | "
                f"{images:,} images, {masks:,} masks proposed, {failed:,} failed"
            )
        return True
