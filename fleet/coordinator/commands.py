"""The operator's control channel: commands for a factory, delivered on its heartbeats.

Operator commands (drain, pause, resume, restart-engine, cancel-job) wait in the ``commands``
table (PartitionKey ``{product}:{factory}``, RowKey a time-sortable command id) and ride on
every heartbeat reply until the factory acknowledges them (``ack`` in a later heartbeat).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, get_args

from fleet.coordinator.service import Coordinator
from fleet.domain.audit import new_event
from fleet.domain.fleet_state import (
    FACTORY_PREFIX,
    FactoryDeregistered,
    FactoryNotFound,
    NotHeld,
)
from fleet.domain.ids import sortable_id
from fleet.domain.models import Factory, Job, format_ts, parse_ts
from fleet.domain.stages import LEASED, Action
from fleet.errors import NotFound, Problem, ValidationFailed
from fleet.store.ports import Entity, PatchOp, Set

log = logging.getLogger(__name__)

COMMANDS = "commands"

CommandKind = Literal["drain", "pause", "resume", "restart-engine", "cancel-job"]
COMMAND_KINDS: tuple[str, ...] = get_args(CommandKind)
COMMAND_ID_PATTERN = r"^c[0-9a-z]{26}$"
# Commands about one job: cancel-job needs one; restart-engine may name one (the engine of
# that job only; without, every engine the factory runs).
_TAKES_JOB = frozenset({"cancel-job", "restart-engine"})

# What the factory document's flags become on each command (the scheduler and explain read them).
_FLAGS: dict[str, tuple[PatchOp, ...]] = {
    "pause": (Set("/paused", True),),
    "drain": (Set("/draining", True),),
    "resume": (Set("/paused", False), Set("/draining", False)),
}


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


def _check(kind: str, job_id: str | None) -> None:
    if kind not in COMMAND_KINDS:
        raise ValidationFailed(
            [Problem("command", "enum", "one of " + ", ".join(COMMAND_KINDS))],
            f"unknown command {kind!r}",
        )
    if kind == "cancel-job" and not job_id:
        raise ValidationFailed(
            [Problem("jobId", "missing", "cancel-job needs the job's id")], "jobId is required"
        )
    if kind not in _TAKES_JOB and job_id:
        raise ValidationFailed(
            [Problem("jobId", "unexpected", "only cancel-job and restart-engine take a jobId")],
            f"{kind} takes no jobId",
        )


class Commands:
    """Queue, deliver, acknowledge and clear a factory's commands."""

    def __init__(self, coordinator: Coordinator, entropy: Callable[[int], bytes]) -> None:
        self.coord = coordinator
        self._docs = coordinator.stores.documents
        self._tables = coordinator.stores.tables
        self._entropy = entropy

    def command(
        self,
        product: str,
        factory_id: str,
        kind: str,
        *,
        by: str,
        job_id: str | None = None,
        reason: str | None = None,
        issued_by: str | None = None,
    ) -> tuple[Command, Job | None]:
        """Queue an operator command for the factory's next heartbeats (until it acks).

        ``drain``, ``pause`` and ``resume`` also set the factory document's flags, so the
        scheduler and ``explain`` know at once. ``cancel-job`` cancels the job first (which
        fences its holder: the factory's next write or renew is 409 ``fenced``), then tells
        the factory to stop its engine. ``restart-engine`` with a job restarts that job's
        engine only. ``by`` is the operator's name; ``issued_by`` the actor when it is not an
        operator (the healer). Returns the command, and the cancelled job if any.
        """
        _check(kind, job_id)
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
            if kind == "cancel-job":
                cancelled = self.coord.operator(
                    product,
                    job_id,
                    Action.CANCEL,
                    by,
                    reason or f"cancelled on factory {factory_id}",
                )
        now = self.coord.clock.now()
        command = Command(
            id=sortable_id("c", now, self._entropy(10)),
            kind=kind,
            issued_at=now,
            issued_by=issued_by or f"operator:{by}",
            job_id=job_id,
            reason=reason,
        )
        event = new_event(
            "command_queued",
            command.issued_by,
            now,
            reason=reason or kind,
            factory=factory_id,
            job=job_id,
            command=kind,
            commandId=command.id,
        )
        fleet_log = self.coord.fleet_log
        ops = _FLAGS.get(kind)
        if ops:  # the flags and the event in one write of the factory document
            fleet_log.patch(product, factory.id, list(ops), event)
        self._tables.create(COMMANDS, command.to_entity(commands_partition(product, factory_id)))
        if not ops:
            fleet_log.beside(product, f"{command.id}-queued", event)
        log.info("command %s %s for factory %s/%s by %s", command.id, kind, product, factory_id, by)
        return command, cancelled

    def pending(self, product: str, factory_id: str) -> list[Command]:
        """The factory's commands not yet acknowledged, in issue order (one table query)."""
        partition = commands_partition(product, factory_id)
        return [Command.from_entity(e) for e in self._tables.list_partition(COMMANDS, partition)]

    def pending_kinds(self, product: str) -> dict[str, list[str]]:
        """Every factory's pending command kinds, in issue order: one range query over the
        product's ``{product}:`` partitions, whatever the fleet's size."""
        prefix = commands_partition(product, "")
        out: dict[str, list[str]] = {}
        for entity in self._tables.list_partitions(COMMANDS, prefix):
            factory_id = str(entity["PartitionKey"]).removeprefix(prefix)
            out.setdefault(factory_id, []).append(str(entity.get("kind")))  # by id: issue order
        return out

    def ack(self, product: str, factory_id: str, command_ids: Iterable[str]) -> None:
        """The factory has acted on these: they are delivered no more, and each one's
        ``command_acked`` event is logged (a read, a delete and a create each; an id the
        factory acknowledges again finds nothing and logs nothing)."""
        partition = commands_partition(product, factory_id)
        fleet_log = self.coord.fleet_log
        for command_id in dict.fromkeys(command_ids):
            try:
                command = Command.from_entity(self._tables.get(COMMANDS, partition, command_id))
            except (NotFound, KeyError, ValueError):
                continue  # not pending (acknowledged before), or not a command of ours
            with suppress(NotFound):
                self._tables.delete(COMMANDS, partition, command_id)
            event = new_event(
                "command_acked",
                f"factory:{factory_id}",
                self.coord.clock.now(),
                reason=f"{command.kind} acknowledged",
                factory=factory_id,
                job=command.job_id,
                command=command.kind,
                commandId=command.id,
            )
            fleet_log.beside(product, f"{command.id}-acked", event)

    def clear(self, product: str, factory_id: str) -> None:
        """Remove every pending command of the factory (it left the fleet)."""
        partition = commands_partition(product, factory_id)
        for entity in self._tables.list_partition(COMMANDS, partition):
            with suppress(NotFound):
                self._tables.delete(COMMANDS, partition, str(entity["RowKey"]))

    def _factory(self, product: str, factory_id: str) -> Factory:
        try:
            return Factory.from_doc(self._docs.read(product, FACTORY_PREFIX + factory_id))
        except NotFound:
            raise FactoryNotFound(f"factory {factory_id} not found", factory=factory_id) from None
