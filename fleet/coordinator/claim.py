"""The claim, the hot path: one query for the top-K queued jobs, pure ranking, one
conditional replace of the chosen job (a lost race: the next candidate)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fleet.coordinator.budgets import BudgetBlocked, Budgets, estimate_of, reservation_key
from fleet.coordinator.channels import ChannelLimits
from fleet.coordinator.config import Part
from fleet.coordinator.product import Products
from fleet.coordinator.writer import Writer
from fleet.domain import jobs as J
from fleet.domain import runs as RU
from fleet.domain.models import Job, Lease, format_ts
from fleet.domain.scheduler import FactoryView, rank
from fleet.domain.stages import Action, Stage
from fleet.errors import ConcurrencyConflict, NotFound, StoreUnavailable
from fleet.store.queries import CLAIM_OF_REQUEST, COUNT_LIVE_LEASES_OF_HOLDER, JOBS_IN_STAGE

# The stages a job won by a claim is in until its holder reports anything: a claim with
# ``start`` leaves it building.
_UNTOUCHED = [Stage.ASSIGNED.value, Stage.BUILDING.value]


@dataclass(frozen=True)
class Cadence:
    """How often the lease holder must heartbeat and renew: a third of the lease, and never
    slower than a third of the stale threshold, so one lost beat never looks like death."""

    heartbeat_seconds: int
    renew_seconds: int

    @classmethod
    def for_lease(cls, lease_seconds: int, stale_after_seconds: int) -> Cadence:
        every = max(1, min(lease_seconds, stale_after_seconds) // 3)
        return cls(heartbeat_seconds=every, renew_seconds=every)

    def as_dict(self) -> dict[str, int]:
        return {"heartbeatSeconds": self.heartbeat_seconds, "renewSeconds": self.renew_seconds}


@dataclass(frozen=True)
class ClaimResult:
    job: Job
    lease: Lease
    cadence: Cadence
    breakdown: dict[str, object]
    attempts: int  # CAS attempts it took (1 = no lost race; 0 = replayed)
    replayed: bool = False  # a retried claim answered with the job it had already won

    @property
    def limits(self) -> dict[str, Any]:
        """The effective limits of this attempt, as its run holds them."""
        return RU.limits(RU.run_at(self.job.runs, self.lease.epoch))


@dataclass(frozen=True, eq=False)
class Claims(Part):
    writer: Writer
    products: Products
    budgets: Budgets
    channels: ChannelLimits
    entropy: Callable[[int], bytes]

    def claim(
        self,
        product: str,
        factory: FactoryView,
        request_id: str | None = None,
        *,
        retry: bool = False,
        start: bool = False,
    ) -> ClaimResult | None:
        """One query for the top-K queued jobs, pure ranking, one conditional replace of the
        chosen job. On a lost race, the next candidate. ``None``: nothing for this factory.

        Shared quotas are reserved before the job's compare-and-swap and given back if it
        is lost: a channel's token and running slot (a channel with limits costs a table
        read and write), and — in a product with a budget — the job's estimated cost (one
        conditional patch whose predicate is the budget rule itself).

        ``request_id`` (the factory's own id for this claim) is stored in the lease it
        writes, at no extra cost. With ``retry`` — the factory re-sends the claim after its
        reply was lost — the job this factory already won with that id, if it is still
        ``assigned`` under a current lease, is answered again (no write, no new event, the
        same epoch); else a normal claim follows. With ``start`` the factory starts the job at
        once: the same write also moves it to ``building`` (its ``start`` event after the
        ``assign``), one report fewer per job."""
        now = self.clock.now()
        terms = self.products.terms(product, factory.id)
        standing = terms.why_not
        if standing in ("revoked", "deregistered"):
            return None  # gone: what it holds is the reaper's to take back
        if retry and request_id is not None:
            won = self._claimed_by_request(product, factory.id, request_id, now)
            if won is not None:
                return won  # not new work: a paused or draining factory keeps it
        if standing is not None:
            return None  # paused or draining: it gets nothing new
        rows = self.docs.query(
            JOBS_IN_STAGE, product, {"stage": "queued", "top": self.config.claim_candidates}
        )
        # Stamped after the read it decides on: the assignment is never dated before the
        # write that made the job claimable (an unblock landing while this claim began).
        now = self.clock.now()
        settings = self.products.settings(product)
        candidates = rank([Job.from_doc(r) for r in rows], factory, now, settings.weights)
        if (
            candidates
            and terms.seats is not None
            and self._seats_full(product, factory.id, terms.seats, now)
        ):
            return None  # every seat it enrolled with holds a live lease: nothing more
        budgeted = bool(candidates) and self.budgets.applies(product)
        exhausted_channels: set[str] = set()
        for attempt, (job, breakdown) in enumerate(candidates, start=1):
            if job.channel in exhausted_channels:
                continue
            if job.channel:
                taken, _why = self.channels.take(product, job.channel)
                if not taken:
                    exhausted_channels.add(job.channel)
                    continue
            epoch = job.epoch + 1
            key = reservation_key(job.id, epoch, self.entropy(4).hex()) if budgeted else None
            if key is not None:
                try:
                    self.budgets.reserve(product, job, key)
                except BudgetBlocked:
                    self._give_back_channel(product, job)
                    budget = self.budgets.get(product)
                    if budget is None or budget.blocked:
                        return None  # paused: nothing in this product may start
                    continue  # this one does not fit; a cheaper one may
                except NotFound:
                    budgeted, key = False, None  # the budget was deleted meanwhile
            assigned = J.assign(
                job,
                factory.id,
                now=now,
                breakdown=breakdown.as_dict(),
                request_id=request_id,
                timeout_seconds=RU.effective_timeout(job.timeoutSeconds, settings.timeout_seconds),
            )
            if start:
                assigned = J.holder_report(assigned, Action.START, factory.id, now=now)
            assigned = assigned.evolve(reservation=key)
            try:
                stored = self.writer.write(assigned, job.etag, spill=False)
            except (ConcurrencyConflict, NotFound):
                # Another factory won this one (or it changed): undo, try the next.
                if key is not None:
                    self.budgets.settle(product, key, estimate_of(job), 0.0)
                self._give_back_channel(product, job)
                continue
            except StoreUnavailable as exc:
                # Its answer may be all that was lost: then the job is this factory's (else
                # it would sit leased to a factory that never knew, and spend an attempt).
                stored = self.writer.landed(assigned, exc)
            assert stored.lease is not None
            return ClaimResult(
                job=stored,
                lease=stored.lease,
                cadence=self.cadence(stored),
                breakdown=breakdown.as_dict(),
                attempts=attempt,
            )
        return None

    def _seats_full(self, product: str, factory_id: str, seats: int, now: datetime) -> bool:
        """Whether the factory already holds ``seats`` live leases (one count query, asked
        only when there is something it could claim). Server-side: a factory that claims
        past its seats, whatever it says in the claim, gets nothing."""
        held = self.docs.count(
            COUNT_LIVE_LEASES_OF_HOLDER, product, {"holder": factory_id, "now": format_ts(now)}
        )
        return held >= seats

    def _claimed_by_request(
        self, product: str, factory_id: str, request_id: str, now: datetime
    ) -> ClaimResult | None:
        """The claim this factory already won with ``request_id``, answered again as it was
        first answered (job, lease, cadence, score): one bounded query, no write. ``None``
        when there is none, or its lease is no longer current (the reaper's to take back)."""
        rows = self.docs.query(
            CLAIM_OF_REQUEST,
            product,
            {"holder": factory_id, "requestId": request_id, "top": 2, "stages": _UNTOUCHED},
        )
        for row in rows:
            job = Job.from_doc(row)
            lease = job.lease
            if lease is None or lease.epoch != job.epoch or lease.expiresAt <= now:
                continue
            score = next(
                (
                    e.data.get("score")
                    for e in reversed(job.events)
                    if e.type == "assign" and e.epoch == job.epoch
                ),
                None,
            )
            return ClaimResult(
                job=job,
                lease=lease,
                cadence=self.cadence(job),
                breakdown=score if isinstance(score, dict) else {},
                attempts=0,
                replayed=True,
            )
        return None

    def _give_back_channel(self, product: str, job: Job) -> None:
        if job.channel:
            self.channels.give_back(product, job.channel, token=True)

    def cadence(self, job: Job) -> Cadence:
        return Cadence.for_lease(job.leaseSeconds, self.config.stale_after_seconds)
