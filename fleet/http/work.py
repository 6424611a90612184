"""Work structure: artifacts, DAGs, the review quorum and the tracker bridge."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import azure.functions as func
from pydantic import BaseModel, Field, StringConstraints

from fleet.coordinator.artifacts import CONTENT_TYPES, LIST_MAX
from fleet.coordinator.identity import Principal
from fleet.coordinator.review import Reviewer
from fleet.domain import review as R
from fleet.domain.manifest import Manifest, parse_json
from fleet.domain.stages import Stage
from fleet.errors import Problem, ValidationFailed
from fleet.http.jobs import ManifestDocument, factory_may_read, job_id_of, readable_job
from fleet.http.operation import Call, Operations, Reply, json_body
from fleet.http.params import ARTIFACT_ID, JOB_ID
from fleet.http.parsing import Body, body_model, json_value, parse_model
from fleet.http.responses import reply
from fleet.http.views import JobView
from fleet.http.work_views import (
    ArtifactDownload,
    ArtifactList,
    ArtifactUpload,
    Children,
    DagNode,
)

operations = Operations()


class ArtifactBody(Body):
    leaseEpoch: int = Field(ge=1)
    name: str = Field(min_length=1, max_length=200)
    contentType: str | None = Field(
        default=None,
        max_length=200,
        description=(
            "One of: " + ", ".join(sorted(CONTENT_TYPES)) + " (optionally with "
            "`; charset=...`); anything else is 400 `content_type_not_allowed`."
        ),
    )


ReviewKind = Annotated[str, StringConstraints(pattern=R.KIND_PATTERN)]


class ReviewBody(Body):
    """A vote. ``kind``: what an operator reviews as (default ``human``); a factory's kind
    is the one fixed at its enrollment (``fleet.domain.review.enrolled_kind``) and it may
    only name one of those."""

    verdict: Literal["approve", "reject"]
    comments: str = Field(default="", max_length=R.MAX_COMMENTS_CHARS)
    kind: ReviewKind | None = None


class ReviewRequestBody(Body):
    """Whom to ask (factory names, operators, or kinds: free text, recorded) and why."""

    reviewers: tuple[Annotated[str, StringConstraints(min_length=1, max_length=100)], ...] = Field(
        default=(), max_length=20
    )
    note: str | None = Field(default=None, max_length=R.MAX_NOTE_CHARS)


@operations.route(
    "fleet/jobs/{id}/artifacts",
    "POST",
    caller="holder",
    id="issueArtifactUpload",
    summary="A short-lived write-only SAS URL for one blob of this attempt (holder only)",
    tag="lease",
    description=(
        "The blob is `{productId}/{jobId}/{epoch}/{name}`; PUT the bytes to `url` with "
        "`headers` within 15 minutes. A stale `leaseEpoch` is 409 `fenced`: a zombie "
        "never gets a URL. `contentType` comes from an allowlist (text, JSON, archives, "
        "PDF, PNG/JPEG/GIF/WebP images; never HTML, SVG, XML or scripts): anything else "
        "is 400 `content_type_not_allowed`. An attempt stores at most 100 artifacts (the "
        "app setting `FLEET_ARTIFACTS_PER_ATTEMPT`): a new name past that is 413 "
        "`quota_exceeded`, nothing created; a name asked for again gets a new URL."
    ),
    params=(JOB_ID,),
    body=json_body(ArtifactBody),
    replies={201: Reply("Where to upload.", ArtifactUpload)},
    errors=(400, 404, 409, 413),
    conflict="Fenced",
)
def issue_artifact_upload(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """A short-lived, write-only SAS URL for one blob of this attempt; only for the current
    lease holder (a stale epoch is 409 fenced: a zombie never gets one)."""
    principal = call.principal
    body = body_model(req, ArtifactBody)
    issued = call.context.coordinator.artifacts.issue_upload(
        principal.product,
        job_id_of(req),
        principal.id,
        body.leaseEpoch,
        body.name,
        body.contentType,
    )
    return reply(ArtifactUpload.model_validate(issued), 201, {"Cache-Control": "no-store"})


@operations.route(
    "fleet/jobs/{id}/artifacts",
    "GET",
    caller="any",
    id="listArtifacts",
    summary="The job's artifacts, every attempt's (size and type once uploaded)",
    tag="jobs",
    description=(
        f"One bounded query on the job: at most {LIST_MAX} artifacts, its newest attempts' "
        "when it has more (`truncated`)."
    ),
    params=(JOB_ID,),
    replies={200: Reply("The artifacts.", ArtifactList)},
    errors=(404,),
)
def list_artifacts(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    principal = call.principal
    if principal.kind == "factory":
        readable_job(call.context.coordinator, principal, job_id_of(req))
    artifacts, more = call.context.coordinator.artifacts.list(principal.product, job_id_of(req))
    return reply(ArtifactList.model_validate({"artifacts": artifacts, "truncated": more}))


@operations.route(
    "fleet/jobs/{id}/artifacts/{artifactId}",
    "GET",
    caller="any",
    id="downloadArtifact",
    summary="A short-lived read-only SAS URL for one artifact",
    tag="jobs",
    description=(
        "The URL answers with `Content-Disposition: attachment` (the SAS's `rscd`) and the "
        "artifact's allowed content type (`rsct`; `application/octet-stream` for any "
        "other): a browser saves it, never renders it as a page."
    ),
    params=(JOB_ID, ARTIFACT_ID),
    replies={200: Reply("Where to download it.", ArtifactDownload)},
    errors=(404,),
)
def download_artifact(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """A short-lived, read-only SAS URL for the artifact."""
    principal = call.principal
    if principal.kind == "factory":
        readable_job(call.context.coordinator, principal, job_id_of(req))
    artifact_id = str(req.route_params.get("artifactId", ""))
    url = call.context.coordinator.artifacts.download_url(
        principal.product, job_id_of(req), artifact_id
    )
    return reply(ArtifactDownload.model_validate(url), 200, {"Cache-Control": "no-store"})


@operations.route(
    "fleet/jobs/{id}/artifacts/{artifactId}",
    "DELETE",
    caller="operator",
    id="deleteArtifact",
    summary="Delete an artifact (the blob and its pointer)",
    tag="operator",
    params=(JOB_ID, ARTIFACT_ID),
    replies={204: Reply("Deleted.")},
    errors=(404,),
)
def delete_artifact(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    principal = call.principal
    artifact_id = str(req.route_params.get("artifactId", ""))
    call.context.coordinator.artifacts.delete(principal.product, job_id_of(req), artifact_id)
    return func.HttpResponse(status_code=204)


# --- DAGs ------------------------------------------------------------------------------

MAX_CHILDREN = 100


# The body as the document says it. The handler reads it itself (``_child_manifests``),
# child by child as a submit reads a manifest, so that every problem carries its child's
# path (``children[1].title``); other keys are ignored, as they were.
class ChildrenBody(BaseModel):
    """The child jobs: manifests (fields, or markdown) and how the parent waits for them."""

    mode: Literal["all", "any"] = "all"
    children: tuple[Manifest | ManifestDocument, ...] = Field(min_length=1, max_length=MAX_CHILDREN)


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


@operations.route(
    "fleet/jobs/{id}/children",
    "POST",
    caller="operator",
    id="addChildren",
    summary="Split a queued job into child jobs it waits for (idempotent)",
    tag="operator",
    description=(
        "The parent becomes `blocked` until its children satisfy `mode` (`all` shipped, "
        "or `any` shipped), then it is queued; a child that can never ship (dead-lettered, "
        "failed, cancelled) fails an `all` parent. Each child's idempotency key defaults "
        "to `{parent}:child:{index}`. A child depending on a job that waits for the "
        "parent is a cycle: 400 `cycle`, nothing created."
    ),
    params=(JOB_ID,),
    body=json_body(ChildrenBody),
    replies={201: Reply("The parent and its children.", Children)},
    errors=(400, 404, 409),
)
def add_children(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """Split a queued job into child jobs it waits for (``all`` or ``any``); idempotent."""
    principal = call.principal
    manifests, mode = _child_manifests(json_value(req))
    parent, children = call.context.coordinator.add_children(
        principal.product, job_id_of(req), manifests, mode, principal.actor
    )
    view = Children.model_construct(
        parent=JobView.of(parent), children=[JobView.of(c) for c in children]
    )
    return reply(view, 201)


@operations.route(
    "fleet/jobs/{id}/dag",
    "GET",
    caller="any",
    id="jobDag",
    summary="The job and, recursively, the jobs it waits for, with stages",
    tag="jobs",
    description=(
        "A factory token reads the DAG of a job it may read (one it holds, or one in "
        "review; 403 otherwise), and in it sees of every other job only what it may "
        "read: a job it neither holds nor could review is redacted to its `id`, `stage` "
        "and `deps` (`redacted: true`; no title, holder or mode)."
    ),
    params=(JOB_ID,),
    replies={200: Reply("The tree.", DagNode)},
    errors=(404,),
)
def job_dag(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """The job and, recursively, the jobs it waits for, with their stages (redacted, for a
    factory, where it may not read the job)."""
    principal = call.principal
    if principal.kind == "factory":
        readable_job(call.context.coordinator, principal, job_id_of(req))
    tree = call.context.coordinator.dag(principal.product, job_id_of(req))
    if principal.kind == "factory":
        tree = _redacted(tree, principal)
    return reply(DagNode.model_validate(tree))


_REDACTED_KEEPS = ("id", "stage", "deps")


def _redacted(node: dict[str, Any], reader: Principal) -> dict[str, Any]:
    """``node`` as the factory ``reader`` may see it: the jobs it may read whole
    (``factory_may_read``), the others by id and stage only; a missing job as it is."""
    if node.get("missing"):
        return node
    deps = node.get("deps")
    if deps is not None:
        node = {**node, "deps": [_redacted(d, reader) for d in deps]}
    if factory_may_read(reader, Stage(node["stage"]), node.get("holder")):
        return node
    return {**{k: node[k] for k in _REDACTED_KEEPS if k in node}, "redacted": True}


# --- the review quorum ------------------------------------------------------------------


@operations.route(
    "fleet/jobs/{id}/review/request",
    "POST",
    caller="any",
    id="requestReview",
    summary="Ask for reviewers of a job in review (recorded; wakes gated factories)",
    tag="review",
    description=(
        "An operator, or the factory whose attempt is under review (another factory: 403 "
        "`not_author`). Recorded in `reviewState.requests` and as a `review_request` "
        "event; the queue-state gate is bumped. 409 `not_in_review` outside review."
    ),
    params=(JOB_ID,),
    body=json_body(ReviewRequestBody, required=False),
    replies={200: Reply("The job, as it is now.", JobView)},
    errors=(400, 404, 409),
)
def request_review(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """Ask for reviewers of a job in review (an operator, or the attempt's author): recorded
    as an event, and the gate is bumped so that polling reviewer factories look."""
    principal = call.principal
    body = parse_model(ReviewRequestBody, json_value(req, required=False))
    job = call.context.coordinator.reviews.request(
        principal.product,
        job_id_of(req),
        Reviewer(principal.kind, principal.id),
        body.reviewers,
        body.note,
    )
    return reply(JobView.of(job))


@operations.route(
    "fleet/jobs/{id}/review",
    "POST",
    caller="any",
    id="reviewJob",
    summary="Approve or reject the attempt under review",
    tag="review",
    description=(
        "Operators (`kind` as given, default `human`) and factories (their kind is fixed "
        "at enrollment: the enrollment token's `kind`, else its allowlist's `kind:NAME`/"
        "`engine:NAME` names, else those it enrolled with; never what it re-registers). "
        "The manifest's `review.approvals` "
        "approvals from distinct reviewers in one round ship the job; one rejection "
        "queues it again with every vote's comments under `checkpoint.review`, or fails "
        "it in round `maxRounds`. 403 `self_review` (the author), `same_kind` (with "
        "`distinctKind`), `review_refused`; 409 `already_voted`, `not_in_review`."
    ),
    params=(JOB_ID,),
    body=json_body(ReviewBody),
    replies={200: Reply("The job, as it is now.", JobView)},
    errors=(400, 404, 409),
)
def review_job(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """Approve or reject the attempt under review (operators, or factories other than the
    author). The quorum ships it; a rejection queues it again with the comments in its
    checkpoint, or fails it after the last round."""
    principal = call.principal
    body = body_model(req, ReviewBody)
    job = call.context.coordinator.reviews.vote(
        principal.product,
        job_id_of(req),
        Reviewer(principal.kind, principal.id),
        body.verdict,
        body.comments,
        body.kind,
    )
    return reply(JobView.of(job))
