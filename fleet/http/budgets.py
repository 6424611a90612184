"""Budgets (per product) and channel limits (per product and channel)."""

from __future__ import annotations

from typing import Any

import azure.functions as func
from pydantic import Field

from fleet.coordinator import Coordinator
from fleet.coordinator.identity import NAME, Principal
from fleet.errors import Forbidden, ValidationFailed
from fleet.http.operation import Call, Operations
from fleet.http.parsing import Body, body_model
from fleet.http.responses import json_response

operations = Operations()


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


def _readable_product(req: func.HttpRequest, principal: Principal) -> str:
    """The product in the path; a factory may read only its own product's budget."""
    product = _path_name(req, "productId")
    if principal.kind == "factory" and principal.product != product:
        raise Forbidden("this token is for another product", product=product)
    return product


def _budget_view(coordinator: Coordinator, product: str) -> dict[str, Any]:
    budget = coordinator.budgets.get(product)
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


@operations.route("fleet/budgets/{productId}", "GET", caller="any")
def get_budget(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    product = _readable_product(req, call.principal)
    return json_response(_budget_view(call.context.coordinator, product))


@operations.route("fleet/budgets/{productId}", "PUT", caller="operator")
def put_budget(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """Set the ceiling (null: no ceiling); spend and reservations are kept."""
    product = _path_name(req, "productId")
    body = body_model(req, BudgetBody)
    call.context.coordinator.budgets.put(product, body.ceilingUsd)
    return json_response(_budget_view(call.context.coordinator, product))


@operations.route("fleet/budgets/{productId}/{op}", "POST", caller="operator")
def budget_switch(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """pause: no job of this product may start; resume: lifts it (and an auto-pause)."""
    product = _path_name(req, "productId")
    op = req.route_params.get("op")
    if op not in ("pause", "resume"):
        raise ValidationFailed.one("op", "enum", "one of pause, resume")
    coord = call.context.coordinator
    coord.budgets.set_paused(product, op == "pause")
    if op == "resume":
        coord.bump_gate(product)  # work may be claimable again
    return json_response(_budget_view(coord, product))


@operations.route("fleet/budgets/{productId}/burndown", "GET", caller="any")
def budget_burndown(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """Spend and reservations over time (a point per metrics run), oldest first."""
    product = _readable_product(req, call.principal)
    points = call.context.coordinator.budgets.burndown(product)
    return json_response({"product": product, "points": points})


@operations.route("fleet/channels", "GET", caller="any")
def list_channels(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    principal = call.principal
    coord = call.context.coordinator
    now = coord.clock.now()
    channels = coord.channels.list(principal.product)
    return json_response({"channels": [c.view(now) for c in channels]})


@operations.route("fleet/channels/{channel}", "PUT", caller="operator")
def put_channel(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """Set a channel's token bucket and running cap; takes effect on the next claim."""
    principal = call.principal
    name = _path_name(req, "channel")
    body = body_model(req, ChannelBody)
    coord = call.context.coordinator
    channel = coord.channels.put(
        principal.product,
        name,
        rate=body.ratePerMinute,
        burst=body.burst,
        max_running=body.maxRunning,
    )
    coord.bump_gate(principal.product)  # a raised limit may make work claimable
    return json_response(channel.view(coord.clock.now()))


@operations.route("fleet/channels/{channel}", "DELETE", caller="operator")
def delete_channel(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """Remove a channel's limits (its jobs are then unlimited)."""
    principal = call.principal
    coord = call.context.coordinator
    coord.channels.delete(principal.product, _path_name(req, "channel"))
    coord.bump_gate(principal.product)
    return func.HttpResponse(status_code=204)
