"""TRANSITION: the hand-written parts of the OpenAPI document not yet declared by their
handlers (``fleet.http.openapi`` falls back to them). Deleted when every operation is declared.

GET /api/openapi.json: the OpenAPI 3.1 description of the whole HTTP surface.

The document is built here from one route table (``OPERATIONS``) and the pydantic models:
request bodies from ``fleet.http.parsing`` and ``fleet.domain.manifest``, responses from
``fleet.domain.models`` (as the handlers shape them). ``tests/unit/test_openapi.py`` checks
the table against the routes ``function_app`` registers, in both directions, and that the
document is valid OpenAPI.

Route parameters that take a fixed set of values are expanded into concrete paths:
``fleet/jobs/{id}/lease/{op}`` is documented as ``.../lease/renew`` and ``.../lease/release``,
``fleet/jobs/{id}/{action}`` as one path per operator action (``.../cancel``, ...).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, models_json_schema

from fleet.coordinator.identity import DEFAULT_PRODUCT, NAME, PRODUCT_HEADER
from fleet.domain.manifest import (
    CAPABILITY_PATTERN,
    JOB_ID_PATTERN,
    MAX_CAPABILITY_CHARS,
    PROFILE_NAME_PATTERN,
    Manifest,
    ProfileSpec,
)
from fleet.domain.models import Event, Factory, Job, Lease, Profile, Run
from fleet.http.budgets import BudgetBody, ChannelBody
from fleet.http.factories import CommandBody, HeartbeatBody
from fleet.http.parsing import (
    ActionBody,
    AgentEventsBody,
    ClaimBody,
    EnrollBody,
    EnrollmentTokenBody,
    FactorySelf,
    LeaseBody,
    ReportBody,
    ReprioritizeBody,
    SettingsBody,
)
from fleet.http.responses import JSON
from fleet.http.work import ArtifactBody, ReviewBody, ReviewRequestBody

OPENAPI_VERSION = "3.1.0"
API_VERSION = "0.1.0"
MARKDOWN = "text/markdown"

Schema = dict[str, Any]
# Which bearer token an operation takes: a factory's, an operator's, either, or (enroll
# only) an enrollment token.
Identity = Literal["factory", "operator", "any", "enrollment"]


def _ref(name: str, kind: str = "schemas") -> Schema:
    return {"$ref": f"#/components/{kind}/{name}"}


# --- the route table -------------------------------------------------------------------


@dataclass(frozen=True)
class Body:
    """A request body: content type -> schema."""

    content: Mapping[str, Schema]
    required: bool = True
    description: str = ""


@dataclass(frozen=True)
class Reply:
    """One documented response. ``schema`` None: no body (204)."""

    description: str
    schema: Schema | None = None
    headers: Mapping[str, Schema] = field(default_factory=dict)


@dataclass(frozen=True)
class Operation:
    method: Literal["get", "post", "put", "patch", "delete"]
    path: str  # as documented, with the route prefix: /api/fleet/jobs/{id}
    operation_id: str
    summary: str
    tag: str
    identity: Identity | None = None  # which bearer token it takes; None: anonymous
    description: str = ""
    parameters: tuple[Schema, ...] = ()  # path and query parameters
    body: Body | None = None
    replies: Mapping[int, Reply] = field(default_factory=dict)
    # Error responses (refs to components/responses) besides the ones every identified
    # operation has (401 with identity; 500 and 503 for every fleet operation).
    errors: tuple[Literal[400, 404, 409], ...] = ()
    conflict: Literal["Fenced", "Conflict", "FactoryConflict"] = "Conflict"
    fleet_errors: bool = True  # served by fleet.http.operation.serve: 500 and 503 are possible


def _path_param(name: str, description: str, pattern: str | None = None) -> Schema:
    schema: Schema = {"type": "string"}
    if pattern:
        schema["pattern"] = pattern
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


def _query(name: str, description: str, schema: Schema) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


ARTIFACT_ID = _path_param("artifactId", "The artifact's id (from the list).")
PRODUCT_ID = _path_param("productId", "The product.", r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
CHANNEL = _path_param("channel", "The channel.", r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
JOB_ID = _path_param("id", "The job id: 'j' and 26 lower-case letters or digits.")
FACTORY_ID = _path_param("id", "The factory's name.", NAME.pattern)
LOCATION = {
    "Location": {"description": "The job's URL.", "schema": {"type": "string"}},
}


def _job_reply(description: str = "The job, as it is now.") -> Reply:
    return Reply(description, _ref("Job"))


def _json_body(name: str, *, required: bool = True, description: str = "") -> Body:
    return Body({JSON: _ref(name)}, required=required, description=description)


def _operator_action(action: str, summary: str) -> Operation:
    return Operation(
        "post",
        f"/api/fleet/jobs/{{id}}/{action}",
        f"{action}Job",
        summary,
        "operator",
        identity="operator",
        parameters=(JOB_ID,),
        body=_json_body(
            "ActionBody", required=False, description="Optional; the reason is recorded."
        ),
        replies={200: _job_reply()},
        errors=(400, 404, 409),
        description="409 `illegal_transition` when the job's stage does not allow it.",
    )


OPERATIONS: tuple[Operation, ...] = (
    # --- meta
    Operation(
        "get",
        "/api/health",
        "health",
        "Each dependency's reachability from this instance",
        "meta",
        fleet_errors=False,
        replies={
            200: Reply("Every dependency is reachable.", _ref("Health")),
            503: Reply(
                "A dependency is down (`degraded`, with each dependency's probe), or the app "
                "cannot start (`down`: a setting is missing or the store is unreachable).",
                {"anyOf": [_ref("Health"), _ref("HealthDown")]},
            ),
        },
    ),
    Operation(
        "get",
        "/api/openapi.json",
        "openapiDocument",
        "This document",
        "meta",
        fleet_errors=False,
        replies={200: Reply("The OpenAPI 3.1 document.", {"type": "object"})},
    ),
    # --- jobs
    Operation(
        "post",
        "/api/fleet/jobs",
        "submitJob",
        "Submit a job",
        "jobs",
        identity="operator",
        description=(
            "The manifest as markdown (YAML front matter and the agent's instructions; "
            "`text/plain` and `text/x-markdown` are read as markdown too), or as JSON: the "
            'fields, or `{"manifest": "<markdown>"}`. A second submit with the same '
            "`idempotencyKey` answers 200 with the job the first one created."
        ),
        body=Body(
            {
                MARKDOWN: {"type": "string", "description": "The manifest as markdown."},
                JSON: {"oneOf": [_ref("Manifest"), _ref("ManifestDocument")]},
            }
        ),
        replies={
            201: Reply("Created.", _ref("SubmitResult"), LOCATION),
            200: Reply(
                "A job with this idempotency key already exists: that job (`created` false).",
                _ref("SubmitResult"),
                LOCATION,
            ),
        },
        errors=(400,),
    ),
    Operation(
        "get",
        "/api/fleet/jobs",
        "listJobs",
        "The product's jobs (without body and events)",
        "jobs",
        identity="any",
        description=(
            "One page, ordered by job id (ids never change, so following `next` neither "
            "skips nor repeats a job while jobs change stage; ids sort by submit time). "
            "Pass the reply's `next` back as `cursor` for the following page; `next` is "
            "null on the last page. The `stage` filter applies to every page. A factory "
            "token lists only the jobs it holds and the jobs in review. One bounded query "
            "a page (two for a factory token without a stage filter)."
        ),
        parameters=(
            _query("stage", "Only jobs in this stage.", _ref("Stage")),
            _query(
                "limit",
                "At most this many jobs in the page (more is 400).",
                {"type": "integer", "minimum": 1, "maximum": 1000, "default": 200},
            ),
            _query(
                "cursor",
                "Opaque: the `next` of the previous page (anything else is 400).",
                {"type": "string"},
            ),
        ),
        replies={200: Reply("A page of jobs, by id.", _ref("JobList"))},
        errors=(400,),
    ),
    Operation(
        "get",
        "/api/fleet/jobs/{id}",
        "getJob",
        "One job, with its recent events",
        "jobs",
        identity="any",
        description="A factory token reads only a job it holds (403 otherwise).",
        parameters=(JOB_ID,),
        replies={200: _job_reply("The job.")},
        errors=(404,),
    ),
    Operation(
        "patch",
        "/api/fleet/jobs/{id}",
        "reportJob",
        "The lease holder reports stage, checkpoint, progress or result",
        "lease",
        identity="factory",
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
            "`maxAttempts`, epoch bumped) and the reply is 409 `budget_exceeded`."
        ),
        parameters=(JOB_ID,),
        body=_json_body("ReportBody"),
        replies={200: _job_reply()},
        errors=(400, 404, 409),
        conflict="Fenced",
    ),
    Operation(
        "post",
        "/api/fleet/jobs/{id}/lease/renew",
        "renewLease",
        "Extend the lease",
        "lease",
        identity="factory",
        description=(
            "Fenced by `leaseEpoch`: 409 `fenced` when the lease is not the caller's. Past the "
            "attempt's `deadlineAt` (its `timeoutSeconds`) the lease is not extended: the "
            "attempt is ended (run outcome `timeout`, retried following `maxAttempts`, epoch "
            "bumped) and the reply is 409 `timeout`."
        ),
        parameters=(JOB_ID,),
        body=_json_body("LeaseBody"),
        replies={200: Reply("The renewed lease and the cadence to keep.", _ref("LeaseRenewal"))},
        errors=(400, 404, 409),
        conflict="Fenced",
    ),
    Operation(
        "post",
        "/api/fleet/jobs/{id}/lease/release",
        "releaseLease",
        "Give the job back (queued again, checkpoint kept, no attempt counted)",
        "lease",
        identity="factory",
        description="Fenced by `leaseEpoch`: 409 `fenced` when the lease is not the caller's.",
        parameters=(JOB_ID,),
        body=_json_body("LeaseBody"),
        replies={200: _job_reply()},
        errors=(400, 404, 409),
        conflict="Fenced",
    ),
    _operator_action("cancel", "Cancel a job"),
    _operator_action("requeue", "Queue a job again"),
    _operator_action("ship", "Mark a job shipped"),
    _operator_action("reject", "Reject a job under review or test (it fails)"),
    Operation(
        "post",
        "/api/fleet/jobs/{id}/reprioritize",
        "reprioritizeJob",
        "Change a job's priority",
        "operator",
        identity="operator",
        description="409 `illegal_transition` for a finished job.",
        parameters=(JOB_ID,),
        body=_json_body("ReprioritizeBody"),
        replies={200: _job_reply()},
        errors=(400, 404, 409),
    ),
    Operation(
        "get",
        "/api/fleet/jobs/{id}/events",
        "jobEvents",
        "A job's history after a sequence number",
        "jobs",
        identity="any",
        description="A factory token reads only a job it holds (403 otherwise).",
        parameters=(
            JOB_ID,
            _query(
                "after",
                "Only events with a greater `seq`.",
                {"type": "integer", "minimum": 0, "default": 0},
            ),
        ),
        replies={200: Reply("The events, oldest first.", _ref("JobEvents"))},
        errors=(400, 404),
    ),
    Operation(
        "post",
        "/api/fleet/jobs/{id}/events",
        "postAgentEvents",
        "The holder forwards its engine's events (decisions, tool calls, notes)",
        "factory",
        identity="factory",
        description=(
            "Fenced by `leaseEpoch` (409 `fenced`); never changes the job. At most 100 events "
            "a batch, each payload at most 16 KiB of JSON; `seq` is the sender's own number "
            "within the attempt, so a batch sent twice is stored once (201 when something "
            "was new, 200 when all were already stored)."
        ),
        parameters=(JOB_ID,),
        body=_json_body("AgentEventsBody"),
        replies={
            201: Reply("Stored.", _ref("AgentEventsStored")),
            200: Reply("Nothing new (a retried batch).", _ref("AgentEventsStored")),
        },
        errors=(400, 404, 409),
        conflict="Fenced",
    ),
    Operation(
        "get",
        "/api/fleet/jobs/{id}/agent-events",
        "agentEvents",
        "A job's agent events after a cursor, oldest first",
        "jobs",
        identity="any",
        description="A factory token reads only a job it holds (403 otherwise).",
        parameters=(
            JOB_ID,
            _query("after", "The `cursor` of the previous page.", {"type": "string"}),
            _query(
                "limit",
                "At most this many (capped at 500).",
                {"type": "integer", "minimum": 1, "default": 200},
            ),
        ),
        replies={200: Reply("The events and the cursor to pass back.", _ref("AgentEvents"))},
        errors=(400, 404),
    ),
    Operation(
        "get",
        "/api/fleet/jobs/{id}/runs",
        "jobRuns",
        "Every attempt's run record, oldest first",
        "jobs",
        identity="any",
        description=(
            "One run per attempt (epoch): opened by the claim, closed by whatever ended the "
            "attempt (the holder's report, release, the reaper, the healer, preemption, an "
            "operator, a limit). The newest 20 live in the job (`runs`), older ones in run "
            "documents: this answers all of them. A factory token reads only a job it holds "
            "(403 otherwise)."
        ),
        parameters=(JOB_ID,),
        replies={200: Reply("The runs, oldest first.", _ref("JobRuns"))},
        errors=(404,),
    ),
    Operation(
        "get",
        "/api/fleet/jobs/{id}/explain",
        "explainJob",
        "Why a job is (not) running, factory by factory",
        "jobs",
        identity="any",
        description="A factory token reads only a job it holds (403 otherwise).",
        parameters=(JOB_ID,),
        replies={200: Reply("The scheduler's verdict per factory.", _ref("Explain"))},
        errors=(404,),
    ),
    # --- the fleet
    Operation(
        "post",
        "/api/fleet/claim",
        "claim",
        "Claim the best queued job for this factory",
        "fleet",
        identity="factory",
        description=(
            "403 when the capabilities exceed the factory's enrollment allowlist. "
            "`requestId` (the factory's own id for this claim, 8-64 of `A-Za-z0-9_-`) is "
            "stored in the lease. A factory whose claim reply was lost (a timeout, a dropped "
            "connection) re-sends the same `requestId` with `retry: true`: if that claim won "
            "a job that is still `assigned` to it under a current lease, the reply is that "
            "claim's again (same job, lease and epoch; no new event); otherwise a normal "
            "claim. `retry` without `requestId` is 400."
        ),
        body=_json_body(
            "ClaimBody",
            required=False,
            description="What the factory says about itself, and its id for this claim.",
        ),
        replies={
            200: Reply("The job is assigned to the caller.", _ref("Claim")),
            204: Reply("Nothing for this factory now."),
        },
        errors=(400,),
    ),
    Operation(
        "get",
        "/api/fleet/queue-state",
        "queueState",
        "The claim gate: one point read",
        "fleet",
        identity="any",
        description=(
            "Skip the claim while `version` is unchanged, but claim at least every "
            "`maxSkipSeconds` anyway: the version is a hint, never a guarantee. To keep the "
            "idle poll one point read, an instance trusts a factory token it verified in the "
            "last 30 s without reading it again (so a revocation reaches this endpoint within "
            "30 s; every other endpoint refuses a revoked token on the next request)."
        ),
        replies={200: Reply("The gate.", _ref("QueueState"))},
    ),
    Operation(
        "post",
        "/api/fleet/factories/register",
        "registerFactory",
        "Record what a factory says about itself",
        "fleet",
        identity="factory",
        description=(
            "The factory is the one its token names. 403 when the capabilities exceed its "
            "enrollment allowlist."
        ),
        body=_json_body("FactorySelf", required=False),
        replies={200: Reply("The factory as recorded.", _ref("Factory"))},
        errors=(400,),
    ),
    Operation(
        "get",
        "/api/fleet/factories",
        "listFactories",
        "The product's factories",
        "fleet",
        identity="any",
        description=(
            "With an operator token each factory carries `heartbeat`: its last heartbeat in "
            "brief (age, load, seats, held jobs with their idle seconds, pending commands), "
            "or null. The whole list costs one query and two table queries, whatever the "
            "fleet's size; `GET /api/fleet/factories/{id}/heartbeat` has the full record."
        ),
        replies={200: Reply("The factories, by id.", _ref("FactoryList"))},
    ),
    Operation(
        "post",
        "/api/fleet/factories/heartbeat",
        "factoryHeartbeat",
        "The factory is alive: load, seats, progress per held job; acknowledges commands",
        "fleet",
        identity="factory",
        description=(
            "Table Storage only, normally: no Cosmos write (a factory marked stale or down, "
            "or whose capabilities, seats, version or cost changed, is re-registered). Keep "
            "`cadence.heartbeatSeconds`. `commands` are delivered on every reply until their "
            "ids come back in `ack`. `status` `deregistered` or `revoked`: the beat changed "
            "nothing (enroll again to re-join). Output lines are stored cut to 500 characters."
        ),
        body=_json_body("HeartbeatBody", required=False),
        replies={
            200: Reply("The cadence to keep and the pending commands.", _ref("HeartbeatReply"))
        },
        errors=(400,),
    ),
    Operation(
        "post",
        "/api/fleet/factories/{id}/commands",
        "commandFactory",
        "Queue a command for the factory (delivered on its heartbeats until acknowledged)",
        "operator",
        identity="operator",
        description=(
            "`pause`, `drain` and `resume` also set the factory's `paused` / `draining` at "
            "once (the scheduler and explain read them). `cancel-job` (with `jobId`) cancels "
            "the job first, fencing its holder, and answers it in `job`; 409 `not_held` when "
            "the factory does not hold it, 409 `factory_deregistered` for a departed factory."
        ),
        parameters=(FACTORY_ID,),
        body=_json_body("CommandBody"),
        replies={202: Reply("Queued.", _ref("CommandIssued"))},
        errors=(400, 404, 409),
    ),
    Operation(
        "get",
        "/api/fleet/factories/{id}/heartbeat",
        "factoryLastHeartbeat",
        "The factory's last heartbeat, progress per held job, and pending commands",
        "fleet",
        identity="operator",
        parameters=(FACTORY_ID,),
        replies={200: Reply("The last heartbeat.", _ref("FactoryHeartbeat"))},
        errors=(400, 404),
    ),
    Operation(
        "delete",
        "/api/fleet/factories/{id}",
        "deregisterFactory",
        "The factory leaves the fleet",
        "fleet",
        identity="any",
        description=(
            "An operator, or the factory itself on a clean shutdown (another factory is 403). "
            "The reaper then requeues what it still holds (fencing it); its heartbeat and "
            "pending commands are removed. Idempotent; 404 only for a name never seen."
        ),
        parameters=(FACTORY_ID,),
        replies={200: Reply("Deregistered.", _ref("Deregistration"))},
        errors=(400, 404),
    ),
    Operation(
        "get",
        "/api/fleet/events",
        "productEvents",
        "Every job's events after a cursor, oldest first",
        "fleet",
        identity="operator",
        parameters=(
            _query("after", "The `cursor` of the previous page.", {"type": "string"}),
            _query(
                "limit",
                "At most this many events (larger values are capped at 500).",
                {"type": "integer", "minimum": 1, "default": 200},
            ),
        ),
        replies={200: Reply("The events and the cursor to pass back.", _ref("ProductEvents"))},
        errors=(400,),
    ),
    Operation(
        "get",
        "/api/fleet/metrics",
        "metrics",
        "Utilization, queue depth, starvation, stale factories, stalled and unroutable jobs, "
        "spend vs ceiling",
        "fleet",
        identity="any",
        description="Written by the metrics timer (`METRICS_SCHEDULE`); this is one point read.",
        replies={200: Reply("The metrics.", _ref("Metrics"))},
    ),
    Operation(
        "get",
        "/api/fleet/alerts",
        "alerts",
        "Active alerts and the recent raise/clear events",
        "fleet",
        identity="any",
        description=(
            "Alerts are evaluated by the metrics timer against the product's rules "
            "(`alerts` in `/api/fleet/settings`); each raise and clear is also an event in "
            "`/api/fleet/events` and, if `ALERT_WEBHOOK_URL` is set, POSTed there signed."
        ),
        parameters=(
            _query(
                "history",
                "At most this many recent events, newest first (at most 100).",
                {"type": "integer", "minimum": 0, "default": 50},
            ),
        ),
        replies={200: Reply("The alerts.", _ref("Alerts"))},
        errors=(400,),
    ),
    Operation(
        "get",
        "/api/fleet/settings",
        "getSettings",
        "The product's scheduler weights, preemption rule and alert rules",
        "fleet",
        identity="any",
        replies={200: Reply("The settings in force.", _ref("Settings"))},
    ),
    Operation(
        "put",
        "/api/fleet/settings",
        "putSettings",
        "Change the product's scheduler weights, preemption and alert rules (omitted ones "
        "are kept)",
        "operator",
        identity="operator",
        body=_json_body("SettingsBody"),
        replies={200: Reply("The settings now in force.", _ref("Settings"))},
        errors=(400,),
        description="Instances pick up a change within 30 seconds (they cache settings).",
    ),
    # --- DAGs
    Operation(
        "post",
        "/api/fleet/jobs/{id}/children",
        "addChildren",
        "Split a queued job into child jobs it waits for (idempotent)",
        "operator",
        identity="operator",
        description=(
            "The parent becomes `blocked` until its children satisfy `mode` (`all` shipped, "
            "or `any` shipped), then it is queued; a child that can never ship (dead-lettered, "
            "failed, cancelled) fails an `all` parent. Each child's idempotency key defaults "
            "to `{parent}:child:{index}`. A child depending on a job that waits for the "
            "parent is a cycle: 400 `cycle`, nothing created."
        ),
        parameters=(JOB_ID,),
        body=_json_body("ChildrenBody"),
        replies={201: Reply("The parent and its children.", _ref("Children"))},
        errors=(400, 404, 409),
    ),
    Operation(
        "get",
        "/api/fleet/jobs/{id}/dag",
        "jobDag",
        "The job and, recursively, the jobs it waits for, with stages",
        "jobs",
        identity="any",
        parameters=(JOB_ID,),
        replies={200: Reply("The tree.", _ref("DagNode"))},
        errors=(404,),
    ),
    # --- the tracker bridge
    Operation(
        "post",
        "/api/fleet/tracker/ingest",
        "trackerIngest",
        "A tracker item becomes a job, idempotently (generic JSON, or GitHub's issues webhook)",
        "operator",
        identity="operator",
        description=(
            "Generic: `{source, id, title, body?, url?, ...manifest fields}` with an operator "
            "token; the job's idempotency key is `tracker:{source}:{id}` (201 new, 200 the "
            "same item again). GitHub: send the issues webhook here with `?product=`; it is "
            "authenticated by `X-Hub-Signature-256` instead of a token (401 when it does not "
            "match); events other than opened/reopened/labeled issues are 202 ignored. Stage "
            "changes of tracker jobs are POSTed to `TRACKER_ECHO_URL`, signed "
            "`X-Fleet-Signature-256`, by the reaper's timer, retried with backoff."
        ),
        body=Body({JSON: {"type": "object"}}),
        replies={
            201: Reply("A new job.", _ref("TrackerJob")),
            200: Reply("The job already made from this item.", _ref("TrackerJob")),
            202: Reply("A webhook event that makes no job.", {"type": "object"}),
        },
        errors=(400,),
    ),
    Operation(
        "get",
        "/api/fleet/tracker/echo",
        "trackerEcho",
        "Where the echo of stage changes stands",
        "operator",
        identity="operator",
        replies={200: Reply("Cursor, failed attempts, next try, last error.", {"type": "object"})},
    ),
    # --- the review quorum
    Operation(
        "post",
        "/api/fleet/jobs/{id}/review/request",
        "requestReview",
        "Ask for reviewers of a job in review (recorded; wakes gated factories)",
        "review",
        identity="any",
        description=(
            "An operator, or the factory whose attempt is under review (another factory: 403 "
            "`not_author`). Recorded in `reviewState.requests` and as a `review_request` "
            "event; the queue-state gate is bumped. 409 `not_in_review` outside review."
        ),
        parameters=(JOB_ID,),
        body=_json_body("ReviewRequestBody", required=False),
        replies={200: _job_reply()},
        errors=(400, 404, 409),
    ),
    Operation(
        "post",
        "/api/fleet/jobs/{id}/review",
        "reviewJob",
        "Approve or reject the attempt under review",
        "review",
        identity="any",
        description=(
            "Operators (`kind` as given, default `human`) and factories (their kind is their "
            "`kind:NAME`, else `engine:NAME` capabilities). The manifest's `review.approvals` "
            "approvals from distinct reviewers in one round ship the job; one rejection "
            "queues it again with every vote's comments under `checkpoint.review`, or fails "
            "it in round `maxRounds`. 403 `self_review` (the author), `same_kind` (with "
            "`distinctKind`), `review_refused`; 409 `already_voted`, `not_in_review`."
        ),
        parameters=(JOB_ID,),
        body=_json_body("ReviewBody"),
        replies={200: _job_reply()},
        errors=(400, 404, 409),
    ),
    # --- artifacts
    Operation(
        "post",
        "/api/fleet/jobs/{id}/artifacts",
        "issueArtifactUpload",
        "A short-lived write-only SAS URL for one blob of this attempt (holder only)",
        "factory",
        identity="factory",
        description=(
            "The blob is `{productId}/{jobId}/{epoch}/{name}`; PUT the bytes to `url` with "
            "`headers` within 15 minutes. A stale `leaseEpoch` is 409 `fenced`: a zombie "
            "never gets a URL."
        ),
        parameters=(JOB_ID,),
        body=_json_body("ArtifactBody"),
        replies={201: Reply("Where to upload.", _ref("ArtifactUpload"))},
        errors=(400, 404, 409),
        conflict="Fenced",
    ),
    Operation(
        "get",
        "/api/fleet/jobs/{id}/artifacts",
        "listArtifacts",
        "The job's artifacts, every attempt's (size and type once uploaded)",
        "jobs",
        identity="any",
        parameters=(JOB_ID,),
        replies={200: Reply("The artifacts.", _ref("Artifacts"))},
        errors=(404,),
    ),
    Operation(
        "get",
        "/api/fleet/jobs/{id}/artifacts/{artifactId}",
        "downloadArtifact",
        "A short-lived read-only SAS URL for one artifact",
        "jobs",
        identity="any",
        parameters=(JOB_ID, ARTIFACT_ID),
        replies={200: Reply("Where to download it.", _ref("ArtifactDownload"))},
        errors=(404,),
    ),
    Operation(
        "delete",
        "/api/fleet/jobs/{id}/artifacts/{artifactId}",
        "deleteArtifact",
        "Delete an artifact (the blob and its pointer)",
        "operator",
        identity="operator",
        parameters=(JOB_ID, ARTIFACT_ID),
        replies={204: Reply("Deleted.")},
        errors=(404,),
    ),
    # --- budgets and channels
    Operation(
        "get",
        "/api/fleet/budgets/{productId}",
        "getBudget",
        "A product's budget: ceiling, spent, reserved, remaining, paused",
        "budgets",
        identity="any",
        parameters=(PRODUCT_ID,),
        replies={
            200: Reply("The budget (all zeros and no ceiling when none is set).", _ref("Budget"))
        },
        errors=(400,),
    ),
    Operation(
        "put",
        "/api/fleet/budgets/{productId}",
        "putBudget",
        "Set the ceiling in USD (null: no ceiling); spend and reservations are kept",
        "budgets",
        identity="operator",
        parameters=(PRODUCT_ID,),
        body=_json_body("BudgetBody"),
        replies={200: Reply("The budget now.", _ref("Budget"))},
        errors=(400,),
    ),
    *(
        Operation(
            "post",
            f"/api/fleet/budgets/{{productId}}/{op}",
            f"{op}Budget",
            summary,
            "budgets",
            identity="operator",
            parameters=(PRODUCT_ID,),
            replies={200: Reply("The budget now.", _ref("Budget"))},
            errors=(400,),
        )
        for op, summary in (
            ("pause", "Pause the product: no job of it may start"),
            ("resume", "Lift an operator's pause"),
        )
    ),
    Operation(
        "get",
        "/api/fleet/budgets/{productId}/burndown",
        "budgetBurndown",
        "Spend and reservations over time (a point per metrics run), oldest first",
        "budgets",
        identity="any",
        parameters=(PRODUCT_ID,),
        replies={200: Reply("The points.", _ref("Burndown"))},
        errors=(400,),
    ),
    Operation(
        "get",
        "/api/fleet/channels",
        "listChannels",
        "The product's channel limits, bucket levels and running counts",
        "budgets",
        identity="any",
        replies={200: Reply("The channels.", _ref("Channels"))},
    ),
    Operation(
        "put",
        "/api/fleet/channels/{channel}",
        "putChannel",
        "Set a channel's token bucket and running cap (takes effect on the next claim)",
        "budgets",
        identity="operator",
        parameters=(CHANNEL,),
        body=_json_body("ChannelBody"),
        replies={200: Reply("The channel now.", _ref("Channel"))},
        errors=(400,),
    ),
    Operation(
        "delete",
        "/api/fleet/channels/{channel}",
        "deleteChannel",
        "Remove a channel's limits",
        "budgets",
        identity="operator",
        parameters=(CHANNEL,),
        replies={204: Reply("Removed.")},
        errors=(400, 404),
    ),
    # --- tokens
    Operation(
        "post",
        "/api/fleet/enrollment-tokens",
        "createEnrollmentToken",
        "Create an enrollment token for the product (shown once)",
        "tokens",
        identity="operator",
        description=(
            "A factory exchanges it, once, for its own token (`POST /api/fleet/factories/"
            "enroll`). Optional: an expiry, and a capability allowlist the enrolling factory "
            "must stay within. The token is in this response only; store it now."
        ),
        body=_json_body("EnrollmentTokenBody", required=False),
        replies={201: Reply("The token, once.", _ref("IssuedEnrollmentToken"))},
        errors=(400,),
    ),
    Operation(
        "get",
        "/api/fleet/enrollment-tokens",
        "listEnrollmentTokens",
        "The product's enrollment tokens (no secrets)",
        "tokens",
        identity="operator",
        replies={200: Reply("Oldest first.", _ref("EnrollmentTokenList"))},
    ),
    Operation(
        "delete",
        "/api/fleet/enrollment-tokens/{id}",
        "revokeEnrollmentToken",
        "Revoke an enrollment token",
        "tokens",
        identity="operator",
        parameters=(_path_param("id", "The token's id from the listing.", "^[0-9a-f]{12}$"),),
        replies={200: Reply("The token, now revoked.", _ref("EnrollmentToken"))},
        errors=(404,),
    ),
    Operation(
        "post",
        "/api/fleet/factories/enroll",
        "enrollFactory",
        "Exchange an enrollment token for this factory's token",
        "tokens",
        identity="enrollment",
        description=(
            "The bearer is the enrollment token; it works once (a second use, also a racing "
            "one, is 401). 403 when the capabilities exceed the token's allowlist; 409 "
            "`factory_exists` when a factory of this name is enrolled (and not deregistered) "
            "— neither uses the token up. The factory token is in this response only."
        ),
        body=_json_body("EnrollBody"),
        replies={201: Reply("Enrolled and registered.", _ref("Enrollment"))},
        errors=(400, 409),
        conflict="FactoryConflict",
    ),
    Operation(
        "post",
        "/api/fleet/factories/{id}/token/rotate",
        "rotateFactoryToken",
        "A new token for the factory; the old one works for a grace period",
        "tokens",
        identity="any",
        description=(
            "The factory itself or an operator. The old tokens keep working until "
            "`previousValidUntil` (`FLEET_TOKEN_GRACE_SECONDS`, default 300), then are 401."
        ),
        parameters=(FACTORY_ID,),
        replies={200: Reply("The new token, once.", _ref("TokenRotation"))},
        errors=(404, 409),
        conflict="FactoryConflict",
    ),
    Operation(
        "post",
        "/api/fleet/factories/{id}/token/revoke",
        "revokeFactoryToken",
        "Revoke every token of a factory",
        "tokens",
        identity="operator",
        description=(
            "Its next request is 401, and the factory is marked revoked: the reaper requeues "
            "the jobs it holds (epoch bumped, so it is fenced). The idle gate poll "
            "(`queue-state`) may accept its token for up to 30 s more on an instance that "
            "verified it just before (a per-instance cache keeps that poll one read)."
        ),
        parameters=(FACTORY_ID,),
        replies={200: Reply("Revoked.", _ref("FactoryRevocation"))},
        errors=(404,),
    ),
    # --- profiles
    Operation(
        "put",
        "/api/fleet/profiles/{name}",
        "putProfile",
        "Create the next version of a profile",
        "profiles",
        identity="operator",
        description=(
            "Profiles are immutable: each PUT creates the next version. The body is markdown "
            "(optional front matter: engine, capabilities, description; the body is the "
            'preamble) or JSON: the fields, or `{"profile": "<markdown>"}`.'
        ),
        parameters=(_path_param("name", "The profile (persona) name.", PROFILE_NAME_PATTERN),),
        body=Body(
            {
                MARKDOWN: {"type": "string", "description": "The profile as markdown."},
                JSON: {"oneOf": [_ref("ProfileSpec"), _ref("ProfileDocument")]},
            }
        ),
        replies={201: Reply("The new version.", _ref("Profile"))},
        errors=(400, 409),
    ),
    Operation(
        "get",
        "/api/fleet/profiles/{name}",
        "getProfile",
        "A profile: the latest version, or the one asked for",
        "profiles",
        identity="any",
        parameters=(
            _path_param("name", "The profile (persona) name.", PROFILE_NAME_PATTERN),
            _query(
                "version", "This version (default: the latest).", {"type": "integer", "minimum": 1}
            ),
        ),
        replies={200: Reply("The profile.", _ref("Profile"))},
        errors=(400, 404),
    ),
    Operation(
        "get",
        "/api/fleet/profiles",
        "listProfiles",
        "The latest version of every profile",
        "profiles",
        identity="any",
        replies={200: Reply("The profiles, by name.", _ref("ProfileList"))},
    ),
)

# --- schemas -------------------------------------------------------------------------


class _Generator(GenerateJsonSchema):
    """Pydantic's JSON schema without a title on every field ("Leaseepoch")."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


_MODELS: tuple[tuple[type[BaseModel], JsonSchemaMode], ...] = (
    (Manifest, "validation"),
    (ProfileSpec, "validation"),
    (FactorySelf, "validation"),
    (ClaimBody, "validation"),
    (LeaseBody, "validation"),
    (ReportBody, "validation"),
    (ActionBody, "validation"),
    (ReprioritizeBody, "validation"),
    (SettingsBody, "validation"),
    (AgentEventsBody, "validation"),
    (ArtifactBody, "validation"),
    (ReviewBody, "validation"),
    (ReviewRequestBody, "validation"),
    (BudgetBody, "validation"),
    (ChannelBody, "validation"),
    (HeartbeatBody, "validation"),
    (CommandBody, "validation"),
    (EnrollmentTokenBody, "validation"),
    (EnrollBody, "validation"),
    (Job, "serialization"),
    (Run, "serialization"),
    (Event, "serialization"),
    (Lease, "serialization"),
    (Factory, "serialization"),
    (Profile, "serialization"),
)

_TIMESTAMPS = {
    "at",
    "expiresAt",
    "createdAt",
    "updatedAt",
    "lastEventAt",
    "lastSeen",
    "openedAt",
    "startedAt",
    "endedAt",
    "deadlineAt",
}


def _model_schemas() -> dict[str, Schema]:
    """The models' schemas, every nested model a component of its own. Field names, not
    aliases: the manifest accepts both, and they match the job's."""
    _, top = models_json_schema(
        _MODELS,
        by_alias=False,
        ref_template="#/components/schemas/{model}",
        schema_generator=_Generator,
    )
    schemas: dict[str, Schema] = top["$defs"]
    for schema in schemas.values():
        _fix(schema)
    return schemas


def _fix(schema: Any) -> None:
    """Pydantic writes a tuple's max_length as maxLength; JSON Schema counts items with
    maxItems. Timestamps are serialized by a plain function: say they are date-times."""
    if isinstance(schema, dict):
        if schema.get("type") == "array":
            for length, items in (("maxLength", "maxItems"), ("minLength", "minItems")):
                if length in schema:
                    schema[items] = schema.pop(length)
        for name, prop in schema.get("properties", {}).items():
            if name in _TIMESTAMPS and prop == {"type": "string"}:
                prop["format"] = "date-time"
            if name in _TIMESTAMPS and {"type": "string"} in prop.get("anyOf", []):
                prop["anyOf"] = [
                    {"type": "string", "format": "date-time"} if s == {"type": "string"} else s
                    for s in prop["anyOf"]
                ]
        for value in schema.values():
            _fix(value)
    elif isinstance(schema, list):
        for value in schema:
            _fix(value)


def _refine_requests(schemas: dict[str, Schema]) -> None:
    """What validators (not types) check, and the shorthand forms the manifest accepts;
    each only where the model's own schema does not say it already."""
    capability = {
        "type": "string",
        "pattern": CAPABILITY_PATTERN,
        "maxLength": MAX_CAPABILITY_CHARS,
    }
    for name in ("Manifest", "ProfileSpec"):
        capabilities = schemas[name]["properties"].get("capabilities", {})
        if capabilities.get("items") == {"type": "string"}:
            capabilities["items"] = dict(capability)
    manifest = schemas["Manifest"]["properties"]
    deps = manifest.get("deps", {}).get("anyOf")
    if deps is not None and not any(s.get("type") == "array" for s in deps):
        shorthand = {
            "type": "array",
            "items": {"type": "string", "pattern": JOB_ID_PATTERN},
            "description": "Shorthand for {mode: all, jobs: [...]}.",
        }
        deps.insert(0, shorthand)
    described = {
        "repo": "A git URL: https://, ssh://, scp-like git@host:path or file:// (at most "
        "2048 characters). Never with credentials (400 `invalid`): the factory uses its "
        "machine's own.",
        "base": "The branch to start from (a valid git branch name); default: the remote's "
        "default branch.",
        "pr": "Open (or reuse) a pull request for the shipped branch.",
        "timeoutSeconds": "Per attempt; default: the product's `timeoutSeconds`, else none.",
        "maxCostUsd": "Per attempt: a reported cost over it ends the attempt.",
    }
    for name, text in described.items():
        if name in manifest:
            manifest[name]["description"] = text
    budget = manifest.get("budgetUsd", {}).get("anyOf")
    if budget and budget[0].get("type") == "number" and len(budget) == 2:
        mapping = {
            "type": "object",
            "properties": {"estimateUsd": budget[0]},
            "required": ["estimateUsd"],
            "additionalProperties": False,
        }
        budget.insert(1, mapping)


def _views(schemas: dict[str, Schema]) -> None:
    """The documents as the handlers return them (``job_view``, ``profile_view``, ...)."""
    job = schemas["Job"]
    job["properties"].pop("type")
    job["properties"]["holder"] = {
        "anyOf": [{"type": "string"}, {"type": "null"}],
        "description": "The factory holding the lease, if any.",
    }
    job["required"] = [*job["required"], "holder"]
    summary = copy.deepcopy(job)
    summary["title"] = "JobSummary"
    for name in ("body", "events"):
        summary["properties"].pop(name)
    schemas["JobSummary"] = summary

    factory = schemas["Factory"]
    factory["properties"].pop("type")
    listed = copy.deepcopy(factory)
    listed["title"] = "FactoryListItem"
    listed["properties"]["id"] = {"type": "string", "description": "The factory's name."}
    listed["properties"]["live"] = {
        "type": "boolean",
        "description": "Seen within the stale threshold.",
    }
    listed["required"] = [*listed["required"], "live"]
    listed["properties"]["heartbeat"] = {
        "anyOf": [_ref("HeartbeatSummary"), {"type": "null"}],
        "description": "Operators only: the last heartbeat in brief; null when none.",
    }
    schemas["FactoryListItem"] = listed

    profile = schemas["Profile"]
    for name in ("type", "id"):
        profile["properties"].pop(name)
    profile["required"] = [r for r in profile["required"] if r != "id"]


def _obj(properties: Schema, required: tuple[str, ...] | None = None, **extra: Any) -> Schema:
    schema: Schema = {"type": "object", "properties": properties}
    schema["required"] = list(properties if required is None else required)
    return schema | extra


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


_INT = {"type": "integer"}
_STR = {"type": "string"}
_BREAKDOWN = _obj(
    {"total": {"type": "number"}},
    additionalProperties={"type": "number"},
    description="The score and each of its terms.",
)


def _hand_schemas() -> dict[str, Schema]:
    problem = _obj(
        {
            "path": {"type": "string", "description": "Where: `capabilities[1]`; `` for all."},
            "code": {"type": "string", "description": "What, machine-readable."},
            "message": _STR,
        }
    )
    error = _obj(
        {
            "error": {"type": "string", "description": "A machine-readable code."},
            "message": {"type": "string", "description": "For people."},
            "details": {
                "type": "object",
                "description": "Context; `problems` lists every problem of an invalid request.",
                "properties": {"problems": {"type": "array", "items": _ref("Problem")}},
            },
        },
        required=("error", "message"),
    )
    probe = _obj(
        {"ok": {"type": "boolean"}, "ms": {"type": "number"}, "error": _STR, "message": _STR},
        required=("ok",),
    )
    return {
        "Error": error,
        "Problem": problem,
        "ManifestDocument": _obj(
            {"manifest": {"type": "string", "description": "The manifest as markdown."}},
            additionalProperties=False,
        ),
        "ProfileDocument": _obj(
            {"profile": {"type": "string", "description": "The profile as markdown."}},
            additionalProperties=False,
        ),
        "SubmitResult": _obj(
            {
                "job": _ref("Job"),
                "created": {"type": "boolean"},
                "warning": {
                    "type": "string",
                    "description": "Set when no registered factory can run the job.",
                },
            },
            required=("job", "created"),
        ),
        "JobList": _obj(
            {
                "jobs": {"type": "array", "items": _ref("JobSummary")},
                "count": {**_INT, "description": "Jobs in this page."},
                "next": _nullable(
                    {"type": "string", "description": "Pass back as `cursor`; null: last page."}
                ),
            }
        ),
        "JobEvents": _obj(
            {
                "events": {"type": "array", "items": _ref("Event")},
                "last": {"type": "integer", "description": "Pass back as `after`."},
            }
        ),
        "Cadence": _obj({"heartbeatSeconds": _INT, "renewSeconds": _INT}),
        "LeaseRenewal": _obj({"lease": _ref("Lease"), "cadence": _ref("Cadence")}),
        "Claim": _obj(
            {
                "job": _ref("Job"),
                "lease": _ref("Lease"),
                "cadence": _ref("Cadence"),
                "score": _BREAKDOWN,
                "limits": _ref("Limits"),
            }
        ),
        "Limits": _obj(
            {
                "timeoutSeconds": _nullable(
                    {**_INT, "description": "The manifest's, else the product's default."}
                ),
                "deadlineAt": _nullable(
                    {
                        "type": "string",
                        "format": "date-time",
                        "description": "Renewals after this are refused (409 `timeout`).",
                    }
                ),
                "maxCostUsd": _nullable(
                    {
                        "type": "number",
                        "description": "A reported cost over this ends the attempt "
                        "(409 `budget_exceeded`).",
                    }
                ),
            },
            description="The effective limits of this attempt.",
        ),
        "JobRuns": _obj({"runs": {"type": "array", "items": _ref("Run")}}),
        "Explain": _obj(
            {
                "jobId": _STR,
                "stage": _ref("Stage"),
                "holder": _nullable(_STR),
                "epoch": _INT,
                "unroutable": {"type": "boolean"},
                "summary": _STR,
                "factories": {
                    "type": "array",
                    "items": _obj(
                        {
                            "factory": _STR,
                            "eligible": {"type": "boolean"},
                            "reasons": {"type": "array", "items": _STR},
                            "missingCapabilities": {"type": "array", "items": _STR},
                            "score": _nullable(_BREAKDOWN),
                        }
                    ),
                },
            }
        ),
        "QueueState": _obj({"version": _INT, "maxSkipSeconds": _INT}),
        "FactoryList": _obj({"factories": {"type": "array", "items": _ref("FactoryListItem")}}),
        "Command": _obj(
            {
                "id": {"type": "string", "description": "Pass it back in `ack`."},
                "kind": {
                    "type": "string",
                    "enum": ["drain", "pause", "resume", "restart-engine", "cancel-job"],
                },
                "jobId": _nullable(_STR),
                "issuedAt": {"type": "string", "format": "date-time"},
                "issuedBy": _STR,
                "reason": _nullable(_STR),
            }
        ),
        "HeartbeatReply": _obj(
            {
                "status": {"type": "string", "enum": ["live", "deregistered", "revoked"]},
                "cadence": _obj({"heartbeatSeconds": _INT}),
                "commands": {"type": "array", "items": _ref("Command")},
            }
        ),
        "CommandIssued": _obj(
            {"command": _ref("Command"), "job": _ref("Job")}, required=("command",)
        ),
        "FactoryHeartbeat": _obj(
            {
                "factory": _STR,
                "at": _nullable({"type": "string", "format": "date-time"}),
                "ageSeconds": _nullable({"type": "number"}),
                "status": _nullable(_STR),
                "load": _INT,
                "seats": _INT,
                "capabilities": {"type": "array", "items": _STR},
                "version": _nullable(_STR),
                "jobs": {
                    "type": "array",
                    "items": _obj(
                        {
                            "jobId": _STR,
                            "leaseEpoch": _INT,
                            "tokens": _INT,
                            "costUsd": {"type": "number"},
                            "lastActivityAt": _nullable({"type": "string", "format": "date-time"}),
                            "lastOutputLine": _nullable(_STR),
                            "progressChangedAt": {"type": "string", "format": "date-time"},
                            "idleSeconds": {
                                "type": "number",
                                "description": "Since the progress last changed.",
                            },
                        }
                    ),
                },
                "pendingCommands": {"type": "array", "items": _ref("Command")},
            }
        ),
        "HeartbeatSummary": _obj(
            {
                "at": _nullable({"type": "string", "format": "date-time"}),
                "ageSeconds": _nullable({"type": "number"}),
                "load": _nullable(_INT),
                "seats": _nullable(_INT),
                "jobs": {
                    "type": "array",
                    "items": _obj(
                        {
                            "jobId": _STR,
                            "leaseEpoch": _INT,
                            "idleSeconds": {
                                "type": "number",
                                "description": "Since the progress last changed.",
                            },
                        }
                    ),
                },
                "pendingCount": {**_INT, "description": "Commands not yet acknowledged."},
                "pendingKinds": {"type": "array", "items": _STR},
            },
            description="`at` null: commands wait for a factory that has not beaten yet.",
        ),
        "Deregistration": _obj({"factory": _STR, "deregistered": {"type": "boolean"}}),
        "ProductEvent": {
            "anyOf": [{"allOf": [_ref("Event"), _obj({"jobId": _STR})]}, _ref("AlertEvent")]
        },
        "AlertEvent": _obj(
            {
                "seq": {**_INT, "description": "Per product, over alert events."},
                "type": {"enum": ["alert_raised", "alert_cleared"]},
                "kind": {"enum": ["raised", "cleared"]},
                "key": {
                    "type": "string",
                    "description": "Stable: no_live_factories, starvation, stale_factories, "
                    "stalled_jobs, unroutable_jobs, review_waiting, budget.",
                },
                "severity": {"enum": ["info", "warning", "critical"]},
                "message": _STR,
                "details": {"type": "object"},
                "at": {"type": "string", "format": "date-time"},
                "jobId": {"type": "null", "description": "In the event feed: not a job's."},
                "alert": {"const": True, "description": "In the event feed."},
            },
            required=("seq", "type", "kind", "key", "severity", "message", "details", "at"),
        ),
        "ActiveAlert": _obj(
            {
                "key": _STR,
                "severity": {"enum": ["info", "warning", "critical"]},
                "message": _STR,
                "details": {"type": "object"},
                "since": {"type": "string", "format": "date-time"},
                "updatedAt": {"type": "string", "format": "date-time"},
            }
        ),
        "Alerts": _obj(
            {
                "active": {"type": "array", "items": _ref("ActiveAlert")},
                "history": {"type": "array", "items": _ref("AlertEvent")},
                "evaluatedAt": _nullable({"type": "string", "format": "date-time"}),
                "webhook": _obj(
                    {
                        "configured": {"type": "boolean"},
                        "cursor": _nullable(_STR),
                        "attempts": _nullable(_INT),
                        "nextAttemptAt": _nullable(_STR),
                        "lastError": _nullable(_STR),
                    }
                ),
            }
        ),
        "ChildrenBody": _obj(
            {
                "mode": {"enum": ["all", "any"], "default": "all"},
                "children": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 100,
                    "items": _ref("Manifest"),
                },
            },
            required=("children",),
        ),
        "TrackerJob": _obj({"job": _ref("Job"), "created": {"type": "boolean"}}, required=("job",)),
        "Children": _obj(
            {"parent": _ref("Job"), "children": {"type": "array", "items": _ref("Job")}}
        ),
        "DagNode": {
            "type": "object",
            "properties": {
                "id": {"type": "string"},
                "title": {"type": "string"},
                "stage": {"type": "string"},
                "mode": {"type": ["string", "null"]},
                "holder": {"type": ["string", "null"]},
                "missing": {"type": "boolean"},
                "deps": {"type": "array", "items": {"$ref": "#/components/schemas/DagNode"}},
            },
            "required": ["id"],
        },
        "Artifact": _obj(
            {
                "id": {"type": "string"},
                "jobId": {"type": "string"},
                "epoch": {"type": "integer"},
                "name": {"type": "string"},
                "blob": {"type": "string"},
                "contentType": {"type": ["string", "null"]},
                "size": {"type": ["integer", "null"]},
                "uploadedBy": {"type": "string"},
                "createdAt": {"type": "string"},
            }
        ),
        "Artifacts": _obj({"artifacts": {"type": "array", "items": _ref("Artifact")}}),
        "ArtifactUpload": _obj(
            {
                "artifactId": {"type": "string"},
                "url": {"type": "string"},
                "method": {"type": "string"},
                "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                "expiresAt": {"type": "string"},
                "blob": {"type": "string"},
            }
        ),
        "ArtifactDownload": _obj({"url": {"type": "string"}, "expiresAt": {"type": "string"}}),
        "AgentEventsStored": _obj({"stored": {"type": "integer"}, "received": {"type": "integer"}}),
        "AgentEvents": _obj(
            {
                "events": {
                    "type": "array",
                    "items": _obj(
                        {
                            "key": {"type": "string"},
                            "epoch": {"type": "integer"},
                            "seq": {"type": "integer"},
                            "eventType": {"type": "string"},
                            "payload": {},
                            "factory": {"type": "string"},
                            "at": {"type": "string"},
                        }
                    ),
                },
                "cursor": {"type": ["string", "null"]},
            }
        ),
        "ProductEvents": _obj(
            {
                "events": {"type": "array", "items": _ref("ProductEvent")},
                "cursor": {
                    "anyOf": [_STR, {"type": "null"}],
                    "description": "Pass back as `after`.",
                },
            }
        ),
        "Settings": _obj(
            {
                "weights": {"type": "object", "additionalProperties": {"type": "number"}},
                "preemption": _obj(
                    {
                        "enabled": {"type": "boolean"},
                        "minPriority": {"type": "integer"},
                        "afterSeconds": {"type": "number"},
                    }
                ),
                "alerts": _obj(
                    {
                        "enabled": {"type": "boolean"},
                        "starvationSeconds": {"type": "number"},
                        "staleFactories": _INT,
                        "stalledJobs": _INT,
                        "unroutableJobs": _INT,
                        "reviewWaitingSeconds": {"type": "number"},
                        "budgetFraction": {"type": "number"},
                        "noLiveFactories": {"type": "boolean"},
                    }
                ),
                "timeoutSeconds": _nullable(
                    {**_INT, "description": "An attempt's timeout when its manifest names none."}
                ),
            }
        ),
        "Budget": _obj(
            {
                "product": {"type": "string"},
                "exists": {"type": "boolean"},
                "ceilingUsd": {"type": ["number", "null"]},
                "spentUsd": {"type": "number"},
                "reservedUsd": {"type": "number"},
                "remainingUsd": {"type": ["number", "null"]},
                "usedFraction": {"type": ["number", "null"]},
                "paused": {"type": "boolean"},
                "autoPaused": {"type": "boolean"},
                "reservations": {"type": "integer"},
                "updatedAt": {"type": ["string", "null"]},
            }
        ),
        "Burndown": _obj(
            {
                "product": {"type": "string"},
                "points": {
                    "type": "array",
                    "items": _obj(
                        {
                            "at": {"type": "string"},
                            "spentUsd": {"type": "number"},
                            "reservedUsd": {"type": "number"},
                            "ceilingUsd": {"type": ["number", "null"]},
                        }
                    ),
                },
            }
        ),
        "Channel": _obj(
            {
                "channel": {"type": "string"},
                "ratePerMinute": {"type": ["number", "null"]},
                "burst": {"type": "integer"},
                "maxRunning": {"type": ["integer", "null"]},
                "tokens": {"type": "number"},
                "running": {"type": "integer"},
                "blocked": {"type": ["string", "null"]},
            }
        ),
        "Channels": _obj({"channels": {"type": "array", "items": _ref("Channel")}}),
        "Metrics": _obj(
            {
                "at": {"type": "string", "format": "date-time"},
                "queueDepth": {
                    "type": "object",
                    "propertyNames": _ref("Stage"),
                    "additionalProperties": _INT,
                },
                "oldestQueuedSeconds": _nullable({"type": "number"}),
                "utilization": _obj(
                    {
                        "held": {**_INT, "description": "Jobs assigned, building or testing."},
                        "seats": {**_INT, "description": "Seats of the live factories."},
                        "fraction": _nullable({"type": "number"}),
                    }
                ),
                "factories": _obj(
                    {
                        "total": _INT,
                        "live": _INT,
                        "stale": {"type": "array", "items": _STR},
                        "down": {"type": "array", "items": _STR},
                    }
                ),
                "starvation": _obj(
                    {
                        "thresholdSeconds": {"type": "number"},
                        "count": _INT,
                        "jobs": {
                            "type": "array",
                            "items": _obj({"jobId": _STR, "waitingSeconds": {"type": "number"}}),
                        },
                    }
                ),
                "stalled": _obj({"count": _INT, "jobs": {"type": "array", "items": _STR}}),
                "unroutable": _INT,
                "unroutableJobs": {"type": "array", "items": _STR},
                "review": _obj(
                    {
                        "thresholdSeconds": {"type": "number"},
                        "oldestSeconds": _nullable({"type": "number"}),
                        "overdue": _INT,
                        "waiting": {
                            "type": "array",
                            "items": _obj({"jobId": _STR, "waitingSeconds": {"type": "number"}}),
                        },
                    }
                ),
                "scanned": {**_INT, "description": "Oldest queued jobs looked at."},
                "truncated": {"type": "boolean"},
                "spend": _nullable(
                    _obj(
                        {
                            "spentUsd": {"type": "number"},
                            "reservedUsd": {"type": "number"},
                            "ceilingUsd": _nullable({"type": "number"}),
                            "fraction": _nullable({"type": "number"}),
                        }
                    )
                ),
                "budget": _ref("Budget"),
            },
            required=(
                "at",
                "queueDepth",
                "oldestQueuedSeconds",
                "utilization",
                "factories",
                "starvation",
                "stalled",
                "unroutable",
                "unroutableJobs",
                "scanned",
                "truncated",
                "spend",
            ),
        ),
        "ProfileList": _obj({"profiles": {"type": "array", "items": _ref("Profile")}}),
        "IssuedEnrollmentToken": _obj(
            {
                "token": {
                    "type": "string",
                    "pattern": "^fle_",
                    "description": "The enrollment token: shown this once.",
                },
                "id": {"type": "string", "description": "Names it in listings."},
                "product": _STR,
                "expiresAt": _nullable({"type": "string", "format": "date-time"}),
                "capabilities": _nullable({"type": "array", "items": _STR}),
            }
        ),
        "EnrollmentToken": _obj(
            {
                "id": _STR,
                "product": _STR,
                "status": {"type": "string", "enum": ["active", "used", "expired", "revoked"]},
                "createdAt": {"type": "string", "format": "date-time"},
                "createdBy": _STR,
                "expiresAt": _nullable({"type": "string", "format": "date-time"}),
                "capabilities": _nullable({"type": "array", "items": _STR}),
                "usedAt": _nullable({"type": "string", "format": "date-time"}),
                "usedBy": _nullable(_STR),
                "revokedAt": _nullable({"type": "string", "format": "date-time"}),
            }
        ),
        "EnrollmentTokenList": _obj(
            {"tokens": {"type": "array", "items": _ref("EnrollmentToken")}}
        ),
        "Enrollment": _obj(
            {
                "factoryId": _STR,
                "product": _STR,
                "token": {
                    "type": "string",
                    "pattern": "^flf_",
                    "description": "The factory's token: shown this once.",
                },
            }
        ),
        "TokenRotation": _obj(
            {
                "factoryId": _STR,
                "product": _STR,
                "token": {"type": "string", "pattern": "^flf_"},
                "previousValidUntil": {
                    "type": "string",
                    "format": "date-time",
                    "description": "The old tokens are refused from then on.",
                },
            }
        ),
        "FactoryRevocation": _obj(
            {"factoryId": _STR, "revoked": {"type": "boolean"}, "revokedTokens": _INT}
        ),
        "HealthProbe": probe,
        "Health": _obj(
            {
                "status": {"type": "string", "enum": ["ok", "degraded"]},
                "store": _STR,
                "dependencies": {"type": "object", "additionalProperties": _ref("HealthProbe")},
            }
        ),
        "HealthDown": {
            "allOf": [
                _ref("Error"),
                _obj({"status": {"type": "string", "const": "down"}}),
            ]
        },
    }


# --- parameters and responses shared by operations ------------------------------------


def _header(
    name: str, description: str, *, required: bool = False, default: str | None = None
) -> Schema:
    schema: Schema = {"type": "string", "pattern": NAME.pattern}
    if default is not None:
        schema["default"] = default
    return {
        "name": name,
        "in": "header",
        "required": required,
        "description": description,
        "schema": schema,
    }


_PARAMETERS: dict[str, Schema] = {
    "Product": _header(
        PRODUCT_HEADER,
        "The product (partition) the call is about. Operator tokens are not product-scoped, "
        "so operators name it here; a factory token carries its product, and naming "
        "another one is 403.",
        default=DEFAULT_PRODUCT,
    ),
}

_SECURITY_SCHEMES: dict[str, Schema] = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "description": (
            "`Authorization: Bearer <token>`. Operator tokens start `flo_` (locally the stack "
            "command prints one; deployed, `FLEET_OPERATOR_TOKENS`), factory tokens `flf_` "
            "(from enrollment), enrollment tokens `fle_` (only for "
            "`POST /api/fleet/factories/enroll`)."
        ),
    }
}

# Which kind of bearer token each identity takes, said in the operation's description.
_IDENTITY_NOTE: dict[Identity, str] = {
    "factory": "Bearer: a factory token.",
    "operator": "Bearer: an operator token.",
    "any": "Bearer: an operator or a factory token.",
    "enrollment": "Bearer: an enrollment token.",
}


def _error(
    description: str, example: Schema | None = None, headers: Schema | None = None
) -> Schema:
    content: Schema = {"schema": _ref("Error")}
    if example is not None:
        content["example"] = example
    response: Schema = {"description": description, "content": {JSON: content}}
    if headers:
        response["headers"] = headers
    return response


_RESPONSES: dict[str, Schema] = {
    "BadRequest": _error(
        "The request is invalid (`validation_failed`, `illegal_report`); "
        "`details.problems` lists every problem.",
        {
            "error": "validation_failed",
            "message": "title: Field required",
            "details": {
                "problems": [{"path": "title", "code": "missing", "message": "Field required"}]
            },
        },
    ),
    "Unauthorized": _error(
        "No bearer token, or one that is invalid, expired or revoked (`unauthorized`); the "
        "message never says which.",
        {"error": "unauthorized", "message": "invalid, expired or revoked token"},
        headers={"WWW-Authenticate": {"description": "`Bearer`.", "schema": {"type": "string"}}},
    ),
    "Forbidden": _error(
        "The token is valid but may not do this (`forbidden`): the wrong kind of token, "
        "another product, a job the factory does not hold, or capabilities outside the "
        "enrollment allowlist.",
        {
            "error": "forbidden",
            "message": "factory tokens cannot do this: it needs an operator token",
        },
    ),
    "NotFound": _error("No such job or profile (`job_not_found`, `not_found`)."),
    "Fenced": _error(
        "`fenced`: the lease epoch is stale, the job was reassigned and nothing was changed "
        "(stop working on it); `timeout` or `budget_exceeded`: the attempt was ended at its "
        "deadline or cost cap (by this call, or before it: stop working on it, report nothing "
        "more for it); or `illegal_transition`, or `conflict` on a write race.",
        {
            "error": "fenced",
            "message": "lease epoch 3 on job j01jc0m9ayqj0f3a4q1x5e6n7z8 is not current",
            "details": {"jobId": "j01jc0m9ayqj0f3a4q1x5e6n7z8", "epoch": 3, "currentEpoch": 4},
        },
    ),
    "Conflict": _error(
        "The job's stage does not allow this (`illegal_transition`, `not_in_review`), a "
        "reviewer voted twice in a round (`already_voted`), or a write race was lost too "
        "often (`conflict`): nothing was changed."
    ),
    "FactoryConflict": _error(
        "`factory_exists`: a factory of this name is enrolled (deregister it first); or "
        "`factory_revoked`: the factory was revoked (enroll it again)."
    ),
    "TooLarge": _error(
        "The request body is over 512 KiB (`too_large`); nothing was read or changed.",
        {
            "error": "too_large",
            "message": "request body too large: 600000 bytes, at most 524288 bytes",
        },
    ),
    "InternalError": _error("An unexpected error (`internal`); nothing internal is shown."),
    "Unavailable": _error(
        "The store is unavailable or throttling (`store_unavailable`), or a setting is "
        "missing (`settings`). Retry later.",
        headers={
            "Retry-After": {"description": "Seconds to wait, when the store said.", "schema": _INT}
        },
    ),
}

_ERROR_RESPONSES: dict[int, str] = {400: "BadRequest", 404: "NotFound"}


# --- the document ----------------------------------------------------------------------


def _operation(op: Operation) -> Schema:
    out: Schema = {"operationId": op.operation_id, "summary": op.summary, "tags": [op.tag]}
    if op.description:
        out["description"] = op.description
    parameters = list(op.parameters)
    if op.identity is not None:
        out["description"] = " ".join(filter(None, (_IDENTITY_NOTE[op.identity], op.description)))
        out["security"] = [{"bearerAuth": []}]
        if op.identity != "enrollment":
            parameters.append(_ref("Product", "parameters"))
    if parameters:
        out["parameters"] = parameters
    if op.body is not None:
        body: Schema = {
            "required": op.body.required,
            "content": {ctype: {"schema": s} for ctype, s in op.body.content.items()},
        }
        if op.body.description:
            body["description"] = op.body.description
        out["requestBody"] = body
    responses: Schema = {}
    for status, reply in op.replies.items():
        response: Schema = {"description": reply.description}
        if reply.schema is not None:
            response["content"] = {JSON: {"schema": reply.schema}}
        if reply.headers:
            response["headers"] = dict(reply.headers)
        responses[str(status)] = response
    for status in op.errors:
        name = op.conflict if status == 409 else _ERROR_RESPONSES[status]
        responses[str(status)] = _ref(name, "responses")
    if op.body is not None:
        responses["413"] = _ref("TooLarge", "responses")
    if op.identity is not None:
        responses["401"] = _ref("Unauthorized", "responses")
        responses["403"] = _ref("Forbidden", "responses")
    if op.fleet_errors:
        responses["500"] = _ref("InternalError", "responses")
        responses["503"] = _ref("Unavailable", "responses")
    out["responses"] = dict(sorted(responses.items()))
    return out


# Route parameters that take a fixed set of values: documented as one path per value.
_FIXED: dict[str, tuple[str, ...]] = {
    "op": ("renew", "release", "pause", "resume"),
    "action": ("cancel", "requeue", "ship", "reject", "reprioritize"),
}


def schemas() -> dict[str, Schema]:
    """The hand-written and hand-patched components."""
    out = _model_schemas()
    _views(out)
    return out | _hand_schemas()


def operations(op: Any) -> dict[str, Schema]:
    """The documented paths of an undeclared operation (several for a fixed-value route)."""
    import re

    pattern = "/api/" + re.sub(
        r"\\{(\w+)\\}",
        lambda m: (
            "(?:" + "|".join(_FIXED[m.group(1)]) + ")"
            if m.group(1) in _FIXED
            else re.escape("{" + m.group(1) + "}")
        ),
        re.escape(op.route),
    )
    found = {
        o.path: _operation(o)
        for o in OPERATIONS
        if o.method == op.method.lower() and re.fullmatch(pattern, o.path)
    }
    if not found:
        raise ValueError(f"{op.method} {op.route} is neither declared nor documented")
    return found
