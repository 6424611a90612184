"""The scheduler: which queued job a factory should take, and why. Pure; ``now`` is an input.

Capabilities are a hard filter (a job's required set must be a subset of the factory's).
Among eligible jobs the score is a weighted sum of terms, every term kept in a breakdown so
the assignment event and ``explain`` can show the operator exactly why:

- capability fit: how closely the factory matches (a specialist beats an over-qualified
  generalist, keeping the generalist free for jobs only it can take);
- affinity: the factory worked on this job before (its checkpoint is likely warm there);
- load: 1 / (1 + jobs it is running);
- cost fit: cheaper factories first (factories state a relative cost 0..1);
- health: 1 for a healthy factory, less if it already failed this job;
- priority: the manifest's 0..9 urgency;
- starvation penalty: young jobs carry a penalty that ages away over ``aging_seconds``
  (~30 min), so an old job eventually outranks newer, otherwise better-fitting work;
- outcome (learned routing, ``fleet.domain.routing``): how this factory and its engine have
  done on jobs of this kind against the fleet's average, from the product's runs; weighted by
  ``outcome`` (0 by default: *shadow mode*, where the claim only records what the learned
  ranking would have chosen). Present only once the product has learned something.

Ties are broken deterministically but differently per factory (a hash of factory and job),
so racing factories spread over the candidates instead of all fighting for the first one.

A factory the job *avoids* (``Job.avoid``: the self-healer took the job back from it after it
stalled there) does not get it while another live factory could take it: it may return there
only once the job has waited its ``graceSeconds`` in the queue with no other taker
(``avoid_reason``; ``explain`` says "avoided: stalled on F").
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from fleet.domain.models import Avoid, Job, ShadowChoice
from fleet.domain.routing import SHADOW_WEIGHT, Learned, Term, engine_of, kind_of
from fleet.domain.stages import Stage


@dataclass(frozen=True)
class Weights:
    capability: float = 1.0
    affinity: float = 0.5
    load: float = 1.0
    cost: float = 0.75
    health: float = 1.0
    starvation: float = 1.5
    priority: float = 1.0
    aging_seconds: float = 1800.0
    # Scores within this distance are treated as a tie (then the per-factory hash decides).
    tie_band: float = 0.05
    # A factory that failed a job this many times is excluded from it, not just penalised.
    exclude_after_failures: int = 2
    # Learned routing's weight; 0: shadow mode (see ``fleet.domain.routing``).
    outcome: float = 0.0


DEFAULT_WEIGHTS = Weights()


@dataclass(frozen=True)
class FactoryView:
    """What the scheduler needs to know about a factory (from its request or document)."""

    id: str
    capabilities: frozenset[str]
    seats: int = 1
    load: int = 0
    cost: float = 0.5
    paused: bool = False
    live: bool = True


@dataclass(frozen=True)
class Breakdown:
    terms: dict[str, float]
    total: float

    def as_dict(self) -> dict[str, object]:
        return {"total": round(self.total, 4), **{k: round(v, 4) for k, v in self.terms.items()}}


@dataclass(frozen=True)
class Verdict:
    """Whether a factory can take a job, why not if it cannot, and its score if it can."""

    factory: str
    eligible: bool
    reasons: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    breakdown: Breakdown | None = None
    extra: dict[str, object] = field(default_factory=dict)


def failures_by(job: Job, factory_id: str) -> int:
    return sum(1 for f in job.failedBy if f == factory_id)


def avoided(job: Job, factory_id: str) -> Avoid | None:
    """The job's newest avoid entry for this factory, if any."""
    return next((a for a in reversed(job.avoid) if a.factory == factory_id), None)


def queued_since(job: Job) -> datetime:
    """When the job last entered the queue: the newest event that moved it there (else its
    last change, which is no earlier: it only delays a return, never hastens one)."""
    for event in reversed(job.events):
        if event.toStage is Stage.QUEUED and event.fromStage is not Stage.QUEUED:
            return event.at
    return job.updatedAt


def avoid_reason(job: Job, factory: FactoryView, now: datetime) -> str | None:
    """Why ``factory`` may not take the job because the job avoids it, or None.

    It may not before the job has waited the avoid entry's ``graceSeconds`` in the queue:
    a job every other factory left there that long has no clean worker to go to, and may go
    back. The wait is the evidence, not a view of the fleet's free seats (which the claim does
    not have and a stale view would get wrong both ways: a factory that looks free but is not
    would keep the job from the only one that could run it, forever)."""
    entry = avoided(job, factory.id)
    if entry is None:
        return None
    if (now - queued_since(job)).total_seconds() < entry.graceSeconds:
        return f"avoided: {entry.reason}"
    return None


def hard_filter(job: Job, factory: FactoryView, weights: Weights = DEFAULT_WEIGHTS) -> Verdict:
    missing = tuple(sorted(set(job.capabilities) - factory.capabilities))
    reasons: list[str] = []
    if missing:
        reasons.append("missing capabilities: " + ", ".join(missing))
    if factory.paused:
        reasons.append("factory is paused")
    if not factory.live:
        reasons.append("factory is not live")
    if factory.load >= factory.seats:
        reasons.append(f"factory is busy ({factory.load}/{factory.seats} seats)")
    if failures_by(job, factory.id) >= weights.exclude_after_failures:
        reasons.append(f"factory already failed this job {failures_by(job, factory.id)} times")
    return Verdict(
        factory=factory.id, eligible=not reasons, reasons=tuple(reasons), missing=missing
    )


def outcome_term(job: Job, factory: FactoryView, learned: Learned | None) -> Term | None:
    """The learned term for this job's kind on this factory (and its engine), or None when
    nothing was learned."""
    if learned is None or learned.empty:
        return None
    kind = kind_of(job.persona, job.capabilities)
    return learned.term(kind, factory.id, engine_of(factory.capabilities))


def score(
    job: Job,
    factory: FactoryView,
    now: datetime,
    weights: Weights = DEFAULT_WEIGHTS,
    learned: Learned | None = None,
) -> Breakdown:
    required = len(set(job.capabilities))
    offered = len(factory.capabilities)
    capability = (required + 1) / (offered + 1) if offered >= required else 0.0
    affinity = 1.0 if job.checkpoint is not None and factory.id in _previous_holders(job) else 0.0
    load = 1.0 / (1.0 + max(0, factory.load))
    cost = 1.0 - min(1.0, max(0.0, factory.cost))
    failures = failures_by(job, factory.id)
    health = 1.0 / (1.0 + failures)
    priority = job.priority / 9.0
    age = max(0.0, (now - job.createdAt).total_seconds())
    starvation = max(0.0, 1.0 - age / weights.aging_seconds) if weights.aging_seconds > 0 else 0.0
    terms = {
        "capability": weights.capability * capability,
        "affinity": weights.affinity * affinity,
        "load": weights.load * load,
        "cost": weights.cost * cost,
        "health": weights.health * health,
        "priority": weights.priority * priority,
        "starvation": -weights.starvation * starvation,
    }
    term = outcome_term(job, factory, learned)
    if term is not None:
        terms["outcome"] = weights.outcome * term.value
    return Breakdown(terms=terms, total=sum(terms.values()))


def shadow_choice(
    jobs: Sequence[Job],
    ranked: Sequence[tuple[Job, Breakdown]],
    factory: FactoryView,
    now: datetime,
    weights: Weights,
    learned: Learned | None,
) -> ShadowChoice | None:
    """Shadow mode's note: the job the learned ranking (``SHADOW_WEIGHT``) would put first
    among ``jobs``, and whether it is the first of ``ranked`` (today's ranking of the same
    jobs). None when there is nothing to note: learning is on, nothing was learned, or
    nothing is eligible."""
    if weights.outcome != 0 or learned is None or learned.empty or not ranked:
        return None
    trial = rank(jobs, factory, now, dataclasses.replace(weights, outcome=SHADOW_WEIGHT), learned)
    choice = trial[0][0].id
    return ShadowChoice(job=choice, agrees=choice == ranked[0][0].id)


def _previous_holders(job: Job) -> set[str]:
    return {e.holder for e in job.events if e.type == "assign" and e.holder}


def _spread(factory_id: str, job_id: str) -> int:
    digest = hashlib.blake2b(f"{factory_id}\x1f{job_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def rank(
    jobs: Iterable[Job],
    factory: FactoryView,
    now: datetime,
    weights: Weights = DEFAULT_WEIGHTS,
    learned: Learned | None = None,
) -> list[tuple[Job, Breakdown]]:
    """Eligible jobs for this factory, best first. Deterministic for the same inputs."""
    scored = [
        (job, score(job, factory, now, weights, learned))
        for job in jobs
        if _eligible_for_claim(job, factory, weights) and avoid_reason(job, factory, now) is None
    ]
    if not scored:
        return []
    # Near-ties are measured from the best score, not cut into fixed bands: with fixed bands
    # a queue of like jobs submitted over a few seconds straddles a band edge, the top band
    # holds one or two jobs, and every racing factory goes for them (measured: 1.5 lost
    # compare-and-swaps per claim with 32 factories).
    best = max(breakdown.total for _, breakdown in scored)

    def order(item: tuple[Job, Breakdown]) -> tuple[int, float, int, str]:
        job, breakdown = item
        if best - breakdown.total <= weights.tie_band:
            return (0, 0.0, _spread(factory.id, job.id), job.id)
        return (1, -breakdown.total, _spread(factory.id, job.id), job.id)

    return sorted(scored, key=order)


def _eligible_for_claim(job: Job, factory: FactoryView, weights: Weights) -> bool:
    # The claiming factory's own load and seats are its business (it asks when it has a free
    # seat); only what it is and what it did to this job matter here.
    if not set(job.capabilities) <= factory.capabilities:
        return False
    return failures_by(job, factory.id) < weights.exclude_after_failures


def explain(
    job: Job,
    factories: Sequence[FactoryView],
    now: datetime,
    weights: Weights = DEFAULT_WEIGHTS,
    learned: Learned | None = None,
) -> list[Verdict]:
    """Every factory's verdict on this job: eligible ones best first, then the others. With
    a learned model, each verdict's ``extra["outcome"]`` holds the term's evidence."""
    verdicts: list[Verdict] = []
    for factory in factories:
        verdict = hard_filter(job, factory, weights)
        breakdown = score(job, factory, now, weights, learned) if not verdict.missing else None
        term = outcome_term(job, factory, learned) if not verdict.missing else None
        avoiding = avoid_reason(job, factory, now)
        reasons = (*verdict.reasons, avoiding) if avoiding else verdict.reasons
        verdicts.append(
            Verdict(
                factory=verdict.factory,
                eligible=not reasons,
                reasons=reasons,
                missing=verdict.missing,
                breakdown=breakdown,
                extra={"outcome": term.evidence()} if term is not None else {},
            )
        )
    return sorted(
        verdicts,
        key=lambda v: (not v.eligible, -(v.breakdown.total if v.breakdown else -1e9), v.factory),
    )


def can_ever_run(job: Job, factories: Iterable[FactoryView]) -> bool:
    """False when no known factory advertises every capability the job requires."""
    return capabilities_offered(job.capabilities, factories)


def capabilities_offered(required: Iterable[str], factories: Iterable[FactoryView]) -> bool:
    """Whether some known factory advertises every one of ``required``."""
    needed = set(required)
    return any(needed <= f.capabilities for f in factories)
