"""Operator actions on a job: cancel, requeue, ship, reject, reprioritize.

One route each (``fleet/jobs/{id}/cancel``, ...): an action the app does not have is the
host's 404, like any other unknown route."""

from __future__ import annotations

from collections.abc import Callable

import azure.functions as func

from fleet.domain.stages import Action
from fleet.http.jobs import job_id_of
from fleet.http.operation import Call, Handler, Operations, Reply, json_body
from fleet.http.params import JOB_ID
from fleet.http.parsing import (
    ActionBody,
    ReprioritizeBody,
    RequeueBody,
    json_value,
    parse_model,
)
from fleet.http.responses import reply
from fleet.http.views import JobView

operations = Operations()

_JOB = {200: Reply("The job, as it is now.", JobView)}


def _action(
    action: Action, summary: str, body: type[ActionBody] = ActionBody, more: str = ""
) -> Callable[[Handler], Handler]:
    return operations.route(
        f"fleet/jobs/{{id}}/{action.value}",
        "POST",
        caller="operator",
        id=f"{action.value}Job",
        summary=summary,
        tag="operator",
        description="409 `illegal_transition` when the job's stage does not allow it." + more,
        params=(JOB_ID,),
        body=json_body(body, required=False, description="Optional; the reason is recorded."),
        replies=_JOB,
        errors=(400, 404, 409),
    )


def _act(req: func.HttpRequest, call: Call, action: Action) -> func.HttpResponse:
    principal = call.principal
    reason = parse_model(ActionBody, json_value(req, required=False)).reason
    job = call.context.coordinator.operator(
        principal.product, job_id_of(req), action, principal.id, reason
    )
    return reply(JobView.of(job))


@_action(Action.CANCEL, "Cancel a job")
def cancel_job(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    return _act(req, call, Action.CANCEL)


@_action(
    Action.REQUEUE,
    "Queue a job again",
    RequeueBody,
    " With a `checkpoint`, the next attempt resumes from it (it replaces the job's; "
    "recorded in the requeue event).",
)
def requeue_job(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    principal = call.principal
    body = parse_model(RequeueBody, json_value(req, required=False))
    job = call.context.coordinator.operator(
        principal.product,
        job_id_of(req),
        Action.REQUEUE,
        principal.id,
        body.reason,
        checkpoint=body.checkpoint,
    )
    return reply(JobView.of(job))


@_action(Action.SHIP, "Mark a job shipped")
def ship_job(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    return _act(req, call, Action.SHIP)


@_action(Action.REJECT, "Reject a job under review or test (it fails)")
def reject_job(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    return _act(req, call, Action.REJECT)


@operations.route(
    "fleet/jobs/{id}/reprioritize",
    "POST",
    caller="operator",
    id="reprioritizeJob",
    summary="Change a job's priority",
    tag="operator",
    description="409 `illegal_transition` for a finished job.",
    params=(JOB_ID,),
    body=json_body(ReprioritizeBody),
    replies=_JOB,
    errors=(400, 404, 409),
)
def reprioritize_job(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    principal = call.principal
    body = parse_model(ReprioritizeBody, json_value(req))
    job = call.context.coordinator.reprioritize(
        principal.product, job_id_of(req), body.priority, principal.id
    )
    return reply(JobView.of(job))
