"""The lease holder's fenced writes: report, renew, release, and its engine's events.

Every one carries the lease epoch the caller holds: a stale one is 409 ``fenced`` and
changes nothing (``fleet.coordinator.lease``)."""

from __future__ import annotations

import azure.functions as func

from fleet.coordinator.service import AgentEvent
from fleet.domain.models import Lease
from fleet.domain.report import check_size
from fleet.http.jobs import job_id_of
from fleet.http.operation import Call, Operations, Reply, json_body
from fleet.http.params import JOB_ID
from fleet.http.parsing import AgentEventsBody, LeaseBody, ReportBody, body_model
from fleet.http.responses import reply
from fleet.http.views import Cadence, JobView, View

operations = Operations()

_FENCED = "Fenced by `leaseEpoch`: 409 `fenced` when the lease is not the caller's."


class LeaseRenewal(View):
    lease: Lease
    cadence: Cadence


class AgentEventsStored(View):
    stored: int
    received: int


@operations.route(
    "fleet/jobs/{id}",
    "PATCH",
    caller="holder",
    id="reportJob",
    summary="The lease holder reports stage, checkpoint, progress or result",
    tag="lease",
    description=(
        "Fenced by `leaseEpoch`: 409 `fenced` when the caller no longer holds the lease "
        "at that epoch. A factory may report building, testing, review, shipped or "
        "failed (400 `illegal_report` otherwise); `retryable` turns a failure into a retry. "
        "`progress` and `result` are merged into the attempt's run (`usage` as `tokens`, "
        "`costUsd`, `engine`, `engineVersion`, `diff`, `branch`, `commit`, `prUrl`, "
        "`prNote`, `artifacts`, `artifactErrors`, `exitCode`, `durationSeconds`; strings "
        "truncated, lists capped at 50). A failed report whose `result.outcome` is "
        "`timeout` or `budget_exceeded` closes the run with that outcome and is retried "
        "following `maxAttempts`. A reported cost (`result.costUsd`, else "
        "`progress.costUsd`) over the attempt's `maxCostUsd` is recorded (the budget "
        "settles with it), the attempt is ended (`budget_exceeded`, retried following "
        "`maxAttempts`, epoch bumped) and the reply is 409 `budget_exceeded`. `checkpoint`, "
        "`progress` and `result` together are at most 256 KiB of JSON: more is 400 "
        "`too_large` (path: the largest of them), nothing changed."
    ),
    params=(JOB_ID,),
    body=json_body(ReportBody),
    replies={200: Reply("The job, as it is now.", JobView)},
    errors=(400, 404, 409),
    conflict="Fenced",
)
def report_job(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """The lease holder reports stage, checkpoint, progress or result. Fenced by leaseEpoch."""
    principal = call.principal
    body = body_model(req, ReportBody)
    job = call.context.coordinator.report(
        principal.product,
        job_id_of(req),
        principal.id,
        body.leaseEpoch,
        stage=body.stage,
        retryable=body.retryable,
        reason=body.reason,
        checkpoint=body.checkpoint,
        progress=body.progress,
        result=body.result,
    )
    return reply(JobView.of(job))


@operations.route(
    "fleet/jobs/{id}/lease/renew",
    "POST",
    caller="holder",
    id="renewLease",
    summary="Extend the lease",
    tag="lease",
    description=(
        "Fenced by `leaseEpoch`: 409 `fenced` when the lease is not the caller's. Past the "
        "attempt's `deadlineAt` (its `timeoutSeconds`) the lease is not extended: the "
        "attempt is ended (run outcome `timeout`, retried following `maxAttempts`, epoch "
        "bumped) and the reply is 409 `timeout`."
    ),
    params=(JOB_ID,),
    body=json_body(LeaseBody),
    replies={200: Reply("The renewed lease and the cadence to keep.", LeaseRenewal)},
    errors=(400, 404, 409),
    conflict="Fenced",
)
def renew_lease(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """Extend the lease. Fenced by leaseEpoch."""
    principal = call.principal
    body = body_model(req, LeaseBody)
    coord = call.context.coordinator
    job = coord.renew(principal.product, job_id_of(req), principal.id, body.leaseEpoch)
    assert job.lease is not None
    return reply(
        LeaseRenewal.model_construct(lease=job.lease, cadence=Cadence.of(coord.cadence(job)))
    )


@operations.route(
    "fleet/jobs/{id}/lease/release",
    "POST",
    caller="holder",
    id="releaseLease",
    summary="Give the job back (queued again, checkpoint kept, no attempt counted)",
    tag="lease",
    description=(
        _FENCED + " The `checkpoint` is at most 256 KiB of JSON (400 `too_large`, nothing changed)."
    ),
    params=(JOB_ID,),
    body=json_body(LeaseBody),
    replies={200: Reply("The job, as it is now.", JobView)},
    errors=(400, 404, 409),
    conflict="Fenced",
)
def release_lease(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """Give the job back: queued again, checkpoint kept. Fenced by leaseEpoch."""
    principal = call.principal
    body = body_model(req, LeaseBody)
    check_size(checkpoint=body.checkpoint)  # as a report's: refused before the job is read
    job = call.context.coordinator.release(
        principal.product,
        job_id_of(req),
        principal.id,
        body.leaseEpoch,
        checkpoint=body.checkpoint,
        reason=body.reason,
    )
    return reply(JobView.of(job))


@operations.route(
    "fleet/jobs/{id}/events",
    "POST",
    caller="holder",
    id="postAgentEvents",
    summary="The holder forwards its engine's events (decisions, tool calls, notes)",
    tag="lease",
    description=(
        "Fenced by `leaseEpoch` (409 `fenced`); never changes the job. At most 100 events "
        "a batch, each payload at most 16 KiB of JSON; `seq` is the sender's own number "
        "within the attempt, so a batch sent twice is stored once (201 when something "
        "was new, 200 when all were already stored). An attempt stores at most 5,000 "
        "events and 5 MiB of payload JSON (the app settings "
        "`FLEET_AGENT_EVENTS_PER_ATTEMPT`, `FLEET_AGENT_EVENT_BYTES_PER_ATTEMPT`): a batch "
        "that would pass either is refused whole, 413 `quota_exceeded`, nothing stored "
        "(stop forwarding for this attempt; the next attempt starts afresh)."
    ),
    params=(JOB_ID,),
    body=json_body(AgentEventsBody),
    replies={
        201: Reply("Stored.", AgentEventsStored),
        200: Reply("Nothing new (a retried batch).", AgentEventsStored),
    },
    errors=(400, 404, 409, 413),
    conflict="Fenced",
)
def post_agent_events(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """The holder forwards what its engine decided and did (JSON lines it wrote), in
    batches carrying the lease epoch. Fenced; never changes the job's stage."""
    principal = call.principal
    body = body_model(req, AgentEventsBody)
    stored = call.context.coordinator.record_agent_events(
        principal.product,
        job_id_of(req),
        principal.id,
        body.leaseEpoch,
        [AgentEvent(seq=e.seq, type=e.type, payload=e.payload) for e in body.events],
    )
    return reply(
        AgentEventsStored.model_construct(stored=stored, received=len(body.events)),
        201 if stored else 200,
    )
