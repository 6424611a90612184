"""The self-healer's pass: read the fleet, decide (``fleet.domain.healer.plan_heal``), write
only what changed.

One pass over one product, run by a timer, reads the fleet (one query), the heartbeats (one
table query) and the leased jobs (one query), and writes each verdict conditionally on what it
read: a lost race is left to the next pass, so passes are safe to run concurrently and again.

A stall's ``restart-engine`` command is queued only by the pass whose conditional write set
the job's ``stalled`` flag (and said, in its event, that the engine is restarted): a racing
pass loses that write and queues nothing. A take-back is one conditional write of the job
(fenced by its epoch, re-checked on the job as read); a stalled job's avoid entry rides in it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field

from fleet.coordinator.heartbeats import Heartbeats
from fleet.coordinator.service import Coordinator, JobNotFound
from fleet.domain.audit import new_event
from fleet.domain.fleet_state import FactoryNotFound, HeartbeatRecord, short_id
from fleet.domain.healer import (
    HEALER,
    HealthConfig,
    Release,
    StallChange,
    StatusChange,
    avoid_entry,
    plan_heal,
    release_applies,
    release_reason,
    stall_applies,
    stall_record,
)
from fleet.domain.models import Factory, Job
from fleet.errors import ConcurrencyConflict, FleetError, NotFound
from fleet.store.ports import Set
from fleet.store.queries import LEASED_JOBS

# Queues a ``restart-engine`` command for one job to its holder:
# (product, factory, job, reason) -> the command's id.
RestartEngine = Callable[[str, str, str, str], str]

log = logging.getLogger(__name__)


@dataclass
class HealReport:
    """What one healer pass did (only what it actually wrote)."""

    product: str
    marked: dict[str, str] = field(default_factory=dict)  # factory -> its new status
    stalled: list[str] = field(default_factory=list)
    unstalled: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)  # jobs whose engine restart was queued
    released: list[str] = field(default_factory=list)  # jobs taken back, whatever the reason
    avoided: dict[str, str] = field(default_factory=dict)  # job -> the factory it avoids now
    pruned: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.marked or self.stalled or self.unstalled or self.released or self.pruned)

    def summary(self) -> str:
        marked = ",".join(f"{f}={s}" for f, s in sorted(self.marked.items())) or "-"
        return (
            f"healer {self.product}: marked={marked} stalled={len(self.stalled)} "
            f"restarted={len(self.restarted)} unstalled={len(self.unstalled)} "
            f"released={len(self.released)} avoided={len(self.avoided)} "
            f"pruned={len(self.pruned)}"
        )


class Healer:
    """The healer's reads and writes; ``deregister(product, factory, by)`` prunes a
    long-gone factory (and revokes its tokens: a pruned factory's token works no more);
    ``restart_engine`` queues a stalled job's ``restart-engine`` command to its holder."""

    def __init__(
        self,
        coordinator: Coordinator,
        config: HealthConfig,
        heartbeats: Heartbeats,
        deregister: Callable[[str, str, str], None],
        restart_engine: RestartEngine,
    ) -> None:
        self.coord = coordinator
        self.config = config
        self._docs = coordinator.stores.documents
        self._heartbeats = heartbeats
        self._deregister = deregister
        self._restart_engine = restart_engine

    def heal(self, product: str) -> HealReport:
        """One healer pass over one product. Safe to run concurrently and repeatedly: every
        write is conditional on what was read, and a lost race is left to the next pass.

        Cost: one query (factories), one table query (heartbeats), one query (leased jobs,
        at most ``scan_limit``; none when the product has no fleet), then writes only for
        what changed."""
        now = self.coord.clock.now()
        factories = self.coord.factories(product)
        beats = self._heartbeats.records(product)
        jobs: list[Job] = []
        if factories or beats:  # with no fleet known, no holder can be judged alive
            rows = self._docs.query(LEASED_JOBS, product, {"top": self.config.scan_limit})
            jobs = [Job.from_doc(r) for r in rows]
        plan = plan_heal(now, self.config, factories, beats, jobs)
        report = HealReport(product)
        by_id = {short_id(f): f for f in factories}
        for change in plan.statuses:
            if self._mark(product, by_id[change.factory], beats.get(change.factory), change):
                report.marked[change.factory] = change.new
        for stall in plan.stalls:
            flagged = self._set_stalled(product, stall)
            if flagged is None:
                continue
            (report.stalled if stall.stalled else report.unstalled).append(stall.job_id)
            said = flagged.events[-1]
            restart = stall.stalled and said.type == "stalled" and said.data.get("restart") is True
            if restart and self._restart(product, stall, said.reason or "stalled"):
                report.restarted.append(stall.job_id)
        for release in plan.releases:
            if release.kind == "down" and not _is_down(report, by_id.get(release.holder)):
                continue  # not marked down (it was heard from meanwhile): not taken back
            if self._take_back(product, release):
                report.released.append(release.job_id)
                if release.kind == "stalled":
                    report.avoided[release.job_id] = release.holder
        for factory_id in plan.prune:
            with suppress(FactoryNotFound):
                self._deregister(product, factory_id, HEALER)
                report.pruned.append(factory_id)
        if report.changed:
            log.info(report.summary())
        return report

    def _mark(
        self, product: str, factory: Factory, beat: HeartbeatRecord | None, change: StatusChange
    ) -> bool:
        """Write the verdict: first the heartbeat's mirror, conditional on the heartbeat read
        (a beat since means it is not silent: nothing to do), then the factory document,
        conditional on its etag (a registration since wins). A beat between the two finds the
        mirror changed and flips the document back itself."""
        if (
            beat is not None
            and beat.etag is not None
            and not self._heartbeats.mirror(product, change.factory, change.new, beat.etag)
        ):
            return False
        event = new_event(
            f"factory_{change.new}",
            HEALER,
            self.coord.clock.now(),
            reason=f"silent for {int(change.silent_seconds)}s (was {change.old})",
            factory=change.factory,
        )
        try:  # the status and its event in one write, conditional on the document read
            self.coord.fleet_log.patch(
                product,
                factory.id,
                [Set("/status", change.new)],
                event,
                current=factory.to_doc(),
                etag=factory.etag,
            )
        except (ConcurrencyConflict, NotFound):
            return False
        log.info(
            "factory %s/%s is %s (silent for %ds)",
            product,
            change.factory,
            change.new,
            change.silent_seconds,
        )
        return True

    def _set_stalled(self, product: str, change: StallChange) -> Job | None:
        """Flag (or clear) ``stalled`` with its event, in one conditional write of the job,
        re-checked against a fresh read on every attempt. The job as written, or None when
        there was nothing (left) to do."""
        for _ in range(self.coord.config.write_retries):
            try:
                job = self.coord.get_job(product, change.job_id)
            except JobNotFound:
                return None
            if not stall_applies(job, change):
                return None  # it moved on, or someone else already did this
            updated = stall_record(job, change, self.coord.clock.now())
            try:
                stored = Job.from_doc(self._docs.replace(updated.to_doc(), etag=job.etag))
            except ConcurrencyConflict:
                continue
            except NotFound:
                return None
            if change.stalled:
                log.warning(
                    "ALERT job %s/%s stalled: %s is heartbeating but its progress has not moved "
                    "for %ds (last output: %r)",
                    product,
                    job.id,
                    change.holder,
                    change.idle_seconds,
                    change.progress.last_output_line,
                )
            else:
                log.info("job %s/%s is progressing again: %s", product, job.id, change.why)
            return stored
        return None

    def _restart(self, product: str, change: StallChange, reason: str) -> bool:
        """Queue the stalled job's ``restart-engine`` to its holder. Only the pass whose write
        flagged the stall gets here, so it is queued once per stall; should it fail, the
        stall is taken back a period later all the same."""
        try:
            command = self._restart_engine(product, change.holder, change.job_id, reason)
        except FleetError as exc:
            log.warning(
                "healer could not restart the engine of %s/%s on %s: %s",
                product,
                change.job_id,
                change.holder,
                exc,
            )
            return False
        log.info(
            "healer queued restart-engine %s for %s/%s on %s",
            command,
            product,
            change.job_id,
            change.holder,
        )
        return True

    def _take_back(self, product: str, release: Release) -> bool:
        """Take the job back at the planned epoch, if the verdict still holds on the job as
        read; a stalled job's factory is avoided in the same write."""
        reason = release_reason(release)
        avoid = avoid_entry(release, self.coord.clock.now(), self.config)
        taken = self.coord.take_back(
            product,
            release.job_id,
            release.epoch,
            reason,
            HEALER,
            avoid=avoid,
            applies=lambda job: release_applies(job, release),
        )
        if taken is None:
            return False
        log.info("healer took %s/%s back: %s", product, release.job_id, reason)
        return True


def _is_down(report: HealReport, factory: Factory | None) -> bool:
    """Whether the holder is down: marked so by this pass, or already as read."""
    if factory is None:
        return False
    return report.marked.get(short_id(factory)) == "down" or factory.status == "down"
