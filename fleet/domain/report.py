"""What a lease holder's report means for its job: one pure decision.

A report (PATCH /jobs/{id}) says a stage and/or a checkpoint, progress and result. Which
transition it means is decided here, from the job as read and the report alone, in this
order: the fence (only the holder at this epoch), the reportable stages, the attempt's cost
cap (a holder's own report cannot carry an attempt past it, shipped or not), a retryable
failure, and the review a shipped report may have to go through first. The coordinator
reads and writes; it does not decide.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fleet.domain import jobs as J
from fleet.domain import review as R
from fleet.domain import runs as RU
from fleet.domain.models import Job, queue_key
from fleet.domain.stages import REPORTABLE, Action, Stage
from fleet.errors import IllegalReport


@dataclass(frozen=True)
class Report:
    """One report of the lease holder ``factory`` on its attempt ``epoch``."""

    factory: str
    epoch: int
    stage: Stage | None = None
    retryable: bool = False
    reason: str | None = None
    checkpoint: Any = None
    progress: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    # The holder's kind (``fleet.domain.review.factory_kind``): needed only when the report
    # takes the job into review (``opens_review``), where it names the author's kind.
    author_kind: str = R.UNKNOWN

    @property
    def cost(self) -> float | None:
        """The attempt's cumulative cost as the holder reports it (``costUsd`` of the result,
        else of the progress), if it gives a usable one."""
        for said in (self.result, self.progress):
            value = (said or {}).get("costUsd")
            if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
                return float(value)
        return None


def decide_report(job: Job, report: Report, now: datetime) -> Job:
    """The job after ``report``, its event appended (or the error that refuses it:
    ``Fenced`` and its limit subclasses, ``IllegalReport``)."""
    action, over = _read(job, report)
    cost = report.cost
    changes: dict[str, Any] = {}
    if report.checkpoint is not None:
        changes["checkpoint"] = report.checkpoint
    if report.progress is not None:
        changes["progress"] = report.progress
    if report.result is not None:
        changes["result"] = report.result
    if cost is not None:
        # The attempt's cumulative cost, as the holder reports it: settled against the
        # budget when the lease ends.
        changes["costs"] = {**job.costs, str(report.epoch): cost}
    said = RU.HolderReport(progress=report.progress, result=report.result)
    if over and action is not Action.FAIL:
        run = RU.run_at(job.runs, report.epoch)
        assert run is not None and run.maxCostUsd is not None and cost is not None
        # Recorded (the budget settles with it), then ended: the holder's own report
        # cannot carry an attempt past its cap, shipped or not.
        return J.end_at_limit(
            job,
            "budget_exceeded",
            now=now,
            reason=(
                f"attempt {report.epoch} reported ${cost:.4f}, over its cap ${run.maxCostUsd:.4f}"
            ),
            report=said,
            **changes,
        )
    if action is None:
        return J.merge_report(job.evolve(**changes, updatedAt=now), said)
    if action is Action.FAIL and report.retryable:
        action = Action.RETRY
    if over and RU.limit_outcome(report.result) is None:
        # The holder failed the attempt itself; its cost says why.
        said = RU.HolderReport(
            report.progress, {**(report.result or {}), "outcome": "budget_exceeded"}
        )
    if R.goes_to_review(job, action):
        # The manifest wants a review quorum: not shipped yet (fleet.domain.review).
        return R.submit(
            job,
            report.factory,
            report.author_kind,
            now=now,
            reason=report.reason,
            report=said,
            **changes,
        )
    moved = J.holder_report(
        job, action, report.factory, now=now, reason=report.reason, report=said, **changes
    )
    if moved.stage is Stage.QUEUED:
        moved = moved.evolve(queueKey=queue_key(job.priority, job.createdAt, job.id))
    return moved


def opens_review(job: Job, report: Report) -> bool:
    """Whether ``decide_report`` takes the job into review (so the author's kind is needed),
    or refuses the report with the same error it would."""
    action, over = _read(job, report)
    return not over and action is not None and R.goes_to_review(job, action)


def _read(job: Job, report: Report) -> tuple[Action | None, bool]:
    """The action the reported stage means (None: a report that moves nothing) and whether
    its cost passes the attempt's cap; refused when the reporter is not the holder at this
    epoch, or names a stage a holder cannot report."""
    J.check_fence(job, report.factory, report.epoch)
    action = REPORTABLE.get(report.stage) if report.stage is not None else None
    if report.stage is not None and action is None:
        raise IllegalReport(report.stage)
    return action, RU.over_cap(RU.run_at(job.runs, report.epoch), report.cost)
