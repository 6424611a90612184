"""Jobs: submit, read, the holder's fenced writes, operator actions, history, explain."""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

import azure.functions as func

from fleet.coordinator import Coordinator
from fleet.coordinator.identity import Principal
from fleet.coordinator.service import AgentEvent
from fleet.domain.manifest import JOB_ID_PATTERN, parse_json, parse_markdown
from fleet.domain.models import Job
from fleet.domain.stages import Action, Stage
from fleet.errors import Forbidden, Problem, ValidationFailed
from fleet.http.operation import Call, Operations
from fleet.http.parsing import (
    ActionBody,
    AgentEventsBody,
    LeaseBody,
    ReportBody,
    ReprioritizeBody,
    body_bytes,
    body_model,
    int_param,
    json_value,
    parse_model,
)
from fleet.http.responses import json_response

operations = Operations()

_JOB_ID = re.compile(JOB_ID_PATTERN)

OPERATOR_ACTIONS = {
    "cancel": Action.CANCEL,
    "requeue": Action.REQUEUE,
    "ship": Action.SHIP,
    "reject": Action.REJECT,
}


def job_view(job: Job) -> dict[str, Any]:
    view = job.model_dump(mode="json", exclude={"etag", "type"})
    view["holder"] = job.lease.holder if job.lease else None
    return view


def _job_id(req: func.HttpRequest) -> str:
    return str(req.route_params.get("id", ""))


def _holds(principal: Principal, job: Job) -> bool:
    return job.lease is not None and job.lease.holder == principal.id


def _readable_by_factory(principal: Principal, job: Job) -> bool:
    """A factory reads the jobs it holds, and the jobs in review (it may be a reviewer)."""
    return _holds(principal, job) or job.stage is Stage.REVIEW


def readable_job(coordinator: Coordinator, principal: Principal, job_id: str) -> Job:
    """The job, if the caller may read it: operators read every job of their product, a
    factory only the jobs it holds or that await review (one point read)."""
    job = coordinator.get_job(principal.product, job_id)
    if principal.kind == "factory" and not _readable_by_factory(principal, job):
        raise Forbidden(
            "factory tokens can only read the jobs they hold or that are in review", jobId=job_id
        )
    return job


@operations.route("fleet/jobs", "POST", caller="operator")
def submit_job(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """Submit a job: the raw markdown manifest, or JSON (fields, or {"manifest": text})."""
    principal = call.principal
    content_type = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if content_type in ("text/markdown", "text/plain", "text/x-markdown"):
        try:
            text = body_bytes(req).decode("utf-8")
        except UnicodeDecodeError:
            raise ValidationFailed(
                [Problem(path="", code="invalid_encoding", message="expected UTF-8 text")],
                "the manifest is not UTF-8",
            ) from None
        manifest = parse_markdown(text)
    else:
        manifest = parse_json(json_value(req))
    coord = call.context.coordinator
    job, created = coord.submit(principal.product, manifest, principal.actor)
    body: dict[str, Any] = {"job": job_view(job), "created": created}
    if job.unroutable:
        body["warning"] = (
            "unroutable: no registered factory advertises every required capability ("
            + ", ".join(job.capabilities)
            + ")"
        )
    return json_response(body, 201 if created else 200, {"Location": f"/api/fleet/jobs/{job.id}"})


JOBS_PAGE_DEFAULT = 200
JOBS_PAGE_MAX = 1000


def encode_cursor(before: str) -> str:
    """The opaque ``next`` of a jobs page: where the next page starts (older than this job
    id)."""
    raw = json.dumps({"before": before}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    """The job id a ``cursor`` continues before (older jobs follow); 400 (path ``cursor``)
    for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        before = json.loads(raw)["before"]
        if not isinstance(before, str) or not _JOB_ID.match(before):
            raise ValueError(before)
        return before
    except (ValueError, TypeError, KeyError, binascii.Error):
        raise ValidationFailed(
            [Problem(path="cursor", code="invalid_cursor", message="pass back a reply's `next`")],
            "query parameter cursor is not a cursor this API gave",
        ) from None


@operations.route("fleet/jobs", "GET", caller="any")
def list_jobs(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """One page of jobs, newest first (``limit``, default 200, at most 1000); ``next`` continues it
    (pass it back as ``cursor``), null on the last page. A factory sees the jobs it holds and
    the jobs in review."""
    principal = call.principal
    stage = req.params.get("stage") or None
    if stage is not None and stage not in {s.value for s in Stage}:
        raise ValidationFailed(
            [Problem(path="stage", code="enum", message=f"one of {[s.value for s in Stage]}")],
            "unknown stage",
        )
    limit = int_param(req, "limit", JOBS_PAGE_DEFAULT, minimum=1, maximum=JOBS_PAGE_MAX)
    cursor = req.params.get("cursor") or None
    before = decode_cursor(cursor) if cursor is not None else None
    jobs, more = call.context.coordinator.jobs_page(
        principal.product,
        limit,
        before=before,
        stage=Stage(stage) if stage else None,
        reader=principal.id if principal.kind == "factory" else None,
    )
    views = [job_view(j) for j in jobs]
    for view in views:
        view.pop("body", None)
        view.pop("events", None)
    next_cursor = encode_cursor(jobs[-1].id) if more and jobs else None
    return json_response({"jobs": views, "count": len(views), "next": next_cursor})


@operations.route("fleet/jobs/{id}", "GET", caller="any")
def get_job(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    principal = call.principal
    return json_response(job_view(readable_job(call.context.coordinator, principal, _job_id(req))))


@operations.route("fleet/jobs/{id}", "PATCH", caller="factory")
def report_job(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """The lease holder reports stage, checkpoint, progress or result. Fenced by leaseEpoch."""
    principal = call.principal
    body = body_model(req, ReportBody)
    job = call.context.coordinator.report(
        principal.product,
        _job_id(req),
        principal.id,
        body.leaseEpoch,
        stage=body.stage,
        retryable=body.retryable,
        reason=body.reason,
        checkpoint=body.checkpoint,
        progress=body.progress,
        result=body.result,
    )
    return json_response(job_view(job))


@operations.route("fleet/jobs/{id}/lease/{op}", "POST", caller="factory")
def lease_op(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """renew: extend the lease; release: give the job back. Fenced by leaseEpoch."""
    principal = call.principal
    op = req.route_params.get("op")
    body = body_model(req, LeaseBody)
    coord = call.context.coordinator
    if op == "renew":
        job = coord.renew(principal.product, _job_id(req), principal.id, body.leaseEpoch)
        assert job.lease is not None
        return json_response(
            {
                "lease": job.lease.model_dump(mode="json"),
                "cadence": coord.cadence(job).as_dict(),
            }
        )
    if op == "release":
        job = coord.release(
            principal.product,
            _job_id(req),
            principal.id,
            body.leaseEpoch,
            checkpoint=body.checkpoint,
            reason=body.reason,
        )
        return json_response(job_view(job))
    raise ValidationFailed(
        [Problem(path="op", code="enum", message="one of renew, release")],
        "unknown lease operation",
    )


@operations.route("fleet/jobs/{id}/{action}", "POST", caller="operator")
def operator_action(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """Operator actions: cancel, requeue, ship, reject, reprioritize."""
    principal = call.principal
    action = req.route_params.get("action", "")
    coord = call.context.coordinator
    if action == "reprioritize":
        body = parse_model(ReprioritizeBody, json_value(req))
        job = coord.reprioritize(principal.product, _job_id(req), body.priority, principal.id)
        return json_response(job_view(job))
    if action not in OPERATOR_ACTIONS:
        raise ValidationFailed(
            [
                Problem(
                    path="action",
                    code="enum",
                    message="one of " + ", ".join([*OPERATOR_ACTIONS, "reprioritize"]),
                )
            ],
            "unknown action",
        )
    reason = parse_model(ActionBody, json_value(req, required=False)).reason
    job = coord.operator(
        principal.product, _job_id(req), OPERATOR_ACTIONS[action], principal.id, reason
    )
    return json_response(job_view(job))


@operations.route("fleet/jobs/{id}/events", "GET", caller="any")
def job_events(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    principal = call.principal
    after = int_param(req, "after", 0)
    if principal.kind == "factory":
        readable_job(call.context.coordinator, principal, _job_id(req))
    events = call.context.coordinator.job_events(principal.product, _job_id(req), after)
    items = [e.model_dump(mode="json") for e in events]
    return json_response({"events": items, "last": items[-1]["seq"] if items else after})


@operations.route("fleet/jobs/{id}/runs", "GET", caller="any")
def job_runs(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """Every attempt's run record, oldest first (spilled and embedded): who may read the
    job may read its runs."""
    principal = call.principal
    if principal.kind == "factory":
        readable_job(call.context.coordinator, principal, _job_id(req))
    runs = call.context.coordinator.job_runs(principal.product, _job_id(req))
    return json_response({"runs": [r.model_dump(mode="json") for r in runs]})


@operations.route("fleet/jobs/{id}/explain", "GET", caller="any")
def explain_job(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    principal = call.principal
    if principal.kind == "factory":
        readable_job(call.context.coordinator, principal, _job_id(req))
    return json_response(call.context.coordinator.explain(principal.product, _job_id(req)))


@operations.route("fleet/jobs/{id}/events", "POST", caller="factory")
def post_agent_events(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """The holder forwards what its engine decided and did (JSON lines it wrote), in
    batches carrying the lease epoch. Fenced; never changes the job's stage."""
    principal = call.principal
    body = body_model(req, AgentEventsBody)
    stored = call.context.coordinator.record_agent_events(
        principal.product,
        _job_id(req),
        principal.id,
        body.leaseEpoch,
        [AgentEvent(seq=e.seq, type=e.type, payload=e.payload) for e in body.events],
    )
    return json_response({"stored": stored, "received": len(body.events)}, 201 if stored else 200)


@operations.route("fleet/jobs/{id}/agent-events", "GET", caller="any")
def agent_events(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """The job's agent events after a cursor (pass back ``cursor``), oldest first."""
    principal = call.principal
    if principal.kind == "factory":
        readable_job(call.context.coordinator, principal, _job_id(req))
    limit = min(500, int_param(req, "limit", 200, minimum=1))
    after = req.params.get("after")
    events = call.context.coordinator.agent_events(principal.product, _job_id(req), after, limit)
    return json_response({"events": events, "cursor": events[-1]["key"] if events else after})
