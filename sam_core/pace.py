"""The pace of a long run, for its progress lines: what is done of how much, the rate, the time
left, and when the next line is due (the first at once, then at most one every few seconds, and
the one that reaches the total)."""

from __future__ import annotations

import time

LINE_SECONDS = 5.0
"""Least time between two progress lines of one run: a log file stays readable."""


def duration(seconds: float) -> str:
    """`42 s`, `3 min 05 s`, `2 h 07 min`."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60} min {whole % 60:02d} s"
    return f"{whole // 3600} h {whole % 3600 // 60:02d} min"


class Pace:
    """Progress through `total` units (None: the total is not known) since this object was made."""

    def __init__(self, total: int | None, unit: str, every: float = LINE_SECONDS) -> None:
        self.total, self.unit, self.every = total, unit, every
        self.start = time.monotonic()
        self._last_line: float | None = None

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.start

    def describe(self, done: int) -> str:
        """`120/400 images | 2.31 images/s | 2 min 01 s left` (without a total: no `/400`, no time left)."""
        rate = done / max(self.seconds, 1e-9)
        counts = f"{done:,} {self.unit}" if self.total is None else f"{done:,}/{self.total:,} {self.unit}"
        speed = f"{rate:.2f}" if rate < 100 else f"{rate:,.0f}"
        line = f"{counts} | {speed} {self.unit}/s"
        if self.total is not None:
            line += f" | {duration((self.total - done) / rate) if rate > 0 else 'unknown time'} left"
        return line

    def due(self, done: int) -> bool:
        """Whether a line for `done` is due: the first, the one that reaches the total, else one
        `every` seconds after the last. A True answer counts as a line written."""
        now = time.monotonic()
        finished = self.total is not None and done >= self.total
        if self._last_line is not None and not finished and now - self._last_line < self.every:
            return False
        self._last_line = now
        return True
