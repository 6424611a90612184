"""Pure job transitions: each returns the next job document with its event appended.

This is the only code that changes a job's stage, lease or epoch, and it always appends the
event in the same new document, so one conditional write stores both (the audit trail can
never disagree with the state). ``replay`` folds events back into state to prove it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fleet.domain import runs as R
from fleet.domain.models import (
    Avoid,
    Event,
    Job,
    Lease,
    Run,
    RunOutcome,
    ShadowChoice,
    format_ts,
    queue_key,
)
from fleet.domain.stages import LEASED, Action, Stage, next_stage
from fleet.errors import Fenced, FleetError

# How many recent events a job document carries; older ones are spilled to event documents.
EMBEDDED_EVENTS = 32


class LimitReached(Fenced):
    """The attempt was ended at one of its limits: stop working on it. Nothing was changed
    by this call (the attempt's end was written before, or by the write this call caused)."""

    def __init__(self, job: Job, run: Run) -> None:
        limit = {"timeout": "its deadline passed", "budget_exceeded": "its cost passed its cap"}
        super().__init__(
            f"attempt {run.epoch} on job {job.id} was ended: {limit.get(str(run.outcome), '')}",
            jobId=job.id,
            epoch=run.epoch,
            currentEpoch=job.epoch,
            deadlineAt=format_ts(run.deadlineAt) if run.deadlineAt else None,
            maxCostUsd=run.maxCostUsd,
            costUsd=run.costUsd,
        )


class TimedOut(LimitReached):
    """The attempt's deadline passed: it was ended."""

    code = "timeout"


class BudgetExceeded(LimitReached):
    """The attempt's reported cost passed its cap: it was ended."""

    code = "budget_exceeded"


def _event(
    job: Job,
    *,
    type: str,
    to: Stage,
    actor: str,
    now: datetime,
    epoch: int,
    holder: str | None,
    reason: str | None,
    data: dict[str, Any] | None,
) -> Event:
    return Event(
        seq=job.seq + 1,
        type=type,
        at=now,
        actor=actor,
        epoch=epoch,
        fromStage=job.stage,
        toStage=to,
        holder=holder,
        reason=reason,
        data=data or {},
    )


def record(
    job: Job,
    *,
    type: str,
    actor: str,
    now: datetime,
    reason: str | None = None,
    data: dict[str, Any] | None = None,
    **changes: Any,
) -> Job:
    """Apply ``changes`` and append an event describing the result (stage may be unchanged)."""
    stage: Stage = changes.get("stage", job.stage)
    epoch: int = changes.get("epoch", job.epoch)
    lease: Lease | None = changes.get("lease", job.lease)
    event = _event(
        job,
        type=type,
        to=stage,
        actor=actor,
        now=now,
        epoch=epoch,
        holder=lease.holder if lease else None,
        reason=reason,
        data=data,
    )
    return job.evolve(
        **changes,
        seq=event.seq,
        events=(*job.events, event),
        updatedAt=now,
        lastEventAt=now,
    )


def transition(
    job: Job,
    action: Action,
    *,
    actor: str,
    now: datetime,
    reason: str | None = None,
    data: dict[str, Any] | None = None,
    outcome: RunOutcome | None = None,
    report: R.HolderReport | None = None,
    **changes: Any,
) -> Job:
    """Move the job by ``action`` (checked against the table). Leaving the leased stages
    ends the lease; the caller sets a new one only on assignment.

    Every leased attempt ends here (leaving the leased stages, or an epoch bump), so its
    run is closed here, in the same document: with ``outcome`` if the caller names one (a
    limit), else the action's (``fleet.domain.runs.OUTCOME_OF``). ``report`` is what the
    holder said about the attempt in this same call, merged into its run first."""
    stage = next_stage(job.stage, action)
    if stage not in LEASED and "lease" not in changes:
        changes["lease"] = None
        changes.setdefault("reservation", None)  # settled by the coordinator as it leaves
        changes.setdefault("stalled", False)  # a stall belongs to the attempt, not the job
    run = R.run_at(job.runs, job.epoch) if job.stage in LEASED else None
    if run is not None:
        if report is not None:
            run = R.merged(run, progress=report.progress, result=report.result)
        if stage not in LEASED or changes.get("epoch", job.epoch) != job.epoch:
            ended = outcome or R.OUTCOME_OF.get(action, "fenced")
            run = R.closed(run, ended, now=now, reason=reason)
        changes["runs"] = R.replaced(job.runs, run)
    return record(
        job,
        type=action.value,
        actor=actor,
        now=now,
        reason=reason,
        data=data,
        stage=stage,
        **changes,
    )


def merge_report(job: Job, report: R.HolderReport) -> Job:
    """What the holder says about its attempt, merged into the run of the current epoch (a
    report that moves nothing: ``transition`` merges it for the ones that do)."""
    run = R.run_at(job.runs, job.epoch)
    if run is None or run.outcome is not None:
        return job
    return job.evolve(
        runs=R.replaced(job.runs, R.merged(run, progress=report.progress, result=report.result))
    )


def check_fence(job: Job, factory_id: str, epoch: int) -> None:
    """A factory may mutate a job only while it holds the lease at exactly this epoch. An
    attempt ended at one of its limits says so (``timeout``, ``budget_exceeded``) rather
    than a plain ``fenced``: the holder learns why it must stop."""
    lease = job.lease
    if lease is None or lease.holder != factory_id or lease.epoch != epoch or job.epoch != epoch:
        run = R.run_at(job.runs, epoch)
        if run is not None and run.factory == factory_id:
            if run.outcome == "timeout":
                raise TimedOut(job, run)
            if run.outcome == "budget_exceeded":
                raise BudgetExceeded(job, run)
        raise Fenced(
            f"lease epoch {epoch} on job {job.id} is not current",
            jobId=job.id,
            epoch=epoch,
            currentEpoch=job.epoch,
        )


def assign(
    job: Job,
    factory_id: str,
    *,
    now: datetime,
    breakdown: dict[str, Any] | None = None,
    request_id: str | None = None,
    timeout_seconds: int | None = None,
    learned: ShadowChoice | None = None,
) -> Job:
    """The claim's move: a new lease at the next epoch, and that attempt's run opened with
    its limits (``timeout_seconds``: the effective one, the manifest's or the product's) and
    shadow mode's note (``learned``)."""
    epoch = job.epoch + 1
    lease = Lease(
        holder=factory_id,
        epoch=epoch,
        expiresAt=now + timedelta(seconds=job.leaseSeconds),
        requestId=request_id,
    )
    run = R.open_run(
        factory_id,
        epoch,
        now=now,
        timeout_seconds=timeout_seconds,
        max_cost_usd=job.maxCostUsd,
        learned=learned,
    )
    return transition(
        job,
        Action.ASSIGN,
        actor=f"factory:{factory_id}",
        now=now,
        data={"score": breakdown} if breakdown else None,
        epoch=epoch,
        lease=lease,
        attempts=job.attempts + 1,
        runs=(*job.runs, run),
    )


def expire(
    job: Job,
    *,
    now: datetime,
    reason: str | None = None,
    actor: str = "reaper",
    avoid: Avoid | None = None,
    taken: bool = False,
) -> Job:
    """The reaper's move: requeue (or dead-letter) a job whose lease expired — or whose
    holder is gone, down, stalled or revoked — fencing the old holder by bumping the epoch.
    The checkpoint is kept for the next attempt; the attempt stays counted; its run is closed
    ``taken_back``; the holder is remembered as having failed it. With ``avoid`` (a job that
    stalled there) the scheduler also keeps the job away from that factory (``Job.avoid``),
    recorded in the same document and in the event's data. ``taken``: taken back before
    its lease ran out (``take_back``), not expired (``expire``)."""
    holder = job.lease.holder if job.lease else None
    exhausted = job.attempts >= job.maxAttempts
    why = reason or f"lease held by {holder} expired"
    changes: dict[str, Any] = {}
    data: dict[str, Any] | None = None
    if avoid is not None:
        changes["avoid"] = with_avoid(job.avoid, avoid)
        data = {"avoid": avoid.model_dump(mode="json")}
    return transition(
        job,
        (Action.TAKE_BACK_FINAL if exhausted else Action.TAKE_BACK)
        if taken
        else (Action.EXPIRE_FINAL if exhausted else Action.EXPIRE),
        actor=actor,
        now=now,
        reason=why + (", attempts exhausted" if exhausted else ""),
        data=data,
        epoch=job.epoch + 1,
        failedBy=_with(job.failedBy, holder),
        queueKey=queue_key(job.priority, job.createdAt, job.id),
        **changes,
    )


# A job avoids few factories; bounded all the same (one entry per factory, the newest kept).
MAX_AVOIDS_KEPT = 20


def with_avoid(avoids: tuple[Avoid, ...], entry: Avoid) -> tuple[Avoid, ...]:
    """``avoids`` with ``entry`` as the newest, replacing an older one for its factory."""
    kept = tuple(a for a in avoids if a.factory != entry.factory)
    return (*kept, entry)[-MAX_AVOIDS_KEPT:]


def preempt(job: Job, *, now: datetime, for_job: str) -> Job:
    """Evict a running job for a critical one: queued again with its checkpoint, its
    holder fenced by the bumped epoch (its next renew is refused, so it stops the engine).
    Not the holder's failure: no attempt is counted and the holder is not penalised."""
    holder = job.lease.holder if job.lease else None
    return transition(
        job,
        Action.PREEMPT,
        actor="preemptor",
        now=now,
        reason=f"preempted for critical job {for_job} (held by {holder})",
        data={"for": for_job},
        epoch=job.epoch + 1,
        attempts=max(0, job.attempts - 1),
        queueKey=queue_key(job.priority, job.createdAt, job.id),
    )


def holder_report(
    job: Job,
    action: Action,
    factory_id: str,
    *,
    now: datetime,
    reason: str | None = None,
    report: R.HolderReport | None = None,
    **changes: Any,
) -> Job:
    """A move reported by the lease holder (start, test, review, complete, fail, retry,
    release). A retryable failure on the last attempt dead-letters. A failure the holder
    says was one of the attempt's limits (``result.outcome``) closes the run with that
    outcome and is retried following maxAttempts, as when the coordinator ends it."""
    outcome = None
    if action in (Action.FAIL, Action.RETRY) and report is not None:
        outcome = R.limit_outcome(report.result)
        if outcome is not None:
            action = Action.RETRY
    if action is Action.RETRY and job.attempts >= job.maxAttempts:
        action = Action.RETRY_FINAL
    if action in (Action.RETRY, Action.RETRY_FINAL, Action.FAIL):
        changes.setdefault("failedBy", _with(job.failedBy, factory_id))
    if action is Action.RELEASE:
        # Given back cleanly (drain, shutdown): not a failed attempt.
        changes.setdefault("attempts", max(0, job.attempts - 1))
    return transition(
        job,
        action,
        actor=f"factory:{factory_id}",
        now=now,
        reason=reason,
        outcome=outcome,
        report=report,
        **changes,
    )


def end_at_limit(
    job: Job,
    outcome: RunOutcome,
    *,
    now: datetime,
    reason: str,
    report: R.HolderReport | None = None,
    **changes: Any,
) -> Job:
    """The coordinator ends a leased attempt at one of its limits (deadline passed, cost
    over its cap): requeued, or dead-lettered when attempts are exhausted, as a retryable
    failure of its holder; the epoch is bumped so the holder is fenced (and told why)."""
    holder = job.lease.holder if job.lease else None
    exhausted = job.attempts >= job.maxAttempts
    return transition(
        job,
        Action.RETRY_FINAL if exhausted else Action.RETRY,
        actor="coordinator",
        now=now,
        reason=reason + (", attempts exhausted" if exhausted else ""),
        data={"limit": outcome},
        outcome=outcome,
        report=report,
        epoch=job.epoch + 1,
        failedBy=_with(job.failedBy, holder),
        queueKey=queue_key(job.priority, job.createdAt, job.id),
        **changes,
    )


def operator_action(
    job: Job,
    action: Action,
    operator: str,
    *,
    now: datetime,
    reason: str | None = None,
    **changes: Any,
) -> Job:
    """Cancel, requeue, ship, reject. Taking a leased job away fences its holder."""
    if job.stage in LEASED:
        changes.setdefault("epoch", job.epoch + 1)
    if action is Action.REQUEUE:
        changes.setdefault("attempts", 0)
        changes.setdefault("queueKey", queue_key(job.priority, job.createdAt, job.id))
    return transition(job, action, actor=f"operator:{operator}", now=now, reason=reason, **changes)


def reprioritize(job: Job, priority: int, operator: str, *, now: datetime) -> Job:
    return record(
        job,
        type="reprioritize",
        actor=f"operator:{operator}",
        now=now,
        data={"from": job.priority, "to": priority},
        priority=priority,
        queueKey=queue_key(priority, job.createdAt, job.id),
    )


# failedBy keeps one entry per failure (the scheduler counts them to penalise, then
# exclude, a factory), bounded so a job that fails forever stays a small document.
MAX_FAILURES_KEPT = 50


def _with(items: tuple[str, ...], item: str | None) -> tuple[str, ...]:
    if item is None:
        return items
    return (*items, item)[-MAX_FAILURES_KEPT:]


# --- replay ------------------------------------------------------------------------


@dataclass(frozen=True)
class Replayed:
    stage: Stage | None
    epoch: int
    holder: str | None
    seq: int


class BrokenHistory(FleetError):
    """A job's event history is not a contiguous chain of transitions."""

    code = "broken_history"


def replay(events: list[Event]) -> Replayed:
    """Fold a job's events (spilled + embedded, any order) into its stage, epoch and holder.

    The chain is checked: sequence numbers are 1..n with no gap or repeat, and every event
    starts from the stage the previous one ended in."""
    state = Replayed(stage=None, epoch=0, holder=None, seq=0)
    for event in sorted(events, key=lambda e: e.seq):
        if event.seq != state.seq + 1:
            raise BrokenHistory(f"event seq {event.seq} follows {state.seq}")
        if event.fromStage != state.stage:
            raise BrokenHistory(
                f"event {event.seq} starts from {event.fromStage}, state was {state.stage}"
            )
        state = Replayed(stage=event.toStage, epoch=event.epoch, holder=event.holder, seq=event.seq)
    return state


def agrees(job: Job, events: list[Event]) -> bool:
    state = replay(events)
    holder = job.lease.holder if job.lease else None
    return (state.stage, state.epoch, state.holder, state.seq) == (
        job.stage,
        job.epoch,
        holder,
        job.seq,
    )
