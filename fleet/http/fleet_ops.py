"""The claim, the queue-state gate, factories, the product-wide event feed, metrics, alerts."""

from __future__ import annotations

import azure.functions as func

from fleet.coordinator.service import KEEP
from fleet.domain.scheduler import FactoryView
from fleet.errors import Problem, ValidationFailed
from fleet.http.jobs import job_view
from fleet.http.operation import Call, Operations
from fleet.http.parsing import ClaimBody, FactorySelf, SettingsBody, body_model, int_param
from fleet.http.responses import json_response

operations = Operations()


def _view(factory_id: str, body: FactorySelf) -> FactoryView:
    return FactoryView(
        id=factory_id,
        capabilities=frozenset(body.capabilities),
        seats=body.seats,
        load=body.load,
        cost=body.cost,
    )


@operations.route("fleet/claim", "POST", caller="factory")
def claim(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """Claim the best queued job for this factory: 200 with job, lease and cadence, or 204.
    A retry (``retry`` with the lost claim's ``requestId``) answers again with the job that
    claim won, if it is still assigned to this factory under a current lease."""
    principal = call.principal
    body = body_model(req, ClaimBody, required=False)
    if body.retry and body.requestId is None:
        raise ValidationFailed(
            [Problem(path="requestId", code="missing", message="required when retry is true")],
            "a retried claim names the requestId of the claim it retries",
        )
    principal.check_capabilities(body.capabilities)
    result = call.context.coordinator.claim(
        principal.product, _view(principal.id, body), body.requestId, retry=body.retry
    )
    if result is None:
        return func.HttpResponse(status_code=204)
    return json_response(
        {
            "job": job_view(result.job),
            "lease": result.lease.model_dump(mode="json"),
            "cadence": result.cadence.as_dict(),
            "score": result.breakdown,
            "limits": result.limits,
        }
    )


@operations.route("fleet/queue-state", "GET", caller="gate")
def queue_state(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """The gate: one point read. Skip the claim while the version is unchanged, but claim
    at least every maxSkipSeconds anyway (the version is a hint, never a guarantee).

    Authenticated through the per-instance cache of verified tokens (caller ``gate``):
    a token verified here within the last 30 s costs no read, so the idle poll stays one
    point read. A revocation therefore reaches this endpoint within that time; every other
    endpoint reads the token and refuses it on the next request."""
    principal = call.principal
    return json_response(call.context.coordinator.queue_state(principal.product))


@operations.route("fleet/factories/register", "POST", caller="factory")
def register_factory(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """The factory named by its token records what it says about itself."""
    principal = call.principal
    body = body_model(req, FactorySelf, required=False)
    principal.check_capabilities(body.capabilities)
    factory = call.context.coordinator.register_factory(
        principal.product, _view(principal.id, body), body.version
    )
    return json_response(factory.model_dump(mode="json", exclude={"etag", "type"}))


@operations.route("fleet/factories", "GET", caller="any")
def list_factories(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """The product's factories. An operator also gets each one's last heartbeat in brief
    (``heartbeat``, null when none): one query and two table queries for the whole fleet,
    however large (the per-factory heartbeat endpoint stays for the full detail)."""
    principal = call.principal
    coord = call.context.coordinator
    known = coord.factories(principal.product)
    live = {v.id: v.live for v in coord.factory_views(principal.product, known)}
    beats = (
        call.context.health.heartbeat_summaries(principal.product)
        if principal.kind == "operator"
        else None
    )
    factories = []
    for f in known:
        view = f.model_dump(mode="json", exclude={"etag", "type"})
        view["id"] = f.id.removeprefix("factory-")
        view["live"] = live.get(view["id"], False)
        if beats is not None:
            view["heartbeat"] = beats.get(view["id"])
        factories.append(view)
    return json_response({"factories": factories})


@operations.route("fleet/events", "GET", caller="operator")
def product_events(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """Every job's events after a cursor, oldest first; pass back ``cursor`` to follow.
    Operators only: a factory reads the history of the jobs it holds, not everyone's."""
    principal = call.principal
    limit = min(500, int_param(req, "limit", 200, minimum=1))
    events, cursor = call.context.coordinator.product_events(
        principal.product, req.params.get("after"), limit
    )
    return json_response({"events": events, "cursor": cursor})


@operations.route("fleet/metrics", "GET", caller="any")
def metrics(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """The metrics the metrics timer stored: one point read."""
    principal = call.principal
    return json_response(call.context.coordinator.metrics(principal.product))


@operations.route("fleet/alerts", "GET", caller="any")
def alerts(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """Active alerts and the recent raise/clear events, and where the alert webhook stands."""
    principal = call.principal
    history = min(100, int_param(req, "history", 50, minimum=0))
    return json_response(call.context.monitor.alerts(principal.product, history))


@operations.route("fleet/settings", "GET", caller="any")
def get_settings(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """The product's scheduler weights, preemption rule, alert rules and default attempt
    timeout."""
    principal = call.principal
    return json_response(call.context.coordinator.product_settings(principal.product))


@operations.route("fleet/settings", "PUT", caller="operator")
def put_settings(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """Change the product's scheduler weights, preemption and alert rules and default attempt
    timeout (omitted ones are kept)."""
    principal = call.principal
    body = body_model(req, SettingsBody)
    weights = body.weights.model_dump(exclude_none=True) if body.weights else None
    preemption = body.preemption.model_dump(exclude_none=True) if body.preemption else None
    alerts = body.alerts.model_dump(exclude_none=True) if body.alerts else None
    # Omitted: kept; null: the product has no default attempt timeout.
    timeout = body.timeoutSeconds if "timeoutSeconds" in body.model_fields_set else KEEP
    return json_response(
        call.context.coordinator.put_product_settings(
            principal.product, weights, preemption, alerts, timeout
        )
    )
