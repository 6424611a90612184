"""The claim, the hot path: one query for the top-K queued jobs, pure ranking, one
conditional replace of the chosen job (a lost race: the next candidate).

Claims in flight on one instance do not fight each other over the same candidate list
(``Contention``): each takes the best candidate no other claim on the instance is trying or
has just won, and K grows with the claims in flight, so each has a candidate of its own. One
read of the queue's head serves the instance's claims for ``queued_list_seconds``
(``QueuedLists``; forgotten when the instance changes the queue): a claim that finds
nothing in it for itself reads the queue. The conditional write still decides every race
(across instances, and whenever a hint is wrong); the hints only keep claims from re-reading
and re-fighting over a list that is already stale.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fleet.coordinator.budgets import BudgetBlocked, Budgets, estimate_of, reservation_key
from fleet.coordinator.cache import QueuedLists
from fleet.coordinator.channels import ChannelLimits
from fleet.coordinator.config import Part
from fleet.coordinator.product import Products
from fleet.coordinator.routing import Routing
from fleet.coordinator.writer import Writer
from fleet.domain import jobs as J
from fleet.domain import runs as RU
from fleet.domain.models import Job, Lease, ShadowChoice, format_ts
from fleet.domain.scheduler import Breakdown, FactoryView, rank, shadow_choice
from fleet.domain.stages import Action, Stage
from fleet.errors import ConcurrencyConflict, NotFound
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


class Contention:
    """The claims in flight on this instance, per product, and the jobs they are trying or
    have just won (held ``hold_seconds``: longer than any claim's query takes, so a list
    read before a win and answered after it never sends another claim of this instance to
    that job first)."""

    MAX_HELD = 4096  # marks kept before the expired ones are swept

    def __init__(
        self, hold_seconds: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.hold_seconds = hold_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._in_flight: Counter[str] = Counter()
        # (product, job id, the etag the candidate was read with): a job queued again since
        # is another candidate (its etag changed), free at once.
        self._held: dict[tuple[str, str, str | None], float] = {}

    @contextmanager
    def claiming(self, product: str) -> Iterator[int]:
        """One claim in flight in ``product`` while the block runs; yields how many are
        (this one included)."""
        with self._lock:
            self._in_flight[product] += 1
            count = self._in_flight[product]
        try:
            yield count
        finally:
            with self._lock:
                self._in_flight[product] -= 1
                if self._in_flight[product] <= 0:
                    del self._in_flight[product]

    def turns(self, product: str, ranked: Sequence[tuple[Job, Any]]) -> Turns:
        """``ranked`` in the order to try them, without those another claim here is trying
        or has just won: each turn, the best one no claim here holds, held from then on."""
        return Turns(self, product, list(ranked))

    def _next_turn(self, product: str, remaining: list[tuple[Job, Any]]) -> tuple[Job, Any] | None:
        with self._lock:
            now = self._clock()
            free = (
                i for i, (job, _) in enumerate(remaining)
                if self._held.get((product, job.id, job.etag), 0.0) <= now
            )  # fmt: skip
            index = next(free, None)
            if index is None:
                return None
            chosen = remaining.pop(index)
            self._held[(product, chosen[0].id, chosen[0].etag)] = now + self.hold_seconds
            if len(self._held) > self.MAX_HELD:
                self._held = {k: t for k, t in self._held.items() if t > now}
        return chosen

    def in_flight(self, product: str) -> int:
        with self._lock:
            return self._in_flight[product]

    def let_go(self, product: str, job: Job) -> None:
        """A job tried and not taken by anyone (it did not fit): others here may try it."""
        with self._lock:
            self._held.pop((product, job.id, job.etag), None)

    @staticmethod
    def candidates(k: int, in_flight: int = 1) -> int:
        """How many candidates to read with ``in_flight`` claims here: 2K (the read is
        shared by the claims of the next moment), more when more claims are in flight, so
        each has one of its own, and never more than 4K."""
        return min(4 * k, max(2 * k, k + in_flight))


_PAUSED = "paused"  # a claim's outcome: the product's budget is paused


@dataclass
class _Attempt:
    """One claim's state across the lists it looks at and the candidates it tries."""

    product: str
    factory: FactoryView
    seats: int | None  # the most live leases it may hold (None: no limit)
    request_id: str | None
    start: bool
    now: datetime | None = None  # stamped after each read the claim decides on
    seats_checked: bool = False  # the seat count is asked once, at the first candidate
    seats_full: bool = False  # it holds as many live leases as it may
    paused: bool = False  # the product's budget is paused: nothing may start
    budgeted: bool | None = None  # whether the product has a budget: asked at the first try
    exhausted_channels: set[str] = field(default_factory=set)
    shadow: ShadowChoice | None = None  # shadow mode's note on the list it ranked last

    @property
    def stopped(self) -> bool:
        """Nothing more for this claim, whatever else is queued."""
        return self.paused or self.seats_full


class Turns:
    """One claim's turns through its candidates (``Contention.turns``). ``held_left``: it
    stopped with candidates left that other claims here hold (none of them was tried)."""

    def __init__(self, contention: Contention, product: str, remaining: list[tuple[Job, Any]]):
        self._contention = contention
        self._product = product
        self._remaining = remaining
        self.held_left = False

    def __iter__(self) -> Iterator[tuple[Job, Any]]:
        while self._remaining:
            chosen = self._contention._next_turn(self._product, self._remaining)
            if chosen is None:
                self.held_left = True
                return
            yield chosen


@dataclass(frozen=True, eq=False)
class Claims(Part):
    writer: Writer
    products: Products
    budgets: Budgets
    channels: ChannelLimits
    entropy: Callable[[int], bytes]
    queued: QueuedLists  # the queue's head as this instance's claims last read it
    contention: Contention = field(default_factory=Contention, compare=False)
    routing: Routing | None = field(default=None, compare=False)  # learned routing's model

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
        with self.contention.claiming(product) as in_flight:
            return self._claim_queued(product, factory, terms.seats, request_id, start, in_flight)

    def _claim_queued(
        self,
        product: str,
        factory: FactoryView,
        seats: int | None,
        request_id: str | None,
        start: bool,
        in_flight: int,
    ) -> ClaimResult | None:
        attempt = _Attempt(product, factory, seats, request_id, start)
        # The queue's head as another claim here read it less than ``queued_list_seconds``
        # ago: the same candidates, no query. Nothing in it for this claim: read the queue.
        listed = self.queued.get(product)
        if listed is not None:
            won, _held_left = self._take_from(attempt, listed)
            if won is not None or attempt.stopped:
                return won
        k = self.config.claim_candidates
        top = self.contention.candidates(k, in_flight)
        jobs = self._read_queue(product, top)
        won, held_left = self._take_from(attempt, jobs)
        if won is not None or not held_left or len(jobs) < top or attempt.stopped:
            # Nothing, or nothing but what other claims here are taking (the whole queue
            # was read): nothing for this factory now. Should one of those claims not take
            # its job after all, the next claim or forced poll does (``maxSkipSeconds``).
            return won
        # Every candidate read that it could take is being taken by another claim here:
        # rather than lose to each in turn, read again, more of them.
        top = max(top, self.contention.candidates(k, self.contention.in_flight(product))) + k
        won, _held_left = self._take_from(attempt, self._read_queue(product, top))
        return won

    def _read_queue(self, product: str, top: int) -> list[Job]:
        """The queue's head (``top`` jobs in queue order), kept for this instance's claims."""
        rows = self.docs.query(JOBS_IN_STAGE, product, {"stage": "queued", "top": top})
        jobs = [Job.from_doc(r) for r in rows]
        self.queued.put(product, jobs)
        return jobs

    def _take_from(self, attempt: _Attempt, jobs: list[Job]) -> tuple[ClaimResult | None, bool]:
        """The claim's try at one list: the job it won (or None), and whether it stopped at
        candidates other claims here hold."""
        # Stamped after the read it decides on: the assignment is never dated before the
        # write that made the job claimable (an unblock landing while this claim began).
        attempt.now = now = self.clock.now()
        settings = self.products.settings(attempt.product)
        learned = self.routing.learned(attempt.product) if self.routing is not None else None
        candidates = rank(jobs, attempt.factory, now, settings.weights, learned)
        if not candidates:
            return None, False
        attempt.shadow = shadow_choice(
            jobs, candidates, attempt.factory, now, settings.weights, learned
        )
        if not attempt.seats_checked:
            attempt.seats_checked = True
            if attempt.seats is not None and self._seats_full(
                attempt.product, attempt.factory.id, attempt.seats, now
            ):
                attempt.seats_full = True
                return None, False  # every seat it enrolled with holds a live lease
        turns = self.contention.turns(attempt.product, candidates)
        return self._take(attempt, turns), turns.held_left

    def _take(self, attempt: _Attempt, turns: Turns) -> ClaimResult | None:
        """The first of ``turns`` this claim wins, its quotas reserved; ``None``: none (or
        the product's budget is paused: ``attempt.paused``)."""
        for n, (job, breakdown) in enumerate(turns, start=1):
            try:
                outcome = self._try(attempt, job, breakdown)
            except BaseException:
                # its fate: for the next claim to find
                self.contention.let_go(attempt.product, job)
                raise
            if outcome is _PAUSED:
                attempt.paused = True
                return None  # nothing in this product may start
            if isinstance(outcome, Job):
                assert outcome.lease is not None
                return ClaimResult(
                    job=outcome,
                    lease=outcome.lease,
                    cadence=self.cadence(outcome),
                    breakdown=breakdown.as_dict(),
                    attempts=n,
                )
        return None

    def _try(self, attempt: _Attempt, job: Job, breakdown: Breakdown) -> Job | str | None:
        """One candidate: its quotas reserved, then its conditional write. The stored job
        when won; ``None`` when it is not this claim's (taken, or does not fit: the next);
        ``_PAUSED`` when the product's budget is paused."""
        product, now = attempt.product, attempt.now
        assert now is not None  # stamped by the read it decides on
        if job.channel in attempt.exhausted_channels:
            self.contention.let_go(product, job)
            return None
        if job.channel:
            taken, _why = self.channels.take(product, job.channel)
            if not taken:
                attempt.exhausted_channels.add(job.channel)
                self.contention.let_go(product, job)
                return None
        if attempt.budgeted is None:
            attempt.budgeted = self.budgets.applies(product)  # cached per instance
        key = None
        if attempt.budgeted:
            key = reservation_key(job.id, job.epoch + 1, self.entropy(4).hex())
            try:
                self.budgets.reserve(product, job, key)
            except BudgetBlocked:
                self._give_back_channel(product, job)
                self.contention.let_go(product, job)
                budget = self.budgets.get(product)
                if budget is None or budget.blocked:
                    return _PAUSED
                return None  # this one does not fit; a cheaper one may
            except NotFound:
                attempt.budgeted, key = False, None  # the budget was deleted meanwhile
        timeout = RU.effective_timeout(
            job.timeoutSeconds, self.products.settings(product).timeout_seconds
        )
        assigned = J.assign(
            job,
            attempt.factory.id,
            now=now,
            breakdown=breakdown.as_dict(),
            request_id=attempt.request_id,
            timeout_seconds=timeout,
            learned=attempt.shadow,
        )
        if attempt.start:
            assigned = J.holder_report(assigned, Action.START, attempt.factory.id, now=now)
        assigned = assigned.evolve(reservation=key)
        try:
            # A lost answer is recognised (``landed``): then the job is this factory's (else
            # it would sit leased to a factory that never knew, and spend an attempt).
            return self.writer.commit(job, assigned, spill=False)
        except (ConcurrencyConflict, NotFound):
            # Another factory won this one (or it changed): undo, try the next.
            if key is not None:
                self.budgets.settle(product, key, estimate_of(job), 0.0)
            self._give_back_channel(product, job)
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
