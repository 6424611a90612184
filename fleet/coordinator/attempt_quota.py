"""What one attempt may store, counted: so that one factory cannot exhaust a product.

An attempt (a job's lease epoch) stores agent events and artifacts that never change the
job, so its job document cannot count them. One small document per attempt does
(``{jobId}:quota:{epoch}``, type ``attempt_quota``: ``events``, ``eventBytes``,
``artifacts``). A request takes what it would store first, in one conditional patch whose
filter predicate is the limit itself (``events <= limit - n``): two requests racing for the
last slots cannot both pass, and a refused request has changed nothing. What a request
took but did not store (a retried batch's events, an artifact name asked for again) is
given back. The first request of an attempt finds no document and creates it (a patch
answered 404, then a create).

Limits: ``fleet.settings.AttemptQuotas`` (the app settings ``FLEET_*_PER_ATTEMPT``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fleet.errors import AlreadyExists, NotFound, PreconditionFailed, QuotaExceeded
from fleet.settings import AttemptQuotas
from fleet.store.expr import F, all_of
from fleet.store.ports import DocumentStore, Incr

QUOTA_TYPE = "attempt_quota"

# The counted things, by the field that counts them, and the name an error gives them.
EVENTS = "events"
EVENT_BYTES = "eventBytes"
ARTIFACTS = "artifacts"
_NAMES = {EVENTS: "agent events", EVENT_BYTES: "agent event payload bytes", ARTIFACTS: "artifacts"}


def quota_id(job_id: str, epoch: int) -> str:
    return f"{job_id}:quota:{epoch}"


def limits_of(quotas: AttemptQuotas) -> dict[str, int]:
    return {
        EVENTS: quotas.agent_events,
        EVENT_BYTES: quotas.agent_event_bytes,
        ARTIFACTS: quotas.artifacts,
    }


@dataclass(frozen=True)
class AttemptQuota:
    """The per-attempt counters of one product's jobs (see the module docstring)."""

    docs: DocumentStore
    limits: Mapping[str, int]
    ttl_seconds: int  # as long as the agent events it counts live

    def take(self, product: str, job_id: str, epoch: int, amounts: Mapping[str, int]) -> None:
        """Count ``amounts`` (field -> how many) against the attempt's limits, all or none:
        ``QuotaExceeded`` (naming the first quota it would pass) and nothing counted when
        one would be passed. One patch; two calls (a 404 patch, a create) on the attempt's
        first use, and a point read when refused (to say which quota)."""
        wanted = {k: n for k, n in amounts.items() if n > 0}
        if not wanted:
            return
        doc_id = quota_id(job_id, epoch)
        counts = [Incr(f"/{k}", n) for k, n in wanted.items()]
        fits = all_of(*(F(f"/{k}") <= self.limits[k] - n for k, n in wanted.items()))
        for _ in range(2):  # a second round only after losing the race to create it
            try:
                self.docs.patch(product, doc_id, counts, condition=fits)
                return
            except PreconditionFailed:
                raise self._exceeded(product, job_id, epoch, wanted) from None
            except NotFound:
                pass
            over = self._over({}, wanted)
            if over is not None:
                raise self._error(job_id, epoch, over, 0)
            try:
                self.docs.create(
                    {
                        "id": doc_id,
                        "productId": product,
                        "type": QUOTA_TYPE,
                        "jobId": job_id,
                        "epoch": epoch,
                        **{k: 0 for k in self.limits},
                        **wanted,
                        "ttl": self.ttl_seconds,
                    }
                )
                return
            except AlreadyExists:
                continue  # a concurrent first request created it: count on it
        raise RuntimeError("unreachable: the quota document exists after a lost create")

    def give_back(self, product: str, job_id: str, epoch: int, amounts: Mapping[str, int]) -> None:
        """Uncount what was taken but not stored (one patch; nothing when nothing)."""
        given = [Incr(f"/{k}", -n) for k, n in amounts.items() if n > 0]
        if given:
            self.docs.patch(product, quota_id(job_id, epoch), given)

    def _over(self, used: Mapping[str, object], wanted: Mapping[str, int]) -> str | None:
        for k, n in wanted.items():
            count = used.get(k, 0)
            if not isinstance(count, int | float) or count + n > self.limits[k]:
                return k
        return None

    def _exceeded(
        self, product: str, job_id: str, epoch: int, wanted: Mapping[str, int]
    ) -> QuotaExceeded:
        try:
            used = self.docs.read(product, quota_id(job_id, epoch))
        except NotFound:
            used = {}
        field = self._over(used, wanted) or next(iter(wanted))
        count = used.get(field, 0)
        return self._error(job_id, epoch, field, int(count) if isinstance(count, int) else 0)

    def _error(self, job_id: str, epoch: int, field: str, used: int) -> QuotaExceeded:
        limit = self.limits[field]
        return QuotaExceeded(
            f"attempt {epoch} of job {job_id} may store at most {limit} {_NAMES[field]} "
            f"({used} stored): nothing was stored",
            jobId=job_id,
            epoch=epoch,
            quota=field,
            limit=limit,
            used=used,
        )
