"""Fleet health: heartbeats, the operator's control channel, deregistration, the self-healer.

Heartbeats are frequent, so they go to Table Storage — the ``heartbeats`` table, one entity
per factory (PartitionKey product, RowKey factory id) — and never to a job document. A normal
heartbeat writes nothing to Cosmos. What the scheduler needs to know from heartbeats (is this
factory alive?) reaches Cosmos only as a verdict on the factory document (``status``), written
when it changes: by the healer (``live`` -> ``stale`` -> ``down``) and by the factory's own next
heartbeat (back to ``live``, through ``Coordinator.register_factory``). The heartbeat entity
mirrors that status, so a heartbeat knows without reading Cosmos whether it must flip it back.

Operator commands (drain, pause, resume, restart-engine, cancel-job) wait in the ``commands``
table (PartitionKey ``{product}:{factory}``, RowKey a time-sortable command id) and ride on
every heartbeat reply until the factory acknowledges them (``ack`` in a later heartbeat).

The self-healer (``FleetHealth.heal``: one pass over one product, run by a timer) reads the
fleet (one query), the heartbeats (one table query) and the leased jobs (one query), decides
with a pure function (``plan_heal``), and writes only what changed:

- a factory silent for ``stale_after`` is marked ``stale``, for ``down_after`` ``down``. Its
  leases are left to expire into the reaper: the healer never takes a job from a silent
  factory (it may be cut off rather than dead; the lease is the contract, and the reaper
  fences it once it has expired);
- a job whose holder is heartbeating but whose reported progress (tokens, cost, last activity,
  last output line) has not changed for ``stall_after`` is flagged ``stalled``: a ``stalled``
  event carrying an alert, and a WARNING log line. Once per stall: the flag is cleared, with a
  ``stall_cleared`` event, when the progress moves again. Alive-but-stuck is the failure
  nothing else detects; the healer reports it and leaves the decision to the operator;
- a job still ``assigned`` (never started) ``never_started`` seconds after its assignment
  while its holder is alive is taken back (``Coordinator.take_back``: requeued at a new epoch,
  the holder fenced and remembered in ``failedBy``, so the scheduler prefers a clean worker);
- a factory silent for ``prune_after`` is deregistered.

Nothing here trusts a factory about another factory's jobs: progress only counts for a job
whose lease the reporting factory holds at the reported epoch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from typing import Any, Literal, get_args

from fleet.coordinator.service import Coordinator, JobNotFound
from fleet.domain import jobs as J
from fleet.domain.ids import sortable_id
from fleet.domain.models import Factory, Job, format_ts, parse_ts
from fleet.domain.scheduler import FactoryView
from fleet.domain.stages import LEASED, Action, Stage
from fleet.errors import (
    ConcurrencyConflict,
    ConditionFailed,
    NotFound,
    Problem,
    SettingsError,
    ValidationFailed,
)
from fleet.settings import HealerSettings
from fleet.store.ports import Entity, PatchOp, Set
from fleet.store.queries import LEASED_JOBS

log = logging.getLogger(__name__)

HEARTBEATS = "heartbeats"
COMMANDS = "commands"
FACTORY_PREFIX = "factory-"
HEALER = "healer"

CommandKind = Literal["drain", "pause", "resume", "restart-engine", "cancel-job"]
COMMAND_KINDS: tuple[str, ...] = get_args(CommandKind)
FactoryStatus = Literal["live", "stale", "down"]
# What a heartbeat reply says about the caller: live, or why its beats no longer count.
BeatStatus = Literal["live", "deregistered", "revoked"]

# What the factory document's flags become on each command (the scheduler and explain read them).
_FLAGS: dict[str, tuple[PatchOp, ...]] = {
    "pause": (Set("/paused", True),),
    "drain": (Set("/draining", True),),
    "resume": (Set("/paused", False), Set("/draining", False)),
}

MAX_JOBS_PER_BEAT = 256  # a factory's seats are at most 256
MAX_OUTPUT_LINE_CHARS = 500
# Table Storage caps a string property at 64 KiB (UTF-16) and an entity at 1 MiB. The jobs
# JSON is ASCII (escaped), so it is stored in parts of at most 30,000 characters (``jobs``,
# ``jobs1``, ...; ``jobsParts`` says how many), 240,000 characters in all: under 500 KB.
JOBS_PART_CHARS = 30_000
MAX_JOBS_JSON_CHARS = 8 * JOBS_PART_CHARS
COMMAND_ID_PATTERN = r"^c[0-9a-z]{26}$"


class FactoryNotFound(NotFound):
    """No such factory."""

    code = "factory_not_found"


class FactoryDeregistered(ConditionFailed):
    """The factory has left the fleet; it must register again first. Nothing was changed."""

    code = "factory_deregistered"


class NotHeld(ConditionFailed):
    """The job is not held by this factory. Nothing was changed."""

    code = "not_held"


# --- configuration -----------------------------------------------------------------------


@dataclass(frozen=True)
class HealthConfig:
    """The healer's thresholds, in seconds.

    ``stale_after_seconds`` None means the coordinator's (``CoordinatorConfig``, 90 s), which
    also sets the cadence factories are told to keep (a third of it), so one lost heartbeat
    never looks like a silent factory. The others are app settings, read with the rest
    (``fleet.settings.HealerSettings``: their defaults are these).
    """

    stale_after_seconds: int | None = None
    down_after_seconds: int = HealerSettings.down_after_seconds
    stall_after_seconds: int = HealerSettings.stall_after_seconds
    never_started_seconds: int = HealerSettings.never_started_seconds
    prune_after_seconds: int = HealerSettings.prune_after_seconds
    scan_limit: int = 500  # leased jobs one healer pass looks at, per product

    def resolved(self, default_stale_after: int) -> HealthConfig:
        """This config with the stale threshold filled in, its order checked."""
        config = replace(self, stale_after_seconds=self.stale_after_seconds or default_stale_after)
        for f in fields(config):
            value = getattr(config, f.name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{f.name} must be a positive number of seconds, not {value!r}")
        if not (config.stale_seconds < config.down_after_seconds <= config.prune_after_seconds):
            raise ValueError("thresholds must grow: stale_after < down_after <= prune_after")
        return config

    @property
    def stale_seconds(self) -> int:
        if self.stale_after_seconds is None:
            raise ValueError("stale_after_seconds is not resolved")
        return self.stale_after_seconds


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


def _truncate(line: str | None, limit: int) -> str | None:
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
        line = _truncate(p.last_output_line, MAX_OUTPUT_LINE_CHARS)
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


def encode_jobs(jobs: Mapping[str, TrackedJob], budget: int = MAX_JOBS_JSON_CHARS) -> str:
    """The jobs as JSON, under ``budget`` characters: output lines are shortened evenly until
    it fits (the fingerprints keep the full 500-character line, so
    shortening never looks like progress)."""
    records = [jobs[k].as_dict() for k in sorted(jobs)]
    text = json.dumps(records, separators=(",", ":"))
    allowance = MAX_OUTPUT_LINE_CHARS
    while len(text) > budget and allowance > 0:
        allowance //= 2
        for record in records:
            record["lastOutputLine"] = _truncate(record["lastOutputLine"], allowance)
        text = json.dumps(records, separators=(",", ":"))
    return text


def jobs_properties(text: str) -> Entity:
    """The jobs JSON as entity properties: ``jobs``, ``jobs1``, ... and ``jobsParts``. Parts
    left over from a longer earlier beat are ignored (the write is a merge)."""
    parts = [text[i : i + JOBS_PART_CHARS] for i in range(0, len(text), JOBS_PART_CHARS)] or [""]
    out: Entity = {"jobsParts": len(parts)}
    for n, part in enumerate(parts):
        out["jobs" if n == 0 else f"jobs{n}"] = part
    return out


def _jobs_text(entity: Entity) -> str:
    count = entity.get("jobsParts") or 1
    parts = [entity.get("jobs" if n == 0 else f"jobs{n}") for n in range(int(count))]
    return "".join(p for p in parts if isinstance(p, str))


def _decode_jobs(raw: str) -> dict[str, TrackedJob]:
    if not raw:
        return {}
    try:
        tracked = [TrackedJob.from_dict(r) for r in json.loads(raw)]
    except (ValueError, KeyError, TypeError):
        log.warning("unreadable jobs in a heartbeat entity; starting afresh")
        return {}
    return {t.job_id: t for t in tracked}


def _profile_key(capabilities: Iterable[str], seats: int, version: str | None, cost: Any) -> str:
    """What the factory document records about the factory (load aside, which changes on
    every beat and lives only in the heartbeat): a change means a rare Cosmos write."""
    return json.dumps([sorted(set(capabilities)), seats, version, cost])


@dataclass(frozen=True)
class HeartbeatRecord:
    """The heartbeat entity, read back."""

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

    @classmethod
    def from_entity(cls, entity: Entity) -> HeartbeatRecord:
        at = entity.get("at")
        try:
            capabilities = tuple(json.loads(entity.get("capabilities") or "[]"))
        except ValueError:
            capabilities = ()
        cost = entity.get("cost")
        return cls(
            factory=str(entity["RowKey"]),
            at=parse_ts(at) if at else None,
            load=int(entity.get("load") or 0),
            seats=int(entity.get("seats") or 1),
            capabilities=capabilities,
            version=entity.get("version"),
            cost=float(cost) if cost is not None else None,
            status=entity.get("status"),
            profile=entity.get("profile"),
            jobs=_decode_jobs(_jobs_text(entity)),
            etag=entity.get("_etag"),
        )

    def view(self, now: datetime) -> dict[str, Any]:
        return {
            "factory": self.factory,
            "at": format_ts(self.at) if self.at else None,
            "ageSeconds": round((now - self.at).total_seconds(), 3) if self.at else None,
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


# --- commands -------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    id: str
    kind: str
    issued_at: datetime
    issued_by: str
    job_id: str | None = None
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "jobId": self.job_id,
            "issuedAt": format_ts(self.issued_at),
            "issuedBy": self.issued_by,
            "reason": self.reason,
        }

    def to_entity(self, partition: str) -> Entity:
        entity: Entity = {
            "PartitionKey": partition,
            "RowKey": self.id,
            "kind": self.kind,
            "issuedAt": format_ts(self.issued_at),
            "issuedBy": self.issued_by,
        }
        # Table Storage has no null: absent properties are simply not written.
        if self.job_id is not None:
            entity["jobId"] = self.job_id
        if self.reason is not None:
            entity["reason"] = self.reason
        return entity

    @classmethod
    def from_entity(cls, entity: Entity) -> Command:
        return cls(
            id=str(entity["RowKey"]),
            kind=str(entity["kind"]),
            issued_at=parse_ts(entity["issuedAt"]),
            issued_by=str(entity["issuedBy"]),
            job_id=entity.get("jobId"),
            reason=entity.get("reason"),
        )


def commands_partition(product: str, factory_id: str) -> str:
    # Product and factory names are [A-Za-z0-9._-]: ':' cannot occur in either.
    return f"{product}:{factory_id}"


@dataclass(frozen=True)
class HeartbeatReply:
    status: BeatStatus
    heartbeat_seconds: int
    commands: tuple[Command, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "cadence": {"heartbeatSeconds": self.heartbeat_seconds},
            "commands": [c.as_dict() for c in self.commands],
        }


# --- the healer's decisions (pure) -------------------------------------------------------


@dataclass(frozen=True)
class StatusChange:
    factory: str
    old: FactoryStatus
    new: FactoryStatus
    silent_seconds: float


@dataclass(frozen=True)
class StallChange:
    job_id: str
    epoch: int
    holder: str
    stalled: bool  # True: flag it; False: clear the flag
    idle_seconds: float
    progress: TrackedJob


@dataclass(frozen=True)
class Release:
    job_id: str
    epoch: int
    holder: str
    waited_seconds: float


@dataclass(frozen=True)
class HealPlan:
    statuses: tuple[StatusChange, ...] = ()
    stalls: tuple[StallChange, ...] = ()
    releases: tuple[Release, ...] = ()
    prune: tuple[str, ...] = ()


def short_id(factory: Factory) -> str:
    return factory.id.removeprefix(FACTORY_PREFIX)


def last_contact(factory: Factory | None, beat: HeartbeatRecord | None) -> datetime | None:
    """When the factory last said anything: its last heartbeat or registration."""
    times = [t for t in (factory.lastSeen if factory else None, beat.at if beat else None) if t]
    return max(times) if times else None


def status_after(silent_seconds: float, config: HealthConfig) -> FactoryStatus:
    if silent_seconds >= config.down_after_seconds:
        return "down"
    if silent_seconds >= config.stale_seconds:
        return "stale"
    return "live"


def assigned_at(job: Job) -> datetime | None:
    """When the current lease was granted: its ``assign`` event (else the latest the lease
    could have been granted, which only delays a release, never hastens it)."""
    for event in reversed(job.events):
        if event.type == Action.ASSIGN.value and event.epoch == job.epoch:
            return event.at
    if job.lease is None:
        return None
    return job.lease.expiresAt - timedelta(seconds=job.leaseSeconds)


_RANK: dict[str, int] = {"live": 0, "stale": 1, "down": 2}


def plan_heal(
    now: datetime,
    config: HealthConfig,
    factories: Sequence[Factory],
    beats: Mapping[str, HeartbeatRecord],
    jobs: Sequence[Job],
) -> HealPlan:
    """What one healer pass should do, from what it read. ``config`` must be resolved."""
    by_id = {short_id(f): f for f in factories}
    statuses: list[StatusChange] = []
    prune: list[str] = []
    for factory_id in sorted(set(by_id) | set(beats)):
        factory, beat = by_id.get(factory_id), beats.get(factory_id)
        if factory is not None and factory.deregistered:
            continue
        seen = last_contact(factory, beat)
        if seen is None:
            continue
        silent = (now - seen).total_seconds()
        if silent >= config.prune_after_seconds:
            prune.append(factory_id)
            continue
        if factory is None or factory.revoked:
            continue
        # Only ever downwards: a factory becomes live again by its own heartbeat.
        new = status_after(silent, config)
        if _RANK[new] > _RANK[factory.status]:
            statuses.append(StatusChange(factory_id, factory.status, new, silent))

    stalls: list[StallChange] = []
    releases: list[Release] = []
    for job in jobs:
        if job.stage not in LEASED or job.lease is None:
            continue
        holder = job.lease.holder
        factory, beat = by_id.get(holder), beats.get(holder)
        if factory is not None and (factory.revoked or factory.deregistered):
            continue  # the reaper takes these back
        seen = last_contact(factory, beat)
        if seen is None or (now - seen).total_seconds() >= config.stale_seconds:
            continue  # silent: its lease expires into the reaper
        if job.stage is Stage.ASSIGNED:
            granted = assigned_at(job)
            waited = (now - granted).total_seconds() if granted else 0.0
            if waited >= config.never_started_seconds:
                releases.append(Release(job.id, job.epoch, holder, waited))
            continue
        if beat is None or beat.at is None:
            continue
        if (now - beat.at).total_seconds() >= config.stale_seconds:
            continue  # no fresh heartbeat: no judgement on progress
        progress = beat.jobs.get(job.id)
        if progress is None or progress.lease_epoch != job.epoch:
            continue
        idle = (now - progress.changed_at).total_seconds()
        stuck = idle >= config.stall_after_seconds
        if stuck != job.stalled:
            stalls.append(StallChange(job.id, job.epoch, holder, stuck, idle, progress))
    return HealPlan(tuple(statuses), tuple(stalls), tuple(releases), tuple(prune))


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


# --- the service ---------------------------------------------------------------------


class FleetHealth:
    """Heartbeats, commands, deregistration and the self-healer over the coordinator's
    stores and clock."""

    def __init__(
        self,
        coordinator: Coordinator,
        config: HealthConfig | None = None,
        entropy: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self.coord = coordinator
        self.config = (config or HealthConfig()).resolved(coordinator.config.stale_after_seconds)
        self._docs = coordinator.stores.documents
        self._tables = coordinator.stores.tables
        self._entropy = entropy

    @property
    def heartbeat_seconds(self) -> int:
        """The cadence factories are told to keep: a third of the stale threshold."""
        return max(1, self.config.stale_seconds // 3)

    # --- heartbeats ------------------------------------------------------------------

    def heartbeat(self, product: str, factory_id: str, beat: Beat) -> HeartbeatReply:
        """Record a heartbeat; answer the cadence and the pending commands.

        Cost, normally: one table read (the previous beat), one table write (merge; on Azure
        the adapter reads the merged entity back: one more table read), one table query (the
        factory's pending commands) — and nothing in Cosmos. Plus one table write per
        acknowledged command. Rarely one Cosmos point read and a write: on a factory's first
        beat, after the healer marked it stale or down (flipped back to live through
        ``Coordinator.register_factory``), and when its capabilities, seats, version or cost
        change. A deregistered or revoked factory's beats are refused (``status`` says which)
        and cost that point read each time.
        """
        now = self.coord.clock.now()
        try:
            previous: HeartbeatRecord | None = HeartbeatRecord.from_entity(
                self._tables.get(HEARTBEATS, product, factory_id)
            )
        except NotFound:
            previous = None
        partition = commands_partition(product, factory_id)
        for command_id in dict.fromkeys(beat.ack):
            with suppress(NotFound):
                self._tables.delete(COMMANDS, partition, command_id)
        profile = _profile_key(beat.capabilities, beat.seats, beat.version, beat.cost)
        entity: Entity = {"PartitionKey": product, "RowKey": factory_id}
        if previous is None or previous.status != "live" or previous.profile != profile:
            status = self._join(product, factory_id, beat)
            if status != "live":
                if previous is not None:  # a beat that raced its own deregistration
                    with suppress(NotFound):
                        self._tables.delete(HEARTBEATS, product, factory_id)
                return HeartbeatReply(status, self.heartbeat_seconds)
            entity["status"] = "live"
        tracked = track(previous.jobs if previous else {}, beat.jobs, now)
        entity |= {
            "at": format_ts(now),
            "load": beat.load,
            "seats": beat.seats,
            "capabilities": json.dumps(sorted(set(beat.capabilities))),
            "profile": profile,
            **jobs_properties(encode_jobs(tracked)),
        }
        if beat.version is not None:
            entity["version"] = beat.version
        if beat.cost is not None:
            entity["cost"] = float(beat.cost)
        # Merge, unconditionally: the healer's status mirror is not in this write (unless
        # this beat just set it), so a verdict landing meanwhile survives for the next beat.
        self._tables.upsert(HEARTBEATS, entity)
        return HeartbeatReply("live", self.heartbeat_seconds, tuple(self._pending(partition)))

    def _join(self, product: str, factory_id: str, beat: Beat) -> BeatStatus:
        """The rare path: make the factory document say what this beat says, and ``live``."""
        try:
            current: Factory | None = Factory.from_doc(
                self._docs.read(product, FACTORY_PREFIX + factory_id)
            )
        except NotFound:
            current = None
        if current is not None and current.revoked:
            return "revoked"
        if current is not None and current.deregistered:
            return "deregistered"
        capabilities = tuple(sorted(set(beat.capabilities)))
        cost = beat.cost if beat.cost is not None else (current.cost if current else 0.5)
        version = (
            beat.version if beat.version is not None else (current.version if current else None)
        )
        if current is not None and current.status == "live":
            said = (tuple(current.capabilities), current.seats, current.cost, current.version)
            if said == (capabilities, beat.seats, cost, version):
                return "live"
        view = FactoryView(
            id=factory_id,
            capabilities=frozenset(capabilities),
            seats=beat.seats,
            load=beat.load,
            cost=cost,
        )
        factory = self.coord.register_factory(product, view, version)
        if factory.revoked:
            return "revoked"
        if factory.deregistered:
            return "deregistered"
        if current is not None and current.status != "live":
            log.info("factory %s/%s is back (was %s)", product, factory_id, current.status)
        return "live"

    def last_heartbeat(self, product: str, factory_id: str) -> dict[str, Any]:
        """The factory's last heartbeat, its progress per job, and its pending commands."""
        try:
            record = HeartbeatRecord.from_entity(self._tables.get(HEARTBEATS, product, factory_id))
        except NotFound:
            raise FactoryNotFound(
                f"no heartbeat from factory {factory_id}", factory=factory_id
            ) from None
        view = record.view(self.coord.clock.now())
        pending = self._pending(commands_partition(product, factory_id))
        view["pendingCommands"] = [c.as_dict() for c in pending]
        return view

    def heartbeat_summaries(self, product: str) -> dict[str, dict[str, Any]]:
        """Every factory's last heartbeat in brief, for the fleet list: factory id ->
        ``{at, ageSeconds, load, seats, jobs: [{jobId, leaseEpoch, idleSeconds}],
        pendingCount, pendingKinds}`` (``at`` null: commands wait, no heartbeat yet).

        Cost: two table queries whatever the fleet's size — the product's heartbeats (one
        partition) and every pending command of the product (one range query over the
        ``{product}:`` partitions) — instead of two calls per factory."""
        now = self.coord.clock.now()
        out: dict[str, dict[str, Any]] = {}
        for entity in self._tables.list_partition(HEARTBEATS, product):
            record = HeartbeatRecord.from_entity(entity)
            out[record.factory] = {
                "at": format_ts(record.at) if record.at else None,
                "ageSeconds": round((now - record.at).total_seconds(), 3) if record.at else None,
                "load": record.load,
                "seats": record.seats,
                "jobs": [
                    {
                        "jobId": t.job_id,
                        "leaseEpoch": t.lease_epoch,
                        "idleSeconds": round((now - t.changed_at).total_seconds(), 3),
                    }
                    for t in sorted(record.jobs.values(), key=lambda t: t.job_id)
                ],
                "pendingCount": 0,
                "pendingKinds": [],
            }
        prefix = commands_partition(product, "")
        for entity in self._tables.list_partitions(COMMANDS, prefix):
            factory_id = str(entity["PartitionKey"]).removeprefix(prefix)
            summary = out.setdefault(
                factory_id,
                {
                    "at": None,
                    "ageSeconds": None,
                    "load": None,
                    "seats": None,
                    "jobs": [],
                    "pendingCount": 0,
                    "pendingKinds": [],
                },
            )
            summary["pendingCount"] += 1
            summary["pendingKinds"].append(str(entity.get("kind")))  # by id: issue order
        return out

    # --- the control channel -----------------------------------------------------------

    def command(
        self,
        product: str,
        factory_id: str,
        kind: str,
        *,
        by: str,
        job_id: str | None = None,
        reason: str | None = None,
    ) -> tuple[Command, Job | None]:
        """Queue an operator command for the factory's next heartbeats (until it acks).

        ``drain``, ``pause`` and ``resume`` also set the factory document's flags, so the
        scheduler and ``explain`` know at once. ``cancel-job`` cancels the job first (which
        fences its holder: the factory's next write or renew is 409 ``fenced``), then tells
        the factory to stop its engine. Returns the command, and the cancelled job if any.
        """
        if kind not in COMMAND_KINDS:
            raise ValidationFailed(
                [Problem("command", "enum", "one of " + ", ".join(COMMAND_KINDS))],
                f"unknown command {kind!r}",
            )
        if kind == "cancel-job" and not job_id:
            raise ValidationFailed(
                [Problem("jobId", "missing", "cancel-job needs the job's id")], "jobId is required"
            )
        if kind != "cancel-job" and job_id:
            raise ValidationFailed(
                [Problem("jobId", "unexpected", "only cancel-job takes a jobId")],
                f"{kind} takes no jobId",
            )
        factory = self._factory(product, factory_id)
        if factory.deregistered:
            raise FactoryDeregistered(
                f"factory {factory_id} has left the fleet", factory=factory_id
            )
        cancelled: Job | None = None
        if job_id is not None:
            job = self.coord.get_job(product, job_id)
            if job.stage not in LEASED or job.lease is None or job.lease.holder != factory_id:
                raise NotHeld(
                    f"job {job_id} is not held by factory {factory_id}",
                    jobId=job_id,
                    factory=factory_id,
                    holder=job.lease.holder if job.lease else None,
                )
            cancelled = self.coord.operator(
                product, job_id, Action.CANCEL, by, reason or f"cancelled on factory {factory_id}"
            )
        ops = _FLAGS.get(kind)
        if ops:
            self._docs.patch(product, factory.id, list(ops))
        now = self.coord.clock.now()
        command = Command(
            id=sortable_id("c", now, self._entropy(10)),
            kind=kind,
            issued_at=now,
            issued_by=f"operator:{by}",
            job_id=job_id,
            reason=reason,
        )
        self._tables.create(COMMANDS, command.to_entity(commands_partition(product, factory_id)))
        log.info("command %s %s for factory %s/%s by %s", command.id, kind, product, factory_id, by)
        return command, cancelled

    def pending_commands(self, product: str, factory_id: str) -> list[Command]:
        return self._pending(commands_partition(product, factory_id))

    def _pending(self, partition: str) -> list[Command]:
        return [Command.from_entity(e) for e in self._tables.list_partition(COMMANDS, partition)]

    def _factory(self, product: str, factory_id: str) -> Factory:
        try:
            return Factory.from_doc(self._docs.read(product, FACTORY_PREFIX + factory_id))
        except NotFound:
            raise FactoryNotFound(f"factory {factory_id} not found", factory=factory_id) from None

    # --- leaving the fleet -------------------------------------------------------------

    def deregister(self, product: str, factory_id: str) -> None:
        """The factory leaves the fleet: its document is marked ``deregistered`` (the reaper
        then requeues whatever it still holds, fencing it), its heartbeat and pending commands
        are removed. Idempotent; FactoryNotFound only if there was never anything to remove."""
        found = False
        try:
            self._docs.patch(product, FACTORY_PREFIX + factory_id, [Set("/deregistered", True)])
            found = True
        except NotFound:
            pass
        try:
            self._tables.delete(HEARTBEATS, product, factory_id)
            found = True
        except NotFound:
            pass
        partition = commands_partition(product, factory_id)
        for entity in self._tables.list_partition(COMMANDS, partition):
            with suppress(NotFound):
                self._tables.delete(COMMANDS, partition, str(entity["RowKey"]))
        if not found:
            raise FactoryNotFound(f"factory {factory_id} not found", factory=factory_id)
        log.info("factory %s/%s deregistered", product, factory_id)

    # --- the self-healer ---------------------------------------------------------------

    def heal(self, product: str) -> HealReport:
        """One healer pass over one product. Safe to run concurrently and repeatedly: every
        write is conditional on what was read, and a lost race is left to the next pass.

        Cost: one query (factories), one table query (heartbeats), one query (leased jobs,
        at most ``scan_limit``; none when the product has no fleet), then writes only for
        what changed."""
        now = self.coord.clock.now()
        factories = self.coord.factories(product)
        beats = {
            str(e["RowKey"]): HeartbeatRecord.from_entity(e)
            for e in self._tables.list_partition(HEARTBEATS, product)
        }
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
            reason = (
                f"assigned but never started: {release.holder} did not start it within "
                f"{int(release.waited_seconds)}s"
            )
            if self.coord.take_back(product, release.job_id, release.epoch, reason, HEALER):
                log.info("healer released %s/%s: %s", product, release.job_id, reason)
                report.released.append(release.job_id)
        for factory_id in plan.prune:
            with suppress(FactoryNotFound):
                self.deregister(product, factory_id)
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
        if beat is not None and beat.etag is not None:
            mirror = {"PartitionKey": product, "RowKey": change.factory, "status": change.new}
            try:
                self._tables.update(HEARTBEATS, mirror, etag=beat.etag)
            except (ConcurrencyConflict, NotFound):
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
            lease = job.lease
            if (
                job.stage not in LEASED
                or lease is None
                or lease.holder != change.holder
                or job.epoch != change.epoch
                or job.stalled == change.stalled
            ):
                return False  # it moved on, or someone else already did this
            now = self.coord.clock.now()
            updated = _stall_record(job, change, now)
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


def _stall_record(job: Job, change: StallChange, now: datetime) -> Job:
    idle = int(change.idle_seconds)
    progress = {
        k: v
        for k, v in change.progress.as_dict().items()
        if k not in ("jobId", "fingerprint", "leaseEpoch")
    }
    if change.stalled:
        reason = f"no progress for {idle}s while {change.holder} is heartbeating"
        data: dict[str, Any] = {
            "alert": {"kind": "stalled", "severity": "warning", "message": reason},
            "idleSeconds": idle,
            "progress": progress,
        }
        return J.record(
            job, type="stalled", actor=HEALER, now=now, reason=reason, data=data, stalled=True
        )
    return J.record(
        job,
        type="stall_cleared",
        actor=HEALER,
        now=now,
        reason="progress moved again",
        data={"progress": progress},
        stalled=False,
    )


# --- built from settings ----------------------------------------------------------------


def fleet_health(coordinator: Coordinator, healer: HealerSettings) -> FleetHealth:
    """The FleetHealth of this coordinator with the healer's thresholds from settings (the
    composition root builds one per process: ``fleet.context.context_for``)."""
    stale = coordinator.config.stale_after_seconds
    if healer.down_after_seconds <= stale:
        raise SettingsError(
            "HEALER_DOWN_AFTER_SECONDS",
            f"must be longer than the stale threshold ({stale} s)",
        )
    config = HealthConfig(
        down_after_seconds=healer.down_after_seconds,
        stall_after_seconds=healer.stall_after_seconds,
        never_started_seconds=healer.never_started_seconds,
        prune_after_seconds=healer.prune_after_seconds,
    )
    return FleetHealth(coordinator, config)
