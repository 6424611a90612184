"""The reaper's pass over one product: take back expired leases (requeued, or
dead-lettered when attempts are exhausted) and the jobs of revoked or departed holders,
undo what a crash between two writes left in the quotas, preempt for critical jobs, and let
blocked jobs whose dependencies are done go. Safe to run concurrently and repeatedly: every
move is a conditional write that a concurrent one makes lose."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from fleet.coordinator.budgets import Budgets, parse_reservation_key
from fleet.coordinator.channels import ChannelLimits
from fleet.coordinator.config import Part
from fleet.coordinator.product import Gate, Products
from fleet.coordinator.writer import JobNotFound, Writer
from fleet.domain import jobs as J
from fleet.domain.models import Avoid, Job, format_ts
from fleet.domain.scheduler import avoided
from fleet.domain.stages import LEASED, Stage
from fleet.errors import ConcurrencyConflict, FleetError, NotFound, StoreUnavailable
from fleet.store.queries import EXPIRED_LEASES, JOBS_IN_STAGE, LEASED_JOBS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReapReport:
    requeued: list[str] = field(default_factory=list)
    dead_lettered: list[str] = field(default_factory=list)
    unblocked: list[str] = field(default_factory=list)
    deps_failed: list[str] = field(default_factory=list)
    preempted: list[str] = field(default_factory=list)
    deferred: list[str] = field(default_factory=list)  # the store failed: the next pass


@dataclass(frozen=True, eq=False)
class Reaper(Part):
    writer: Writer
    products: Products
    budgets: Budgets
    channels: ChannelLimits
    gate: Gate

    def reap(self, product: str) -> ReapReport:
        """Requeue (or dead-letter) jobs whose lease expired, unblock jobs whose deps are
        done, and spill long histories. Safe to run concurrently and repeatedly."""
        now = self.clock.now()
        report = ReapReport()
        rows = self.docs.query(
            EXPIRED_LEASES, product, {"now": format_ts(now), "top": self.config.reap_batch}
        )
        for row in rows:
            job = Job.from_doc(row)
            expired = J.expire(job, now=now)
            try:
                stored = self.writer.write(expired, job.etag, spill=True)
            except (ConcurrencyConflict, NotFound):
                continue  # it moved (renewed, reported): not ours to touch any more
            except StoreUnavailable as exc:
                try:  # only the answer may have been lost: then it is done, settle it
                    stored = self.writer.landed(expired, exc)
                except StoreUnavailable:
                    # Not done (or cannot tell yet): the next pass finds it still expired.
                    # The other expired jobs are not held up by this one.
                    log.warning("reaper %s: job %s deferred: %s", product, job.id, exc.message)
                    report.deferred.append(job.id)
                    continue
            self.writer.settle(job, stored)
            target = report.requeued if stored.stage is Stage.QUEUED else report.dead_lettered
            target.append(stored.id)
        gone = {
            f.id.removeprefix("factory-")
            for f in self.products.factories(product)
            if f.revoked or f.deregistered
        }
        if gone:
            for row in self.docs.query(LEASED_JOBS, product, {"top": self.config.reap_batch}):
                job = Job.from_doc(row)
                if job.lease is None or job.lease.holder not in gone:
                    continue
                taken = self._take_back_once(
                    job, now, f"holder {job.lease.holder} was revoked or left the fleet"
                )
                if taken is not None:
                    target = (
                        report.requeued if taken.stage is Stage.QUEUED else report.dead_lettered
                    )
                    target.append(taken.id)
        self._reconcile_quotas(product, now)
        report.preempted.extend(self.preempt(product))
        unblocked, failed = self.writer.unblock_dependents(product, bump=False)
        report.unblocked.extend(unblocked)
        report.deps_failed.extend(failed)
        if report.requeued or report.unblocked or report.preempted:
            self.gate.bump(product)
        return report

    def take_back_from(self, product: str, factory_id: str, reason: str, actor: str) -> list[str]:
        """Take back every job ``factory_id`` holds, now (a revocation, a departure): its
        writes are fenced from this moment, whatever its token may still be trusted for on
        another instance. One bounded query (``reap_batch`` leased jobs; what it leaves, the
        reaper's next pass takes) and one write per job. Returns the jobs taken back."""
        now = self.clock.now()
        taken_ids: list[str] = []
        for row in self.docs.query(LEASED_JOBS, product, {"top": self.config.reap_batch}):
            job = Job.from_doc(row)
            if job.lease is None or job.lease.holder != factory_id:
                continue
            taken = self._take_back_once(job, now, reason, actor)
            if taken is not None:
                taken_ids.append(taken.id)
        if taken_ids:
            self.gate.bump(product)
        return taken_ids

    def preempt(self, product: str) -> list[str]:
        """When the product allows it: for each critical job (priority >= minPriority,
        waiting >= afterSeconds) that some live factory could run but none has a free seat
        for, evict the lowest-priority running job it outranks on such a factory — at most
        one per critical job per pass. Returns the evicted job ids."""
        rule = self.products.settings(product).preemption
        if not rule.enabled:
            return []
        now = self.clock.now()
        queued = [
            Job.from_doc(r)
            for r in self.docs.query(
                JOBS_IN_STAGE, product, {"stage": "queued", "top": self.config.claim_candidates}
            )
        ]
        critical = [
            j
            for j in queued
            if j.priority >= rule.min_priority
            and (now - j.createdAt).total_seconds() >= rule.after_seconds
            and not _recently_preempted_for(j, now, rule.after_seconds)
        ]
        if not critical:
            return []
        views = {v.id: v for v in self.products.factory_views(product) if v.live}
        rows = self.docs.query(LEASED_JOBS, product, {"top": 10 * self.config.reap_batch})
        running = [Job.from_doc(r) for r in rows]
        # Seats in use, counted from the leases themselves (exact, unlike reported load).
        held: dict[str, int] = {}
        for r in running:
            if r.lease:
                held[r.lease.holder] = held.get(r.lease.holder, 0) + 1
        evicted: list[str] = []
        for job in critical:
            able = {
                fid
                for fid, v in views.items()
                if set(job.capabilities) <= v.capabilities
                and not v.paused
                and avoided(job, fid) is None  # it stalled there: no eviction for it
            }
            if not able or any(held.get(f, 0) < views[f].seats for f in able):
                continue  # nobody can run it, or someone has a free seat: no eviction
            victims = sorted(
                (
                    r
                    for r in running
                    if r.lease
                    and r.lease.holder in able
                    and r.priority < job.priority
                    and r.id not in evicted
                ),
                key=lambda r: (r.priority, -r.updatedAt.timestamp(), r.id),
            )
            for victim in victims:
                try:
                    stored = self.writer.write(
                        J.preempt(victim, now=now, for_job=job.id), victim.etag, spill=True
                    )
                except (ConcurrencyConflict, NotFound):
                    continue
                self.writer.settle(victim, stored)
                self._note_preemption(job, victim.id, now)
                evicted.append(victim.id)
                break
        return evicted

    def _note_preemption(self, job: Job, victim: str, now: datetime) -> None:
        def change(current: Job, at: datetime) -> Job:
            return J.record(
                current,
                type="preempted_for",
                actor="preemptor",
                now=at,
                reason=f"evicted {victim} to make room",
                data={"victim": victim},
            )

        try:
            self.writer.update(job.productId, job.id, change)
        except FleetError as exc:
            log.warning("could not note the preemption on %s: %s", job.id, exc)

    def _reconcile_quotas(self, product: str, now: datetime) -> None:
        """Undo what a crash between two writes can leave behind: budget reservations with
        no live lease behind them (settled with the cost reported for that attempt), and
        channel running counts that disagree with the jobs actually leased."""
        rows = self.docs.query(LEASED_JOBS, product, {"top": 10 * self.config.reap_batch})
        leased = [Job.from_doc(r) for r in rows]
        for row, job in zip(rows, leased, strict=True):
            if "dueAt" not in row:
                self._date(job)
        live = {j.reservation for j in leased if j.reservation}
        budget = self.budgets.get(product)
        for key, reservation in (budget.reservations if budget else {}).items():
            if key in live or not reservation.settled_by(now, self.config.quota_quiet_seconds):
                continue
            job_id, epoch = parse_reservation_key(key)
            try:
                cost = self.writer.get_job(product, job_id).costs.get(str(epoch), 0.0)
            except JobNotFound:
                cost = 0.0
            self.budgets.settle(product, key, reservation.usd, cost)
        running: dict[str, int] = {}
        for job in leased:
            if job.channel:
                running[job.channel] = running.get(job.channel, 0) + 1
        self.channels.reconcile(product, running, self.config.quota_quiet_seconds)

    def _date(self, job: Job) -> None:
        """Write the ``dueAt`` of a leased job written before jobs kept one (the timers'
        sweeps find its lease's expiry by it), conditional on the job as read: whatever moved
        it since wrote its ``dueAt`` already."""
        try:
            self.writer.write(job, job.etag, spill=False)
        except (ConcurrencyConflict, NotFound):
            return
        except StoreUnavailable as exc:
            log.warning(
                "reaper: dueAt of %s/%s left to the next pass: %s", job.productId, job.id, exc
            )

    def take_back(
        self,
        product: str,
        job_id: str,
        epoch: int,
        reason: str,
        actor: str = "healer",
        *,
        avoid: Avoid | None = None,
        applies: Callable[[Job], bool] | None = None,
    ) -> Job | None:
        """Requeue (or dead-letter) a leased job at exactly this epoch, fencing its holder:
        for the self-healer (stalled, never started, holder down) and for revoked holders.
        ``avoid`` is recorded on the job in the same write (``fleet.domain.jobs.expire``);
        ``applies`` re-checks the caller's verdict on the job as read. ``None`` when the job
        moved on meanwhile (another epoch, no longer leased, the verdict no longer holds, a
        lost race): nothing to do, or the next pass's to decide."""
        try:
            job = self.writer.get_job(product, job_id)
        except JobNotFound:
            return None
        if job.epoch != epoch or job.stage not in LEASED:
            return None
        if applies is not None and not applies(job):
            return None
        taken = self._take_back_once(job, self.clock.now(), reason, actor, avoid)
        if taken is not None and taken.stage is Stage.QUEUED:
            self.gate.bump(product)
        return taken

    def _take_back_once(
        self,
        job: Job,
        now: datetime,
        reason: str,
        actor: str = "reaper",
        avoid: Avoid | None = None,
    ) -> Job | None:
        try:
            taken = self.writer.write(
                J.expire(job, now=now, reason=reason, actor=actor, avoid=avoid, taken=True),
                job.etag,
                spill=True,
            )
        except (ConcurrencyConflict, NotFound):
            return None  # it moved: whoever moved it decided
        # The lease is over: its budget reservation and channel slot go back now, not when
        # the reconciliation finds them.
        self.writer.settle(job, taken)
        return taken


def _recently_preempted_for(job: Job, now: datetime, seconds: float) -> bool:
    return any(
        e.type == "preempted_for" and (now - e.at).total_seconds() < seconds for e in job.events
    )
