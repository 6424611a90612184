"""The tracker bridge: a tracker item (generic JSON, or GitHub's issues webhook) becomes a
job, idempotently; stage changes of tracker jobs are echoed back."""

from __future__ import annotations

import json
from typing import Literal

import azure.functions as func
from pydantic import Field

from fleet.coordinator.identity import DEFAULT_PRODUCT, NAME
from fleet.coordinator.tracker import verify_github_signature
from fleet.errors import ValidationFailed
from fleet.http.operation import Call, Operations, Reply, json_body
from fleet.http.parsing import body_bytes, json_value
from fleet.http.responses import reply
from fleet.http.views import JobView, View, omitted

operations = Operations()


class TrackerJob(View):
    job: JobView
    created: bool | None = omitted(
        "A generic item: whether this call made the job (absent for GitHub's webhook)."
    )


class TrackerIgnored(View):
    ignored: Literal[True]
    event: str = Field(description="The `X-GitHub-Event` that made no job.")


class TrackerEcho(View):
    """Where the echo of stage changes to ``TRACKER_ECHO_URL`` stands."""

    cursor: str | None = Field(description="The last stage change delivered.")
    attempts: int | None = Field(description="Failed attempts at delivering the next one.")
    nextAttemptAt: str | None = Field(description="No retry before then.")
    lastError: str | None
    configured: bool = Field(description="Whether `TRACKER_ECHO_URL` is set.")


@operations.route(
    "fleet/tracker/ingest",
    "POST",
    caller="anonymous",
    id="trackerIngest",
    summary=(
        "A tracker item becomes a job, idempotently (generic JSON, or GitHub's issues webhook)"
    ),
    tag="operator",
    description=(
        "Generic: `{source, id, title, body?, url?, ...manifest fields}` with an operator "
        "token; the job's idempotency key is `tracker:{source}:{id}` (201 new, 200 the "
        "same item again). GitHub: send the issues webhook here with `?product=`; it is "
        "authenticated by `X-Hub-Signature-256` instead of a token (401 when it does not "
        "match); events other than opened/reopened/labeled issues are 202 ignored. Stage "
        "changes of tracker jobs are POSTed to `TRACKER_ECHO_URL`, signed "
        "`X-Fleet-Signature-256`, by the reaper's timer, retried with backoff."
    ),
    body=json_body({"type": "object"}),
    replies={
        201: Reply("A new job.", TrackerJob),
        200: Reply("The job already made from this item.", TrackerJob),
        202: Reply("A webhook event that makes no job.", TrackerIgnored),
    },
    errors=(400,),
    bearer="operator",
)
def tracker_ingest(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """A tracker item becomes a job, idempotently. GitHub's issues webhook (``X-GitHub-Event``)
    is authenticated by its ``X-Hub-Signature-256`` (product: ``?product=``); anything else
    is a generic item sent with an operator token."""
    context = call.context
    event = req.headers.get("X-GitHub-Event")
    if event is not None:
        raw = body_bytes(req)
        verify_github_signature(
            context.settings.tracker_webhook_secret, raw, req.headers.get("X-Hub-Signature-256")
        )
        product = req.params.get("product") or DEFAULT_PRODUCT
        if not NAME.match(product):
            raise ValidationFailed.one("product", "string_pattern_mismatch", "not a product")
        try:
            payload = json.loads(raw) if raw.strip() else {}
        except ValueError:
            raise ValidationFailed.one("", "invalid_json", "the body is not JSON") from None
        if not isinstance(payload, dict):
            raise ValidationFailed.one("", "not_an_object", "expected a JSON object")
        job = context.tracker.ingest_github(product, event, payload)
        if job is None:
            return reply(TrackerIgnored.model_construct(ignored=True, event=event), 202)
        return reply(TrackerJob.model_construct(job=JobView.of(job)))
    principal = call.authenticate(req, "operator")
    item = json_value(req)
    if not isinstance(item, dict):
        raise ValidationFailed.one("", "not_an_object", "expected a JSON object")
    job, created = context.tracker.ingest(principal.product, item, principal.actor)
    view = TrackerJob.model_construct(job=JobView.of(job), created=created)
    return reply(view, 201 if created else 200)


@operations.route(
    "fleet/tracker/echo",
    "GET",
    caller="operator",
    id="trackerEcho",
    summary="Where the echo of stage changes stands",
    tag="operator",
    replies={200: Reply("Cursor, failed attempts, next try, last error.", TrackerEcho)},
)
def tracker_echo_status(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """Where the echo of stage changes stands: cursor, failed attempts, next try, last error."""
    principal = call.principal
    status = call.context.tracker.status(principal.product)
    configured = bool(call.context.settings.tracker_echo_url)
    return reply(TrackerEcho.model_validate({**status, "configured": configured}))
