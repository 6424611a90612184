"""The review quorum's orchestration: who is voting, of what kind, and the one write.

The rules are pure (``fleet.domain.review``); this module reads what they need (the job, the
voting factory's document for the kind fixed at its enrollment) and writes through the one
conditional write path (``fleet.coordinator.writer``), so every vote and the transition it
causes land with their events in one job document write. A lost race re-reads and
re-decides: a second vote by the same reviewer racing the first is refused on the fresh
state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from fleet.coordinator.product import Gate
from fleet.coordinator.writer import Writer
from fleet.domain import review as R
from fleet.domain.models import Factory, Job
from fleet.domain.stages import Stage
from fleet.errors import NotFound, ReviewRefused
from fleet.store.ports import DocumentStore


@dataclass(frozen=True)
class Reviewer:
    """Who votes: an operator (``kind`` as they say, ``human`` by default) or a factory
    (``kind`` fixed at its enrollment; it may name one of them to narrow it)."""

    kind: str  # "operator" or "factory"
    id: str

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.id}"


class Reviews:
    def __init__(self, docs: DocumentStore, writer: Writer, gate: Gate) -> None:
        self.docs = docs
        self.writer = writer
        self.gate = gate

    def factory_kind(self, product: str, factory_id: str) -> str:
        """The factory's review kind, fixed at its enrollment (``R.reviewer_kind``): never
        what it re-registered since (one point read)."""
        try:
            factory = Factory.from_doc(self.docs.read(product, f"factory-{factory_id}"))
        except NotFound:
            return R.UNKNOWN
        return R.reviewer_kind(factory)

    def request(
        self,
        product: str,
        job_id: str,
        by: Reviewer,
        reviewers: tuple[str, ...] = (),
        note: str | None = None,
    ) -> Job:
        """Ask for reviewers; wakes gated factories (a reviewer persona polls the gate)."""

        def change(job: Job, now: datetime) -> Job:
            return R.request(job, by.actor, now=now, reviewers=reviewers, note=note)

        job = self.writer.update(product, job_id, change)
        self.gate.bump(product)  # the job stays in review: the write alone wakes nobody
        return job

    def vote(
        self,
        product: str,
        job_id: str,
        by: Reviewer,
        verdict: R.Verdict,
        comments: str = "",
        kind: str | None = None,
    ) -> Job:
        """Approve or reject the attempt under review (see ``fleet.domain.review``)."""
        reviewer_kind = self._kind_of(product, by, kind)

        def change(job: Job, now: datetime) -> Job:
            return R.vote(job, by.actor, reviewer_kind, verdict, comments, now=now)

        job = self.writer.update(product, job_id, change)
        if job.stage is Stage.FAILED:
            # Rejected in its last round: its dependents learn now, as when it ships
            # (the writer's ``after_write`` sees to that, and wakes claimers of a requeue).
            self.writer.unblock_dependents(product)
        return job

    def _kind_of(self, product: str, by: Reviewer, kind: str | None) -> str:
        if by.kind != "factory":
            return kind or R.HUMAN
        advertised = self.factory_kind(product, by.id)
        if kind is None:
            return advertised
        if kind not in R.kinds_of(advertised):
            raise ReviewRefused(
                f"a factory reviews as the kind it enrolled as ({advertised}), not {kind}",
                kind=kind,
                advertised=advertised,
            )
        return kind
