"""Metrics and alerts on the real local stack.

The metrics timer's pass (``Monitor.run``) runs in-process over the same Cosmos emulator and
Azurite as the stack's host, with the real clock (as the devhost's timer would run it, minus
its five-minute schedule); what it stored is read back over HTTP from the host:
``GET /api/fleet/metrics``, ``GET /api/fleet/alerts`` and the event feed. The alert webhook
posts to a local ``http.server``.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import requests

from fleet.coordinator import Coordinator
from fleet.coordinator.metrics import Monitor
from fleet.coordinator.webhooks import Endpoint, sign
from fleet.store.ports import Stores
from tests.conftest import RunningStack, bearer
from tests.support.receiver import webhook_receiver

pytestmark = pytest.mark.integration


@pytest.fixture
def product() -> str:
    return f"p{uuid.uuid4().hex[:10]}"


def _get(stack: RunningStack, product: str, path: str) -> Any:
    response = requests.get(f"{stack.api}{path}", headers=stack.operator(product), timeout=30)
    assert response.status_code == 200, f"{path}: {response.text}"
    return response.json()


def _send(stack: RunningStack, product: str, method: str, path: str, body: Any) -> Any:
    response = requests.request(
        method, f"{stack.api}{path}", json=body, headers=stack.operator(product), timeout=30
    )
    assert response.status_code in (200, 201), f"{path}: {response.text}"
    return response.json()


def test_metrics_http_after_a_metrics_pass_and_alerts_raised_then_cleared(
    running_stack: RunningStack, azure_backend: Stores, product: str
) -> None:
    stack = running_stack
    factory = bearer(stack.enroll(product, "f1", ("python",)))
    beat = requests.post(
        f"{stack.api}/fleet/factories/heartbeat",
        json={"capabilities": ["python"], "seats": 4, "load": 0},
        headers=factory,
        timeout=30,
    )
    assert beat.status_code == 200, beat.text
    gpu = _submit(stack, product, "needs a gpu", ["gpu"])
    _submit(stack, product, "py", ["python"])
    claim = requests.post(
        f"{stack.api}/fleet/claim", json={"capabilities": ["python"]}, headers=factory, timeout=30
    )
    assert claim.status_code == 200, claim.text
    _send(stack, product, "PUT", "/fleet/budgets/" + product, {"ceilingUsd": 10})
    _, cursor = _feed(stack, product, None)

    with webhook_receiver() as hook:  # it takes what every pass raised or cleared
        monitor = Monitor(Coordinator(azure_backend), Endpoint(hook.url, "s3cret"))
        monitor.run(product)

        metrics = _get(stack, product, "/fleet/metrics")
        assert metrics["queueDepth"]["queued"] == 1 and metrics["queueDepth"]["assigned"] == 1
        assert metrics["utilization"] == {"held": 1, "seats": 4, "fraction": 0.25}
        assert metrics["factories"] == {"total": 1, "live": 1, "stale": [], "down": []}
        assert metrics["unroutable"] == 1 and metrics["unroutableJobs"] == [gpu["id"]]
        assert metrics["starvation"]["count"] == 0 and metrics["stalled"]["count"] == 0
        assert metrics["spend"] == {
            "spentUsd": 0.0,
            "reservedUsd": 0.0,
            "ceilingUsd": 10.0,
            "fraction": 0.0,
        }
        assert metrics["oldestQueuedSeconds"] >= 0 and metrics["scanned"] == 1

        alerts = _get(stack, product, "/fleet/alerts")
        (active,) = alerts["active"]
        assert (active["key"], active["severity"]) == ("unroutable_jobs", "warning")
        assert active["details"]["jobs"] == [gpu["id"]]
        assert [e["kind"] for e in alerts["history"]] == ["raised"]
        events, cursor = _feed(stack, product, cursor)
        assert [(e["jobId"], e["type"], e["key"]) for e in events] == [
            (None, "alert_raised", "unroutable_jobs")
        ]

        # Another pass with nothing changed: nothing raised again, nothing sent again. (The
        # history, not this pass's report, is checked: the host's own metrics timer may run a
        # pass over this product meanwhile, and whichever pass gets there first raises it.)
        monitor.run(product)
        assert [e["kind"] for e in _get(stack, product, "/fleet/alerts")["history"]] == ["raised"]
        # The job is cancelled: the next pass clears the alert, once.
        _send(stack, product, "POST", f"/fleet/jobs/{gpu['id']}/cancel", {"reason": "no gpu"})
        monitor.run(product)
        monitor.run(product)
        alerts = _get(stack, product, "/fleet/alerts")
        assert alerts["active"] == [] and [e["kind"] for e in alerts["history"]] == [
            "cleared",
            "raised",
        ]
        events, _ = _feed(stack, product, cursor)
        assert [(e.get("jobId"), e["type"]) for e in events] == [
            (gpu["id"], "cancel"),
            (None, "alert_cleared"),
        ]
    sent = hook.bodies()
    assert [(b["kind"], b["key"], b["product"]) for b in sent] == [
        ("raised", "unroutable_jobs", product),
        ("cleared", "unroutable_jobs", product),
    ]
    assert all(sig == sign("s3cret", body) for body, sig in hook.accepted)


def _submit(stack: RunningStack, product: str, title: str, caps: list[str]) -> dict[str, Any]:
    body = {"title": title, "capabilities": caps, "body": "x"}
    job: dict[str, Any] = _send(stack, product, "POST", "/fleet/jobs", body)["job"]
    return job


def _feed(
    stack: RunningStack, product: str, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    params = {"after": cursor} if cursor else {}
    response = requests.get(
        f"{stack.api}/fleet/events", params=params, headers=stack.operator(product), timeout=30
    )
    assert response.status_code == 200, response.text
    page = response.json()
    return page["events"], page["cursor"]


def test_metrics_http_alert_rules_are_product_settings(
    running_stack: RunningStack, azure_backend: Stores, product: str
) -> None:
    stack = running_stack
    settings = _get(stack, product, "/fleet/settings")
    assert settings["alerts"] == {
        "enabled": True,
        "starvationSeconds": 900.0,
        "staleFactories": 1,
        "stalledJobs": 1,
        "unroutableJobs": 1,
        "reviewWaitingSeconds": 3600.0,
        "budgetFraction": 0.9,
        "noLiveFactories": True,
    }
    changed = _send(
        stack, product, "PUT", "/fleet/settings", {"alerts": {"noLiveFactories": False}}
    )
    assert changed["alerts"]["noLiveFactories"] is False and changed["alerts"]["stalledJobs"] == 1
    bad = requests.put(
        f"{stack.api}/fleet/settings",
        json={"alerts": {"starvationSeconds": -5}},
        headers=stack.operator(product),
        timeout=30,
    )
    assert bad.status_code == 400 and bad.json()["error"] == "validation_failed"
    _send(stack, product, "POST", "/fleet/jobs", {"title": "waiting", "body": "x"})
    # Queued work and no factory at all, but the rule is off for this product.
    monitor = Monitor(Coordinator(azure_backend))
    assert monitor.run(product).events == []
    assert _get(stack, product, "/fleet/alerts")["active"] == []
    assert json.loads(json.dumps(_get(stack, product, "/fleet/metrics")))["factories"]["live"] == 0
