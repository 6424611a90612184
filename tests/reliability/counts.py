"""What the reliability suite did, counted as it runs and printed at the end of the session
(``conftest.pytest_terminal_summary``): the evidence that its tests exercised the dangerous
paths, not just that they passed."""

from __future__ import annotations

from collections import Counter

# jobs, kills, host restarts, zombie writes fenced, faults injected, fuzz cases, ...
COUNTS: Counter[str] = Counter()

ORDER = (
    "jobs",
    "kills",
    "host restarts",
    "pauses",
    "zombie writes fenced",
    "leases taken back",
    "faults injected",
    "lost responses",
    "fuzz cases",
)


def count(what: str, n: int = 1) -> None:
    COUNTS[what] += n
