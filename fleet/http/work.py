"""Work structure: artifacts, DAGs, the review quorum and the tracker bridge."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import azure.functions as func
from pydantic import Field, StringConstraints

from fleet.coordinator.identity import DEFAULT_PRODUCT, NAME
from fleet.coordinator.review import Reviewer
from fleet.coordinator.tracker import verify_github_signature
from fleet.domain import review as R
from fleet.domain.manifest import Manifest, parse_json
from fleet.errors import Problem, ValidationFailed
from fleet.http.jobs import job_view, readable_job
from fleet.http.operation import Call, Operations
from fleet.http.parsing import Body, body_bytes, body_model, json_value, parse_model
from fleet.http.responses import json_response

operations = Operations()


class ArtifactBody(Body):
    leaseEpoch: int = Field(ge=1)
    name: str = Field(min_length=1, max_length=200)
    contentType: str | None = Field(default=None, max_length=200)


ReviewKind = Annotated[str, StringConstraints(pattern=R.KIND_PATTERN)]


class ReviewBody(Body):
    """A vote. ``kind``: what an operator reviews as (default ``human``); a factory's kind
    is what it advertises (``kind:NAME``, else ``engine:NAME`` capabilities) and it may only
    name one of those."""

    verdict: Literal["approve", "reject"]
    comments: str = Field(default="", max_length=R.MAX_COMMENTS_CHARS)
    kind: ReviewKind | None = None


class ReviewRequestBody(Body):
    """Whom to ask (factory names, operators, or kinds: free text, recorded) and why."""

    reviewers: tuple[Annotated[str, StringConstraints(min_length=1, max_length=100)], ...] = Field(
        default=(), max_length=20
    )
    note: str | None = Field(default=None, max_length=R.MAX_NOTE_CHARS)


def _job_id(req: func.HttpRequest) -> str:
    return str(req.route_params.get("id", ""))


@operations.route("fleet/jobs/{id}/artifacts", "POST", caller="factory")
def issue_artifact_upload(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """A short-lived, write-only SAS URL for one blob of this attempt; only for the current
    lease holder (a stale epoch is 409 fenced: a zombie never gets one)."""
    principal = call.principal
    body = body_model(req, ArtifactBody)
    issued = call.context.coordinator.artifacts.issue_upload(
        principal.product, _job_id(req), principal.id, body.leaseEpoch, body.name, body.contentType
    )
    return json_response(issued, 201, {"Cache-Control": "no-store"})


@operations.route("fleet/jobs/{id}/artifacts", "GET", caller="any")
def list_artifacts(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    principal = call.principal
    if principal.kind == "factory":
        readable_job(call.context.coordinator, principal, _job_id(req))
    artifacts = call.context.coordinator.artifacts.list(principal.product, _job_id(req))
    return json_response({"artifacts": artifacts})


@operations.route("fleet/jobs/{id}/artifacts/{artifactId}", "GET", caller="any")
def download_artifact(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """A short-lived, read-only SAS URL for the artifact."""
    principal = call.principal
    if principal.kind == "factory":
        readable_job(call.context.coordinator, principal, _job_id(req))
    artifact_id = str(req.route_params.get("artifactId", ""))
    url = call.context.coordinator.artifacts.download_url(
        principal.product, _job_id(req), artifact_id
    )
    return json_response(url, 200, {"Cache-Control": "no-store"})


@operations.route("fleet/jobs/{id}/artifacts/{artifactId}", "DELETE", caller="operator")
def delete_artifact(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    principal = call.principal
    artifact_id = str(req.route_params.get("artifactId", ""))
    call.context.coordinator.artifacts.delete(principal.product, _job_id(req), artifact_id)
    return func.HttpResponse(status_code=204)


# --- DAGs ------------------------------------------------------------------------------

MAX_CHILDREN = 100


def _child_manifests(raw: Any) -> tuple[list[Manifest], Literal["all", "any"]]:
    if not isinstance(raw, dict):
        raise ValidationFailed.one("", "not_an_object", "expected a JSON object")
    mode = raw.get("mode", "all")
    children = raw.get("children")
    problems: list[Problem] = []
    if mode not in ("all", "any"):
        problems.append(Problem("mode", "enum", "one of all, any"))
    if not isinstance(children, list) or not children:
        problems.append(Problem("children", "missing", "a non-empty list of manifests"))
        children = []
    elif len(children) > MAX_CHILDREN:
        problems.append(Problem("children", "too_long", f"at most {MAX_CHILDREN}"))
    manifests: list[Manifest] = []
    for i, child in enumerate(children):
        try:
            manifests.append(parse_json(child))
        except ValidationFailed as exc:
            problems.extend(
                Problem(f"children[{i}]" + (f".{p.path}" if p.path else ""), p.code, p.message)
                for p in exc.problems
            )
    if problems:
        raise ValidationFailed(problems)
    return manifests, "any" if mode == "any" else "all"


@operations.route("fleet/jobs/{id}/children", "POST", caller="operator")
def add_children(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """Split a queued job into child jobs it waits for (``all`` or ``any``); idempotent."""
    principal = call.principal
    manifests, mode = _child_manifests(json_value(req))
    parent, children = call.context.coordinator.add_children(
        principal.product, _job_id(req), manifests, mode, principal.actor
    )
    return json_response(
        {"parent": job_view(parent), "children": [job_view(c) for c in children]}, 201
    )


@operations.route("fleet/jobs/{id}/dag", "GET", caller="any")
def job_dag(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """The job and, recursively, the jobs it waits for, with their stages."""
    principal = call.principal
    if principal.kind == "factory":
        readable_job(call.context.coordinator, principal, _job_id(req))
    return json_response(call.context.coordinator.dag(principal.product, _job_id(req)))


# --- the review quorum ------------------------------------------------------------------


@operations.route("fleet/jobs/{id}/review/request", "POST", caller="any")
def request_review(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """Ask for reviewers of a job in review (an operator, or the attempt's author): recorded
    as an event, and the gate is bumped so that polling reviewer factories look."""
    principal = call.principal
    body = parse_model(ReviewRequestBody, json_value(req, required=False))
    job = call.context.coordinator.reviews.request(
        principal.product,
        _job_id(req),
        Reviewer(principal.kind, principal.id),
        body.reviewers,
        body.note,
    )
    return json_response(job_view(job))


@operations.route("fleet/jobs/{id}/review", "POST", caller="any")
def review_job(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """Approve or reject the attempt under review (operators, or factories other than the
    author). The quorum ships it; a rejection queues it again with the comments in its
    checkpoint, or fails it after the last round."""
    principal = call.principal
    body = body_model(req, ReviewBody)
    job = call.context.coordinator.reviews.vote(
        principal.product,
        _job_id(req),
        Reviewer(principal.kind, principal.id),
        body.verdict,
        body.comments,
        body.kind,
    )
    return json_response(job_view(job))


# --- the tracker bridge -----------------------------------------------------------------


@operations.route("fleet/tracker/ingest", "POST", caller="anonymous")
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
            return json_response({"ignored": True, "event": event}, 202)
        return json_response({"job": job_view(job)}, 200)
    principal = call.authenticate(req, "operator")
    item = json_value(req)
    if not isinstance(item, dict):
        raise ValidationFailed.one("", "not_an_object", "expected a JSON object")
    job, created = context.tracker.ingest(principal.product, item, principal.actor)
    return json_response({"job": job_view(job), "created": created}, 201 if created else 200)


@operations.route("fleet/tracker/echo", "GET", caller="operator")
def tracker_echo_status(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """Where the echo of stage changes stands: cursor, failed attempts, next try, last error."""
    principal = call.principal
    status = call.context.tracker.status(principal.product)
    return json_response({**status, "configured": bool(call.context.settings.tracker_echo_url)})
