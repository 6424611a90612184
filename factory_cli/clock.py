"""Time, injected: the run loop reads a monotonic clock and waits through this seam only,
so tests drive it without sleeping (``FakeClock`` in the tests advances on ``wait``)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (leases, cadences, backoff)."""
        ...

    def wall(self) -> datetime:
        """The time of day, timezone-aware UTC (timestamps people read)."""
        ...

    def wait(self, seconds: float) -> None:
        """Sleep up to ``seconds``; return early after ``wake``."""
        ...

    def wake(self) -> None:
        """Cut the current (or next) ``wait`` short: a signal arrived."""
        ...


class SystemClock:
    def __init__(self) -> None:
        self._event = threading.Event()

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> datetime:
        return datetime.now(UTC)

    def wait(self, seconds: float) -> None:
        if seconds > 0:
            self._event.wait(seconds)
        self._event.clear()

    def wake(self) -> None:
        self._event.set()


def iso(value: datetime) -> str:
    """The coordinator's timestamp format: UTC, microseconds, ``Z``."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
