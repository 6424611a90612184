"""Replies about the fleet's factories: a factory as recorded, the fleet list, what a
heartbeat answers, operator commands, the last heartbeat, leaving the fleet.

A factory registers and beats often: those views are built from values the coordinator
already validated (``model_construct``). What operators read of heartbeats is plain data
from the heartbeat table, validated as it is built (``model_validate``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Self

from pydantic import MISSING, Field

from fleet.coordinator import fleet_health as health
from fleet.domain.models import Factory, Job, Timestamp
from fleet.http.fleet_views import TimeText
from fleet.http.views import JobView, View, omitted

# --- factories ----------------------------------------------------------------------------


class FactoryRecord(Factory):
    """A factory as the coordinator recorded it (what it said of itself, and what the
    operator and the self-healer decided)."""

    type: Literal["factory"] = Field(default="factory", exclude=True)

    @classmethod
    def of(cls, factory: Factory) -> Self:
        return cls.model_construct(**factory.__dict__)


class IdleJob(View):
    jobId: str
    leaseEpoch: int
    idleSeconds: float = Field(description="Since the progress last changed.")


class HeartbeatSummary(View):
    """A factory's last heartbeat in brief. `at` null: commands wait for a factory that has
    not beaten yet."""

    at: TimeText | None
    ageSeconds: float | None
    load: int | None
    seats: int | None
    jobs: list[IdleJob]
    pendingCount: int = Field(description="Commands not yet acknowledged.")
    pendingKinds: list[str]


class FactoryListItem(FactoryRecord):
    id: str = Field(description="The factory's name.")
    live: bool = Field(description="Seen within the stale threshold.")
    # Null for an operator when there is none, absent for a factory (``omitted`` would
    # drop the null too).
    heartbeat: HeartbeatSummary | MISSING | None = Field(
        default=MISSING, description="Operators only: the last heartbeat in brief; null when none."
    )


class FactoryList(View):
    factories: list[FactoryListItem]

    @classmethod
    def of(
        cls,
        known: list[Factory],
        live: Mapping[str, bool],
        beats: Mapping[str, dict[str, Any]] | None,
    ) -> Self:
        """``known`` with each one's liveness and, when ``beats`` is given (operators), its
        last heartbeat in brief (null when none)."""
        items = []
        for factory in known:
            name = health.short_id(factory)
            values = {**factory.__dict__, "id": name, "live": live.get(name, False)}
            if beats is not None:
                beat = beats.get(name)
                values["heartbeat"] = HeartbeatSummary.model_validate(beat) if beat else None
            items.append(FactoryListItem.model_construct(**values))
        return cls.model_construct(factories=items)


# --- heartbeats and commands --------------------------------------------------------------


class Command(View):
    """An operator command waiting for the factory's acknowledgement."""

    id: str = Field(description="Pass it back in `ack`.")
    kind: health.CommandKind
    jobId: str | None
    issuedAt: Timestamp
    issuedBy: str
    reason: str | None

    @classmethod
    def of(cls, command: health.Command) -> Self:
        return cls.model_construct(
            id=command.id,
            kind=command.kind,
            jobId=command.job_id,
            issuedAt=command.issued_at,
            issuedBy=command.issued_by,
            reason=command.reason,
        )


class BeatCadence(View):
    heartbeatSeconds: int


class HeartbeatReply(View):
    """What a heartbeat answers. `status` `deregistered` or `revoked`: the beat changed
    nothing."""

    status: health.BeatStatus
    cadence: BeatCadence
    commands: list[Command] = Field(description="Delivered on every reply until acknowledged.")

    @classmethod
    def of(cls, beaten: health.HeartbeatReply) -> Self:
        return cls.model_construct(
            status=beaten.status,
            cadence=BeatCadence.model_construct(heartbeatSeconds=beaten.heartbeat_seconds),
            commands=[Command.of(c) for c in beaten.commands],
        )


class CommandIssued(View):
    command: Command
    job: JobView | None = omitted("The job `cancel-job` cancelled.")

    @classmethod
    def of(cls, command: health.Command, job: Job | None) -> Self:
        return cls.model_construct(
            command=Command.of(command), job=JobView.of(job) if job is not None else None
        )


class HeldJob(View):
    """A held job's progress as last reported."""

    jobId: str
    leaseEpoch: int
    tokens: int
    costUsd: float
    lastActivityAt: TimeText | None
    lastOutputLine: str | None
    progressChangedAt: TimeText
    idleSeconds: float = Field(description="Since the progress last changed.")


class FactoryHeartbeat(View):
    """A factory's last heartbeat, its progress per held job, and its pending commands."""

    factory: str
    at: TimeText | None
    ageSeconds: float | None
    status: str | None
    load: int
    seats: int
    capabilities: list[str]
    version: str | None
    jobs: list[HeldJob]
    pendingCommands: list[Command]


class Deregistration(View):
    factory: str
    deregistered: bool
