"""The one write path of a job document, and what a landed write owes the rest.

Every job state change is one conditional write: read the job, compute the next document
with the pure functions of ``fleet.domain.jobs`` (which append the transition's event to
the same document), write it with ``If-Match`` on the etag read. The read is skipped when
this instance wrote the job last (``LastWritten``: a claim, then its holder's reports): the
change is decided on that copy and its etag, and if anything changed the job since, the
write is refused and the change decided again on a fresh read. A lost race re-reads and
re-decides (a holder's write after the reaper moved the job finds itself fenced); a write
whose reply was lost is recognised by one point read (``landed``); nothing is written twice.
Long histories are spilled to documents of their own as they are written.

After a write has landed, ``after_write`` settles the quotas of a lease it ended, wakes
gated factories when it made work claimable or reviewable, and lets dependents go when it
shipped a job.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from fleet.coordinator.budgets import Budgets, estimate_of
from fleet.coordinator.cache import LastWritten
from fleet.coordinator.channels import ChannelLimits
from fleet.coordinator.config import CoordinatorConfig, Part
from fleet.coordinator.product import Gate
from fleet.domain import jobs as J
from fleet.domain import runs as RU
from fleet.domain.models import Document, Event, EventDoc, Job, Run, RunDoc, queue_key
from fleet.domain.stages import LEASED, TERMINAL, Action, Stage
from fleet.errors import (
    AlreadyExists,
    ConcurrencyConflict,
    FleetError,
    NotFound,
    StoreUnavailable,
)
from fleet.store.queries import JOBS_OLDEST_IN_STAGE

log = logging.getLogger(__name__)

# Stages a write may move a job into that give gated factories something to do.
_WAKES = frozenset({Stage.QUEUED, Stage.REVIEW})


class JobNotFound(NotFound):
    """No such job."""

    code = "job_not_found"


@dataclass(frozen=True, eq=False)
class Writer(Part):
    """Reads and conditionally writes job documents; settles what a write leaves owing."""

    budgets: Budgets
    channels: ChannelLimits
    gate: Gate
    # The job documents this instance wrote last, as written (their etags): a hint for the
    # next change of the same job, which If-Match keeps honest.
    last_written: LastWritten[tuple[str, str], Job] = field(
        default_factory=LastWritten, compare=False
    )

    def get_job(self, product: str, job_id: str) -> Job:
        try:
            doc = self.docs.read(product, job_id)
        except NotFound:
            raise JobNotFound(f"job {job_id} not found", jobId=job_id) from None
        if doc.get("type") != "job":  # a caller's id may name any document ("settings")
            raise JobNotFound(f"job {job_id} not found", jobId=job_id)
        return Job.from_doc(doc)

    # --- the one write path ------------------------------------------------------------

    def update(
        self,
        product: str,
        job_id: str,
        change: Callable[[Job, datetime], Job],
        *,
        spill: bool = True,
    ) -> Job:
        """Read, change, conditionally write; on a lost race, read again and re-decide (the
        change function re-checks fences and transitions against the fresh state). Once
        the write has landed: ``after_write``."""
        known = self.last_written.get((product, job_id))
        if known is not None:
            stored = self._update_known(known, change, spill=spill)
            if stored is not None:
                return stored
        for _ in range(self.config.write_retries):
            job = self.get_job(product, job_id)
            try:
                stored = self.commit(job, change(job, self.clock.now()), spill=spill)
            except ConcurrencyConflict:
                continue
            self.after_write(job, stored)  # outside the retry: owed once, never re-decided
            return stored
        raise ConcurrencyConflict(f"job {job_id} is changing too fast; retry", jobId=job_id)

    def commit(self, before: Job, updated: Job, *, spill: bool) -> Job:
        """Write ``updated`` on ``before``'s etag; a reply lost on the way is recognised by
        ``landed``. A refused write raises ``ConcurrencyConflict``."""
        try:
            return self.write(updated, before.etag, spill=spill)
        except StoreUnavailable as exc:
            return self.landed(updated, exc)

    def _update_known(
        self, known: Job, change: Callable[[Job, datetime], Job], *, spill: bool
    ) -> Job | None:
        """``update`` decided on the copy this instance wrote last, with no read. ``None``
        when that copy is not the stored job any more (the write was refused), or the change
        refused it (a fence, a transition): the caller decides again on a fresh read, so a
        stale copy never answers for the stored job."""
        try:
            updated = change(known, self.clock.now())
        except FleetError:
            self.last_written.forget((known.productId, known.id))
            return None
        try:
            stored = self.commit(known, updated, spill=spill)
        except (ConcurrencyConflict, NotFound):
            self.last_written.forget((known.productId, known.id))
            return None
        self.after_write(known, stored)
        return stored

    def landed(self, expected: Job, error: StoreUnavailable) -> Job:
        """After a job write failed with ``StoreUnavailable``: the write may have happened
        with only its answer lost (a dropped connection, a timeout, a 503 after the commit).
        One point read tells: the stored job if it is what was written, else ``error`` again
        (nothing happened, or the store cannot tell yet: the caller retries, and re-decides
        against the fresh state). Without this, a retried report of a transition that did
        happen is refused as fenced, and a claim whose answer was lost leaves the job leased
        to a factory that never knew."""

        def written(job: Job) -> dict[str, Any]:
            # The write may have spilled (moved older events and runs to documents of their
            # own): compare what a spill leaves alone.
            return {k: v for k, v in job.to_doc().items() if k not in _SPILLED_FIELDS}

        try:
            current = self.get_job(expected.productId, expected.id)
        except JobNotFound:
            raise error from None
        if written(current) != written(expected):
            raise error
        return current

    def write(self, job: Job, etag: str | None, *, spill: bool) -> Job:
        """Write ``job`` if its etag is still ``etag``. Runs are kept bounded on every write
        (the claim adds one); events only with ``spill`` (a renew never spills)."""
        for policy in _SPILLS if spill else (_RUN_SPILL,):
            job = self._spill(job, policy)
        written = self.docs.replace(job.to_doc(), etag=etag)
        # The store keeps what it was given (plus its system properties): the job as written
        # with the new etag, not validated again from the store's copy.
        stored = job.model_copy(update={"etag": written.get("_etag")})
        self.last_written.put((stored.productId, stored.id), stored)
        return stored

    def _spill(self, job: Job, policy: _Spill) -> Job:
        """Move the older part of one of the job's bounded lists to documents of their own.
        The creates are idempotent (deterministic ids), so a write that then loses its race
        leaves only copies of history that already happened."""
        items: tuple[Any, ...] = getattr(job, policy.field)
        if len(items) <= policy.limit:
            return job
        old, recent = items[: -policy.keep], items[-policy.keep :]
        for item in old:
            with contextlib.suppress(AlreadyExists):
                self.docs.create(policy.document(job, item, self.config).to_doc())
        return job.evolve(**{policy.field: recent, policy.through: policy.key(old[-1])})

    # --- what a landed write owes ------------------------------------------------------

    def after_write(self, before: Job, after: Job) -> None:
        """After ``before`` was written as ``after``: settle the quotas of a lease it ended;
        wake gated factories when it moved the job to where one can take it (queued: work
        to claim; review: work to review); let the jobs waiting for it go when it shipped
        (when any does: ``hasDependents``; the reaper's pass is the backstop)."""
        self.settle(before, after)
        if Stage.QUEUED in (before.stage, after.stage):
            self.gate.queued.forget(after.productId)  # this instance's claims read it anew
        if after.stage is before.stage:
            return
        if after.stage in _WAKES:
            self.gate.bump(after.productId)
        elif after.stage is Stage.SHIPPED and after.hasDependents:
            self.unblock_dependents(after.productId)  # else nothing waits: no query

    def settle(self, before: Job, after: Job) -> None:
        """After a write that ended ``before``'s lease: settle its budget reservation with
        the cost reported for that attempt and return its channel slot. Best effort: the
        reaper reconciles what a crash here leaves behind."""
        if before.stage not in LEASED or (after.stage in LEASED and after.epoch == before.epoch):
            return
        product, epoch = before.productId, before.epoch
        try:
            if before.reservation:
                cost = after.costs.get(str(epoch), 0.0)
                self.budgets.settle(product, before.reservation, estimate_of(before), cost)
            if before.channel:
                self.channels.give_back(product, before.channel, token=False)
        except FleetError as exc:
            log.warning("settling %s epoch %d left for the reaper: %s", before.id, epoch, exc)

    def unblock_dependents(self, product: str, *, bump: bool = True) -> tuple[list[str], list[str]]:
        """Queue the blocked jobs whose dependencies are met, fail those whose dependencies
        never can be. Returns both lists of ids."""
        blocked = self.docs.query(
            JOBS_OLDEST_IN_STAGE, product, {"stage": "blocked", "top": self.config.reap_batch}
        )
        unblocked: list[str] = []
        failed: list[str] = []
        stage_cache: dict[str, Stage | None] = {}
        for row in blocked:
            job = Job.from_doc(row)
            if job.deps is None:
                continue
            stages = []
            for dep in job.deps.jobs:
                if dep not in stage_cache:
                    try:
                        stage_cache[dep] = self.get_job(product, dep).stage
                    except JobNotFound:
                        stage_cache[dep] = None
                known = stage_cache[dep]
                stages.append(known if known is not None else Stage.CANCELLED)
            verdict = deps_verdict(job.deps.mode, stages)
            if verdict == "waiting":
                continue
            now = self.clock.now()
            if verdict == "ready":
                moved = J.transition(
                    job,
                    Action.UNBLOCK,
                    actor="reaper",
                    now=now,
                    reason="dependencies shipped",
                    queueKey=queue_key(job.priority, job.createdAt, job.id),
                )
            else:
                moved = J.transition(
                    job,
                    Action.DEPS_FAILED,
                    actor="reaper",
                    now=now,
                    reason="a dependency ended without shipping",
                )
            try:
                self.write(moved, job.etag, spill=True)
            except (ConcurrencyConflict, NotFound):
                continue
            (unblocked if verdict == "ready" else failed).append(job.id)
        if bump and unblocked:
            self.gate.bump(product)
        return unblocked, failed


def deps_verdict(mode: str, stages: list[Stage]) -> str:
    """'ready', 'waiting' or 'impossible' for a dependent job, from its deps' stages."""
    shipped = [s is Stage.SHIPPED for s in stages]
    dead = [s in TERMINAL and s is not Stage.SHIPPED for s in stages]
    if mode == "any":
        if any(shipped):
            return "ready"
        return "impossible" if all(dead) else "waiting"
    if all(shipped):
        return "ready"
    return "impossible" if any(dead) else "waiting"


# --- spilling --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spill:
    """One of a job's bounded lists: past ``limit`` items, all but the newest ``keep`` move
    to documents (``document``); ``through`` records the key of the newest one moved."""

    field: str
    through: str
    limit: int
    keep: int
    key: Callable[[Any], int]
    document: Callable[[Job, Any, CoordinatorConfig], Document]


def _event_doc(job: Job, event: Event, config: CoordinatorConfig) -> Document:
    return EventDoc(
        id=f"{job.id}:{event.seq}",
        productId=job.productId,
        jobId=job.id,
        seq=event.seq,
        event=event,
        ttl=config.event_ttl_seconds,
    )


def _run_doc(job: Job, run: Run, config: CoordinatorConfig) -> Document:
    # No TTL: a run is the record of what an attempt cost and produced, one per attempt.
    return RunDoc(
        id=f"run:{job.id}:{run.epoch}",
        productId=job.productId,
        jobId=job.id,
        epoch=run.epoch,
        run=run,
    )


# Events are spilled by halves (a spill is a burst of creates: not on every write); runs
# one at a time past EMBEDDED_RUNS (a job gains one run per attempt).
_EVENT_SPILL = _Spill(
    "events",
    "spilledThrough",
    J.EMBEDDED_EVENTS,
    J.EMBEDDED_EVENTS // 2,
    lambda e: e.seq,
    _event_doc,
)
_RUN_SPILL = _Spill(
    "runs", "runsSpilledThrough", RU.EMBEDDED_RUNS, RU.EMBEDDED_RUNS, lambda r: r.epoch, _run_doc
)
_SPILLS = (_EVENT_SPILL, _RUN_SPILL)
_SPILLED_FIELDS = frozenset(f for p in _SPILLS for f in (p.field, p.through))
