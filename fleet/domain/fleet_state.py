"""What a factory says in a heartbeat, and what the coordinator keeps of it. Pure.

A heartbeat carries the factory's profile (capabilities, seats, version, cost), its load, the
progress of each job it holds and the ids of the commands it has acted on (``Beat``). The
coordinator keeps the last one (``HeartbeatRecord``, stored by ``fleet.coordinator.heartbeats``):
per held job, the progress last reported, its fingerprint and when the fingerprint last changed
(``track``) — what the healer's stall detection reads (``fleet.domain.healer``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from fleet.domain.models import Factory, format_ts, parse_ts
from fleet.errors import ConditionFailed, NotFound

FACTORY_PREFIX = "factory-"

FactoryStatus = Literal["live", "stale", "down"]
# What a heartbeat reply says about the caller: live, or why its beats no longer count.
BeatStatus = Literal["live", "deregistered", "revoked"]

MAX_JOBS_PER_BEAT = 256  # a factory's seats are at most 256
MAX_OUTPUT_LINE_CHARS = 500


class FactoryNotFound(NotFound):
    """No such factory."""

    code = "factory_not_found"


class FactoryDeregistered(ConditionFailed):
    """The factory has left the fleet; it must register again first. Nothing was changed."""

    code = "factory_deregistered"


class NotHeld(ConditionFailed):
    """The job is not held by this factory. Nothing was changed."""

    code = "not_held"


def short_id(factory: Factory) -> str:
    """The factory's own id (its document's id without the ``factory-`` prefix)."""
    return factory.id.removeprefix(FACTORY_PREFIX)


# --- what a factory says in a heartbeat ------------------------------------------------


@dataclass(frozen=True)
class JobProgress:
    """A held job's progress as the factory reports it."""

    job_id: str
    lease_epoch: int
    tokens: int = 0
    cost_usd: float = 0.0
    last_activity_at: datetime | None = None
    last_output_line: str | None = None


@dataclass(frozen=True)
class Beat:
    capabilities: tuple[str, ...] = ()
    seats: int = 1
    load: int = 0
    version: str | None = None
    cost: float | None = None  # None: keep what the factory registered with
    jobs: tuple[JobProgress, ...] = ()
    ack: tuple[str, ...] = ()  # ids of commands the factory has acted on


def profile_key(capabilities: Iterable[str], seats: int, version: str | None, cost: Any) -> str:
    """What the factory document records about the factory (load aside, which changes on
    every beat and lives only in the heartbeat): a change means a rare Cosmos write."""
    return json.dumps([sorted(set(capabilities)), seats, version, cost])


# --- what is kept of it ------------------------------------------------------------------


@dataclass(frozen=True)
class TrackedJob:
    """A held job's progress as stored in the heartbeat entity: what was last reported, its
    fingerprint, and when the fingerprint last changed (server time) — what stall detection
    needs."""

    job_id: str
    lease_epoch: int
    tokens: int
    cost_usd: float
    last_activity_at: str | None
    last_output_line: str | None
    fingerprint: str
    changed_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return {
            "jobId": self.job_id,
            "leaseEpoch": self.lease_epoch,
            "tokens": self.tokens,
            "costUsd": self.cost_usd,
            "lastActivityAt": self.last_activity_at,
            "lastOutputLine": self.last_output_line,
            "fingerprint": self.fingerprint,
            "progressChangedAt": format_ts(self.changed_at),
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TrackedJob:
        return cls(
            job_id=str(raw["jobId"]),
            lease_epoch=int(raw["leaseEpoch"]),
            tokens=int(raw.get("tokens") or 0),
            cost_usd=float(raw.get("costUsd") or 0.0),
            last_activity_at=raw.get("lastActivityAt"),
            last_output_line=raw.get("lastOutputLine"),
            fingerprint=str(raw["fingerprint"]),
            changed_at=parse_ts(raw["progressChangedAt"]),
        )


def truncate(line: str | None, limit: int) -> str | None:
    """``line`` cut to ``limit`` characters, an ellipsis marking the cut."""
    if line is None or len(line) <= limit:
        return line
    return line[: max(0, limit - 1)] + "…" if limit > 0 else ""


def progress_fingerprint(
    epoch: int, tokens: int, cost_usd: float, activity: str | None, line: str | None
) -> str:
    raw = json.dumps([epoch, tokens, round(cost_usd, 6), activity, line])
    return hashlib.blake2b(raw.encode(), digest_size=8).hexdigest()


def track(
    previous: Mapping[str, TrackedJob], reported: Iterable[JobProgress], now: datetime
) -> dict[str, TrackedJob]:
    """The progress to store: the reported jobs (at most ``MAX_JOBS_PER_BEAT``, output lines
    cut to ``MAX_OUTPUT_LINE_CHARS``), each keeping the time its progress last changed. A job
    reported at a new lease epoch starts afresh. Jobs no longer reported are dropped."""
    out: dict[str, TrackedJob] = {}
    for p in reported:
        line = truncate(p.last_output_line, MAX_OUTPUT_LINE_CHARS)
        activity = format_ts(p.last_activity_at) if p.last_activity_at else None
        fp = progress_fingerprint(p.lease_epoch, p.tokens, p.cost_usd, activity, line)
        before = previous.get(p.job_id)
        changed_at = before.changed_at if before and before.fingerprint == fp else now
        out[p.job_id] = TrackedJob(
            job_id=p.job_id,
            lease_epoch=p.lease_epoch,
            tokens=p.tokens,
            cost_usd=p.cost_usd,
            last_activity_at=activity,
            last_output_line=line,
            fingerprint=fp,
            changed_at=changed_at,
        )
    kept = sorted(out)[:MAX_JOBS_PER_BEAT]
    return {job_id: out[job_id] for job_id in kept}


@dataclass(frozen=True)
class HeartbeatRecord:
    """The heartbeat entity, read back (``fleet.coordinator.heartbeats.heartbeat_record``)."""

    factory: str
    at: datetime | None  # server time of the last heartbeat; None: never beat
    load: int
    seats: int
    capabilities: tuple[str, ...]
    version: str | None
    cost: float | None
    status: str | None  # the factory document's status as last known here
    profile: str | None
    jobs: Mapping[str, TrackedJob]
    etag: str | None

    def _age(self, now: datetime) -> float | None:
        return round((now - self.at).total_seconds(), 3) if self.at else None

    def view(self, now: datetime) -> dict[str, Any]:
        return {
            "factory": self.factory,
            "at": format_ts(self.at) if self.at else None,
            "ageSeconds": self._age(now),
            "status": self.status,
            "load": self.load,
            "seats": self.seats,
            "capabilities": list(self.capabilities),
            "version": self.version,
            "jobs": [
                {
                    **{k: v for k, v in t.as_dict().items() if k != "fingerprint"},
                    "idleSeconds": round((now - t.changed_at).total_seconds(), 3),
                }
                for t in sorted(self.jobs.values(), key=lambda t: t.job_id)
            ],
        }

    def summary(self, now: datetime) -> dict[str, Any]:
        """The heartbeat in brief, for the fleet list (no pending commands counted yet)."""
        return {
            "at": format_ts(self.at) if self.at else None,
            "ageSeconds": self._age(now),
            "load": self.load,
            "seats": self.seats,
            "jobs": [
                {
                    "jobId": t.job_id,
                    "leaseEpoch": t.lease_epoch,
                    "idleSeconds": round((now - t.changed_at).total_seconds(), 3),
                }
                for t in sorted(self.jobs.values(), key=lambda t: t.job_id)
            ],
            "pendingCount": 0,
            "pendingKinds": [],
        }


def no_heartbeat_summary() -> dict[str, Any]:
    """The fleet list's brief of a factory with commands waiting but no heartbeat yet."""
    return {
        "at": None,
        "ageSeconds": None,
        "load": None,
        "seats": None,
        "jobs": [],
        "pendingCount": 0,
        "pendingKinds": [],
    }
