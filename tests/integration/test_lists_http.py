"""The operator's lists on the real local stack: the fleet list with every factory's last
heartbeat, and the job list in pages (Cosmos emulator, Azurite, the local host over HTTP)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests

from fleet.coordinator import Coordinator
from fleet.coordinator.fleet_health import FleetHealth
from fleet.store.ports import Stores
from tests.conftest import RunningStack, bearer

pytestmark = pytest.mark.integration


@pytest.fixture
def product() -> str:
    return f"p{uuid.uuid4().hex[:10]}"


def call(
    stack: RunningStack,
    method: str,
    path: str,
    headers: dict[str, str],
    body: Any = None,
    status: int = 200,
    **params: str,
) -> Any:
    response = requests.request(
        method, f"{stack.api}{path}", json=body, params=params, headers=headers, timeout=30
    )
    assert response.status_code == status, f"{method} {path}: {response.text}"
    return response.json() if response.content else None


def test_http_the_fleet_list_carries_each_factorys_last_heartbeat(
    running_stack: RunningStack, product: str, azure_backend: Stores
) -> None:
    op = running_stack.operator(product)
    tokens = {name: running_stack.enroll(product, name) for name in ("f1", "f2", "f3")}
    call(running_stack, "POST", "/fleet/jobs", op, {"title": "t", "body": "b"}, status=201)
    claim = call(running_stack, "POST", "/fleet/claim", bearer(tokens["f1"]), {"seats": 2})
    job_id, epoch = claim["job"]["id"], claim["lease"]["epoch"]
    progress = {"jobId": job_id, "leaseEpoch": epoch, "tokens": 5}
    beat = {"capabilities": ["python"], "seats": 2, "load": 1, "jobs": [progress]}
    call(running_stack, "POST", "/fleet/factories/heartbeat", bearer(tokens["f1"]), beat)
    call(running_stack, "POST", "/fleet/factories/heartbeat", bearer(tokens["f2"]), {"seats": 3})
    for kind in ("drain", "restart-engine"):
        command = {"command": kind}
        call(running_stack, "POST", "/fleet/factories/f2/commands", op, command, status=202)
    # A product whose name extends this one's: its commands are not this fleet's.
    neighbour = product + "x"
    running_stack.enroll(neighbour, "f2")
    call(
        running_stack,
        "POST",
        "/fleet/factories/f2/commands",
        running_stack.operator(neighbour),
        {"command": "pause"},
        status=202,
    )

    listed = call(running_stack, "GET", "/fleet/factories", op)["factories"]
    beats = {f["id"]: f["heartbeat"] for f in listed}
    assert beats["f1"]["load"] == 1 and beats["f1"]["seats"] == 2
    assert [(j["jobId"], j["leaseEpoch"]) for j in beats["f1"]["jobs"]] == [(job_id, epoch)]
    assert beats["f1"]["jobs"][0]["idleSeconds"] >= 0 and beats["f1"]["pendingCount"] == 0
    assert beats["f2"]["seats"] == 3 and beats["f2"]["ageSeconds"] >= 0
    assert beats["f2"]["pendingKinds"] == ["drain", "restart-engine"]
    assert beats["f3"] is None  # enrolled, never beat, no command
    # The list says what the per-factory endpoint says.
    detail = call(running_stack, "GET", "/fleet/factories/f2/heartbeat", op)
    assert [c["kind"] for c in detail["pendingCommands"]] == beats["f2"]["pendingKinds"]
    # A factory's token lists the fleet without anyone's heartbeat.
    mine = call(running_stack, "GET", "/fleet/factories", bearer(tokens["f3"]))["factories"]
    assert {f["id"] for f in mine} == {"f1", "f2", "f3"}
    assert all("heartbeat" not in f for f in mine)

    # The bulk read on Azurite: two table queries for the whole fleet.
    health = FleetHealth(Coordinator(azure_backend))
    with azure_backend.counters.measure() as cost:
        summaries = health.heartbeat_summaries(product)
    assert cost == {"table_query": 2}
    assert sorted(summaries) == ["f1", "f2"]


def test_http_the_job_list_pages_by_id(running_stack: RunningStack, product: str) -> None:
    op = running_stack.operator(product)
    ids = [
        call(running_stack, "POST", "/fleet/jobs", op, {"title": f"t{n}", "body": "b"}, status=201)[
            "job"
        ]["id"]
        for n in range(7)
    ]
    for job_id in ids[::3]:
        call(running_stack, "POST", f"/fleet/jobs/{job_id}/cancel", op, {"reason": "no"})

    def walk(headers: dict[str, str], **params: str) -> list[list[str]]:
        pages: list[list[str]] = []
        cursor: dict[str, str] = {}
        while True:
            page = call(running_stack, "GET", "/fleet/jobs", headers, **params, **cursor)
            assert page["count"] == len(page["jobs"])
            pages.append([j["id"] for j in page["jobs"]])
            if page["next"] is None:
                return pages
            cursor = {"cursor": page["next"]}

    ordered = sorted(ids, reverse=True)  # newest first
    assert walk(op, limit="3") == [ordered[:3], ordered[3:6], ordered[6:]]
    cancelled = sorted(ids[::3], reverse=True)
    assert walk(op, stage="cancelled", limit="2") == [cancelled[:2], cancelled[2:]]
    assert walk(op) == [ordered]

    # A factory pages through the jobs it holds and the jobs in review, nothing else.
    token = running_stack.enroll(product, "f1")
    claim = call(running_stack, "POST", "/fleet/claim", bearer(token), {"seats": 1})
    assert walk(bearer(token), limit="1") == [[claim["job"]["id"]]]

    for params, path in (
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"cursor": "nonsense"}, "cursor"),
    ):
        bad = call(running_stack, "GET", "/fleet/jobs", op, status=400, **params)
        assert bad["error"] == "validation_failed"
        assert [p["path"] for p in bad["details"]["problems"]] == [path]
