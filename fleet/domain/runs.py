"""Run records, pure: one per attempt (epoch), opened by the claim, closed by whatever ends it.

A job carries its newest runs, oldest first; the coordinator spills older ones to run
documents. A run is opened by ``fleet.domain.jobs.assign`` and closed by
``fleet.domain.jobs.transition`` in the same new document as the move that ends the attempt,
so the run can never disagree with the job's history. The holder's reports merge what it
knows (tokens, cost, diff, branch, ...) into the run of its epoch, bounded in size: a
factory's report is data, not something that may grow a job document without limit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, get_args

from fleet.domain.models import DiffStat, Run, RunOutcome, ShadowChoice, Tokens, format_ts
from fleet.domain.stages import Action

EMBEDDED_RUNS = 20  # the newest runs kept in the job document; older ones are spilled

MAX_NAME_CHARS = 200  # engine, version, branch, commit
MAX_URL_CHARS = 2048
MAX_NOTE_CHARS = 2000  # prNote, reason
MAX_LIST_ITEMS = 50  # artifacts, artifactErrors
MAX_ITEM_CHARS = 300

# The largest cost a report may carry, a figure no attempt reaches: a report above it is
# refused (400) and changes nothing, so a forged 1e300 never reaches a run, a job or a budget.
MAX_REPORTED_COST_USD = 1_000_000.0
# An attempt without its own ``maxCostUsd`` may spend this many times its job's budget
# estimate (``budgetUsd``): beyond that its cost is recorded at the cap and it is ended.
ESTIMATE_CAP_FACTOR = 5.0

OUTCOMES: frozenset[str] = frozenset(get_args(RunOutcome))
# Outcomes of an attempt ended by one of its limits (the factory's report or the coordinator).
LIMIT_OUTCOMES: frozenset[str] = frozenset({"timeout", "budget_exceeded"})

# How each move that ends a leased attempt closes its run. A limit overrides the move's own
# outcome (``transition(..., outcome=...)``).
OUTCOME_OF: dict[Action, RunOutcome] = {
    Action.COMPLETE: "shipped",
    Action.SUBMIT_REVIEW: "shipped",  # the attempt's work is done; the review decides the job
    Action.FAIL: "failed",
    Action.RETRY: "retry",
    Action.RETRY_FINAL: "failed",
    Action.RELEASE: "released",
    Action.EXPIRE: "taken_back",
    Action.EXPIRE_FINAL: "taken_back",
    Action.TAKE_BACK: "taken_back",
    Action.TAKE_BACK_FINAL: "taken_back",
    Action.PREEMPT: "taken_back",
    Action.CANCEL: "fenced",
    Action.REQUEUE: "fenced",
    Action.SHIP: "fenced",
    Action.REJECT: "fenced",
}


def effective_timeout(job_timeout: int | None, product_default: int | None) -> int | None:
    """The attempt's timeout: the manifest's, else the product's default, else none."""
    return job_timeout if job_timeout is not None else product_default


def open_run(
    factory: str,
    epoch: int,
    *,
    now: datetime,
    timeout_seconds: int | None = None,
    max_cost_usd: float | None = None,
    learned: ShadowChoice | None = None,
) -> Run:
    deadline = now + timedelta(seconds=timeout_seconds) if timeout_seconds is not None else None
    return Run(
        epoch=epoch,
        factory=factory,
        startedAt=now,
        deadlineAt=deadline,
        maxCostUsd=max_cost_usd,
        learned=learned,
    )


def run_at(runs: tuple[Run, ...], epoch: int) -> Run | None:
    """The run of ``epoch`` among those embedded (the newest are last)."""
    return next((r for r in reversed(runs) if r.epoch == epoch), None)


def replaced(runs: tuple[Run, ...], run: Run) -> tuple[Run, ...]:
    return tuple(run if r.epoch == run.epoch else r for r in runs)


def closed(run: Run, outcome: RunOutcome, *, now: datetime, reason: str | None = None) -> Run:
    """The run ended with ``outcome``. A run closes once: a closed run is returned as is."""
    if run.outcome is not None:
        return run
    why = _text(reason, MAX_NOTE_CHARS) if reason is not None else run.reason
    return run.evolve(outcome=outcome, endedAt=now, reason=why)


def deadline_passed(run: Run | None, now: datetime) -> bool:
    return run is not None and run.deadlineAt is not None and now >= run.deadlineAt


def cost_cap(run: Run | None, budget_usd: float | None) -> float | None:
    """The most an attempt's reported cost is believed: its ``maxCostUsd``, else its job's
    budget estimate times ``ESTIMATE_CAP_FACTOR``, else none (only the product's ceiling)."""
    if run is None:
        return None
    if run.maxCostUsd is not None:
        return run.maxCostUsd
    if budget_usd:
        return budget_usd * ESTIMATE_CAP_FACTOR
    return None


def over_cap(cap: float | None, cost: float | None) -> bool:
    """Whether a reported cost passes the attempt's cap (a cost equal to the cap is allowed)."""
    return cap is not None and cost is not None and cost > cap


def limit_outcome(result: Mapping[str, Any] | None) -> RunOutcome | None:
    """The limit a factory names in a failed report's ``result.outcome``, if any."""
    value = (result or {}).get("outcome")
    if value == "timeout":
        return "timeout"
    if value == "budget_exceeded":
        return "budget_exceeded"
    return None


def limits(run: Run | None) -> dict[str, Any]:
    """The claim reply's ``limits``: the effective values of this attempt."""
    if run is None:
        return {"timeoutSeconds": None, "deadlineAt": None, "maxCostUsd": None}
    timeout = round((run.deadlineAt - run.startedAt).total_seconds()) if run.deadlineAt else None
    return {
        "timeoutSeconds": timeout,
        "deadlineAt": format_ts(run.deadlineAt) if run.deadlineAt else None,
        "maxCostUsd": run.maxCostUsd,
    }


# --- what the holder reports ------------------------------------------------------------


@dataclass(frozen=True)
class HolderReport:
    """What a holder's report says about its attempt (PATCH /jobs/{id}): merged into the
    run of its epoch."""

    progress: Mapping[str, Any] | None = None
    result: Mapping[str, Any] | None = None


def merged(
    run: Run,
    *,
    progress: Mapping[str, Any] | None = None,
    result: Mapping[str, Any] | None = None,
) -> Run:
    """``run`` with what a report says about the attempt: ``progress`` (running usage and
    cost) first, then ``result`` (the final figures). What a report leaves out, or gives in
    a shape that is not the contract's, keeps its earlier value; an unknown cost stays
    unknown (null), never 0."""
    changes: dict[str, Any] = {}
    for report in (progress or {}, result or {}):
        tokens = _tokens(report.get("usage"), changes.get("tokens", run.tokens))
        if tokens is not None:
            changes["tokens"] = tokens
        for name, value in _fields(report).items():
            changes[name] = value
    return run.evolve(**changes) if changes else run


def _fields(report: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    cost = _number(report.get("costUsd"))
    if cost is not None:
        out["costUsd"] = cost
    duration = _number(report.get("durationSeconds"))
    if duration is not None:
        out["durationSeconds"] = duration
    exit_code = report.get("exitCode")
    if isinstance(exit_code, int) and not isinstance(exit_code, bool):
        out["exitCode"] = exit_code
    for name, limit in (
        ("engine", MAX_NAME_CHARS),
        ("engineVersion", MAX_NAME_CHARS),
        ("branch", MAX_NAME_CHARS),
        ("commit", MAX_NAME_CHARS),
        ("prUrl", MAX_URL_CHARS),
        ("prNote", MAX_NOTE_CHARS),
        ("reason", MAX_NOTE_CHARS),
    ):
        value = report.get(name)
        if isinstance(value, str):
            out[name] = _text(value, limit)
    diff = _diff(report.get("diff"))
    if diff is not None:
        out["diff"] = diff
    for name in ("artifacts", "artifactErrors"):
        items = report.get(name)
        if isinstance(items, list | tuple):
            out[name] = tuple(
                _text(i, MAX_ITEM_CHARS) for i in items[:MAX_LIST_ITEMS] if isinstance(i, str)
            )
    return out


def _text(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 3] + "..."


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an integer too large for a float
            return None
        if math.isfinite(number) and number >= 0:
            return number
    return None


def _count(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _tokens(usage: Any, current: Tokens) -> Tokens | None:
    if not isinstance(usage, Mapping):
        return None
    counts = {k: _count(usage.get(k)) for k in ("input", "output", "cacheRead", "cacheWrite")}
    given = {k: v for k, v in counts.items() if v is not None}
    return current.evolve(**given) if given else None


def _diff(value: Any) -> DiffStat | None:
    if not isinstance(value, Mapping):
        return None
    counts = {k: _count(value.get(k)) for k in ("files", "insertions", "deletions")}
    if any(v is None for v in counts.values()):
        return None
    return DiffStat(**{k: v for k, v in counts.items() if v is not None})
