"""The fleet's HTTP replies (claim, gate, factories, heartbeats, commands, the event feed,
metrics, alerts, settings) on the in-memory twin: each is what the document says it is, and
keeps its keys, null or absent, as it always did."""

from __future__ import annotations

from typing import Any

from fleet.context import AppContext
from fleet.coordinator import Coordinator
from fleet.coordinator.clock import ManualClock
from fleet.coordinator.tokens import Tokens
from fleet.domain.manifest import Manifest
from fleet.http import factories, fleet_ops
from fleet.http.parsing import FactorySelf
from tests.support.handlers import OPERATOR, call, documented

P = "prod"


def enroll(tokens: Tokens, name: str) -> str:
    issued = tokens.create_enrollment_token(P, "operator:test")
    return tokens.enroll(issued.token, name, FactorySelf(capabilities=("python",))).token


def ok(
    context: AppContext, handler: Any, method: str, token: str, body: Any = None, **kw: Any
) -> Any:
    product = kw.pop("product", P if token == OPERATOR else None)
    status, reply, _ = call(context, handler, method, "/api", token, body, product, **kw)
    assert status < 300, reply
    return reply


def test_fleet_http_replies_are_documented(
    app_context: AppContext, coord: Coordinator, tokens: Tokens, clock: ManualClock
) -> None:
    f1, f2 = enroll(tokens, "f1"), enroll(tokens, "f2")
    coord.submit(P, Manifest(title="a", body="x", timeoutSeconds=60, maxCostUsd=2.0), "operator:o")
    coord.submit(P, Manifest(title="b", body="y", capabilities=("rust",)), "operator:o")
    coord.budgets.put(P, 10.0)
    documented(ok(app_context, fleet_ops.queue_state, "GET", f1), "QueueState")
    claimed = ok(app_context, fleet_ops.claim, "POST", f1, {"capabilities": ["python"]})
    documented(claimed, "ClaimReply")
    assert claimed["limits"] == {
        "timeoutSeconds": 60,
        "deadlineAt": "2026-01-01T00:01:00.000000Z",
        "maxCostUsd": 2.0,
    }
    documented(ok(app_context, fleet_ops.register_factory, "POST", f2, {}), "FactoryRecord")
    job_id = claimed["job"]["id"]
    progress = {"jobId": job_id, "leaseEpoch": 1, "tokens": 5, "lastOutputLine": "hi"}
    beat = {"capabilities": ["python"], "seats": 2, "jobs": [progress]}
    drain = ok(
        app_context, factories.factory_command, "POST", OPERATOR, {"command": "drain"}, id="f1"
    )
    documented(drain, "CommandIssued")
    assert "job" not in drain and drain["command"]["jobId"] is None
    beaten = ok(app_context, factories.factory_heartbeat, "POST", f1, beat)
    documented(beaten, "HeartbeatReply")
    assert [c["kind"] for c in beaten["commands"]] == ["drain"]
    last = ok(app_context, factories.factory_last_heartbeat, "GET", OPERATOR, id="f1")
    documented(last, "FactoryHeartbeat")
    listed = ok(app_context, fleet_ops.list_factories, "GET", OPERATOR)
    documented(listed, "FactoryList")
    assert {f["id"]: f["heartbeat"] is None for f in listed["factories"]} == {
        "f1": False,
        "f2": True,
    }
    cancel = {"command": "cancel-job", "jobId": job_id}
    cancelled = ok(app_context, factories.factory_command, "POST", OPERATOR, cancel, id="f1")
    documented(cancelled, "CommandIssued")
    assert cancelled["job"]["stage"] == "cancelled"

    clock.advance(2000)  # the rust job starves unroutable: an alert
    app_context.monitor.run(P)
    metrics = ok(app_context, fleet_ops.metrics, "GET", f1)
    documented(metrics, "Metrics")
    assert metrics["budget"]["ceilingUsd"] == 10.0
    alerts = ok(app_context, fleet_ops.alerts, "GET", OPERATOR)
    documented(alerts, "Alerts")
    assert [a["key"] for a in alerts["active"]] == ["unroutable_jobs"]
    feed = ok(app_context, fleet_ops.product_events, "GET", OPERATOR)
    documented(feed, "ProductEvents")
    assert any(e.get("alert") is True and e["jobId"] is None for e in feed["events"])

    documented(ok(app_context, fleet_ops.get_settings, "GET", f1), "Settings")
    put = {"alerts": {"stalledJobs": 3}, "timeoutSeconds": None}
    documented(ok(app_context, fleet_ops.put_settings, "PUT", OPERATOR, put), "Settings")
    left = ok(app_context, factories.deregister_factory, "DELETE", f2, id="f2")
    documented(left, "Deregistration")


def test_fleet_http_keys_absent_stay_absent_and_nulls_stay_null(
    app_context: AppContext, tokens: Tokens
) -> None:
    f1 = enroll(tokens, "f1")
    ok(app_context, fleet_ops.register_factory, "POST", f1, {})
    # A factory's token lists the fleet without anyone's heartbeat: no key at all.
    listed = ok(app_context, fleet_ops.list_factories, "GET", f1)
    assert all("heartbeat" not in f for f in listed["factories"])
    # A product without a budget: metrics carry no `budget`, and `spend` is null.
    metrics = ok(app_context, fleet_ops.metrics, "GET", OPERATOR, product="other")
    assert "budget" not in metrics and metrics["spend"] is None
    assert metrics["oldestQueuedSeconds"] is None
    # Nothing learned: learned routing's brief is there all the same, in shadow mode.
    assert metrics["routing"] == {
        "mode": "shadow",
        "weight": 0.0,
        "agreement": {"claims": 0, "agreed": 0, "rate": None},
        "learnedAt": None,
    }
    alerts = ok(app_context, fleet_ops.alerts, "GET", OPERATOR, product="other")
    assert alerts["evaluatedAt"] is None and alerts["webhook"]["cursor"] is None
    feed = ok(app_context, fleet_ops.product_events, "GET", OPERATOR, product="other")
    assert feed == {"events": [], "cursor": None}
