"""Budgets and channel limits over HTTP on the in-memory twin: every reply is what the
OpenAPI document says it is; pause and resume are routes of their own."""

from __future__ import annotations

from azure.functions.decorators.http import HttpTrigger

from fleet.context import AppContext
from fleet.coordinator import Coordinator
from fleet.coordinator.clock import ManualClock
from fleet.coordinator.tokens import Tokens
from fleet.http.parsing import FactorySelf
from function_app import app
from tests.support.handlers import OPERATOR, call, documented

P = "prod"


def enroll(tokens: Tokens, name: str) -> str:
    issued = tokens.create_enrollment_token(P, "operator:test")
    return tokens.enroll(issued.token, name, FactorySelf(capabilities=("python",))).token


def test_budgets_http_replies_are_documented(
    app_context: AppContext, coord: Coordinator, tokens: Tokens, clock: ManualClock
) -> None:
    factory = enroll(tokens, "f1")
    status, none, _ = call(app_context, "get_budget", token=factory, productId=P)
    assert status == 200
    assert (none["exists"], none["ceilingUsd"], none["spentUsd"]) == (False, None, 0.0)
    documented(none, "BudgetView")
    status, put, _ = call(
        app_context, "put_budget", "PUT", token=OPERATOR, body={"ceilingUsd": 3}, productId=P
    )
    assert status == 200
    assert (put["exists"], put["ceilingUsd"], put["remainingUsd"]) == (True, 3.0, 3.0)
    documented(put, "BudgetView")
    status, paused, _ = call(app_context, "pause_budget", "POST", token=OPERATOR, productId=P)
    assert status == 200 and paused["paused"] is True
    documented(paused, "BudgetView")
    gate = coord.queue_state(P)["version"]
    status, resumed, _ = call(app_context, "resume_budget", "POST", token=OPERATOR, productId=P)
    assert status == 200 and resumed["paused"] is False
    assert coord.queue_state(P)["version"] > gate  # work may be claimable again
    coord.budgets.record_point(P)
    clock.advance(60)
    coord.budgets.record_point(P)
    status, burndown, _ = call(app_context, "budget_burndown", token=factory, productId=P)
    assert status == 200 and [p["ceilingUsd"] for p in burndown["points"]] == [3.0, 3.0]
    documented(burndown, "Burndown")
    assert call(app_context, "get_budget", token=factory, productId="other").status == 403
    assert call(app_context, "get_budget", token=OPERATOR, productId="no way").status == 400


def test_budgets_http_pause_and_resume_are_literal_routes() -> None:
    routes = {
        str(fn.get_trigger().route)
        for fn in app.get_functions()
        if isinstance(fn.get_trigger(), HttpTrigger)
    }
    assert {"fleet/budgets/{productId}/pause", "fleet/budgets/{productId}/resume"} <= routes
    assert "fleet/budgets/{productId}/{op}" not in routes


def test_channels_http_replies_are_documented(app_context: AppContext, tokens: Tokens) -> None:
    factory = enroll(tokens, "f1")
    status, gpu, _ = call(
        app_context,
        "put_channel",
        "PUT",
        token=OPERATOR,
        product=P,
        body={"ratePerMinute": 2.5, "burst": 3},
        channel="gpu",
    )
    assert status == 200
    assert (gpu["channel"], gpu["maxRunning"], gpu["blocked"]) == ("gpu", None, None)
    documented(gpu, "ChannelView")
    call(
        app_context,
        "put_channel",
        "PUT",
        token=OPERATOR,
        product=P,
        body={"maxRunning": 1},
        channel="cpu",
    )
    status, listed, _ = call(app_context, "list_channels", token=factory)
    assert status == 200 and [c["channel"] for c in listed["channels"]] == ["cpu", "gpu"]
    documented(listed, "ChannelList")
    status, gone, _ = call(
        app_context, "delete_channel", "DELETE", token=OPERATOR, product=P, channel="cpu"
    )
    assert (status, gone) == (204, None)
    assert (
        call(app_context, "delete_channel", "DELETE", token=OPERATOR, product=P, channel="cpu")[0]
        == 404
    )


def test_budgets_http_an_operator_corrects_the_spend_and_it_is_kept(
    app_context: AppContext, coord: Coordinator, tokens: Tokens
) -> None:
    coord.budgets.put(P, 10.0)
    coord.budgets.adjust(P, 4.0, "a forged report's figure, booked before the cap", "test")

    def adjust(body: object) -> tuple[int, dict[str, object]]:
        status, reply, _ = call(
            app_context, "adjust_budget", "POST", token=OPERATOR, body=body, productId=P
        )
        return status, reply

    status, budget = adjust({"deltaUsd": -3.5, "reason": "refund the forged spend"})
    assert status == 200, budget
    documented(budget, "BudgetView")
    assert budget["spentUsd"] == 0.5 and budget["remainingUsd"] == 9.5
    latest = budget["adjustments"][0]  # type: ignore[index]
    assert (latest["deltaUsd"], latest["reason"], latest["spentUsd"]) == (
        -3.5,
        "refund the forged spend",
        0.5,
    )
    assert latest["by"].startswith("operator:") and latest["at"]
    # Never below zero, a reason always, numbers finite and bounded: 400, nothing changed.
    for bad, path in (
        ({"deltaUsd": -1, "reason": "too much"}, "deltaUsd"),
        ({"deltaUsd": 1}, "reason"),
        ({"deltaUsd": 1, "reason": ""}, "reason"),
        ({"deltaUsd": 1e12, "reason": "x"}, "deltaUsd"),
    ):
        status, refused = adjust(bad)
        assert status == 400, bad
        assert refused["details"]["problems"][0]["path"] == path  # type: ignore[index]
    assert coord.budgets.get(P).spentUsd == 0.5  # type: ignore[union-attr]
    factory = enroll(tokens, "f1")
    status, _, _ = call(
        app_context,
        "adjust_budget",
        "POST",
        token=factory,
        body={"deltaUsd": -0.5, "reason": "mine"},
        productId=P,
    )
    assert status == 403  # a factory never corrects its own spend
