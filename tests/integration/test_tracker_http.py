"""The tracker bridge on the real local stack, over HTTP.

A private local Functions host (``tests/support/hosts.py``) is started for this module over
the same Cosmos emulator and Azurite, configured as a deployment with the bridge on:
``TRACKER_WEBHOOK_SECRET`` (GitHub's signature), ``TRACKER_ECHO_URL`` (a local
``http.server``) and ``TRACKER_ECHO_SECRET``. Its timers are scheduled once a year: the echo —
the reaper timer's job — is driven in-process over the same stores with a manual clock, so
backoff is checked without sleeping.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from fleet.coordinator import Coordinator
from fleet.coordinator.clock import ManualClock
from fleet.coordinator.tracker import Tracker, TrackerConfig
from fleet.coordinator.webhooks import backoff_seconds, sign
from fleet.store.ports import Stores
from tests.conftest import RunningStack, bearer
from tests.support.hosts import PrivateHost
from tests.support.receiver import Receiver, webhook_receiver

pytestmark = pytest.mark.integration

GITHUB_SECRET = "gh-" + uuid.uuid4().hex
ECHO_SECRET = "echo-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def echo_endpoint() -> Iterator[Receiver]:
    with webhook_receiver(path="/tracker-echo") as receiver:
        yield receiver


@pytest.fixture(scope="module")
def bridge_api(
    running_stack: RunningStack, echo_endpoint: Receiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The API base URL of a host with the tracker bridge configured."""
    never = "0 0 0 1 1 *"  # its timers stay quiet: the test drives the echo itself
    host = PrivateHost(
        running_stack,
        Path(tmp_path_factory.mktemp("bridge")) / "host.log",
        {
            "TRACKER_WEBHOOK_SECRET": GITHUB_SECRET,
            "TRACKER_ECHO_URL": echo_endpoint.url,
            "TRACKER_ECHO_SECRET": ECHO_SECRET,
            "REAPER_SCHEDULE": never,
            "HEALER_SCHEDULE": never,
            "METRICS_SCHEDULE": never,
        },
    )
    host.start()
    try:
        yield host.api
    finally:
        host.stop()


@pytest.fixture
def product() -> str:
    return f"p{uuid.uuid4().hex[:10]}"


def _jobs(api: str, stack: RunningStack, product: str) -> list[dict[str, Any]]:
    response = requests.get(f"{api}/fleet/jobs", headers=stack.operator(product), timeout=30)
    assert response.status_code == 200, response.text
    return list(response.json()["jobs"])


def _github(
    api: str, product: str, payload: dict[str, Any], signature: str | None
) -> requests.Response:
    body = json.dumps(payload).encode()
    headers = {"X-GitHub-Event": "issues", "Content-Type": "application/json"}
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    return requests.post(
        f"{api}/fleet/tracker/ingest",
        params={"product": product},
        data=body,
        headers=headers,
        timeout=30,
    )


def _issue(number: int) -> dict[str, Any]:
    return {
        "action": "opened",
        "repository": {"full_name": "acme/app"},
        "issue": {"number": number, "title": f"Bug {number}", "body": "trace", "labels": []},
    }


def test_tracker_http_ingest_twice_is_one_job(
    running_stack: RunningStack, bridge_api: str, product: str
) -> None:
    item = {"source": "jira", "id": "FLEET-7", "title": "Fix login", "body": "It breaks."}
    replies = [
        requests.post(
            f"{api}/fleet/tracker/ingest", json=item, headers=running_stack.operator(product),
            timeout=30,
        )
        for api in (running_stack.api, bridge_api)  # two instances, one store
    ]  # fmt: skip
    assert [r.status_code for r in replies] == [201, 200], [r.text for r in replies]
    first, again = (r.json() for r in replies)
    assert first["created"] is True and again["created"] is False
    assert first["job"]["id"] == again["job"]["id"]
    assert first["job"]["tracker"] == {"source": "jira", "id": "FLEET-7", "url": None}
    # A GitHub delivery retried by GitHub is one job too.
    payload = _issue(12)
    raw = json.dumps(payload).encode()
    for _ in range(2):
        response = _github(bridge_api, product, payload, sign(GITHUB_SECRET, raw))
        assert response.status_code == 200, response.text
    jobs = _jobs(running_stack.api, running_stack, product)
    assert sorted(j["title"] for j in jobs) == ["Bug 12", "Fix login"]


@pytest.mark.parametrize(
    "signature",
    [None, "sha256=" + "0" * 64, sign("not-the-secret", b"{}"), "tampered"],
    ids=["missing", "zeros", "other-secret", "tampered"],
)
def test_tracker_http_github_bad_signature_is_rejected_and_creates_nothing(
    running_stack: RunningStack, bridge_api: str, product: str, signature: str | None
) -> None:
    payload = _issue(99)
    if signature == "tampered":
        # Signed right, then the body changed in flight: the signature no longer matches.
        signature = sign(GITHUB_SECRET, json.dumps(_issue(98)).encode())
    response = _github(bridge_api, product, payload, signature)
    assert response.status_code == 401, response.text
    error = response.json()
    assert error["error"] == "unauthorized" and "X-Hub-Signature-256" in error["message"]
    assert set(error) >= {"error", "message"}
    assert _jobs(running_stack.api, running_stack, product) == []


def test_tracker_http_github_unsigned_on_a_host_without_the_secret_is_rejected(
    running_stack: RunningStack, product: str
) -> None:
    payload = _issue(5)
    response = _github(
        running_stack.api, product, payload, sign(GITHUB_SECRET, json.dumps(payload).encode())
    )
    assert response.status_code == 401 and response.json()["error"] == "unauthorized"
    assert _jobs(running_stack.api, running_stack, product) == []


def test_tracker_http_failing_echo_is_retried_and_never_blocks_the_job(
    running_stack: RunningStack,
    bridge_api: str,
    echo_endpoint: Receiver,
    azure_backend: Stores,
    product: str,
) -> None:
    stack = running_stack
    created = requests.post(
        f"{bridge_api}/fleet/tracker/ingest",
        json={"source": "gh", "id": f"acme/app#{product}", "title": "Echo me",
              "capabilities": ["python"]},
        headers=stack.operator(product),
        timeout=30,
    )  # fmt: skip
    assert created.status_code == 201, created.text
    job_id = created.json()["job"]["id"]
    factory = bearer(stack.enroll(product, "f1", ("python",)))

    # The echo endpoint is down: every delivery fails with a 500.
    # Ahead of the host's clock by the settle window: its events are old enough to echo.
    clock = ManualClock(datetime.now(UTC) + timedelta(seconds=TrackerConfig().settle_seconds))
    tracker = Tracker(
        Coordinator(azure_backend, clock=clock),
        TrackerConfig(echo_url=echo_endpoint.url, echo_secret=ECHO_SECRET),
    )
    with echo_endpoint.lock:
        echo_endpoint.statuses[:] = [500] * 3
        refused_before = echo_endpoint.refused
    assert tracker.echo(product) == 0

    # The job runs to shipped meanwhile: the echo is on no transition's path.
    claim = requests.post(
        f"{stack.api}/fleet/claim", json={"capabilities": ["python"]}, headers=factory, timeout=30
    )
    assert claim.status_code == 200, claim.text
    epoch = claim.json()["lease"]["epoch"]
    for stage in ("building", "shipped"):
        moved = requests.patch(
            f"{stack.api}/fleet/jobs/{job_id}",
            json={"leaseEpoch": epoch, "stage": stage},
            headers=factory,
            timeout=30,
        )
        assert moved.status_code == 200 and moved.json()["stage"] == stage, moved.text

    status = requests.get(
        f"{bridge_api}/fleet/tracker/echo", headers=stack.operator(product), timeout=30
    ).json()
    assert status["configured"] is True and status["attempts"] == 1
    assert status["lastError"] == "HTTP 500" and status["cursor"] is None
    assert tracker.echo(product) == 0  # backing off: not even tried
    clock.advance(backoff_seconds(1))
    assert tracker.echo(product) == 0  # tried, failed again
    clock.advance(backoff_seconds(2))
    assert tracker.echo(product) == 0  # and again
    assert echo_endpoint.refused - refused_before == 3

    # The endpoint recovers: every stage change is delivered, in order, signed, once.
    clock.advance(backoff_seconds(3))
    assert tracker.echo(product) == 4
    assert tracker.echo(product) == 0
    mine = [
        (body, signature)
        for body, signature in echo_endpoint.accepted
        if json.loads(body)["jobId"] == job_id
    ]
    assert [json.loads(body)["to"] for body, _ in mine] == [
        "queued",
        "assigned",
        "building",
        "shipped",
    ]
    assert all(signature == sign(ECHO_SECRET, body) for body, signature in mine)
    status = requests.get(
        f"{bridge_api}/fleet/tracker/echo", headers=stack.operator(product), timeout=30
    ).json()
    assert status["attempts"] == 0 and status["lastError"] is None and status["cursor"]
