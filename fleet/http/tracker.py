"""The tracker bridge: a tracker item (generic JSON, or GitHub's issues webhook) becomes a
job, idempotently; stage changes of tracker jobs are echoed back. GitHub's webhook lands only
in the product an operator bound its repository to (``PUT fleet/tracker/github``)."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Literal

import azure.functions as func
from pydantic import AfterValidator, Field, StringConstraints

from fleet.coordinator.github import (
    ASSOCIATIONS,
    DEFAULT_ASSOCIATIONS,
    MAX_LABEL,
    MAX_SECRET,
    MIN_SECRET,
    REPOSITORY_PATTERN,
    Association,
    printable,
    valid_repository,
)
from fleet.coordinator.tracker import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    Delivered,
    GitHubDelivery,
    Reason,
)
from fleet.errors import ValidationFailed
from fleet.http.operation import Call, Operations, Reply, json_body, query_param
from fleet.http.parsing import Body, body_bytes, body_model, json_value, strict_json
from fleet.http.responses import reply
from fleet.http.views import JobView, View

operations = Operations()


class TrackerJob(View):
    job: JobView
    created: bool = Field(description="Whether this call made the job.")


class TrackerIgnored(View):
    """A GitHub delivery that made no job, and why."""

    ignored: Literal[True]
    event: str = Field(description="The `X-GitHub-Event` of the delivery.")
    reason: Reason = Field(
        description=(
            "`event`: not an issues event; `action`: not opened, reopened or labeled; "
            "`author_association`: the issue's author is not one the binding allows; "
            "`label`: the issue lacks the binding's label; `duplicate_delivery`: this "
            "`X-GitHub-Delivery` was received before."
        )
    )
    message: str


class TrackerEcho(View):
    """Where the echo of stage changes to ``TRACKER_ECHO_URL`` stands."""

    cursor: str | None = Field(description="The last stage change delivered.")
    attempts: int | None = Field(description="Failed attempts at delivering the next one.")
    nextAttemptAt: str | None = Field(description="No retry before then.")
    lastError: str | None
    configured: bool = Field(description="Whether `TRACKER_ECHO_URL` is set.")


REPOSITORY_DESCRIPTION = "The repository, `owner/name` (GitHub's names are case-insensitive)."


Printable = Annotated[str, AfterValidator(printable)]
# The bounds inside the type: on ``Secret | None`` a Field's bounds read as a list's ("items").
Secret = Annotated[
    str, StringConstraints(min_length=MIN_SECRET, max_length=MAX_SECRET), AfterValidator(printable)
]


class GitHubBindingBody(Body):
    """A repository bound to the product (X-Fleet-Product)."""

    repository: str = Field(
        pattern=REPOSITORY_PATTERN, max_length=140, description=REPOSITORY_DESCRIPTION
    )
    secret: Secret | None = Field(
        default=None,
        repr=False,
        json_schema_extra={"format": "password", "writeOnly": True},
        description=(
            "The webhook's secret, as set on GitHub: deliveries are verified with it "
            "(`X-Hub-Signature-256`). Stored server-side, never returned. Required to bind; "
            "omitted when changing a binding: the current one is kept."
        ),
    )
    allowedAssociations: list[Association] = Field(
        default_factory=lambda: list(DEFAULT_ASSOCIATIONS),
        min_length=1,
        max_length=len(ASSOCIATIONS),
        description="Whose issues become jobs: the issue's `author_association`.",
    )
    label: Printable | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_LABEL,
        description="When set, only issues carrying this label (case-insensitive).",
    )


class GitHubBinding(View):
    """A repository bound to a product, without its secret."""

    product: str
    repository: str
    allowedAssociations: list[Association]
    label: str | None
    secretSet: Literal[True] = Field(description="The secret is set (it is never shown).")
    secretSetAt: str
    secretSetBy: str = Field(description="Who set it: `operator:NAME`.")
    createdAt: str
    createdBy: str
    updatedAt: str
    updatedBy: str


class GitHubBindingList(View):
    bindings: list[GitHubBinding] = Field(description="By repository.")


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
        "same item again). GitHub (`X-GitHub-Event`): the delivery lands in the product "
        "its repository (`repository.full_name`) is bound to (`PUT "
        "/api/fleet/tracker/github`), never elsewhere (`?product=` is ignored), and is "
        "verified with that binding's secret (`X-Hub-Signature-256`): a repository bound "
        "nowhere or a signature that does not match is 401, a malformed "
        "`X-Hub-Signature-256` or `X-GitHub-Delivery` 400, and nothing is written. An "
        "opened/reopened/labeled issue whose author the binding allows (and that carries "
        "its label, if set) becomes a job, once per `X-GitHub-Delivery`; anything else "
        "is 202 with the reason. Stage changes of tracker jobs are POSTed to "
        "`TRACKER_ECHO_URL`, signed `X-Fleet-Signature-256`, by the reaper's timer, "
        "retried with backoff."
    ),
    body=json_body({"type": "object"}),
    replies={
        201: Reply("A new job.", TrackerJob),
        200: Reply("The job already made from this item.", TrackerJob),
        202: Reply("A GitHub delivery that makes no job, and why.", TrackerIgnored),
    },
    errors=(400,),
    bearer="operator",
)
def tracker_ingest(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """A tracker item becomes a job, idempotently. GitHub's issues webhook (``X-GitHub-Event``)
    lands in the product its repository is bound to, verified by that binding's secret;
    anything else is a generic item sent with an operator token."""
    context = call.context
    event = req.headers.get(EVENT_HEADER)
    if event is not None:
        raw = body_bytes(req)
        # The headers' form first, then the body: both before anything is read or written.
        delivery = GitHubDelivery.of(
            event, req.headers.get(DELIVERY_HEADER), req.headers.get(SIGNATURE_HEADER), raw, {}
        )
        try:
            payload = strict_json(raw) if raw.strip() else {}
        except (ValueError, UnicodeDecodeError):
            raise ValidationFailed.one("", "invalid_json", "the body is not JSON") from None
        if not isinstance(payload, dict):
            raise ValidationFailed.one("", "not_an_object", "expected a JSON object")
        outcome = context.tracker.receive_github(replace(delivery, payload=payload))
        if isinstance(outcome, Delivered):
            view = TrackerJob.model_construct(job=JobView.of(outcome.job), created=outcome.created)
            return reply(view, 201 if outcome.created else 200)
        ignored = TrackerIgnored.model_construct(
            ignored=True, event=outcome.event, reason=outcome.reason, message=outcome.message
        )
        return reply(ignored, 202)
    principal = call.authenticate(req, "operator")
    item = json_value(req)
    if not isinstance(item, dict):
        raise ValidationFailed.one("", "not_an_object", "expected a JSON object")
    job, created = context.tracker.ingest(principal.product, item, principal.actor)
    view = TrackerJob.model_construct(job=JobView.of(job), created=created)
    return reply(view, 201 if created else 200)


@operations.route(
    "fleet/tracker/github",
    "PUT",
    caller="operator",
    role="admin",  # like settings: it decides where outside input lands, and holds a secret
    id="putGitHubBinding",
    summary="Bind a GitHub repository to the product (its webhook's deliveries land here)",
    tag="operator",
    description=(
        "GitHub's issues webhook of this repository lands in this product only, verified "
        "with `secret`. A repository is bound to one product at most (another's is 409 "
        "`already_bound`). The secret is kept server-side in the binding and never "
        "returned; omit it to change the other fields and keep it. 201 a new binding, 200 "
        "a changed one."
    ),
    body=json_body(GitHubBindingBody),
    replies={
        201: Reply("The repository is bound.", GitHubBinding),
        200: Reply("The binding is changed.", GitHubBinding),
    },
    errors=(400, 409),
)
def put_github_binding(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    principal = call.principal
    body = body_model(req, GitHubBindingBody)
    binding, created = call.context.tracker.github.put(
        principal.product,
        body.repository,
        body.secret,
        tuple(body.allowedAssociations),
        body.label,
        principal.actor,
    )
    return reply(GitHubBinding.model_validate(binding.as_view()), 201 if created else 200)


@operations.route(
    "fleet/tracker/github",
    "GET",
    caller="operator",
    id="listGitHubBindings",
    summary="The GitHub repositories bound to the product (without their secrets)",
    tag="operator",
    replies={200: Reply("The bindings.", GitHubBindingList)},
)
def list_github_bindings(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    bindings = call.context.tracker.github.of_product(call.principal.product)
    views = [GitHubBinding.model_validate(b.as_view()) for b in bindings]
    return reply(GitHubBindingList.model_construct(bindings=views))


REPOSITORY_PARAM = query_param(
    "repository",
    REPOSITORY_DESCRIPTION,
    {"type": "string", "pattern": REPOSITORY_PATTERN, "maxLength": 140},
)


@operations.route(
    "fleet/tracker/github",
    "DELETE",
    caller="operator",
    role="admin",
    id="deleteGitHubBinding",
    summary="Unbind a GitHub repository from the product",
    tag="operator",
    description="Its deliveries are refused (401) from now on; its jobs stay.",
    params=(REPOSITORY_PARAM,),
    replies={204: Reply("Unbound.")},
    errors=(400, 404),
)
def delete_github_binding(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    repository = req.params.get("repository") or ""
    if len(repository) > 140 or not valid_repository(repository):
        raise ValidationFailed.one("repository", "invalid_repository", "owner/name")
    call.context.tracker.github.delete(call.principal.product, repository, call.principal.actor)
    return func.HttpResponse(status_code=204)


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
