"""Heartbeats: recorded in Table Storage, read back for the operator and the healer.

Heartbeats are frequent, so they go to the ``heartbeats`` table — one entity per factory
(PartitionKey product, RowKey factory id) — and never to a job document. A normal heartbeat
writes nothing to Cosmos. What the scheduler needs to know from heartbeats (is this factory
alive?) reaches Cosmos only as a verdict on the factory document (``status``), written when it
changes: by the healer (``live`` -> ``stale`` -> ``down``) and by the factory's own next
heartbeat (back to ``live``, through ``Coordinator.register_factory``). The heartbeat entity
mirrors that status, so a heartbeat knows without reading Cosmos whether it must flip it back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fleet.coordinator.commands import Command, Commands
from fleet.coordinator.service import Coordinator
from fleet.domain.fleet_state import (
    FACTORY_PREFIX,
    MAX_OUTPUT_LINE_CHARS,
    Beat,
    BeatStatus,
    FactoryNotFound,
    HeartbeatRecord,
    TrackedJob,
    no_heartbeat_summary,
    profile_key,
    track,
    truncate,
)
from fleet.domain.models import Factory, format_ts, parse_ts
from fleet.domain.scheduler import FactoryView
from fleet.errors import ConcurrencyConflict, NotFound
from fleet.store.ports import Entity

log = logging.getLogger(__name__)

HEARTBEATS = "heartbeats"

# Table Storage caps a string property at 64 KiB (UTF-16) and an entity at 1 MiB. The jobs
# JSON is ASCII (escaped), so it is stored in parts of at most 30,000 characters (``jobs``,
# ``jobs1``, ...; ``jobsParts`` says how many), 240,000 characters in all: under 500 KB.
JOBS_PART_CHARS = 30_000
MAX_JOBS_JSON_CHARS = 8 * JOBS_PART_CHARS


# --- the heartbeat entity ------------------------------------------------------------------


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
            record["lastOutputLine"] = truncate(record["lastOutputLine"], allowance)
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


def heartbeat_record(entity: Entity) -> HeartbeatRecord:
    """The heartbeat entity, read back."""
    at = entity.get("at")
    try:
        capabilities = tuple(json.loads(entity.get("capabilities") or "[]"))
    except ValueError:
        capabilities = ()
    cost = entity.get("cost")
    return HeartbeatRecord(
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


# --- the service ---------------------------------------------------------------------


class Heartbeats:
    """Record a factory's heartbeats, answer its pending commands, read them back."""

    def __init__(
        self, coordinator: Coordinator, commands: Commands, heartbeat_seconds: int
    ) -> None:
        self.coord = coordinator
        self._docs = coordinator.stores.documents
        self._tables = coordinator.stores.tables
        self._commands = commands
        self.heartbeat_seconds = heartbeat_seconds

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
            previous: HeartbeatRecord | None = heartbeat_record(
                self._tables.get(HEARTBEATS, product, factory_id)
            )
        except NotFound:
            previous = None
        self._commands.ack(product, factory_id, beat.ack)
        profile = profile_key(beat.capabilities, beat.seats, beat.version, beat.cost)
        entity: Entity = {"PartitionKey": product, "RowKey": factory_id}
        if previous is None or previous.status != "live" or previous.profile != profile:
            status = self._join(product, factory_id, beat)
            if status != "live":
                if previous is not None:  # a beat that raced its own deregistration
                    self.forget(product, factory_id)
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
        pending = self._commands.pending(product, factory_id)
        return HeartbeatReply("live", self.heartbeat_seconds, tuple(pending))

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

    def last(self, product: str, factory_id: str) -> dict[str, Any]:
        """The factory's last heartbeat, its progress per job, and its pending commands."""
        try:
            record = heartbeat_record(self._tables.get(HEARTBEATS, product, factory_id))
        except NotFound:
            raise FactoryNotFound(
                f"no heartbeat from factory {factory_id}", factory=factory_id
            ) from None
        view = record.view(self.coord.clock.now())
        view["pendingCommands"] = [c.as_dict() for c in self._commands.pending(product, factory_id)]
        return view

    def summaries(self, product: str) -> dict[str, dict[str, Any]]:
        """Every factory's last heartbeat in brief, for the fleet list: factory id ->
        ``{at, ageSeconds, load, seats, jobs: [{jobId, leaseEpoch, idleSeconds}],
        pendingCount, pendingKinds}`` (``at`` null: commands wait, no heartbeat yet).

        Cost: two table queries whatever the fleet's size — the product's heartbeats (one
        partition) and every pending command of the product (one range query over the
        ``{product}:`` partitions) — instead of two calls per factory."""
        now = self.coord.clock.now()
        out = {factory: record.summary(now) for factory, record in self.records(product).items()}
        for factory_id, kinds in self._commands.pending_kinds(product).items():
            summary = out.setdefault(factory_id, no_heartbeat_summary())
            summary["pendingCount"] += len(kinds)
            summary["pendingKinds"].extend(kinds)
        return out

    def records(self, product: str) -> dict[str, HeartbeatRecord]:
        """Every factory's last heartbeat, by factory id (one table query)."""
        return {
            str(e["RowKey"]): heartbeat_record(e)
            for e in self._tables.list_partition(HEARTBEATS, product)
        }

    def mirror(self, product: str, factory_id: str, status: str, etag: str) -> bool:
        """Set the heartbeat's mirror of the factory's status, conditional on the heartbeat
        read (``etag``). False: it changed or went since (a beat since: not silent)."""
        entity = {"PartitionKey": product, "RowKey": factory_id, "status": status}
        try:
            self._tables.update(HEARTBEATS, entity, etag=etag)
        except (ConcurrencyConflict, NotFound):
            return False
        return True

    def forget(self, product: str, factory_id: str) -> bool:
        """Remove the factory's heartbeat. False: there was none."""
        try:
            self._tables.delete(HEARTBEATS, product, factory_id)
        except NotFound:
            return False
        return True
