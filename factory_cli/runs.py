"""A job's run records (one per attempt) as the terminal shows them: the latest run in one
short, plain-ASCII phrase, e.g. ``shipped $0.42 12k tok +10-2``.

Pure: these read the run dicts of the coordinator's job documents (``runs``, oldest first)
and never fetch. A job document without ``runs`` (an older coordinator, or a list reply that
left them out) has no latest run; every field of a run may be missing or ``null``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

TOKEN_KINDS = ("input", "output", "cacheRead", "cacheWrite")
NO_RUN = "-"


def latest_run(job: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The job's newest run (the last of ``runs``), or None when it has none listed."""
    runs = job.get("runs")
    if not isinstance(runs, list | tuple):
        return None
    for run in reversed(runs):
        if isinstance(run, Mapping):
            return run
    return None


def compact(count: float) -> str:
    """``950``, ``12.3k``, ``12k``, ``4.5M``: three significant figures at most."""
    value = float(count)
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        # 999_999 is "1M", not "1000k": promote what rounds up to the next unit
        if abs(value) >= size * 0.9995:
            scaled = value / size
            text = f"{scaled:.1f}" if abs(scaled) < 100 else f"{scaled:.0f}"
            return text.removesuffix(".0") + unit
    return str(round(value))


def _number(value: Any) -> float | None:
    # bool is an int subclass: a true/false here is a malformed figure, not 1/0
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def total_tokens(run: Mapping[str, Any]) -> int | None:
    """Input + output + cache read + cache write (None when the run reports no tokens): the
    same total the factory sends as ``progress.tokens``."""
    tokens = run.get("tokens")
    if not isinstance(tokens, Mapping):
        return None
    counts = [_number(tokens.get(kind)) for kind in TOKEN_KINDS]
    known = [c for c in counts if c is not None]
    return int(sum(known)) if known else None


def cost_text(cost: Any) -> str:
    """``$0.42``; ``$?`` when unknown (``null``): an unknown cost is never shown as $0."""
    value = _number(cost)
    if value is None:
        return "$?"
    if 0 < value < 0.01:
        return "<$0.01"
    return f"${value:.2f}"


def diff_text(diff: Any) -> str | None:
    """``+10-2`` (insertions, deletions), or None when the run has no diff stat."""
    if not isinstance(diff, Mapping):
        return None
    insertions = _number(diff.get("insertions"))
    deletions = _number(diff.get("deletions"))
    if insertions is None and deletions is None:
        return None
    return f"+{int(insertions or 0)}-{int(deletions or 0)}"


def outcome_text(run: Mapping[str, Any]) -> str:
    """The run's outcome; ``running`` while the attempt is open (outcome null)."""
    outcome = run.get("outcome")
    return str(outcome) if isinstance(outcome, str) and outcome else "running"


def run_summary(run: Mapping[str, Any] | None) -> str:
    """``shipped $0.42 12k tok +10-2`` (tokens and diff only when reported); ``-`` for no run."""
    if run is None:
        return NO_RUN
    parts = [outcome_text(run), cost_text(run.get("costUsd"))]
    tokens = total_tokens(run)
    if tokens is not None:
        parts.append(f"{compact(tokens)} tok")
    diff = diff_text(run.get("diff"))
    if diff is not None:
        parts.append(diff)
    return " ".join(parts)


def latest_summary(job: Mapping[str, Any]) -> str:
    return run_summary(latest_run(job))
