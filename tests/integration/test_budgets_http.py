"""Budgets, channel limits and product settings over HTTP on the real local stack."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests

from tests.conftest import RunningStack, bearer

pytestmark = pytest.mark.integration


@pytest.fixture
def product() -> str:
    return f"b{uuid.uuid4().hex[:10]}"


def _call(method: str, url: str, headers: dict[str, str], body: Any = None) -> requests.Response:
    return requests.request(method, url, json=body, headers=headers, timeout=30)


def test_http_budget_lifecycle_and_claims_respect_it(
    running_stack: RunningStack, product: str
) -> None:
    api, op = running_stack.api, running_stack.operator(product)
    empty = _call("GET", f"{api}/fleet/budgets/{product}", op).json()
    assert empty["exists"] is False and empty["usedFraction"] is None  # sane with no budget
    put = _call("PUT", f"{api}/fleet/budgets/{product}", op, {"ceilingUsd": 3})
    assert put.status_code == 200, put.text
    bad = _call("PUT", f"{api}/fleet/budgets/{product}", op, {"ceilingUsd": -1})
    assert bad.status_code == 400 and bad.json()["details"]["problems"][0]["path"] == "ceilingUsd"
    for n in range(3):
        body = {"title": f"j{n}", "capabilities": ["python"], "budget": 2, "body": "x"}
        assert _call("POST", f"{api}/fleet/jobs", op, body).status_code == 201
    factory = bearer(running_stack.enroll(product, "spender"))
    me = {"capabilities": ["python"], "seats": 4}
    claim = _call("POST", f"{api}/fleet/claim", factory, me)
    assert claim.status_code == 200, claim.text
    # $2 of $3 reserved: the next $2 job does not fit.
    assert _call("POST", f"{api}/fleet/claim", factory, me).status_code == 204
    job, epoch = claim.json()["job"]["id"], claim.json()["lease"]["epoch"]
    explained = _call("GET", f"{api}/fleet/jobs", op).json()["jobs"]
    waiting = next(j["id"] for j in explained if j["stage"] == "queued")
    why = _call("GET", f"{api}/fleet/jobs/{waiting}/explain", op).json()
    assert "exceeds" in why["blockers"][0]
    for stage in ("building", "shipped"):
        patch = {"leaseEpoch": epoch, "stage": stage, "result": {"costUsd": 0.75}}
        assert _call("PATCH", f"{api}/fleet/jobs/{job}", factory, patch).status_code == 200
    budget = _call("GET", f"{api}/fleet/budgets/{product}", op).json()
    assert (budget["spentUsd"], budget["reservedUsd"]) == (0.75, 0)
    paused = _call("POST", f"{api}/fleet/budgets/{product}/pause", op).json()
    assert paused["paused"] is True
    assert _call("POST", f"{api}/fleet/claim", factory, me).status_code == 204
    _call("POST", f"{api}/fleet/budgets/{product}/resume", op).raise_for_status()
    assert _call("POST", f"{api}/fleet/claim", factory, me).status_code == 200
    # A factory may read its own product's budget, never another's.
    assert _call("GET", f"{api}/fleet/budgets/{product}", factory).status_code == 200
    assert _call("GET", f"{api}/fleet/budgets/other-{product}", factory).status_code == 403
    assert (
        _call("PUT", f"{api}/fleet/budgets/{product}", factory, {"ceilingUsd": 9}).status_code
        == 403
    )
    burndown = _call("GET", f"{api}/fleet/budgets/{product}/burndown", op).json()
    assert burndown == {"product": product, "points": []}  # the metrics timer adds points


def test_http_channel_limits_and_settings(running_stack: RunningStack, product: str) -> None:
    api, op = running_stack.api, running_stack.operator(product)
    put = _call("PUT", f"{api}/fleet/channels/ebay", op, {"maxRunning": 1, "burst": 2})
    assert put.status_code == 200, put.text
    assert put.json()["maxRunning"] == 1 and put.json()["ratePerMinute"] is None
    for n in range(2):
        body = {"title": f"j{n}", "channel": "ebay", "body": "x"}
        assert _call("POST", f"{api}/fleet/jobs", op, body).status_code == 201
    factory = bearer(running_stack.enroll(product, "lister"))
    assert _call("POST", f"{api}/fleet/claim", factory, {"seats": 4}).status_code == 200
    assert _call("POST", f"{api}/fleet/claim", factory, {"seats": 4}).status_code == 204
    listed = _call("GET", f"{api}/fleet/channels", op).json()["channels"]
    assert listed[0]["running"] == 1 and "cap" in listed[0]["blocked"]
    _call("PUT", f"{api}/fleet/channels/ebay", op, {"maxRunning": 2, "burst": 2})
    assert _call("POST", f"{api}/fleet/claim", factory, {"seats": 4}).status_code == 200
    assert _call("DELETE", f"{api}/fleet/channels/ebay", op).status_code == 204
    settings = _call(
        "PUT",
        f"{api}/fleet/settings",
        op,
        {"weights": {"priority": 2.5}, "preemption": {"enabled": True, "afterSeconds": 30}},
    )
    assert settings.status_code == 200, settings.text
    got = _call("GET", f"{api}/fleet/settings", op).json()
    assert got["weights"]["priority"] == 2.5 and got["weights"]["capability"] == 1.0
    assert got["preemption"] == {"enabled": True, "minPriority": 9, "afterSeconds": 30.0}
    refused = _call("PUT", f"{api}/fleet/settings", op, {"weights": {"priority": -1}})
    assert refused.status_code == 400
    assert refused.json()["details"]["problems"][0]["path"] == "weights.priority"


def test_http_a_running_attempts_spend_is_reserved_and_past_the_ceiling_stopped(
    running_stack: RunningStack, product: str
) -> None:
    api, op = running_stack.api, running_stack.operator(product)
    assert _call("PUT", f"{api}/fleet/budgets/{product}", op, {"ceilingUsd": 5}).status_code == 200
    factory = bearer(running_stack.enroll(product, "runner"))
    # Estimated $1.5: its spend is believed up to 5x that, so $6 is the product's ceiling's
    # to refuse, not the attempt's cap.
    claim = running_stack.submit_and_claim(product, factory, budget=1.5, maxAttempts=1)
    url, epoch = f"{api}/fleet/jobs/{claim['job']['id']}", claim["lease"]["epoch"]

    def report(cost: float, **more: Any) -> requests.Response:
        body = {"leaseEpoch": epoch, "progress": {"costUsd": cost}, **more}
        return _call("PATCH", url, factory, body)

    assert report(0.5, stage="building").status_code == 200
    assert report(3).status_code == 200
    budget = _call("GET", f"{api}/fleet/budgets/{product}", op).json()
    assert (budget["spentUsd"], budget["reservedUsd"]) == (0, 3)  # seen while it runs
    over = report(6)  # the ceiling cannot take it: the attempt is ended
    assert over.status_code == 409 and over.json()["error"] == "budget_exceeded", over.text
    budget = _call("GET", f"{api}/fleet/budgets/{product}", op).json()
    assert (budget["spentUsd"], budget["reservedUsd"]) == (6, 0)
    job = _call("GET", url, op).json()
    assert job["stage"] == "dead_letter" and job["runs"][-1]["outcome"] == "budget_exceeded"
