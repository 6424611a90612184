"""Factory health over HTTP: heartbeats, operator commands, the last heartbeat, leaving.

Thin: parse and validate, call ``FleetHealth`` (``fleet.coordinator.fleet_health``), respond
with a view (``fleet.http.factory_views``).
"""

from __future__ import annotations

from typing import Annotated

import azure.functions as func
from pydantic import AwareDatetime, Field, StringConstraints

from fleet.coordinator.fleet_health import (
    COMMAND_ID_PATTERN,
    MAX_JOBS_PER_BEAT,
    Beat,
    CommandKind,
    JobProgress,
)
from fleet.coordinator.identity import NAME
from fleet.domain.manifest import JOB_ID_PATTERN
from fleet.errors import Forbidden, Problem, ValidationFailed
from fleet.http.factory_views import (
    CommandIssued,
    Deregistration,
    FactoryHeartbeat,
    HeartbeatReply,
)
from fleet.http.operation import Call, Operations, Reply, json_body
from fleet.http.params import FACTORY_ID
from fleet.http.parsing import Body, Capability, body_model
from fleet.http.responses import reply

operations = Operations()

JobId = Annotated[str, StringConstraints(pattern=JOB_ID_PATTERN)]
CommandId = Annotated[str, StringConstraints(pattern=COMMAND_ID_PATTERN)]


class ProgressBody(Body):
    """A held job's progress. The output line may be long: it is stored cut to 500 chars."""

    jobId: JobId
    leaseEpoch: int = Field(ge=1)
    tokens: int = Field(default=0, ge=0)
    costUsd: float = Field(default=0.0, ge=0)
    lastActivityAt: AwareDatetime | None = None
    lastOutputLine: str | None = Field(default=None, max_length=2000)


class HeartbeatBody(Body):
    """What a factory says on each heartbeat."""

    capabilities: tuple[Capability, ...] = Field(default=(), max_length=128)
    seats: int = Field(default=1, ge=1, le=256)
    load: int = Field(default=0, ge=0, le=256)
    cost: float | None = Field(default=None, ge=0, le=1)
    version: str | None = Field(default=None, max_length=64)
    jobs: tuple[ProgressBody, ...] = Field(default=(), max_length=MAX_JOBS_PER_BEAT)
    ack: tuple[CommandId, ...] = Field(default=(), max_length=100)


class CommandBody(Body):
    """An operator command for a factory; ``cancel-job`` needs ``jobId``."""

    command: CommandKind
    jobId: JobId | None = None
    reason: str | None = Field(default=None, max_length=2000)


def _factory_id(req: func.HttpRequest) -> str:
    factory_id = str(req.route_params.get("id", ""))
    if not NAME.match(factory_id):
        raise ValidationFailed(
            [Problem("id", "invalid_name", "1-64 letters, digits, '.', '_' or '-'")],
            "not a factory name",
        )
    return factory_id


def _beat(body: HeartbeatBody) -> Beat:
    return Beat(
        capabilities=body.capabilities,
        seats=body.seats,
        load=body.load,
        version=body.version,
        cost=body.cost,
        jobs=tuple(
            JobProgress(
                job_id=j.jobId,
                lease_epoch=j.leaseEpoch,
                tokens=j.tokens,
                cost_usd=j.costUsd,
                last_activity_at=j.lastActivityAt,
                last_output_line=j.lastOutputLine,
            )
            for j in body.jobs
        ),
        ack=body.ack,
    )


@operations.route(
    "fleet/factories/heartbeat",
    "POST",
    caller="holder",
    id="factoryHeartbeat",
    summary="The factory is alive: load, seats, progress per held job; acknowledges commands",
    tag="fleet",
    description=(
        "Table Storage only, normally: no Cosmos write (a factory marked stale or down, "
        "or whose capabilities, seats, version or cost changed, is re-registered). Keep "
        "`cadence.heartbeatSeconds`. `commands` are delivered on every reply until their "
        "ids come back in `ack` (each acknowledgement is logged: a `command_acked` event, "
        "one Cosmos write). `status` `deregistered` or `revoked`: the beat changed "
        "nothing (enroll again to re-join). Output lines are stored cut to 500 characters."
    ),
    body=json_body(HeartbeatBody, required=False),
    replies={200: Reply("The cadence to keep and the pending commands.", HeartbeatReply)},
    errors=(400,),
)
def factory_heartbeat(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """The factory is alive: load, seats, capabilities, version, progress per held job, and
    the commands it has acted on. Answers the cadence to keep and the pending commands."""
    principal = call.principal
    body = body_model(req, HeartbeatBody, required=False)
    # A heartbeat can re-register the factory: it may not advertise past its allowlist.
    principal.check_capabilities(body.capabilities)
    beaten = call.context.health.heartbeat(principal.product, principal.id, _beat(body))
    return reply(HeartbeatReply.of(beaten))


@operations.route(
    "fleet/factories/{id}/commands",
    "POST",
    caller="operator",
    id="commandFactory",
    summary="Queue a command for the factory (delivered on its heartbeats until acknowledged)",
    tag="operator",
    description=(
        "`pause`, `drain` and `resume` also set the factory's `paused` / `draining` at "
        "once (the scheduler and explain read them). `cancel-job` (with `jobId`) cancels "
        "the job first, fencing its holder, and answers it in `job`; 409 `not_held` when "
        "the factory does not hold it, 409 `factory_deregistered` for a departed factory."
    ),
    params=(FACTORY_ID,),
    body=json_body(CommandBody),
    replies={202: Reply("Queued.", CommandIssued)},
    errors=(400, 404, 409),
)
def factory_command(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """Queue a command (drain, pause, resume, restart-engine, cancel-job) for the factory's
    next heartbeats. 202: delivered until the factory acknowledges it."""
    principal = call.principal
    factory_id = _factory_id(req)
    body = body_model(req, CommandBody)
    command, job = call.context.health.command(
        principal.product,
        factory_id,
        body.command,
        by=principal.id,
        job_id=body.jobId,
        reason=body.reason,
    )
    return reply(CommandIssued.of(command, job), 202)


@operations.route(
    "fleet/factories/{id}/heartbeat",
    "GET",
    caller="operator",
    id="factoryLastHeartbeat",
    summary="The factory's last heartbeat, progress per held job, and pending commands",
    tag="fleet",
    params=(FACTORY_ID,),
    replies={200: Reply("The last heartbeat.", FactoryHeartbeat)},
    errors=(400, 404),
)
def factory_last_heartbeat(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """The factory's last heartbeat, its progress per job, and its pending commands."""
    principal = call.principal
    last = call.context.health.last_heartbeat(principal.product, _factory_id(req))
    return reply(FactoryHeartbeat.model_validate(last))


@operations.route(
    "fleet/factories/{id}",
    "DELETE",
    caller="any",
    id="deregisterFactory",
    summary="The factory leaves the fleet",
    tag="fleet",
    description=(
        "An operator, or the factory itself on a clean shutdown (another factory is 403). "
        "Its tokens are revoked: its next request is 401 (the idle gate poll, `queue-state`, "
        "may accept one for up to 30 s more on another instance that verified it just before). "
        "The reaper then requeues what it still holds (fencing it); its heartbeat and "
        "pending commands are removed. Idempotent; 404 only for a name never seen."
    ),
    params=(FACTORY_ID,),
    replies={200: Reply("Deregistered.", Deregistration)},
    errors=(400, 404),
)
def deregister_factory(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """The factory leaves the fleet (an operator's call, or the factory's own on a clean
    shutdown); the reaper requeues what it still holds. Idempotent."""
    principal = call.principal
    factory_id = _factory_id(req)
    if principal.kind == "factory" and principal.id != factory_id:
        raise Forbidden("a factory may deregister only itself", factory=factory_id)
    # Its tokens stop working at once (it may enroll again later with a new token).
    call.context.health.deregister(principal.product, factory_id, principal.actor)
    return reply(Deregistration.model_construct(factory=factory_id, deregistered=True))
