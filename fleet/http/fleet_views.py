"""Replies of the claim, the queue-state gate, the product-wide event feed, metrics, demand,
learned routing's recommendations, alerts and settings (``fleet.http.fleet_ops``).

The claim and the gate are the hottest paths of the product: their views are built from
values the coordinator already validated (``model_construct``). The rest are read by
operators and built from the plain data the coordinator answers (``model_validate``: a
reply that does not match its model fails loudly).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import Field, WithJsonSchema

from fleet.coordinator.claim import ClaimResult
from fleet.coordinator.routing import RoutingDoc
from fleet.domain.alerts import AlertRules, Severity
from fleet.domain.models import Event, Lease
from fleet.domain.routing import MIN_RUNS_TO_RECOMMEND, Recommendation, recommendations
from fleet.domain.stages import Stage
from fleet.http.views import Cadence, JobView, View, omitted

# A timestamp the coordinator already wrote as text (fixed-width UTC ISO 8601).
TimeText = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]

# --- the claim and the gate ---------------------------------------------------------------


class Limits(View):
    """The effective limits of this attempt."""

    timeoutSeconds: int | None = Field(description="The manifest's, else the product's default.")
    deadlineAt: TimeText | None = Field(
        description="Renewals after this are refused (409 `timeout`)."
    )
    maxCostUsd: float | None = Field(
        description="A reported cost over this ends the attempt (409 `budget_exceeded`)."
    )


class ClaimReply(View):
    """The job assigned to the caller, its lease, and how to keep it."""

    job: JobView
    lease: Lease
    cadence: Cadence
    score: dict[str, float] = Field(description="The score and each of its terms.")
    limits: Limits

    @classmethod
    def of(cls, claimed: ClaimResult) -> Self:
        return cls.model_construct(
            job=JobView.of(claimed.job),
            lease=claimed.lease,
            cadence=Cadence.of(claimed.cadence),
            score=claimed.breakdown,
            limits=Limits.model_construct(**claimed.limits),
        )


class QueueState(View):
    """The claim gate."""

    version: int = Field(description="Moves when work may have become claimable.")
    maxSkipSeconds: int = Field(description="Claim at least this often, moved or not.")


# --- the event feed -----------------------------------------------------------------------


class JobFeedEvent(Event):
    """A job's event in the product-wide feed."""

    jobId: str


class AlertEvent(View):
    """An alert raised or cleared."""

    seq: int = Field(description="Per product, over alert events.")
    type: Literal["alert_raised", "alert_cleared"]
    kind: Literal["raised", "cleared"]
    key: str = Field(
        description="Stable: no_live_factories, starvation, stale_factories, stalled_jobs, "
        "unroutable_jobs, review_waiting, budget, pass_failed."
    )
    severity: Severity
    message: str
    details: dict[str, Any]
    at: TimeText


class AlertFeedEvent(AlertEvent):
    """An alert event in the product-wide feed."""

    jobId: None = Field(description="In the event feed: not a job's.")
    alert: Literal[True] = Field(description="In the event feed.")
    actor: str
    reason: str


class FleetFeedEvent(View):
    """A fleet event in the product-wide feed: enrollment, tokens, registration, commands,
    live/stale/down, budgets, settings, channels, profiles, tracker bindings."""

    fleet: Literal[True] = Field(description="In the event feed: a fleet event.")
    seq: int = Field(description="Per document the event was written with.")
    type: str = Field(description="One of the fleet event types (docs/api.md#event-log).")
    at: TimeText
    actor: str = Field(description="Who: `operator:NAME`, `factory:NAME`, `healer`, ...")
    reason: str | None
    factory: str | None
    jobId: str | None
    details: dict[str, Any]


class ProductEvents(View):
    events: list[JobFeedEvent | AlertFeedEvent | FleetFeedEvent]
    cursor: str | None = Field(
        description="Pass back as `after` (oldest first) or as `before` (newest first)."
    )
    more: bool | None = omitted("Newest first (`before`): whether older events may follow.")

    @classmethod
    def of(cls, events: list[dict[str, Any]], cursor: str | None, more: bool | None = None) -> Self:
        return cls.model_validate({"events": events, "cursor": cursor, "more": more})


# --- learned routing ----------------------------------------------------------------------


class ShadowAgreement(View):
    """How often the learned ranking put first the job the claim's ranking put first, over
    the claims made in shadow mode among the jobs the routing document was learned from."""

    claims: int = Field(description="Claims made in shadow mode that it counts.")
    agreed: int = Field(
        description="Of those, the ones where both rankings put the same job first."
    )
    rate: float | None = Field(description="`agreed` / `claims`; null: no claim counted.")


# A recommendation names two pairs only when one ships at least this many times as often.
MIN_RATIO = 1.2


def _mode(weight: float) -> Literal["shadow", "on"]:
    return "on" if weight != 0 else "shadow"


class LearnedRouting(View):
    """Learned routing in brief: whether its term applies, and how often the learned ranking
    agreed with the claim's while it did not."""

    mode: Literal["shadow", "on"] = Field(
        description="`shadow`: `weights.outcome` is 0, claims only record what the learned "
        "ranking would have chosen; `on`: the term is added to every claim's score."
    )
    weight: float = Field(description="The product's `weights.outcome`.")
    agreement: ShadowAgreement
    learnedAt: TimeText | None = Field(
        description="When the metrics pass last changed what was learned; null: never."
    )

    @classmethod
    def of(cls, stored: Any, weight: float) -> Self:
        """From what the metrics pass stored (``routing``: agreement, learnedAt; absent
        from metrics stored before it was) and the product's weight as of now."""
        brief = stored if isinstance(stored, dict) else {}
        return cls.model_validate(
            {
                "mode": _mode(weight),
                "weight": weight,
                "agreement": brief.get("agreement") or {"claims": 0, "agreed": 0, "rate": None},
                "learnedAt": brief.get("learnedAt"),
            }
        )


class RecommendedPair(View):
    """A factory and its engine on one kind of job: shrunk estimates from its runs."""

    factory: str
    engine: str = Field(description="The engine its runs reported; `-`: none reported.")
    rate: float = Field(description="Success rate, pulled toward the kind's average factory.")
    medianSeconds: float | None = Field(description="Median run duration, likewise pulled.")
    medianCostUsd: float | None = Field(description="Median run cost, likewise pulled.")
    runs: int = Field(description="Its runs of this kind.")


class RecommendationView(View):
    """On one kind of job: the pair that ships most often against the one that ships least."""

    kind: str = Field(
        description="`persona:NAME`, or `caps:A,B` (the required capabilities; `caps:-`: none)."
    )
    sentence: str
    best: RecommendedPair
    worst: RecommendedPair
    ratio: float = Field(description="The best's success rate over the worst's.")
    runs: int = Field(description="Runs behind the two.")


class Recommendations(View):
    """What the product's runs say about who ships which kind of job. Read only: it never
    changes routing."""

    product: str
    mode: Literal["shadow", "on"] = Field(
        description="`shadow` (`weights.outcome` 0: recorded, not applied) or `on`."
    )
    weight: float = Field(description="The product's `weights.outcome`.")
    agreement: ShadowAgreement
    learnedAt: TimeText | None = Field(
        description="When the metrics pass last changed what was learned; null: never."
    )
    jobs: int = Field(description="Jobs whose runs it was learned from.")
    recommendations: list[RecommendationView] = Field(description="The largest gap first.")
    sentences: list[str] = Field(
        description="The same in plain sentences, with the shadow agreement, or why there is "
        "nothing to say yet."
    )

    @classmethod
    def of(cls, kept: RoutingDoc, weight: float) -> Self:
        found = recommendations(kept.learned, min_ratio=MIN_RATIO)
        return cls.model_validate(
            {
                "product": kept.product,
                "mode": _mode(weight),
                "weight": weight,
                "agreement": kept.agreement.as_dict(),
                "learnedAt": kept.updatedAt,
                "jobs": kept.jobs,
                "recommendations": [r.as_dict() for r in found],
                "sentences": _sentences(kept, weight, found),
            }
        )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _sentences(kept: RoutingDoc, weight: float, found: list[Recommendation]) -> list[str]:
    """The recommendations as plain sentences (or why there is none), then what learned
    routing does with claims."""
    if kept.learned.empty:
        if kept.updatedAt is None:
            said = ["Nothing learned yet: the metrics pass has not read this product's runs."]
        elif kept.jobs == 0:
            said = ["Nothing learned yet: no job of this product has run."]
        else:
            said = [
                f"Nothing learned yet: no run of the {_plural(kept.jobs, 'job')} the "
                "metrics pass read has shipped or failed on a factory."
            ]
    elif found:
        said = [r.sentence() for r in found]
    else:
        runs = sum(e.runs for e in kept.learned.evidence.values())
        said = [
            f"No recommendation yet: over {_plural(runs, 'run')} of "
            f"{_plural(kept.jobs, 'job')}, no kind of job has two factory and engine pairs "
            f"of {MIN_RUNS_TO_RECOMMEND} runs or more, one shipping {MIN_RATIO:g}x as often "
            "as the other."
        ]
    agreement, rate = kept.agreement, kept.agreement.rate
    tally = (
        None
        if rate is None
        else f"{agreement.agreed} of {_plural(agreement.claims, 'claim')} ({rate:.0%})"
    )
    if weight == 0 and tally is not None:
        said.append(
            f"Shadow mode: the learned ranking agreed with today's on {tally}. "
            "Set weights.outcome above 0 to apply it."
        )
    elif weight != 0:
        said.append(
            f"Learned routing is on: weights.outcome ({weight:g}) times the learned term is "
            "added to each job's score when a factory claims"
            + (
                "."
                if tally is None
                else f"; before, in shadow mode, the learned ranking agreed with the ranking "
                f"without it on {tally}."
            )
        )
    return said


# --- metrics ------------------------------------------------------------------------------


class Utilization(View):
    held: int = Field(description="Jobs assigned, building or testing.")
    seats: int = Field(description="Seats of the live factories.")
    fraction: float | None


class FleetCount(View):
    total: int
    live: int
    stale: list[str]
    down: list[str]


class WaitingJob(View):
    jobId: str
    waitingSeconds: float


class Starvation(View):
    thresholdSeconds: float
    count: int
    jobs: list[WaitingJob] = Field(description="The longest waiting first.")


class Stalled(View):
    count: int
    jobs: list[str]


class ReviewWaiting(View):
    thresholdSeconds: float
    oldestSeconds: float | None
    overdue: int
    waiting: list[WaitingJob] = Field(description="The overdue ones, the longest waiting first.")


class Spend(View):
    spentUsd: float
    reservedUsd: float
    ceilingUsd: float | None
    fraction: float | None


class MetricsBudget(View):
    """The product's budget when the metrics were computed."""

    product: str
    ceilingUsd: float | None
    spentUsd: float
    reservedUsd: float
    remainingUsd: float | None
    usedFraction: float | None
    paused: bool
    autoPaused: bool
    reservations: int
    updatedAt: TimeText | None


class PassFailures(View):
    """Timer passes over the product given up (their messages poisoned) within the window."""

    count: int
    timers: list[str] = Field(description="The timers whose passes were given up.")
    lastAt: TimeText | None
    windowSeconds: int = Field(description="How long a pass given up counts (and alerts).")


class Metrics(View):
    """What the metrics timer computed last."""

    at: TimeText
    queueDepth: dict[Stage, int] = Field(description="Jobs per stage.")
    oldestQueuedSeconds: float | None
    utilization: Utilization
    factories: FleetCount
    starvation: Starvation
    stalled: Stalled
    unroutable: int
    unroutableJobs: list[str]
    review: ReviewWaiting | None = omitted(
        "Jobs waiting in review; absent from metrics stored before they were counted."
    )
    scanned: int = Field(description="Oldest queued jobs looked at.")
    truncated: bool
    spend: Spend | None
    budget: MetricsBudget | None = omitted("Only when the product has a budget.")
    passFailures: PassFailures | None = omitted(
        "Timer passes given up; absent from metrics stored before they were counted."
    )
    routing: LearnedRouting = Field(
        description="Learned routing: its shadow agreement and when it last learned, as the "
        "metrics pass stored them, and its mode and weight as the product's settings say now."
    )


# --- demand -------------------------------------------------------------------------------


class SetDemandView(View):
    """What the product's work asks of factories offering one capability set."""

    capabilities: list[str] = Field(description="The set the jobs require, sorted.")
    queued: int = Field(description="Jobs waiting that require exactly this set.")
    routable: int = Field(
        description="Of those, the ones a factory offering the set could take now: the "
        "product's budget paused, or a job's estimate over what is left, is not routable."
    )
    oldestQueuedSeconds: float | None = Field(
        description="How long ago the oldest waiting one was submitted, as of this reply."
    )
    running: int = Field(description="Jobs requiring this set under lease now.")
    liveSeats: int = Field(
        description="Seats of live factories, neither paused nor draining, that offer it."
    )


class DemandView(View):
    """What the product's queued and running work asks of the fleet, by capability set."""

    product: str
    sets: list[SetDemandView]
    queued: int = Field(description="Over the sets replied: jobs waiting.")
    routable: int = Field(description="Over the sets replied: jobs a factory could take now.")
    running: int = Field(description="Over the sets replied: jobs under lease.")
    updatedAt: TimeText | None = Field(
        description="When it last changed (kept by the reaper's pass: it lags what it says "
        "by at most one reaper period); null: never computed."
    )
    truncated: bool = Field(description="The queue held more jobs than one refresh reads.")


# --- alerts -------------------------------------------------------------------------------


class ActiveAlert(View):
    key: str
    severity: Severity
    message: str
    details: dict[str, Any]
    since: TimeText
    updatedAt: TimeText


class AlertWebhook(View):
    """Where the alert webhook's delivery stands."""

    configured: bool
    cursor: str | None
    attempts: int | None
    nextAttemptAt: TimeText | None
    lastError: str | None


class Alerts(View):
    active: list[ActiveAlert] = Field(description="Oldest first.")
    history: list[AlertEvent] = Field(description="Newest first.")
    evaluatedAt: TimeText | None
    webhook: AlertWebhook | None = Field(
        description="Where the alert webhook's delivery stands: operators only (null for a "
        "factory token). Its `lastError` is a status code or an error class, never a message."
    )


# --- settings -----------------------------------------------------------------------------


class Preemption(View):
    """A critical job with no free seat may evict the lowest-priority running job."""

    enabled: bool
    minPriority: int
    afterSeconds: float


class Settings(View):
    """The product's settings in force."""

    weights: dict[str, float] = Field(description="The scheduler's weights.")
    preemption: Preemption
    alerts: AlertRules
    timeoutSeconds: int | None = Field(
        description="An attempt's timeout when its manifest names none."
    )
