"""Budgets (per product) and channel limits (per product and channel)."""

from __future__ import annotations

from typing import Any

import azure.functions as func
from pydantic import Field

from fleet.context import get_context
from fleet.coordinator.identity import NAME, Forbidden, any_principal, operator_principal
from fleet.domain.manifest import ValidationFailed
from fleet.http.parsing import Body, body_model
from fleet.http.responses import handles_errors, json_response

bp = func.Blueprint()  # type: ignore[no-untyped-call]


class BudgetBody(Body):
    ceilingUsd: float | None = Field(ge=0, le=10_000_000)


class ChannelBody(Body):
    ratePerMinute: float | None = Field(default=None, gt=0, le=100_000)
    burst: int = Field(default=1, ge=1, le=100_000)
    maxRunning: int | None = Field(default=None, ge=0, le=100_000)


def _path_name(req: func.HttpRequest, param: str) -> str:
    value = str(req.route_params.get(param, ""))
    if not NAME.match(value):
        raise ValidationFailed.one(param, "string_pattern_mismatch", "1-64 letters, digits, . _ -")
    return value


def _readable_product(req: func.HttpRequest) -> str:
    """The product in the path; a factory may read only its own product's budget."""
    principal = any_principal(req)
    product = _path_name(req, "productId")
    if principal.kind == "factory" and principal.product != product:
        raise Forbidden("this token is for another product", product=product)
    return product


def _budget_view(product: str) -> dict[str, Any]:
    budget = get_context().coordinator.budgets.get(product)
    if budget is None:
        # Sane without a budget: no ceiling, nothing spent, nothing blocked.
        return {
            "product": product,
            "exists": False,
            "ceilingUsd": None,
            "spentUsd": 0.0,
            "reservedUsd": 0.0,
            "remainingUsd": None,
            "usedFraction": None,
            "paused": False,
            "autoPaused": False,
            "reservations": 0,
            "updatedAt": None,
        }
    return {**budget.view(), "exists": True}


@bp.route(route="fleet/budgets/{productId}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@handles_errors
def get_budget(req: func.HttpRequest) -> func.HttpResponse:
    return json_response(_budget_view(_readable_product(req)))


@bp.route(route="fleet/budgets/{productId}", methods=["PUT"], auth_level=func.AuthLevel.ANONYMOUS)
@handles_errors
def put_budget(req: func.HttpRequest) -> func.HttpResponse:
    """Set the ceiling (null: no ceiling); spend and reservations are kept."""
    operator_principal(req)
    product = _path_name(req, "productId")
    body = body_model(req, BudgetBody)
    get_context().coordinator.budgets.put(product, body.ceilingUsd)
    return json_response(_budget_view(product))


@bp.route(
    route="fleet/budgets/{productId}/{op}", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS
)
@handles_errors
def budget_switch(req: func.HttpRequest) -> func.HttpResponse:
    """pause: no job of this product may start; resume: lifts it (and an auto-pause)."""
    operator_principal(req)
    product = _path_name(req, "productId")
    op = req.route_params.get("op")
    if op not in ("pause", "resume"):
        raise ValidationFailed.one("op", "enum", "one of pause, resume")
    coord = get_context().coordinator
    coord.budgets.set_paused(product, op == "pause")
    if op == "resume":
        coord.bump_gate(product)  # work may be claimable again
    return json_response(_budget_view(product))


@bp.route(
    route="fleet/budgets/{productId}/burndown",
    methods=["GET"],
    auth_level=func.AuthLevel.ANONYMOUS,
)
@handles_errors
def budget_burndown(req: func.HttpRequest) -> func.HttpResponse:
    """Spend and reservations over time (a point per metrics run), oldest first."""
    product = _readable_product(req)
    points = get_context().coordinator.budgets.burndown(product)
    return json_response({"product": product, "points": points})


@bp.route(route="fleet/channels", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@handles_errors
def list_channels(req: func.HttpRequest) -> func.HttpResponse:
    principal = any_principal(req)
    coord = get_context().coordinator
    now = coord.clock.now()
    channels = coord.channels.list(principal.product)
    return json_response({"channels": [c.view(now) for c in channels]})


@bp.route(route="fleet/channels/{channel}", methods=["PUT"], auth_level=func.AuthLevel.ANONYMOUS)
@handles_errors
def put_channel(req: func.HttpRequest) -> func.HttpResponse:
    """Set a channel's token bucket and running cap; takes effect on the next claim."""
    principal = operator_principal(req)
    name = _path_name(req, "channel")
    body = body_model(req, ChannelBody)
    coord = get_context().coordinator
    channel = coord.channels.put(
        principal.product,
        name,
        rate=body.ratePerMinute,
        burst=body.burst,
        max_running=body.maxRunning,
    )
    coord.bump_gate(principal.product)  # a raised limit may make work claimable
    return json_response(channel.view(coord.clock.now()))


@bp.route(route="fleet/channels/{channel}", methods=["DELETE"], auth_level=func.AuthLevel.ANONYMOUS)
@handles_errors
def delete_channel(req: func.HttpRequest) -> func.HttpResponse:
    """Remove a channel's limits (its jobs are then unlimited)."""
    principal = operator_principal(req)
    coord = get_context().coordinator
    coord.channels.delete(principal.product, _path_name(req, "channel"))
    coord.bump_gate(principal.product)
    return func.HttpResponse(status_code=204)
