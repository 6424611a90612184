"""Replies of the claim, the queue-state gate, the product-wide event feed, metrics, alerts
and settings (``fleet.http.fleet_ops``).

The claim and the gate are the hottest paths of the product: their views are built from
values the coordinator already validated (``model_construct``). The rest are read by
operators and built from the plain data the coordinator answers (``model_validate``: a
reply that does not match its model fails loudly).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import Field, WithJsonSchema

from fleet.coordinator.claim import ClaimResult
from fleet.domain.alerts import AlertRules, Severity
from fleet.domain.models import Event, Lease
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
