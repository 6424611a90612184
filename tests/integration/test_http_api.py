"""The coordinator through HTTP on the real local stack: the Functions app served by the
local host, over the Cosmos emulator and Azurite."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from typing import Any

import pytest
import requests

from fleet.coordinator import Coordinator
from fleet.coordinator.config import CoordinatorConfig
from fleet.domain.manifest import Manifest
from fleet.domain.scheduler import FactoryView
from fleet.store.ports import Stores
from tests.conftest import RunningStack, bearer

pytestmark = pytest.mark.integration

MANIFEST = """---
title: Fix the flaky test
capabilities: [python]
priority: 7
idempotencyKey: {key}
leaseSeconds: 120
---
# Task

The test `test_retry` fails one run in ten. Find out why.
"""


@pytest.fixture
def product() -> str:
    return f"p{uuid.uuid4().hex[:10]}"


def _submit(stack: RunningStack, product: str, **fields: Any) -> dict[str, Any]:
    body = {"title": "job", "capabilities": ["python"], "body": "do it", **fields}
    response = requests.post(
        f"{stack.api}/fleet/jobs", json=body, headers=stack.operator(product), timeout=30
    )
    assert response.status_code == 201, response.text
    return response.json()["job"]  # type: ignore[no-any-return]


def _claim(api: str, token: str) -> dict[str, Any]:
    response = requests.post(
        f"{api}/fleet/claim", json={"capabilities": ["python"]}, headers=bearer(token), timeout=30
    )
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def test_http_health_reports_every_dependency_up(running_stack: RunningStack) -> None:
    response = requests.get(f"{running_stack.api}/health", timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ok"
    assert all(dep["ok"] for dep in body["dependencies"].values())


def test_http_submit_markdown_is_idempotent(running_stack: RunningStack, product: str) -> None:
    api = running_stack.api
    text = MANIFEST.format(key=f"issue-{product}")
    headers = {**running_stack.operator(product), "Content-Type": "text/markdown"}
    first = requests.post(f"{api}/fleet/jobs", data=text.encode(), headers=headers, timeout=30)
    assert first.status_code == 201, first.text
    again = requests.post(f"{api}/fleet/jobs", data=text.encode(), headers=headers, timeout=30)
    assert again.status_code == 200, again.text
    job = first.json()["job"]
    assert again.json()["job"]["id"] == job["id"]
    assert job["body"].startswith("# Task\n") and job["priority"] == 7
    listed = requests.get(
        f"{api}/fleet/jobs", headers=running_stack.operator(product), timeout=30
    ).json()
    assert [j["id"] for j in listed["jobs"]] == [job["id"]]


def test_http_invalid_manifest_is_400_with_field_paths(
    running_stack: RunningStack, product: str
) -> None:
    api = running_stack.api
    bad = {"title": "", "priority": 12, "capabilities": ["Not A Cap"], "colour": "red"}
    response = requests.post(
        f"{api}/fleet/jobs", json=bad, headers=running_stack.operator(product), timeout=30
    )
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"] == "validation_failed"
    paths = {p["path"] for p in body["details"]["problems"]}
    assert {"title", "priority", "capabilities[0]", "colour"} <= paths
    listed = requests.get(
        f"{api}/fleet/jobs", headers=running_stack.operator(product), timeout=30
    ).json()
    assert listed["jobs"] == []


def test_http_racing_claimers_assign_every_job_exactly_once(
    running_stack: RunningStack, product: str
) -> None:
    api = running_stack.api
    jobs = {_submit(running_stack, product, title=f"job {n}")["id"] for n in range(40)}
    claimers = 16
    tokens = {f"f{i}": running_stack.enroll(product, f"f{i}") for i in range(claimers)}
    grants: list[tuple[str, str, int]] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(claimers)

    def claimer(name: str) -> None:
        session = requests.Session()
        start.wait()
        while True:
            try:
                response = session.post(
                    f"{api}/fleet/claim",
                    json={"capabilities": ["python"], "seats": 100},
                    headers=bearer(tokens[name]),
                    timeout=60,
                )
            except requests.RequestException as exc:
                with lock:
                    errors.append(f"{name}: {exc!r}")
                return
            if response.status_code == 204:
                return
            if response.status_code != 200:
                with lock:
                    errors.append(f"{name}: {response.status_code} {response.text[:200]}")
                return
            body = response.json()
            with lock:
                grants.append((body["job"]["id"], name, body["lease"]["epoch"]))

    threads = [threading.Thread(target=claimer, args=(name,)) for name in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    per_job = Counter(job for job, _, _ in grants)
    assert set(per_job) == jobs
    assert all(n == 1 for n in per_job.values()), per_job.most_common(3)
    # And the store agrees: each job is held by the factory that was granted it.
    for job_id, factory, epoch in grants:
        job = requests.get(
            f"{api}/fleet/jobs/{job_id}", headers=running_stack.operator(product), timeout=30
        ).json()
        assert (job["holder"], job["epoch"], job["stage"]) == (factory, epoch, "assigned")


def test_http_zombie_write_is_fenced_and_changes_nothing(
    running_stack: RunningStack, product: str
) -> None:
    api = running_stack.api
    operator = running_stack.operator(product)
    old = running_stack.enroll(product, "old")
    job = _submit(running_stack, product)
    claim = _claim(api, old)
    epoch = claim["lease"]["epoch"]
    assert claim["cadence"]["renewSeconds"] >= 1
    requeue = requests.post(
        f"{api}/fleet/jobs/{job['id']}/requeue",
        json={"reason": "stuck"},
        headers=operator,
        timeout=30,
    )
    assert requeue.status_code == 200, requeue.text
    before = requests.get(f"{api}/fleet/jobs/{job['id']}", headers=operator, timeout=30).json()
    for method, path, body in (
        ("PATCH", f"/fleet/jobs/{job['id']}", {"leaseEpoch": epoch, "stage": "shipped"}),
        ("POST", f"/fleet/jobs/{job['id']}/lease/renew", {"leaseEpoch": epoch}),
        ("POST", f"/fleet/jobs/{job['id']}/lease/release", {"leaseEpoch": epoch}),
    ):
        response = requests.request(
            method, f"{api}{path}", json=body, headers=bearer(old), timeout=30
        )
        assert response.status_code == 409, response.text
        assert response.json()["error"] == "fenced"
    after = requests.get(f"{api}/fleet/jobs/{job['id']}", headers=operator, timeout=30).json()
    assert after == before


def test_http_a_claim_whose_reply_was_lost_is_answered_again_by_its_request_id(
    running_stack: RunningStack, product: str
) -> None:
    api = running_stack.api
    operator = running_stack.operator(product)
    fa = running_stack.enroll(product, "fa")
    jobs = {_submit(running_stack, product)["id"] for _ in range(2)}
    body = {"capabilities": ["python"], "requestId": f"claim-{uuid.uuid4().hex[:12]}"}
    lost = requests.post(f"{api}/fleet/claim", json=body, headers=bearer(fa), timeout=30)
    assert lost.status_code == 200, lost.text  # and then dropped: the factory never reads it
    retried = requests.post(
        f"{api}/fleet/claim", json={**body, "retry": True}, headers=bearer(fa), timeout=30
    )
    assert retried.status_code == 200, retried.text
    first, again = lost.json(), retried.json()
    assert again["job"]["id"] == first["job"]["id"] and again["lease"] == first["lease"]
    assert again["lease"]["requestId"] == body["requestId"] and again["score"] == first["score"]
    job_id = first["job"]["id"]
    events = requests.get(
        f"{api}/fleet/jobs/{job_id}/events?after=0", headers=operator, timeout=30
    ).json()["events"]
    assert [e["type"] for e in events] == ["submit", "assign"]
    (other,) = jobs - {job_id}
    left = requests.get(f"{api}/fleet/jobs/{other}", headers=operator, timeout=30).json()
    assert left["stage"] == "queued"  # the retry assigned nothing more
    # Another factory re-sending that id is a claim of its own: it gets the other job.
    fb = running_stack.enroll(product, "fb")
    theirs = requests.post(
        f"{api}/fleet/claim", json={**body, "retry": True}, headers=bearer(fb), timeout=30
    )
    assert theirs.status_code == 200 and theirs.json()["job"]["id"] == other


def test_http_claim_costs_on_cosmos_with_and_without_a_retry(
    azure_backend: Stores, product: str
) -> None:
    # Every claim reads the queue (no shared read within a second): the counts are each
    # claim's own, whatever the timing.
    coord = Coordinator(azure_backend, config=CoordinatorConfig(queued_list_seconds=0))
    factory = FactoryView(id="fa", capabilities=frozenset({"python"}))
    for _ in range(2):
        coord.submit(product, Manifest(title="job", body="x", capabilities=("python",)), "op")
    # What the claim path caches per instance: settings, learned routing, budget, standing.
    coord.weights(product)
    coord.learned(product)
    coord.budgets.applies(product)
    coord.standing(product, "fa")
    with azure_backend.counters.measure() as normal:
        won = coord.claim(product, factory, "req-cosmos-1")
    with azure_backend.counters.measure() as replay:
        again = coord.claim(product, factory, "req-cosmos-1", retry=True)
    with azure_backend.counters.measure() as fresh:
        other = coord.claim(product, factory, "req-cosmos-2", retry=True)
    assert normal == {"query": 1, "write": 1}
    assert replay == {"query": 1}
    assert fresh == {"query": 2, "write": 1}
    assert won is not None and again is not None and other is not None
    assert again.job.id == won.job.id and again.lease == won.lease
    assert other.job.id != won.job.id


def test_http_holder_runs_a_job_to_shipped_with_its_history(
    running_stack: RunningStack, product: str
) -> None:
    api = running_stack.api
    operator = running_stack.operator(product)
    f1 = running_stack.enroll(product, "f1")
    job = _submit(running_stack, product)
    claim = _claim(api, f1)
    epoch = claim["lease"]["epoch"]
    url = f"{api}/fleet/jobs/{job['id']}"
    for body in (
        {"leaseEpoch": epoch, "stage": "building"},
        {"leaseEpoch": epoch, "checkpoint": {"branch": "wip/x"}},
        {"leaseEpoch": epoch, "stage": "shipped", "result": {"exitCode": 0}},
    ):
        response = requests.patch(url, json=body, headers=bearer(f1), timeout=30)
        assert response.status_code == 200, response.text
    events = requests.get(f"{url}/events?after=1", headers=operator, timeout=30).json()
    assert [e["type"] for e in events["events"]] == ["assign", "start", "complete"]
    assert events["events"][0]["data"]["score"]["total"] > 0
    final = requests.get(url, headers=operator, timeout=30).json()
    assert final["stage"] == "shipped" and final["checkpoint"] == {"branch": "wip/x"}
    assert (
        requests.post(
            f"{api}/fleet/claim",
            json={"capabilities": ["python"]},
            headers=bearer(f1),
            timeout=30,
        ).status_code
        == 204
    )


def test_http_explain_and_queue_state(running_stack: RunningStack, product: str) -> None:
    api = running_stack.api
    operator = running_stack.operator(product)
    assert (
        requests.get(f"{api}/fleet/queue-state", headers=operator, timeout=30).json()["version"]
        == 0
    )
    cpu_box = running_stack.enroll(product, "cpu-box")
    requests.post(
        f"{api}/fleet/factories/register",
        json={"capabilities": ["python"], "seats": 2},
        headers=bearer(cpu_box),
        timeout=30,
    ).raise_for_status()
    job = _submit(running_stack, product, capabilities=["python", "gpu"])
    state = requests.get(f"{api}/fleet/queue-state", headers=bearer(cpu_box), timeout=30).json()
    assert state["version"] == 1 and state["maxSkipSeconds"] > 0
    explain = requests.get(
        f"{api}/fleet/jobs/{job['id']}/explain", headers=operator, timeout=30
    ).json()
    assert explain["unroutable"] is True
    assert explain["factories"][0]["missingCapabilities"] == ["gpu"]


def test_http_idle_gate_poll_is_one_point_read_on_cosmos(
    azure_backend: Stores, product: str
) -> None:
    coord = Coordinator(azure_backend)
    with azure_backend.counters.measure() as cost:
        coord.queue_state(product)
    assert cost == {"read": 1}


def test_http_agent_events_forwarded_by_the_holder_only(
    running_stack: RunningStack, product: str
) -> None:
    api = running_stack.api
    job = _submit(running_stack, product)
    token = running_stack.enroll(product, "narrator")
    factory = bearer(token)
    claim = _claim(api, token)
    epoch = claim["lease"]["epoch"]
    url = f"{api}/fleet/jobs/{job['id']}"
    batch = {
        "leaseEpoch": epoch,
        "events": [{"seq": 1, "type": "decision", "payload": {"chose": "refactor"}}],
    }
    first = requests.post(f"{url}/events", json=batch, headers=factory, timeout=30)
    assert first.status_code == 201 and first.json() == {"stored": 1, "received": 1}
    again = requests.post(f"{url}/events", json=batch, headers=factory, timeout=30)
    assert again.status_code == 200 and again.json()["stored"] == 0
    stale = requests.post(
        f"{url}/events", json={**batch, "leaseEpoch": epoch + 1}, headers=factory, timeout=30
    )
    assert stale.status_code == 409 and stale.json()["error"] == "fenced"
    too_big = {"leaseEpoch": epoch, "events": [{"seq": 2, "type": "x", "payload": "y" * 20000}]}
    refused = requests.post(f"{url}/events", json=too_big, headers=factory, timeout=30)
    assert refused.status_code == 400
    assert refused.json()["details"]["problems"][0]["path"].startswith("events[0]")
    listed = requests.get(
        f"{url}/agent-events", headers=running_stack.operator(product), timeout=30
    ).json()
    assert [e["eventType"] for e in listed["events"]] == ["decision"]
    job_now = requests.get(url, headers=running_stack.operator(product), timeout=30).json()
    assert job_now["stage"] == "assigned" and job_now["epoch"] == epoch
