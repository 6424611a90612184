"""``POST /fleet/claim`` on the in-memory twin: the claim's ``requestId`` and its retry."""

from __future__ import annotations

from typing import Any

import pytest

from fleet.context import AppContext
from fleet.coordinator import Coordinator
from fleet.coordinator.tokens import Tokens
from fleet.domain.manifest import Manifest
from fleet.http import fleet_ops
from fleet.http.parsing import FactorySelf
from tests.support.handlers import call, documented

P = "prod"


def enroll(tokens: Tokens, name: str) -> str:
    issued = tokens.create_enrollment_token(P, "operator:test")
    return tokens.enroll(issued.token, name, FactorySelf(capabilities=("python",))).token


def claim(context: AppContext, token: str, body: dict[str, Any]) -> tuple[int, Any]:
    status, reply, _ = call(context, fleet_ops.claim, "POST", "/api/fleet/claim", token, body)
    return status, reply


def test_claim_http_retry_with_the_same_request_id_answers_the_same_claim(
    app_context: AppContext, coord: Coordinator, tokens: Tokens
) -> None:
    for i in range(2):
        coord.submit(P, Manifest(title=f"job {i}", body="x"), "operator:o")
    token = enroll(tokens, "fa")
    body = {"capabilities": ["python"], "requestId": "c1aim-Req_01"}
    documented(body, "ClaimBody")
    status, first = claim(
        app_context, token, body
    )  # the reply is "lost": the factory never reads it
    assert status == 200 and first["lease"]["requestId"] == "c1aim-Req_01"
    documented(first, "ClaimReply")
    status, again = claim(app_context, token, {**body, "retry": True})
    assert status == 200 and again == first
    queued = [j for j in coord.list_jobs(P) if j.stage.value == "queued"]
    assert len(queued) == 1  # no second job assigned


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"retry": True}, "requestId"),
        ({"requestId": "short"}, "requestId"),
        ({"requestId": "has space in it"}, "requestId"),
        ({"requestId": "x" * 65}, "requestId"),
        ({"requestId": "req-0001", "retry": "maybe"}, "retry"),
    ],
)
def test_claim_http_rejects_a_bad_request_id(
    app_context: AppContext, tokens: Tokens, body: dict[str, Any], path: str
) -> None:
    status, error = claim(app_context, enroll(tokens, "fa"), body)
    assert status == 400 and error["error"] == "validation_failed"
    assert [p["path"] for p in error["details"]["problems"]] == [path]
