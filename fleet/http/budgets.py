"""Budgets (per product) and channel limits (per product and channel).

Pause and resume are one route each (``fleet/budgets/{productId}/pause``, ``.../resume``):
any other operation is the host's 404, like any other unknown route. The product is the
path's: ``fleet.http.operation`` validates it and authenticates the caller for it (a factory
token for another product, or an operator token not for it, is 403), so the principal's
product is the path's."""

from __future__ import annotations

import azure.functions as func
from pydantic import Field

from fleet.coordinator import Coordinator
from fleet.coordinator.identity import NAME
from fleet.errors import ValidationFailed
from fleet.http.operation import Call, Operations, Reply, json_body
from fleet.http.params import CHANNEL, PRODUCT_ID
from fleet.http.parsing import ActionBody, Body, body_model, json_value, parse_model
from fleet.http.responses import reply
from fleet.http.views import View

operations = Operations()


class BudgetBody(Body):
    ceilingUsd: float | None = Field(ge=0, le=10_000_000)


class AdjustBody(Body):
    """An operator's correction of a product's spend."""

    deltaUsd: float = Field(
        ge=-10_000_000, le=10_000_000, description="Added to the spend (negative: taken off)."
    )
    reason: str = Field(min_length=1, max_length=500, description="Why: kept with the change.")


class ChannelBody(Body):
    ratePerMinute: float | None = Field(default=None, gt=0, le=100_000)
    burst: int = Field(default=1, ge=1, le=100_000)
    maxRunning: int | None = Field(default=None, ge=0, le=100_000)


class Adjustment(View):
    """One operator's correction of the spend."""

    at: str
    by: str = Field(description="Who: `operator:NAME`.")
    deltaUsd: float
    reason: str
    spentUsd: float = Field(description="The spend after it.")


class BudgetView(View):
    """A product's budget; without one: no ceiling, nothing spent, nothing blocked."""

    product: str
    ceilingUsd: float | None = Field(description="Null: no ceiling.")
    spentUsd: float
    reservedUsd: float = Field(description="Held by the claims of running attempts.")
    remainingUsd: float | None = Field(description="Null without a ceiling.")
    usedFraction: float | None = Field(
        description="Spent and reserved over the ceiling; null without a ceiling."
    )
    paused: bool = Field(description="Paused by an operator.")
    autoPaused: bool = Field(description="Spend and reservations reached the ceiling.")
    reservations: int = Field(description="Claims holding a reservation.")
    updatedAt: str | None
    exists: bool = Field(description="Whether the product has a budget.")
    adjustments: list[Adjustment] = Field(
        default_factory=list, description="Operators' corrections of the spend, newest first."
    )


class BurndownPoint(View):
    at: str
    spentUsd: float
    reservedUsd: float
    ceilingUsd: float | None


class Burndown(View):
    product: str
    points: list[BurndownPoint] = Field(description="Oldest first.")


class ChannelView(View):
    """A channel's limits, its token bucket's level and its running jobs."""

    channel: str
    ratePerMinute: float | None = Field(description="Null: no rate limit.")
    burst: int = Field(description="The bucket's size.")
    maxRunning: int | None = Field(description="Null: no cap on running jobs.")
    tokens: float = Field(description="The bucket's level now.")
    running: int
    blocked: str | None = Field(description="Why its jobs cannot start now; null: they can.")


class ChannelList(View):
    channels: list[ChannelView]


def _path_name(req: func.HttpRequest, param: str) -> str:
    value = str(req.route_params.get(param, ""))
    if not NAME.match(value):
        raise ValidationFailed.one(param, "string_pattern_mismatch", "1-64 letters, digits, . _ -")
    return value


def _budget_view(coordinator: Coordinator, product: str) -> BudgetView:
    budget = coordinator.budgets.get(product)
    if budget is None:
        # Sane without a budget: no ceiling, nothing spent, nothing blocked.
        return BudgetView.model_construct(
            product=product,
            ceilingUsd=None,
            spentUsd=0.0,
            reservedUsd=0.0,
            remainingUsd=None,
            usedFraction=None,
            paused=False,
            autoPaused=False,
            reservations=0,
            updatedAt=None,
            exists=False,
            adjustments=[],
        )
    return BudgetView.model_validate({**budget.view(), "exists": True})


_BUDGET_NOW = {200: Reply("The budget now.", BudgetView)}


@operations.route(
    "fleet/budgets/{productId}",
    "GET",
    caller="any",
    id="getBudget",
    summary="A product's budget: ceiling, spent, reserved, remaining, paused",
    tag="budgets",
    params=(PRODUCT_ID,),
    replies={200: Reply("The budget (all zeros and no ceiling when none is set).", BudgetView)},
    errors=(400,),
)
def get_budget(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    product = call.principal.product  # the path's: checked by the caller's token
    return reply(_budget_view(call.context.coordinator, product))


@operations.route(
    "fleet/budgets/{productId}",
    "PUT",
    caller="operator",
    id="putBudget",
    role="admin",
    summary="Set the ceiling in USD (null: no ceiling); spend and reservations are kept",
    tag="budgets",
    params=(PRODUCT_ID,),
    body=json_body(BudgetBody),
    replies=_BUDGET_NOW,
    errors=(400,),
)
def put_budget(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """Set the ceiling (null: no ceiling); spend and reservations are kept."""
    product = call.principal.product  # the path's: checked by the caller's token
    body = body_model(req, BudgetBody)
    call.context.coordinator.budgets.put(product, body.ceilingUsd, call.principal.actor)
    return reply(_budget_view(call.context.coordinator, product))


@operations.route(
    "fleet/budgets/{productId}/adjust",
    "POST",
    caller="operator",
    id="adjustBudget",
    role="admin",
    summary="Correct the product's spend (audited)",
    tag="budgets",
    description=(
        "Adds `deltaUsd` to the spend (negative: takes it off; never below zero, 400 "
        "`below_zero`), with the `reason`, who did it and when kept in the budget's "
        "`adjustments` (the newest 50). For a figure a factory got wrong or forged, a refund, "
        "a test. One conditional write."
    ),
    params=(PRODUCT_ID,),
    body=json_body(AdjustBody),
    replies=_BUDGET_NOW,
    errors=(400,),
)
def adjust_budget(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """Correct the spend by deltaUsd, with a reason; the correction is kept in the budget."""
    product = call.principal.product  # the path's: checked by the caller's token
    body = body_model(req, AdjustBody)
    coord = call.context.coordinator
    coord.budgets.adjust(product, body.deltaUsd, body.reason, call.principal.actor)
    return reply(_budget_view(coord, product))


@operations.route(
    "fleet/budgets/{productId}/pause",
    "POST",
    caller="operator",
    id="pauseBudget",
    summary="Pause the product: no job of it may start",
    tag="budgets",
    params=(PRODUCT_ID,),
    body=json_body(ActionBody, required=False, description="Optional; the reason is recorded."),
    replies=_BUDGET_NOW,
    errors=(400,),
)
def pause_budget(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """No job of this product may start until it is resumed."""
    product = call.principal.product  # the path's: checked by the caller's token
    reason = parse_model(ActionBody, json_value(req, required=False)).reason
    coord = call.context.coordinator
    coord.budgets.set_paused(product, True, call.principal.actor, reason)
    return reply(_budget_view(coord, product))


@operations.route(
    "fleet/budgets/{productId}/resume",
    "POST",
    caller="operator",
    id="resumeBudget",
    summary="Lift an operator's pause",
    tag="budgets",
    params=(PRODUCT_ID,),
    body=json_body(ActionBody, required=False, description="Optional; the reason is recorded."),
    replies=_BUDGET_NOW,
    errors=(400,),
)
def resume_budget(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """Lift an operator's pause (an auto-pause lasts until the ceiling allows more)."""
    product = call.principal.product  # the path's: checked by the caller's token
    reason = parse_model(ActionBody, json_value(req, required=False)).reason
    coord = call.context.coordinator
    coord.budgets.set_paused(product, False, call.principal.actor, reason)
    coord.bump_gate(product)  # work may be claimable again
    return reply(_budget_view(coord, product))


@operations.route(
    "fleet/budgets/{productId}/burndown",
    "GET",
    caller="any",
    id="budgetBurndown",
    summary="Spend and reservations over time (a point per change), oldest first, to now",
    tag="budgets",
    params=(PRODUCT_ID,),
    replies={200: Reply("The points.", Burndown)},
    errors=(400,),
)
def budget_burndown(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """Spend and reservations over time, oldest first: a point each time a metrics pass saw
    them change, the last one carried to now."""
    product = call.principal.product  # the path's: checked by the caller's token
    points = call.context.coordinator.budgets.burndown(product)
    return reply(Burndown.model_validate({"product": product, "points": points}))


@operations.route(
    "fleet/channels",
    "GET",
    caller="any",
    id="listChannels",
    summary="The product's channel limits, bucket levels and running counts",
    tag="budgets",
    replies={200: Reply("The channels.", ChannelList)},
)
def list_channels(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    principal = call.principal
    coord = call.context.coordinator
    now = coord.clock.now()
    channels = coord.channels.list(principal.product)
    return reply(ChannelList.model_validate({"channels": [c.view(now) for c in channels]}))


@operations.route(
    "fleet/channels/{channel}",
    "PUT",
    caller="operator",
    id="putChannel",
    role="admin",
    summary="Set a channel's token bucket and running cap (takes effect on the next claim)",
    tag="budgets",
    params=(CHANNEL,),
    body=json_body(ChannelBody),
    replies={200: Reply("The channel now.", ChannelView)},
    errors=(400,),
)
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
        by=principal.actor,
    )
    coord.bump_gate(principal.product)  # a raised limit may make work claimable
    return reply(ChannelView.model_validate(channel.view(coord.clock.now())))


@operations.route(
    "fleet/channels/{channel}",
    "DELETE",
    caller="operator",
    id="deleteChannel",
    role="admin",
    summary="Remove a channel's limits",
    tag="budgets",
    params=(CHANNEL,),
    replies={204: Reply("Removed.")},
    errors=(400, 404),
)
def delete_channel(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """Remove a channel's limits (its jobs are then unlimited)."""
    principal = call.principal
    coord = call.context.coordinator
    coord.channels.delete(principal.product, _path_name(req, "channel"), principal.actor)
    coord.bump_gate(principal.product)
    return func.HttpResponse(status_code=204)
