"""Jobs: submit, list and read them, their history, runs, agent events and explain.

The holder's fenced writes are in ``fleet.http.lease``, operator actions in
``fleet.http.actions``."""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, Self

import azure.functions as func
from pydantic import ConfigDict, Field

from fleet.coordinator import Coordinator
from fleet.coordinator.identity import Principal
from fleet.domain.manifest import JOB_ID_PATTERN, Manifest, parse_json, parse_markdown
from fleet.domain.models import Event, Job, Run
from fleet.domain.stages import Stage
from fleet.errors import Forbidden, Problem, ValidationFailed
from fleet.http.operation import Body, Call, OneOf, Operations, Reply, query_param
from fleet.http.params import JOB_ID
from fleet.http.parsing import body_bytes, int_param, json_value
from fleet.http.responses import JSON, reply
from fleet.http.views import JobSummary, JobView, View, omitted

operations = Operations()

_JOB_ID = re.compile(JOB_ID_PATTERN)
MARKDOWN = "text/markdown"
LOCATION = {"Location": {"description": "The job's URL.", "schema": {"type": "string"}}}


class ManifestDocument(View):
    """A manifest submitted as JSON carrying its markdown."""

    model_config = ConfigDict(extra="forbid")

    manifest: str = Field(description="The manifest as markdown.")


class SubmitReply(View):
    job: JobView
    created: bool
    warning: str | None = omitted("Set when no registered factory can run the job.")


class JobList(View):
    jobs: list[JobSummary]
    count: int = Field(description="Jobs in this page.")
    next: str | None = Field(description="Pass back as `cursor`; null: last page.")


class JobEvents(View):
    events: list[Event]
    last: int = Field(description="Pass back as `after`.")


class JobRuns(View):
    runs: list[Run]


class Verdict(View):
    factory: str
    eligible: bool
    reasons: list[str]
    missingCapabilities: list[str]
    score: dict[str, float] | None = Field(description="The score and each of its terms.")
    outcome: dict[str, Any] | None = Field(
        default=None,
        description=(
            "Learned routing's evidence for this factory on this job's kind: `value` (the "
            "term before its weight, -1..1), this factory's and engine's shrunk success rate, "
            "median seconds and cost (`this`) against the kind's average factory (`fleet`), "
            "with the runs behind each. Absent until the product has learned something."
        ),
    )


class LearnedRoutingState(View):
    weight: float = Field(description="The product's `weights.outcome`.")
    mode: str = Field(description="`shadow` (weight 0: recorded, not applied) or `on`.")
    learned: bool = Field(description="Whether the product's runs taught it anything yet.")


class Explain(View):
    jobId: str
    stage: Stage
    holder: str | None
    epoch: int
    failedBy: list[str]
    stalled: bool
    unroutable: bool
    blockers: list[str]
    summary: str
    learnedRouting: LearnedRoutingState
    factories: list[Verdict]


class AgentEventItem(View):
    key: str
    epoch: int
    seq: int
    eventType: str
    payload: Any
    factory: str
    at: str


class AgentEvents(View):
    events: list[AgentEventItem]
    cursor: str | None

    @classmethod
    def of(cls, events: list[dict[str, Any]], cursor: str | None) -> Self:
        return cls.model_validate({"events": events, "cursor": cursor})


def job_id_of(req: func.HttpRequest) -> str:
    return str(req.route_params.get("id", ""))


def factory_may_read(principal: Principal, stage: Stage, holder: str | None) -> bool:
    """A factory reads the jobs it holds (its lease's holder), and the jobs in review (it
    may be a reviewer)."""
    return holder == principal.id or stage is Stage.REVIEW


def _readable_by_factory(principal: Principal, job: Job) -> bool:
    return factory_may_read(principal, job.stage, job.lease.holder if job.lease else None)


def readable_job(coordinator: Coordinator, principal: Principal, job_id: str) -> Job:
    """The job, if the caller may read it: operators read every job of their product, a
    factory only the jobs it holds or that await review (one point read)."""
    job = coordinator.get_job(principal.product, job_id)
    if principal.kind == "factory" and not _readable_by_factory(principal, job):
        raise Forbidden(
            "factory tokens can only read the jobs they hold or that are in review", jobId=job_id
        )
    return job


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


@operations.route(
    "fleet/jobs",
    "POST",
    caller="operator",
    id="submitJob",
    summary="Submit a job",
    tag="jobs",
    description=(
        "The manifest as markdown (YAML front matter and the agent's instructions; "
        "`text/plain` and `text/x-markdown` are read as markdown too), or as JSON: the "
        'fields, or `{"manifest": "<markdown>"}`. A second submit with the same '
        "`idempotencyKey` answers 200 with the job the first one created."
    ),
    body=Body(
        {
            MARKDOWN: {"type": "string", "description": "The manifest as markdown."},
            JSON: OneOf((Manifest, ManifestDocument)),
        }
    ),
    replies={
        201: Reply("Created.", SubmitReply, LOCATION),
        200: Reply(
            "A job with this idempotency key already exists: that job (`created` false).",
            SubmitReply,
            LOCATION,
        ),
    },
    errors=(400,),
)
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
    warning = None
    if job.unroutable:
        warning = (
            "unroutable: no registered factory advertises every required capability ("
            + ", ".join(job.capabilities)
            + ")"
        )
    return reply(
        SubmitReply.model_construct(job=JobView.of(job), created=created, warning=warning),
        201 if created else 200,
        {"Location": f"/api/fleet/jobs/{job.id}"},
    )


@operations.route(
    "fleet/jobs",
    "GET",
    caller="any",
    id="listJobs",
    summary="The product's jobs (without body, events, checkpoint, progress and result)",
    tag="jobs",
    description=(
        "One page, ordered by job id (ids never change, so following `next` neither "
        "skips nor repeats a job while jobs change stage; ids sort by submit time). "
        "Pass the reply's `next` back as `cursor` for the following page; `next` is "
        "null on the last page. The `stage` filter applies to every page. A factory "
        "token lists only the jobs it holds and the jobs in review. One bounded query "
        "a page (two for a factory token without a stage filter), which reads none of a "
        "job's body, events, checkpoint, progress and result: `GET /api/fleet/jobs/{id}` "
        "has them."
    ),
    params=(
        query_param("stage", "Only jobs in this stage.", {"$ref": "#/components/schemas/Stage"}),
        query_param(
            "limit",
            "At most this many jobs in the page (more is 400).",
            {"type": "integer", "minimum": 1, "maximum": 1000, "default": 200},
        ),
        query_param(
            "cursor",
            "Opaque: the `next` of the previous page (anything else is 400).",
            {"type": "string"},
        ),
    ),
    replies={200: Reply("A page of jobs, by id.", JobList)},
    errors=(400,),
)
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
    next_cursor = encode_cursor(jobs[-1].id) if more and jobs else None
    return reply(
        JobList.model_construct(
            jobs=[JobSummary.of(j) for j in jobs], count=len(jobs), next=next_cursor
        )
    )


_READ_ONE = "A factory token reads only a job it holds (403 otherwise)."


@operations.route(
    "fleet/jobs/{id}",
    "GET",
    caller="any",
    id="getJob",
    summary="One job, with its recent events",
    tag="jobs",
    description=_READ_ONE,
    params=(JOB_ID,),
    replies={200: Reply("The job.", JobView)},
    errors=(404,),
)
def get_job(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    principal = call.principal
    return reply(JobView.of(readable_job(call.context.coordinator, principal, job_id_of(req))))


@operations.route(
    "fleet/jobs/{id}/events",
    "GET",
    caller="any",
    id="jobEvents",
    summary="A job's history after a sequence number",
    tag="jobs",
    description=_READ_ONE,
    params=(
        JOB_ID,
        query_param(
            "after",
            "Only events with a greater `seq`.",
            {"type": "integer", "minimum": 0, "default": 0},
        ),
    ),
    replies={200: Reply("The events, oldest first.", JobEvents)},
    errors=(400, 404),
)
def job_events(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    principal = call.principal
    after = int_param(req, "after", 0)
    if principal.kind == "factory":
        readable_job(call.context.coordinator, principal, job_id_of(req))
    events = call.context.coordinator.job_events(principal.product, job_id_of(req), after)
    return reply(JobEvents.model_construct(events=events, last=events[-1].seq if events else after))


@operations.route(
    "fleet/jobs/{id}/runs",
    "GET",
    caller="any",
    id="jobRuns",
    summary="Every attempt's run record, oldest first",
    tag="jobs",
    description=(
        "One run per attempt (epoch): opened by the claim, closed by whatever ended the "
        "attempt (the holder's report, release, the reaper, the healer, preemption, an "
        "operator, a limit). The newest 20 live in the job (`runs`), older ones in run "
        "documents: this answers all of them. A factory token reads only a job it holds "
        "(403 otherwise)."
    ),
    params=(JOB_ID,),
    replies={200: Reply("The runs, oldest first.", JobRuns)},
    errors=(404,),
)
def job_runs(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """Every attempt's run record, oldest first (spilled and embedded): who may read the
    job may read its runs."""
    principal = call.principal
    if principal.kind == "factory":
        readable_job(call.context.coordinator, principal, job_id_of(req))
    runs = call.context.coordinator.job_runs(principal.product, job_id_of(req))
    return reply(JobRuns.model_construct(runs=list(runs)))


@operations.route(
    "fleet/jobs/{id}/explain",
    "GET",
    caller="any",
    id="explainJob",
    summary="Why a job is (not) running, factory by factory",
    tag="jobs",
    description=_READ_ONE,
    params=(JOB_ID,),
    replies={200: Reply("The scheduler's verdict per factory.", Explain)},
    errors=(404,),
)
def explain_job(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    principal = call.principal
    if principal.kind == "factory":
        readable_job(call.context.coordinator, principal, job_id_of(req))
    explained = call.context.coordinator.explain(principal.product, job_id_of(req))
    return reply(Explain.model_validate(explained))


@operations.route(
    "fleet/jobs/{id}/agent-events",
    "GET",
    caller="any",
    id="agentEvents",
    summary="A job's agent events after a cursor, oldest first",
    tag="jobs",
    description=_READ_ONE,
    params=(
        JOB_ID,
        query_param("after", "The `cursor` of the previous page.", {"type": "string"}),
        query_param(
            "limit",
            "At most this many (capped at 500).",
            {"type": "integer", "minimum": 1, "default": 200},
        ),
    ),
    replies={200: Reply("The events and the cursor to pass back.", AgentEvents)},
    errors=(400, 404),
)
def agent_events(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """The job's agent events after a cursor (pass back ``cursor``), oldest first."""
    principal = call.principal
    if principal.kind == "factory":
        readable_job(call.context.coordinator, principal, job_id_of(req))
    limit = min(500, int_param(req, "limit", 200, minimum=1))
    after = req.params.get("after")
    events = call.context.coordinator.agent_events(principal.product, job_id_of(req), after, limit)
    return reply(AgentEvents.of(events, events[-1]["key"] if events else after))
