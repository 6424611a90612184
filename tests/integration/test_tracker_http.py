"""The tracker bridge on the real local stack, over HTTP.

GitHub's webhook: an operator binds a repository to a product (``PUT
/api/fleet/tracker/github``) and its signed deliveries land there, and only there; unbound,
they are refused. Bindings live in the store, so any host serves them.

A private local Functions host (``tests/support/hosts.py``) is started for this module over
the same Cosmos emulator and Azurite, configured as a deployment with the echo on:
``TRACKER_ECHO_URL`` (a local ``http.server``) and ``TRACKER_ECHO_SECRET``. Its timers are
scheduled once a year: the echo — the reaper timer's job — is driven in-process over the same
stores with a manual clock, so backoff is checked without sleeping.
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
            # Read no more (deliveries are verified with their binding's secret): a
            # deployment that still sets it authenticates nothing with it.
            "TRACKER_WEBHOOK_SECRET": GITHUB_SECRET,
            "TRACKER_ECHO_URL": echo_endpoint.url,
            "TRACKER_ECHO_SECRET": ECHO_SECRET,
            "REAPER_SCHEDULE": never,
            "HEALER_SCHEDULE": never,
            "METRICS_SCHEDULE": never,
            # Its own queue: it must not run the session host's passes with its settings.
            "FLEET_PASSES_QUEUE": f"bridge-passes-{uuid.uuid4().hex[:8]}",
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


@pytest.fixture
def repository() -> str:
    """A repository of this test's own: a repository is bound to one product at most."""
    return f"acme/app-{uuid.uuid4().hex[:10]}"


def _jobs(api: str, stack: RunningStack, product: str) -> list[dict[str, Any]]:
    response = requests.get(f"{api}/fleet/jobs", headers=stack.operator(product), timeout=30)
    assert response.status_code == 200, response.text
    return list(response.json()["jobs"])


def _bind(stack: RunningStack, product: str, repository: str, **body: Any) -> requests.Response:
    return requests.put(
        f"{stack.api}/fleet/tracker/github",
        json={"repository": repository, "secret": GITHUB_SECRET, **body},
        headers=stack.operator(product),
        timeout=30,
    )


def _github(
    api: str,
    payload: dict[str, Any],
    signature: str | bytes | None,
    *,
    product: str | None = None,
    delivery: str | None = None,
) -> requests.Response:
    body = json.dumps(payload).encode()
    headers: dict[str, str | bytes] = {
        "X-GitHub-Event": "issues",
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "Content-Type": "application/json",
    }
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    return requests.post(
        f"{api}/fleet/tracker/ingest",
        params={"product": product} if product else None,
        data=body,
        headers=headers,
        timeout=30,
    )


def _issue(number: int, repository: str, association: str = "MEMBER") -> dict[str, Any]:
    return {
        "action": "opened",
        "repository": {"full_name": repository},
        "issue": {
            "number": number,
            "title": f"Bug {number}",
            "body": "trace",
            "labels": [],
            "author_association": association,
        },
    }


def _signed(payload: dict[str, Any]) -> str:
    return sign(GITHUB_SECRET, json.dumps(payload).encode())


def test_tracker_http_ingest_twice_is_one_job(
    running_stack: RunningStack, bridge_api: str, product: str, repository: str
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
    # A GitHub issue delivered twice (two deliveries: opened, then reopened) is one job, on
    # either instance; the same delivery again (GitHub's redelivery) makes nothing new.
    assert _bind(running_stack, product, repository).status_code == 201
    payload = _issue(12, repository)
    delivery = str(uuid.uuid4())
    made = _github(bridge_api, payload, _signed(payload), delivery=delivery)
    assert made.status_code == 201, made.text
    reopened = {**payload, "action": "reopened"}
    again_made = _github(running_stack.api, reopened, _signed(reopened))
    assert again_made.status_code == 200, again_made.text
    assert again_made.json()["job"]["id"] == made.json()["job"]["id"]
    replayed = _github(running_stack.api, payload, _signed(payload), delivery=delivery)
    assert replayed.status_code == 202 and replayed.json()["reason"] == "duplicate_delivery"
    jobs = _jobs(running_stack.api, running_stack, product)
    assert sorted(j["title"] for j in jobs) == ["Bug 12", "Fix login"]


def test_tracker_http_github_bind_deliver_unbind(
    running_stack: RunningStack, bridge_api: str, product: str, repository: str
) -> None:
    stack = running_stack
    elsewhere = f"q{uuid.uuid4().hex[:10]}"
    bound = _bind(stack, product, repository, label="fleet")
    assert bound.status_code == 201, bound.text
    assert GITHUB_SECRET not in bound.text and bound.json()["secretSet"] is True
    listed = requests.get(
        f"{stack.api}/fleet/tracker/github", headers=stack.operator(product), timeout=30
    )
    assert listed.status_code == 200 and GITHUB_SECRET not in listed.text
    assert [b["repository"] for b in listed.json()["bindings"]] == [repository]
    # Another product cannot take the repository.
    taken = _bind(stack, elsewhere, repository)
    assert taken.status_code == 409 and taken.json()["error"] == "already_bound"

    # Signed, labeled, by a member: a job in the bound product, whatever ?product= says.
    payload = _issue(3, repository)
    payload["issue"]["labels"] = [{"name": "Fleet"}, {"name": "cap:python"}]
    made = _github(bridge_api, payload, _signed(payload), product=elsewhere)
    assert made.status_code == 201, made.text
    job = made.json()["job"]
    assert job["productId"] == product and job["capabilities"] == ["python"]
    assert [j["id"] for j in _jobs(stack.api, stack, product)] == [job["id"]]
    assert _jobs(stack.api, stack, elsewhere) == []

    # A stranger's issue, and one without the label: 202 with the reason, nothing made.
    stranger = _issue(4, repository, association="NONE")
    stranger["issue"]["labels"] = [{"name": "fleet"}]
    ignored = _github(stack.api, stranger, _signed(stranger))
    assert ignored.status_code == 202, ignored.text
    assert ignored.json()["reason"] == "author_association"
    unlabeled = _issue(5, repository)
    ignored = _github(stack.api, unlabeled, _signed(unlabeled))
    assert ignored.status_code == 202 and ignored.json()["reason"] == "label"
    assert len(_jobs(stack.api, stack, product)) == 1

    # Unbound: refused, nothing made.
    unbound = requests.delete(
        f"{stack.api}/fleet/tracker/github",
        params={"repository": repository},
        headers=stack.operator(product),
        timeout=30,
    )
    assert unbound.status_code == 204, unbound.text
    payload = _issue(6, repository)
    payload["issue"]["labels"] = [{"name": "fleet"}]
    refused = _github(bridge_api, payload, _signed(payload), product=product)
    assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
    assert len(_jobs(stack.api, stack, product)) == 1
    # ...and the repository may now be bound elsewhere.
    assert _bind(stack, elsewhere, repository).status_code == 201


@pytest.mark.parametrize(
    "signature",
    [None, "sha256=" + "0" * 64, sign("not-the-secret", b"{}"), "tampered"],
    ids=["missing", "zeros", "other-secret", "tampered"],
)
def test_tracker_http_github_bad_signature_is_rejected_and_creates_nothing(
    running_stack: RunningStack,
    bridge_api: str,
    product: str,
    repository: str,
    signature: str | None,
) -> None:
    assert _bind(running_stack, product, repository).status_code == 201
    payload = _issue(99, repository)
    if signature == "tampered":
        # Signed right, then the body changed in flight: the signature no longer matches.
        signature = _signed(_issue(98, repository))
    response = _github(bridge_api, payload, signature)
    assert response.status_code == 401, response.text
    error = response.json()
    assert error["error"] == "unauthorized" and "X-Hub-Signature-256" in error["message"]
    assert set(error) >= {"error", "message"}
    assert _jobs(running_stack.api, running_stack, product) == []


@pytest.mark.parametrize(
    "signature",
    [
        ("sha256=" + "é" * 64).encode("utf-8"),  # non-ASCII, as UTF-8
        ("sha256=" + "é" * 64).encode("latin-1"),  # non-ASCII, as Latin-1
        "sha1=" + "0" * 40,
        "sha256=" + "0" * 10,
    ],
    ids=["utf-8", "latin-1", "sha1", "short"],
)
def test_tracker_http_github_malformed_signature_is_400_never_500(
    running_stack: RunningStack,
    bridge_api: str,
    product: str,
    repository: str,
    signature: str | bytes,
) -> None:
    assert _bind(running_stack, product, repository).status_code == 201
    response = _github(bridge_api, _issue(1, repository), signature)
    # The host hands non-ASCII header bytes to the app as they are: the app refuses them.
    assert response.status_code == 400, response.text
    problem = response.json()["details"]["problems"][0]
    assert problem == {
        "path": "X-Hub-Signature-256",
        "code": "malformed_header",
        "message": "expected sha256= and 64 hexadecimal digits",
    }
    assert _jobs(running_stack.api, running_stack, product) == []


def test_tracker_http_github_unbound_repository_creates_nothing(
    running_stack: RunningStack, azure_backend: Stores, product: str, repository: str
) -> None:
    payload = _issue(5, repository)
    response = _github(running_stack.api, payload, _signed(payload), product=product)
    assert response.status_code == 401 and response.json()["error"] == "unauthorized"
    assert product not in Coordinator(azure_backend).products()  # no product was made
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
