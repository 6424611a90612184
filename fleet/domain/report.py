"""What a lease holder's report means for its job: one pure decision.

A report (PATCH /jobs/{id}) says a stage and/or a checkpoint, progress and result. Which
transition it means is decided here, from the job as read and the report alone, in this
order: the fence (only the holder at this epoch), the reportable stages, the attempt's cost
cap (a holder's own report cannot carry an attempt past it, shipped or not), a retryable
failure, and the review a shipped report may have to go through first. The coordinator
reads and writes; it does not decide.

A reported cost is data from a factory, not a fact: one above ``MAX_REPORTED_COST_USD`` is
refused, and one above the attempt's cap (``fleet.domain.runs.cost_cap``) is recorded at the
cap, everywhere it is kept (the job's ``costs``, ``progress``, ``result`` and the run), so
no factory can make a product's spend whatever it likes.

A report's ``checkpoint``, ``progress`` and ``result`` are kept in the job document as they
are: together they are at most ``MAX_REPORT_BYTES`` of JSON (``check_size``), so no report
can grow a job past what every read of it can afford.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fleet.domain import jobs as J
from fleet.domain import review as R
from fleet.domain import runs as RU
from fleet.domain.models import Job, queue_key
from fleet.domain.stages import REPORTABLE, Action, Stage
from fleet.errors import IllegalReport, Problem, ValidationFailed

MAX_REPORT_BYTES = 256 * 1024  # checkpoint + progress + result, as compact JSON


def check_size(checkpoint: Any = None, progress: Any = None, result: Any = None) -> None:
    """``ValidationFailed`` (path: the largest of them, code ``too_large``) when what a
    report keeps in the job (its checkpoint, progress and result) is together over
    ``MAX_REPORT_BYTES`` of JSON."""
    said = {"checkpoint": checkpoint, "progress": progress, "result": result}
    sizes = {k: _json_bytes(v) for k, v in said.items() if v is not None}
    total = sum(sizes.values())
    if total > MAX_REPORT_BYTES:
        largest = max(sizes, key=lambda k: sizes[k])
        raise ValidationFailed(
            [
                Problem(
                    path=largest,
                    code="too_large",
                    message=(
                        f"checkpoint, progress and result are {total} bytes of JSON together "
                        f"({largest}: {sizes[largest]}); at most {MAX_REPORT_BYTES}"
                    ),
                )
            ],
            f"the report is too large: at most {MAX_REPORT_BYTES} bytes of checkpoint, "
            "progress and result together",
        )


def _json_bytes(value: Any) -> int:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
    return len(text.encode("utf-8"))


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

    def __post_init__(self) -> None:
        # Refused before the job is read: a report too large changes nothing.
        check_size(self.checkpoint, self.progress, self.result)

    @property
    def cost(self) -> float | None:
        """The attempt's cumulative cost as the holder reports it (``costUsd`` of the result,
        else of the progress), if it gives a usable one; ``ValidationFailed`` for a figure
        over ``MAX_REPORTED_COST_USD``."""
        found: list[float] = []
        for where, said in (("result", self.result), ("progress", self.progress)):
            value = (said or {}).get("costUsd")
            if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
                if value > RU.MAX_REPORTED_COST_USD:
                    raise ValidationFailed(
                        [
                            Problem(
                                path=f"{where}.costUsd",
                                code="too_large",
                                message=f"at most {RU.MAX_REPORTED_COST_USD:.0f}",
                            )
                        ],
                        "the reported cost is not a cost an attempt can reach",
                    )
                found.append(float(value))
        return found[0] if found else None


def decide_report(job: Job, report: Report, now: datetime) -> Job:
    """The job after ``report``, its event appended (or the error that refuses it:
    ``Fenced`` and its limit subclasses, ``IllegalReport``)."""
    action, cap = _read(job, report)
    reported = report.cost
    over = RU.over_cap(cap, reported)
    progress, result = report.progress, report.result
    cost = reported
    if over:
        assert cap is not None
        progress, result, cost = _at_cap(progress, cap), _at_cap(result, cap), cap
    changes: dict[str, Any] = {}
    if report.checkpoint is not None:
        changes["checkpoint"] = report.checkpoint
    if progress is not None:
        changes["progress"] = progress
    if result is not None:
        changes["result"] = result
    if cost is not None:
        # The attempt's cumulative cost, as the holder reports it (at most its cap):
        # settled against the budget when the lease ends.
        changes["costs"] = {**job.costs, str(report.epoch): cost}
    said = RU.HolderReport(progress=progress, result=result)
    if over and action is not Action.FAIL:
        assert cap is not None and reported is not None
        # Recorded at the cap (the budget settles with it), then ended: the holder's own
        # report cannot carry an attempt past its cap, shipped or not.
        return J.end_at_limit(
            job,
            "budget_exceeded",
            now=now,
            reason=f"attempt {report.epoch} reported ${reported:.4f}, over its cap ${cap:.4f}",
            report=said,
            **changes,
        )
    if action is None:
        return J.merge_report(job.evolve(**changes, updatedAt=now), said)
    if action is Action.FAIL and report.retryable:
        action = Action.RETRY
    if over and RU.limit_outcome(result) is None:
        # The holder failed the attempt itself; its cost says why.
        said = RU.HolderReport(progress, {**(result or {}), "outcome": "budget_exceeded"})
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
    action, cap = _read(job, report)
    over = RU.over_cap(cap, report.cost)
    return not over and action is not None and R.goes_to_review(job, action)


def _read(job: Job, report: Report) -> tuple[Action | None, float | None]:
    """The action the reported stage means (None: a report that moves nothing) and the
    attempt's cost cap; refused when the reporter is not the holder at this epoch, names a
    stage a holder cannot report, or a cost no attempt can reach."""
    J.check_fence(job, report.factory, report.epoch)
    action = REPORTABLE.get(report.stage) if report.stage is not None else None
    if report.stage is not None and action is None:
        raise IllegalReport(report.stage)
    report.cost  # noqa: B018 - refuses an impossible figure before anything is decided
    return action, RU.cost_cap(RU.run_at(job.runs, report.epoch), job.budgetUsd)


def _at_cap(said: dict[str, Any] | None, cap: float) -> dict[str, Any] | None:
    """``said`` with a ``costUsd`` over the cap recorded at the cap."""
    value = (said or {}).get("costUsd")
    if said is None or not isinstance(value, int | float) or isinstance(value, bool):
        return said
    return {**said, "costUsd": min(float(value), cap)}
