"""The documents of the domain, as frozen pydantic models.

A model is read from a store document with ``from_doc`` and written back with ``to_doc``; the
etag rides along (``etag``) and is never written. Timestamps are stored as fixed-width UTC ISO
strings so that they compare correctly as strings inside Cosmos queries.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
)

from fleet.domain.stages import LEASED, Stage

TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def format_ts(value: datetime) -> str:
    if value.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return value.astimezone(UTC).strftime(TS_FORMAT)


def parse_ts(value: Any) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        return value.astimezone(UTC)
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            raise ValueError("timestamps must carry a timezone")
        return parsed.astimezone(UTC)
    raise ValueError(f"not a timestamp: {value!r}")


Timestamp = Annotated[
    datetime,
    BeforeValidator(parse_ts),
    PlainSerializer(format_ts, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    def evolve(self, **changes: Any) -> Self:
        """A copy with ``changes``, validated as a new model would be: a value of the wrong
        type is refused (``ValidationError``), never stored (``model_copy`` would keep it).
        Nested models already built are taken as they are, not validated again."""
        return self.model_validate({**self.__dict__, **changes})


class Document(Model):
    id: str
    productId: str
    etag: str | None = Field(default=None, alias="_etag", exclude=True)

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Self:
        return cls.model_validate(doc)

    def to_doc(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude={"etag"})


class Lease(Model):
    holder: str
    epoch: int
    expiresAt: Timestamp
    # The claim request that won this lease (the factory's own id): a claim retried after
    # its reply was lost finds the lease it already holds by it instead of taking another.
    requestId: str | None = None


class Event(Model):
    seq: int
    type: str
    at: Timestamp
    actor: str
    epoch: int
    fromStage: Stage | None = None
    toStage: Stage
    holder: str | None = None
    reason: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class Deps(Model):
    mode: Literal["all", "any"] = "all"
    jobs: tuple[str, ...] = ()


class ReviewSpec(Model):
    """What a job's review needs: ``approvals`` from as many distinct reviewers in one
    round; with ``distinctKind``, reviewers whose kind differs from the author's; at most
    ``maxRounds`` rounds (a rejection in the last one fails the job)."""

    approvals: int = 1
    distinctKind: bool = False
    maxRounds: int = 3


class ReviewVote(Model):
    reviewer: str  # the actor: "operator:alice", "factory:f2"
    kind: str  # what the reviewer counts as: "human", an engine, "claude+codex"
    verdict: Literal["approve", "reject"]
    comments: str = ""
    at: Timestamp


class ReviewRequest(Model):
    by: str
    reviewers: tuple[str, ...] = ()
    note: str | None = None
    at: Timestamp


class ReviewRound(Model):
    """A closed round, kept in the job's review history."""

    round: int
    outcome: str  # approved, rejected, exhausted, withdrawn (left review otherwise)
    author: str | None = None
    authorKind: str = "unknown"
    votes: tuple[ReviewVote, ...] = ()


class ReviewState(Model):
    """The job's review: the current (or last) round and the rounds before it."""

    round: int  # 1 on the first entry into review, +1 on each entry after
    outcome: Literal["open", "approved", "rejected", "exhausted"] = "open"
    author: str | None = None  # the factory whose attempt is under review
    authorKind: str = "unknown"
    votes: tuple[ReviewVote, ...] = ()
    requests: tuple[ReviewRequest, ...] = ()
    openedAt: Timestamp
    history: tuple[ReviewRound, ...] = ()


class ProfileSnapshot(Model):
    name: str
    version: int
    preamble: str
    engine: str | None = None
    capabilities: tuple[str, ...] = ()


class Tokens(Model):
    input: int = 0
    output: int = 0
    cacheRead: int = 0
    cacheWrite: int = 0


class DiffStat(Model):
    files: int = 0
    insertions: int = 0
    deletions: int = 0


RunOutcome = Literal[
    "shipped", "failed", "retry", "timeout", "budget_exceeded", "fenced", "released", "taken_back"
]


class ShadowChoice(Model):
    """Shadow mode's note on the run a claim opened (``fleet.domain.routing``): the job the
    learned ranking would have put first (``job``), and whether today's ranking put the same
    job first (``agrees``). Only when learned routing's weight is 0 and something was
    learned."""

    job: str
    agrees: bool


class Run(Model):
    """One attempt (one epoch): opened by the claim, closed (``outcome``, ``endedAt``) in the
    same write as whatever ended the attempt. See ``fleet.domain.runs``."""

    epoch: int
    factory: str
    engine: str | None = None
    engineVersion: str | None = None
    startedAt: Timestamp
    endedAt: Timestamp | None = None
    deadlineAt: Timestamp | None = None
    maxCostUsd: float | None = None
    outcome: RunOutcome | None = None
    reason: str | None = None
    exitCode: int | None = None
    tokens: Tokens = Field(default_factory=Tokens)
    costUsd: float | None = None  # None: unknown (never reported as 0 when unknown)
    diff: DiffStat | None = None
    branch: str | None = None
    commit: str | None = None
    prUrl: str | None = None
    prNote: str | None = None
    artifacts: tuple[str, ...] = ()
    artifactErrors: tuple[str, ...] = ()
    durationSeconds: float | None = None
    learned: ShadowChoice | None = None


class Avoid(Model):
    """A factory the scheduler keeps a job away from (``fleet.domain.scheduler``): written by
    the self-healer with the take-back of a job that stalled there. It may return there only
    once the job has waited ``graceSeconds`` in the queue with no other live factory taking
    it."""

    factory: str
    reason: str  # "stalled on F"
    at: Timestamp
    graceSeconds: int


class Job(Document):
    type: Literal["job"] = "job"
    title: str
    persona: str | None = None
    profile: ProfileSnapshot | None = None
    capabilities: tuple[str, ...] = ()
    priority: int = 5
    budgetUsd: float | None = None
    channel: str | None = None
    deps: Deps | None = None
    idempotencyKey: str | None = None
    maxAttempts: int = 3
    leaseSeconds: int = 300
    verify: str | None = None
    body: str = ""
    repo: str | None = None  # git URL the factory checks out (never with credentials)
    base: str | None = None  # branch to start from; None: the remote's default branch
    pr: bool = False  # open a pull request for the shipped branch
    timeoutSeconds: int | None = None  # per attempt; None: the product's default, if any
    maxCostUsd: float | None = None  # per attempt

    stage: Stage
    epoch: int = 0
    lease: Lease | None = None
    attempts: int = 0
    checkpoint: Any = None
    progress: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    failedBy: tuple[str, ...] = ()
    unroutable: bool = False
    stalled: bool = False  # flagged by the self-healer: holder alive, progress not moving
    # Some job waits for this one (a child of a parent, a dependency named in ``deps``): its
    # ship then looks for jobs to unblock. A hint, never the only way: the reaper's pass
    # unblocks whatever a missed hint leaves waiting.
    hasDependents: bool = False
    avoid: tuple[Avoid, ...] = ()  # factories it stalled on (the healer), newest last
    costs: dict[str, float] = Field(default_factory=dict)  # USD reported per attempt (epoch)
    reservation: str | None = None  # the budget reservation of the current attempt
    parentId: str | None = None  # set on the children of a decomposed job
    children: tuple[str, ...] = ()  # the jobs this one was decomposed into
    tracker: dict[str, Any] | None = None  # {source, id, url} when it came from a tracker
    review: ReviewSpec | None = None  # the manifest's review quorum, if it asks for one
    reviewState: ReviewState | None = None  # set when the job first enters review

    createdAt: Timestamp
    updatedAt: Timestamp
    lastEventAt: Timestamp
    queueKey: str
    seq: int = 0
    events: tuple[Event, ...] = ()
    spilledThrough: int = 0  # events with seq <= this live in event documents
    runs: tuple[Run, ...] = ()  # the newest attempts, oldest first (fleet.domain.runs)
    runsSpilledThrough: int = 0  # runs with epoch <= this live in run documents

    @property
    def due_at(self) -> datetime | None:
        """When a timer next has something to do with this job, kept in its document as
        ``dueAt`` (``to_doc``): in the same write as what it derives from, so it is never out
        of step. A leased job: its lease's expiry, when the reaper requeues it (a renewal
        moves it). Any other job: none (a waiting job's product is found by its stage, a
        blocked job is released by the transitions of what it waits for, each an event the
        sweeps see, and a finished job needs nothing). The timers' sweeps ask for
        ``dueAt < now`` across products (``fleet.coordinator.sweep``), so a product whose
        leases are all in date costs nothing."""
        if self.stage in LEASED:
            return self.lease.expiresAt if self.lease is not None else self.updatedAt
        return None

    def to_doc(self) -> dict[str, Any]:
        doc = super().to_doc()
        due = self.due_at
        if due is not None:
            doc["dueAt"] = format_ts(due)
        return doc


class EventDoc(Document):
    """A spilled event: ``id`` is ``{jobId}:{seq}``, so spilling twice creates nothing new."""

    type: Literal["event"] = "event"
    jobId: str
    seq: int
    event: Event
    ttl: int | None = None


class RunDoc(Document):
    """A spilled run: ``id`` is ``run:{jobId}:{epoch}``, so spilling twice creates nothing new."""

    type: Literal["run"] = "run"
    jobId: str
    epoch: int
    run: Run


class Factory(Document):
    """What the coordinator knows of a factory: its own claims about itself, last seen."""

    type: Literal["factory"] = "factory"
    capabilities: tuple[str, ...] = ()
    seats: int = 1
    # The most seats its enrollment allowed (the enrollment token's ``maxSeats``, set by an
    # operator): it never holds more live leases than these or its own ``seats``, whatever
    # it re-registers. None: no limit but its own seats.
    maxSeats: int | None = None
    # Its review kind (``fleet.domain.review``), fixed at enrollment from what the operator
    # set on the enrollment token (its ``kind``, else its allowlist), else from what it
    # enrolled with: never from what it re-registers. None: registered without enrolling.
    reviewKind: str | None = None
    load: int = 0
    cost: float = 0.5  # relative cost of running here, 0 (cheap) .. 1 (dear)
    version: str | None = None
    paused: bool = False  # claims nothing new (operator command); running jobs go on
    draining: bool = False  # finishing what it holds, then leaving
    status: Literal["live", "stale", "down"] = "live"  # set by the self-healer
    revoked: bool = False  # its token was revoked: its held jobs go back to the queue
    deregistered: bool = False  # left the fleet: likewise
    # Enrolled with an ephemeral token (an autoscaled worker): pruned once silent for the
    # healer's ``down_after`` rather than its ``prune_after`` (``fleet.domain.healer``).
    ephemeral: bool = False
    lastSeen: Timestamp
    # Its fleet events (``fleet.domain.audit``): registered, live/stale/down, commands...,
    # written with the change each describes; the older ones spilled.
    events: tuple[dict[str, Any], ...] = ()
    eventSeq: int = 0
    lastEventAt: Timestamp | None = None

    @property
    def seat_limit(self) -> int:
        """The most live leases it may hold at once."""
        return min(self.seats, self.maxSeats or self.seats)


class Profile(Document):
    type: Literal["profile"] = "profile"
    name: str
    version: int
    preamble: str
    engine: str | None = None
    capabilities: tuple[str, ...] = ()
    description: str | None = None
    createdAt: Timestamp

    def snapshot(self) -> ProfileSnapshot:
        return ProfileSnapshot(
            name=self.name,
            version=self.version,
            preamble=self.preamble,
            engine=self.engine,
            capabilities=self.capabilities,
        )


def queue_key(priority: int, created_at: datetime, job_id: str) -> str:
    """Sorts ascending as the queue should be served: higher priority first, then oldest."""
    return f"{9 - priority}:{format_ts(created_at)}:{job_id}"
