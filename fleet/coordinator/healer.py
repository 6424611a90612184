"""The self-healer's pass: read the fleet, decide (``fleet.domain.healer.plan_heal``), write
only what changed.

One pass over one product, run by a timer, reads the fleet (one query), the heartbeats (one
table query) and the leased jobs (one query), and writes each verdict conditionally on what it
read: a lost race is left to the next pass, so passes are safe to run concurrently and again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field

from fleet.coordinator.heartbeats import Heartbeats
from fleet.coordinator.service import Coordinator, JobNotFound
from fleet.domain.fleet_state import FactoryNotFound, HeartbeatRecord, short_id
from fleet.domain.healer import (
    HEALER,
    HealthConfig,
    StallChange,
    StatusChange,
    plan_heal,
    release_reason,
    stall_applies,
    stall_record,
)
from fleet.domain.models import Factory, Job
from fleet.errors import ConcurrencyConflict, NotFound
from fleet.store.ports import Set
from fleet.store.queries import LEASED_JOBS

log = logging.getLogger(__name__)


@dataclass
class HealReport:
    """What one healer pass did (only what it actually wrote)."""

    product: str
    marked: dict[str, str] = field(default_factory=dict)  # factory -> its new status
    stalled: list[str] = field(default_factory=list)
    unstalled: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.marked or self.stalled or self.unstalled or self.released or self.pruned)

    def summary(self) -> str:
        marked = ",".join(f"{f}={s}" for f, s in sorted(self.marked.items())) or "-"
        return (
            f"healer {self.product}: marked={marked} stalled={len(self.stalled)} "
            f"unstalled={len(self.unstalled)} released={len(self.released)} "
            f"pruned={len(self.pruned)}"
        )


class Healer:
    """The healer's reads and writes; ``deregister(product, factory, by)`` prunes a
    long-gone factory (and revokes its tokens: a pruned factory's token works no more)."""

    def __init__(
        self,
        coordinator: Coordinator,
        config: HealthConfig,
        heartbeats: Heartbeats,
        deregister: Callable[[str, str, str], None],
    ) -> None:
        self.coord = coordinator
        self.config = config
        self._docs = coordinator.stores.documents
        self._heartbeats = heartbeats
        self._deregister = deregister

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
            if self._set_stalled(product, stall):
                (report.stalled if stall.stalled else report.unstalled).append(stall.job_id)
        for release in plan.releases:
            reason = release_reason(release)
            if self.coord.take_back(product, release.job_id, release.epoch, reason, HEALER):
                log.info("healer released %s/%s: %s", product, release.job_id, reason)
                report.released.append(release.job_id)
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
        try:
            self._docs.patch(product, factory.id, [Set("/status", change.new)], etag=factory.etag)
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

    def _set_stalled(self, product: str, change: StallChange) -> bool:
        """Flag (or clear) ``stalled`` with its event, in one conditional write of the job,
        re-checked against a fresh read on every attempt."""
        for _ in range(self.coord.config.write_retries):
            try:
                job = self.coord.get_job(product, change.job_id)
            except JobNotFound:
                return False
            if not stall_applies(job, change):
                return False  # it moved on, or someone else already did this
            updated = stall_record(job, change, self.coord.clock.now())
            try:
                self._docs.replace(updated.to_doc(), etag=job.etag)
            except ConcurrencyConflict:
                continue
            except NotFound:
                return False
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
                log.info("job %s/%s is progressing again", product, job.id)
            return True
        return False
