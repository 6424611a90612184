"""Retrying an unreachable coordinator: capped exponential backoff with jitter.

``backoff_delay`` is the whole policy, a pure function tested with a table; ``Backoff`` keeps
the count of consecutive failures of one kind of call and when it may be tried again.
"""

from __future__ import annotations

from collections.abc import Callable

BASE_SECONDS = 1.0
CAP_SECONDS = 60.0
JITTER = 0.5  # the share of each delay that is random: delays fall in [half, full]


def backoff_delay(
    failures: int,
    u: float,
    *,
    base: float = BASE_SECONDS,
    cap: float = CAP_SECONDS,
    jitter: float = JITTER,
    retry_after: float | None = None,
) -> float:
    """The wait after ``failures`` consecutive failures (1 = the first), given a uniform
    random ``u`` in [0, 1).

    The ceiling doubles from ``base`` with each failure up to ``cap``; the wait is the
    ceiling less a random share of up to ``jitter`` of it ("equal jitter": never shorter
    than half the ceiling, so a fleet retrying together spreads out without hammering).
    A server's ``Retry-After`` is honoured as a floor, still within ``cap``."""
    if failures < 1:
        return 0.0
    ceiling = min(cap, base * 2.0 ** min(failures - 1, 62))
    delay = ceiling * (1.0 - jitter * u)
    if retry_after is not None:
        delay = max(delay, min(cap, retry_after))
    return delay


class Backoff:
    """Consecutive failures of one kind of call, and the time it may be tried again."""

    def __init__(
        self,
        rand: Callable[[], float],
        *,
        base: float = BASE_SECONDS,
        cap: float = CAP_SECONDS,
    ) -> None:
        self.rand = rand
        self.base = base
        self.cap = cap
        self.failures = 0
        self.not_before = 0.0

    def ready(self, now: float) -> bool:
        return now >= self.not_before

    def failed(
        self, now: float, retry_after: float | None = None, cap: float | None = None
    ) -> float:
        """Record a failure at ``now``; returns the delay before the next try."""
        self.failures += 1
        delay = backoff_delay(
            self.failures,
            self.rand(),
            base=self.base,
            cap=self.cap if cap is None else min(cap, self.cap),
            retry_after=retry_after,
        )
        self.not_before = now + delay
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self.not_before = 0.0
