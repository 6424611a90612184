"""The lease holder's writes (renew, report, release), fenced on its epoch, with the
attempt's limits (deadline, cost cap, the product's budget) ending it; and the operator's
moves of a job. Each is one write through ``Writer.update``, whose ``after_write`` wakes
claimers and lets dependents go."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from fleet.coordinator.budgets import BudgetBlocked, Budgets, estimate_of
from fleet.coordinator.review import Reviews
from fleet.coordinator.writer import Writer
from fleet.domain import jobs as J
from fleet.domain import report as D
from fleet.domain import runs as RU
from fleet.domain.models import Job, format_ts, queue_key
from fleet.domain.stages import LEASED, TERMINAL, Action, Stage
from fleet.errors import Fenced, IllegalReprioritize


class Leases:
    def __init__(self, writer: Writer, budgets: Budgets, reviews: Reviews) -> None:
        self.writer = writer
        self.budgets = budgets
        self.reviews = reviews

    # --- the lease holder's writes (fenced) --------------------------------------------

    def renew(self, product: str, job_id: str, factory_id: str, epoch: int) -> Job:
        """Extend the lease. Fenced: only the holder at this epoch, in a leased stage.

        Past the attempt's deadline the lease is not extended: the attempt is ended
        (``timeout``, retried following maxAttempts) and, once that write has landed, the
        holder is answered ``TimedOut`` (409 ``timeout``). A lease already past its
        ``expiresAt`` is not extended either, even before the reaper has run: 409
        ``fenced``, nothing changed (a fenced write never changes the job); the reaper takes
        the job back on its next pass."""

        def change(job: Job, now: datetime) -> Job:
            J.check_fence(job, factory_id, epoch)
            assert job.lease is not None
            if job.lease.expiresAt <= now:
                raise Fenced(
                    f"the lease on job {job.id} expired at {format_ts(job.lease.expiresAt)}: "
                    "it is not renewed (the job goes back to the queue)",
                    jobId=job.id,
                    epoch=epoch,
                    currentEpoch=job.epoch,
                    expiresAt=format_ts(job.lease.expiresAt),
                )
            run = RU.run_at(job.runs, epoch)
            if run is not None and run.deadlineAt is not None and RU.deadline_passed(run, now):
                return J.end_at_limit(
                    job,
                    "timeout",
                    now=now,
                    reason=f"attempt {epoch} passed its deadline {format_ts(run.deadlineAt)}",
                )
            return job.evolve(
                lease=job.lease.evolve(expiresAt=now + timedelta(seconds=job.leaseSeconds)),
                updatedAt=now,
            )

        job = self.writer.update(product, job_id, change, spill=False)
        if job.epoch != epoch:  # the lease was current: this call ended the attempt
            _ended_at_limit(job, factory_id, epoch)
        return job

    def report(
        self,
        product: str,
        job_id: str,
        factory_id: str,
        epoch: int,
        *,
        stage: Stage | None = None,
        retryable: bool = False,
        reason: str | None = None,
        checkpoint: Any = None,
        progress: dict[str, Any] | None = None,
        result: dict[str, Any] | None = None,
    ) -> Job:
        """The holder reports a stage and/or checkpoint, progress, result (PATCH /jobs/{id}).
        What it means is decided by ``fleet.domain.report``; here, the reads and the write."""
        said = D.Report(
            factory=factory_id,
            epoch=epoch,
            stage=stage,
            retryable=retryable,
            reason=reason,
            checkpoint=checkpoint,
            progress=progress,
            result=result,
        )

        def change(job: Job, now: datetime) -> Job:
            if D.opens_review(job, said):  # the review round names the author's kind
                kind = self.reviews.factory_kind(product, factory_id)
                return D.decide_report(job, replace(said, author_kind=kind), now)
            return D.decide_report(job, said, now)

        job = self.writer.update(product, job_id, change)
        cost = job.costs.get(str(epoch)) if said.cost is not None else None  # at most the cap
        if job.epoch != epoch:  # over the attempt's cap: this report ended the attempt
            _ended_at_limit(job, factory_id, epoch)
        elif cost is not None and job.reservation and job.stage in LEASED:
            job = self._hold_running_spend(job, factory_id, epoch, cost)
        return job

    def _hold_running_spend(self, job: Job, factory_id: str, epoch: int, cost: float) -> Job:
        """A running attempt's reported spend, past what its claim reserved, is reserved too
        (so the budget sees it while the agent works and other claims cannot take it). When
        the ceiling cannot cover it the attempt is ended ``budget_exceeded``, like an attempt
        over its own cap: the holder is told 409 and stops spending."""
        if job.reservation is None or cost <= estimate_of(job):
            return job
        try:
            self.budgets.grow(job.productId, job.reservation, cost)
        except BudgetBlocked:

            def end(current: Job, now: datetime) -> Job:
                J.check_fence(current, factory_id, epoch)
                return J.end_at_limit(
                    current,
                    "budget_exceeded",
                    now=now,
                    reason=(
                        f"the product's budget cannot cover the ${cost:.4f} attempt {epoch} "
                        "has spent"
                    ),
                )

            ended = self.writer.update(job.productId, job.id, end)
            _ended_at_limit(ended, factory_id, epoch)
            return ended
        return job

    def release(
        self,
        product: str,
        job_id: str,
        factory_id: str,
        epoch: int,
        *,
        checkpoint: Any = None,
        reason: str | None = None,
    ) -> Job:
        """Give the job back (drain, shutdown): queued again, checkpoint kept, no attempt
        counted."""
        changes: dict[str, Any] = {}
        if checkpoint is not None:
            changes["checkpoint"] = checkpoint

        def change(job: Job, now: datetime) -> Job:
            J.check_fence(job, factory_id, epoch)
            released = J.holder_report(
                job, Action.RELEASE, factory_id, now=now, reason=reason or "released", **changes
            )
            return released.evolve(queueKey=queue_key(job.priority, job.createdAt, job.id))

        return self.writer.update(product, job_id, change)

    # --- operator actions --------------------------------------------------------------

    def operator(
        self,
        product: str,
        job_id: str,
        action: Action,
        operator: str,
        reason: str | None = None,
        *,
        checkpoint: dict[str, Any] | None = None,
    ) -> Job:
        """An operator's transition. A requeue may carry a ``checkpoint``: it replaces the
        job's (the next attempt resumes from it) in the same write, and the requeue's event
        says where the operator restarted it from (its branch and commit, else its size and
        digest: not the checkpoint itself, which a job's history would carry once per
        requeue). Refused (400, nothing changed) when the job's checkpoint, progress and
        result would be over a report's bound together."""
        if action not in (Action.CANCEL, Action.REQUEUE, Action.SHIP, Action.REJECT):
            raise ValueError(f"{action} is not an operator action")
        if checkpoint is not None:
            if action is not Action.REQUEUE:
                raise ValueError("only a requeue carries a checkpoint")
            D.check_size(checkpoint=checkpoint)

        def change(job: Job, now: datetime) -> Job:
            moved = J.operator_action(job, action, operator, now=now, reason=reason)
            if checkpoint is None:
                return moved
            D.check_size(checkpoint, job.progress, job.result)
            last = moved.events[-1]
            said = {"checkpoint": checkpoint_brief(checkpoint)}
            event = last.model_copy(update={"data": {**last.data, **said}})
            return moved.model_copy(
                update={"checkpoint": checkpoint, "events": (*moved.events[:-1], event)}
            )

        return self.writer.update(product, job_id, change)

    def reprioritize(self, product: str, job_id: str, priority: int, operator: str) -> Job:
        def change(job: Job, now: datetime) -> Job:
            if job.stage in TERMINAL:
                raise IllegalReprioritize(job.stage)
            return J.reprioritize(job, priority, operator, now=now)

        return self.writer.update(product, job_id, change)


def _ended_at_limit(job: Job, factory_id: str, epoch: int) -> None:
    """After the write that ended the holder's attempt at a limit has landed (and woke
    claimers): tell the holder why it must stop (409 ``timeout`` or ``budget_exceeded``,
    from the closed run). The error comes after the write: the write is the attempt's end,
    and a reply lost now changes nothing."""
    J.check_fence(job, factory_id, epoch)


def checkpoint_brief(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """What an event says of a checkpoint: its branch and commit when it names them, and its
    size and digest (the checkpoint itself is the job's)."""
    text = json.dumps(checkpoint, sort_keys=True, separators=(",", ":"))
    brief: dict[str, Any] = {
        k: checkpoint[k] for k in ("branch", "commit") if isinstance(checkpoint.get(k), str)
    }
    brief["bytes"] = len(text.encode())
    brief["sha256"] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return brief
