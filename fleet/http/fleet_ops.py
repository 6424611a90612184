"""The claim, the queue-state gate, factories, the product-wide event feed, metrics, alerts."""

from __future__ import annotations

import azure.functions as func

from fleet.context import get_context
from fleet.coordinator.fleet_health import fleet_health
from fleet.coordinator.identity import (
    any_principal,
    factory_principal,
    gate_principal,
    operator_principal,
)
from fleet.coordinator.service import KEEP
from fleet.domain.manifest import Problem, ValidationFailed
from fleet.domain.scheduler import FactoryView
from fleet.http.jobs import job_view
from fleet.http.parsing import ClaimBody, FactorySelf, SettingsBody, body_model, int_param
from fleet.http.responses import handles_errors, json_response

bp = func.Blueprint()  # type: ignore[no-untyped-call]


def _view(factory_id: str, body: FactorySelf) -> FactoryView:
    return FactoryView(
        id=factory_id,
        capabilities=frozenset(body.capabilities),
        seats=body.seats,
        load=body.load,
        cost=body.cost,
    )


@bp.route(route="fleet/claim", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@handles_errors
def claim(req: func.HttpRequest) -> func.HttpResponse:
    """Claim the best queued job for this factory: 200 with job, lease and cadence, or 204.
    A retry (``retry`` with the lost claim's ``requestId``) answers again with the job that
    claim won, if it is still assigned to this factory under a current lease."""
    principal = factory_principal(req)
    body = body_model(req, ClaimBody, required=False)
    if body.retry and body.requestId is None:
        raise ValidationFailed(
            [Problem(path="requestId", code="missing", message="required when retry is true")],
            "a retried claim names the requestId of the claim it retries",
        )
    principal.check_capabilities(body.capabilities)
    result = get_context().coordinator.claim(
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


@bp.route(route="fleet/queue-state", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@handles_errors
def queue_state(req: func.HttpRequest) -> func.HttpResponse:
    """The gate: one point read. Skip the claim while the version is unchanged, but claim
    at least every maxSkipSeconds anyway (the version is a hint, never a guarantee).

    Authenticated through the per-instance cache of verified tokens (``gate_principal``):
    a token verified here within the last 30 s costs no read, so the idle poll stays one
    point read. A revocation therefore reaches this endpoint within that time; every other
    endpoint reads the token and refuses it on the next request."""
    principal = gate_principal(req)
    return json_response(get_context().coordinator.queue_state(principal.product))


@bp.route(route="fleet/factories/register", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@handles_errors
def register_factory(req: func.HttpRequest) -> func.HttpResponse:
    """The factory named by its token records what it says about itself."""
    principal = factory_principal(req)
    body = body_model(req, FactorySelf, required=False)
    principal.check_capabilities(body.capabilities)
    factory = get_context().coordinator.register_factory(
        principal.product, _view(principal.id, body), body.version
    )
    return json_response(factory.model_dump(mode="json", exclude={"etag", "type"}))


@bp.route(route="fleet/factories", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@handles_errors
def list_factories(req: func.HttpRequest) -> func.HttpResponse:
    """The product's factories. An operator also gets each one's last heartbeat in brief
    (``heartbeat``, null when none): one query and two table queries for the whole fleet,
    however large (the per-factory heartbeat endpoint stays for the full detail)."""
    principal = any_principal(req)
    coord = get_context().coordinator
    known = coord.factories(principal.product)
    live = {v.id: v.live for v in coord.factory_views(principal.product, known)}
    beats = (
        fleet_health(coord).heartbeat_summaries(principal.product)
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


@bp.route(route="fleet/events", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@handles_errors
def product_events(req: func.HttpRequest) -> func.HttpResponse:
    """Every job's events after a cursor, oldest first; pass back ``cursor`` to follow.
    Operators only: a factory reads the history of the jobs it holds, not everyone's."""
    principal = operator_principal(req)
    limit = min(500, int_param(req, "limit", 200, minimum=1))
    events, cursor = get_context().coordinator.product_events(
        principal.product, req.params.get("after"), limit
    )
    return json_response({"events": events, "cursor": cursor})


@bp.route(route="fleet/metrics", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@handles_errors
def metrics(req: func.HttpRequest) -> func.HttpResponse:
    """The metrics the metrics timer stored: one point read."""
    principal = any_principal(req)
    return json_response(get_context().coordinator.metrics(principal.product))


@bp.route(route="fleet/alerts", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@handles_errors
def alerts(req: func.HttpRequest) -> func.HttpResponse:
    """Active alerts and the recent raise/clear events, and where the alert webhook stands."""
    principal = any_principal(req)
    history = min(100, int_param(req, "history", 50, minimum=0))
    return json_response(get_context().monitor.alerts(principal.product, history))


@bp.route(route="fleet/settings", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@handles_errors
def get_settings(req: func.HttpRequest) -> func.HttpResponse:
    """The product's scheduler weights, preemption rule, alert rules and default attempt
    timeout."""
    principal = any_principal(req)
    return json_response(get_context().coordinator.product_settings(principal.product))


@bp.route(route="fleet/settings", methods=["PUT"], auth_level=func.AuthLevel.ANONYMOUS)
@handles_errors
def put_settings(req: func.HttpRequest) -> func.HttpResponse:
    """Change the product's scheduler weights, preemption and alert rules and default attempt
    timeout (omitted ones are kept)."""
    principal = operator_principal(req)
    body = body_model(req, SettingsBody)
    weights = body.weights.model_dump(exclude_none=True) if body.weights else None
    preemption = body.preemption.model_dump(exclude_none=True) if body.preemption else None
    alerts = body.alerts.model_dump(exclude_none=True) if body.alerts else None
    # Omitted: kept; null: the product has no default attempt timeout.
    timeout = body.timeoutSeconds if "timeoutSeconds" in body.model_fields_set else KEEP
    return json_response(
        get_context().coordinator.put_product_settings(
            principal.product, weights, preemption, alerts, timeout
        )
    )
