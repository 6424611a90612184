"""Whether the board's data is current: live, reconnecting or stale, and since when.

The board must never show an outage as a quiet product. A ``Link`` remembers when the
coordinator was last read in full (``last_good``), since when reads have been failing
(``failing_since``) and why (``failure``); ``link_state`` and ``link_text`` read it at a given
``now`` (the caller's clock: the board redraws between polls, and tests inject it).

- live: the last poll read everything. ``live: updated 3s ago``.
- reconnecting: polls fail, the last good data is younger than ``stale_after`` (or there never
  was any). ``RECONNECTING since 14:02:11 (connection refused); last good data 14:01:55``.
- stale: the data shown is older than ``stale_after``, failing or not (a poll that has not
  come back). ``STALE: last good data 14:01:55; reconnecting since 14:02:11 (timed out)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

STALE_AFTER = 15.0  # seconds without good data before the board calls itself stale

State = Literal["connecting", "live", "reconnecting", "stale"]


@dataclass(frozen=True)
class Link:
    last_good: datetime | None = None  # when the last poll that read everything ended
    failing_since: datetime | None = None  # the first failed poll since then
    failure: str | None = None  # the latest failure, in a few words

    def ok(self, at: datetime) -> Link:
        return Link(last_good=at)

    def failed(self, at: datetime, why: str) -> Link:
        return Link(self.last_good, self.failing_since or at, why)


def link_state(link: Link, now: datetime, stale_after: float = STALE_AFTER) -> State:
    if link.last_good is None:
        return "connecting" if link.failing_since is None else "reconnecting"
    if (now - link.last_good).total_seconds() >= stale_after:
        return "stale"
    return "live" if link.failing_since is None else "reconnecting"


def _clock(at: datetime) -> str:
    return at.strftime("%H:%M:%S")


def age(then: datetime, now: datetime) -> str:
    """A short age: 42s, 7m, 3h, 2d."""
    seconds = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def link_text(link: Link, now: datetime, stale_after: float = STALE_AFTER) -> str:
    """The board's first word on its data (see the module docstring)."""
    state = link_state(link, now, stale_after)
    since = (
        f" since {_clock(link.failing_since)} ({link.failure or 'failed'})"
        if link.failing_since is not None
        else ""
    )
    if state == "connecting":
        return "connecting..."
    if link.last_good is None:  # reconnecting, nothing read yet
        return f"RECONNECTING{since}; no data yet"
    good = f"last good data {_clock(link.last_good)}"
    if state == "live":
        return f"live: updated {age(link.last_good, now)} ago"
    if state == "reconnecting":
        return f"RECONNECTING{since}; {good}"
    return f"STALE: {good} ({age(link.last_good, now)} ago)" + (
        f"; reconnecting{since}" if since else ""
    )
