"""The review quorum's orchestration: who is voting, of what kind, and the one write.

The rules are pure (``fleet.domain.review``); this module reads what they need (the job, the
voting factory's advertised capabilities for its kind) and writes through the coordinator's
one conditional write path, so every vote and the transition it causes land with their
events in one job document write. A lost race re-reads and re-decides: a second vote by the
same reviewer racing the first is refused on the fresh state.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fleet.domain import review as R
from fleet.domain.models import Factory, Job
from fleet.domain.stages import TERMINAL, Stage
from fleet.errors import NotFound

if TYPE_CHECKING:
    from fleet.coordinator.service import Coordinator


@dataclass(frozen=True)
class Reviewer:
    """Who votes: an operator (``kind`` as they say, ``human`` by default) or a factory
    (``kind`` from its advertised capabilities; it may name one of them to narrow it)."""

    kind: str  # "operator" or "factory"
    id: str

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.id}"


class Reviews:
    def __init__(self, coordinator: Coordinator) -> None:
        self.coord = coordinator

    def factory_kind(self, product: str, factory_id: str) -> str:
        """The factory's kind from its registered capabilities (one point read)."""
        try:
            factory = Factory.from_doc(self.coord.docs.read(product, f"factory-{factory_id}"))
        except NotFound:
            return R.UNKNOWN
        return R.factory_kind(factory.capabilities)

    def submit(
        self,
        job: Job,
        factory_id: str,
        *,
        now: datetime,
        reason: str | None = None,
        **changes: Any,
    ) -> Job:
        """The holder's report that takes ``job`` into review (called inside the report's
        write, so it is re-decided on a lost race)."""
        kind = self.factory_kind(job.productId, factory_id)
        return R.submit(job, factory_id, kind, now=now, reason=reason, **changes)

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

        job = self.coord._update(product, job_id, change)
        self.coord.bump_gate(product)
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

        job = self.coord._update(product, job_id, change)
        if job.stage is Stage.QUEUED:
            self.coord.bump_gate(product)
        if job.stage in TERMINAL:
            self.coord._unblock_dependents(product)
        return job

    def _kind_of(self, product: str, by: Reviewer, kind: str | None) -> str:
        if by.kind != "factory":
            return kind or R.HUMAN
        advertised = self.factory_kind(product, by.id)
        if kind is None:
            return advertised
        if kind not in R.kinds_of(advertised):
            raise R.ReviewRefused(
                f"a factory reviews as the kind it advertises ({advertised}), not {kind}",
                kind=kind,
                advertised=advertised,
            )
        return kind
