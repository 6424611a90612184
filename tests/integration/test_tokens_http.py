"""Tokens over HTTP on the real local stack: enrollment, rotation, revocation, scoping.

Where a path needs time to pass (expiry, the end of a grace period) or a store-call count,
an in-process ``Tokens``/``Coordinator`` over the same Cosmos emulator is used with an
injected clock: nothing sleeps.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from fleet.coordinator import Coordinator
from fleet.coordinator.clock import ManualClock
from fleet.coordinator.tokens import INVALID, MISSING, Tokens
from fleet.domain.models import parse_ts
from fleet.errors import Unauthorized
from fleet.store.ports import Stores
from tests.conftest import RunningStack, bearer

pytestmark = pytest.mark.integration


@pytest.fixture
def product() -> str:
    return f"p{uuid.uuid4().hex[:10]}"


def _enroll(api: str, enrollment: str, name: str, caps: list[str]) -> requests.Response:
    return requests.post(
        f"{api}/fleet/factories/enroll",
        json={"name": name, "capabilities": caps, "seats": 1, "version": "t"},
        headers=bearer(enrollment),
        timeout=30,
    )


def _submit(stack: RunningStack, product: str) -> dict[str, Any]:
    response = requests.post(
        f"{stack.api}/fleet/jobs",
        json={"title": "job", "capabilities": ["python"], "body": "do it"},
        headers=stack.operator(product),
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return response.json()["job"]  # type: ignore[no-any-return]


def _claim(api: str, token: str) -> requests.Response:
    return requests.post(
        f"{api}/fleet/claim", json={"capabilities": ["python"]}, headers=bearer(token), timeout=30
    )


def _refusal(response: requests.Response) -> tuple[int, str, str]:
    body = response.json()
    return response.status_code, body["error"], body["message"]


def test_tokens_http_enroll_once_and_a_second_use_is_401(
    running_stack: RunningStack, product: str
) -> None:
    api = running_stack.api
    issued = running_stack.enrollment_token(product)
    assert issued["token"].startswith("fle_") and issued["product"] == product
    first = _enroll(api, issued["token"], "f1", ["python"])
    assert first.status_code == 201, first.text
    assert first.json()["factoryId"] == "f1" and first.json()["token"].startswith("flf_")
    second = _enroll(api, issued["token"], "f2", ["python"])
    assert _refusal(second) == (401, "unauthorized", INVALID)
    factories = requests.get(
        f"{api}/fleet/factories", headers=running_stack.operator(product), timeout=30
    ).json()["factories"]
    assert [f["id"] for f in factories] == ["f1"]
    listed = requests.get(
        f"{api}/fleet/enrollment-tokens", headers=running_stack.operator(product), timeout=30
    ).json()["tokens"]
    assert [(t["id"], t["status"], t["usedBy"]) for t in listed] == [(issued["id"], "used", "f1")]


def test_tokens_http_concurrent_enrollments_with_one_token_exactly_one_wins(
    running_stack: RunningStack, product: str
) -> None:
    api = running_stack.api
    enrollment = running_stack.enrollment_token(product)["token"]
    racers = 6
    start = threading.Barrier(racers)
    statuses: dict[str, int] = {}
    lock = threading.Lock()

    def race(name: str) -> None:
        start.wait()
        response = _enroll(api, enrollment, name, ["python"])
        with lock:
            statuses[name] = response.status_code

    threads = [threading.Thread(target=race, args=(f"f{i}",)) for i in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses.values()) == [201] + [401] * (racers - 1), statuses
    (winner,) = [name for name, status in statuses.items() if status == 201]
    factories = requests.get(
        f"{api}/fleet/factories", headers=running_stack.operator(product), timeout=30
    ).json()["factories"]
    assert [f["id"] for f in factories] == [winner]


def test_tokens_http_expired_enrollment_token_is_401(
    running_stack: RunningStack, azure_backend: Stores, product: str
) -> None:
    # Issued an hour ago (an injected clock), valid for ten minutes: expired now.
    past = Tokens(
        Coordinator(azure_backend), clock=ManualClock(datetime.now(UTC) - timedelta(hours=1))
    )
    issued = past.create_enrollment_token(product, "operator:test", expires_in_seconds=600)
    response = _enroll(running_stack.api, issued.token, "f1", ["python"])
    assert _refusal(response) == (401, "unauthorized", INVALID)
    listed = requests.get(
        f"{running_stack.api}/fleet/enrollment-tokens",
        headers=running_stack.operator(product),
        timeout=30,
    ).json()["tokens"]
    assert [t["status"] for t in listed] == ["expired"]


def test_tokens_http_allowlist_violation_at_enroll_is_403(
    running_stack: RunningStack, product: str
) -> None:
    api = running_stack.api
    issued = running_stack.enrollment_token(product, capabilities=["python"], expiresInSeconds=60)
    refused = _enroll(api, issued["token"], "f1", ["python", "gpu"])
    assert refused.status_code == 403, refused.text
    assert refused.json()["details"]["disallowed"] == ["gpu"]
    assert "gpu" in refused.json()["message"]
    # The refusal did not use the token up; within the allowlist it enrolls.
    assert _enroll(api, issued["token"], "f1", ["python"]).status_code == 201


def test_tokens_http_enrolling_a_taken_name_is_409(
    running_stack: RunningStack, product: str
) -> None:
    running_stack.enroll(product, "f1")
    issued = running_stack.enrollment_token(product)
    response = _enroll(running_stack.api, issued["token"], "f1", ["python"])
    assert (response.status_code, response.json()["error"]) == (409, "factory_exists")


def test_tokens_http_revoked_mid_job_is_401_and_reap_requeues_it(
    running_stack: RunningStack, azure_backend: Stores, product: str
) -> None:
    api = running_stack.api
    operator = running_stack.operator(product)
    token = running_stack.enroll(product, "f1")
    job = _submit(running_stack, product)
    claim = _claim(api, token)
    assert claim.status_code == 200, claim.text
    epoch = claim.json()["lease"]["epoch"]
    url = f"{api}/fleet/jobs/{job['id']}"
    assert (
        requests.patch(
            url, json={"leaseEpoch": epoch, "stage": "building"}, headers=bearer(token), timeout=30
        ).status_code
        == 200
    )
    revoked = requests.post(f"{api}/fleet/factories/f1/token/revoke", headers=operator, timeout=30)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json() == {"factoryId": "f1", "revoked": True, "revokedTokens": 1}
    # The very next request is refused, whatever it is.
    for response in (
        requests.patch(url, json={"leaseEpoch": epoch}, headers=bearer(token), timeout=30),
        requests.post(
            f"{url}/lease/renew", json={"leaseEpoch": epoch}, headers=bearer(token), timeout=30
        ),
        _claim(api, token),
    ):
        assert _refusal(response) == (401, "unauthorized", INVALID)
    report = Coordinator(azure_backend).reap(product)
    assert report.requeued == [job["id"]]
    after = requests.get(url, headers=operator, timeout=30).json()
    assert (after["stage"], after["epoch"], after["holder"]) == ("queued", epoch + 1, None)
    assert after["events"][-1]["reason"].startswith("holder f1 was revoked")


def test_tokens_http_rotated_token_works_during_the_grace_then_is_refused(
    running_stack: RunningStack, azure_backend: Stores, product: str
) -> None:
    api = running_stack.api
    old = running_stack.enroll(product, "f1")
    rotated = requests.post(
        f"{api}/fleet/factories/f1/token/rotate", headers=bearer(old), timeout=30
    )
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["token"]
    assert new != old and new.startswith("flf_")
    for token in (old, new):  # within the grace both work
        state = requests.get(f"{api}/fleet/queue-state", headers=bearer(token), timeout=30)
        assert state.status_code == 200, state.text
        assert _claim(api, token).status_code == 204
    # After the grace (the coordinator's clock moved past it), the old one is refused.
    grace_end = parse_ts(rotated.json()["previousValidUntil"])
    later = Tokens(Coordinator(azure_backend), clock=ManualClock(grace_end))
    with pytest.raises(Unauthorized, match=INVALID):
        later.authenticate(old, None, want="factory")
    assert later.authenticate(new, None, want="factory").id == "f1"
    # An operator may rotate it too; another factory may not.
    other = running_stack.enroll(product, "f2")
    refused = requests.post(
        f"{api}/fleet/factories/f1/token/rotate", headers=bearer(other), timeout=30
    )
    assert refused.status_code == 403, refused.text
    by_operator = requests.post(
        f"{api}/fleet/factories/f1/token/rotate",
        headers=running_stack.operator(product),
        timeout=30,
    )
    assert by_operator.status_code == 200, by_operator.text


def test_tokens_http_cross_product_access_is_403(running_stack: RunningStack, product: str) -> None:
    api = running_stack.api
    token = running_stack.enroll(product, "f1")
    elsewhere = bearer(token, f"{product}-other")
    for response in (
        requests.get(f"{api}/fleet/queue-state", headers=elsewhere, timeout=30),
        requests.post(f"{api}/fleet/claim", json={}, headers=elsewhere, timeout=30),
        requests.get(f"{api}/fleet/jobs", headers=elsewhere, timeout=30),
    ):
        assert _refusal(response) == (403, "forbidden", "this token is for another product")
    # Its own product, named or not, is fine.
    own = requests.get(f"{api}/fleet/jobs", headers=bearer(token, product), timeout=30)
    assert own.status_code == 200, own.text


def test_tokens_http_a_factory_touching_a_job_it_does_not_hold_is_refused(
    running_stack: RunningStack, product: str
) -> None:
    api = running_stack.api
    holder = running_stack.enroll(product, "holder")
    intruder = running_stack.enroll(product, "intruder")
    job = _submit(running_stack, product)
    epoch = _claim(api, holder).json()["lease"]["epoch"]
    url = f"{api}/fleet/jobs/{job['id']}"
    patched = requests.patch(
        url, json={"leaseEpoch": epoch, "stage": "shipped"}, headers=bearer(intruder), timeout=30
    )
    assert (patched.status_code, patched.json()["error"]) == (409, "fenced")
    for path in ("", "/events", "/explain"):
        read = requests.get(f"{url}{path}", headers=bearer(intruder), timeout=30)
        assert (read.status_code, read.json()["error"]) == (403, "forbidden"), path
        assert requests.get(f"{url}{path}", headers=bearer(holder), timeout=30).status_code == 200
    state = requests.get(url, headers=running_stack.operator(product), timeout=30).json()
    assert (state["stage"], state["holder"]) == ("assigned", "holder")


def test_tokens_http_operator_only_endpoints_refuse_factory_tokens(
    running_stack: RunningStack, product: str
) -> None:
    api = running_stack.api
    token = running_stack.enroll(product, "f1")
    job = _submit(running_stack, product)
    for method, path in (
        ("POST", "/fleet/jobs"),
        ("POST", f"/fleet/jobs/{job['id']}/cancel"),
        ("POST", "/fleet/enrollment-tokens"),
        ("GET", "/fleet/enrollment-tokens"),
        ("POST", "/fleet/factories/f1/token/revoke"),
        ("PUT", "/fleet/profiles/dev"),
        ("GET", "/fleet/events"),
    ):
        response = requests.request(
            method, f"{api}{path}", json={"title": "x"}, headers=bearer(token), timeout=30
        )
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["message"].startswith("factory tokens cannot")
    factory_only = requests.post(
        f"{api}/fleet/claim", json={}, headers=running_stack.operator(product), timeout=30
    )
    assert factory_only.status_code == 403, factory_only.text


def test_tokens_http_missing_or_garbage_token_is_401(
    running_stack: RunningStack, product: str
) -> None:
    api = running_stack.api
    for headers, message in (
        ({"X-Fleet-Product": product}, MISSING),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, MISSING),
        (bearer("garbage"), INVALID),
        (bearer("flf_" + "x" * 43), INVALID),
        (bearer("flo_" + "x" * 43), INVALID),
    ):
        response = requests.get(f"{api}/fleet/jobs", headers=headers, timeout=30)
        assert _refusal(response) == (401, "unauthorized", message)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    # health and the API description stay anonymous.
    assert requests.get(f"{api}/health", timeout=30).status_code == 200
    assert requests.get(f"{api}/openapi.json", timeout=30).status_code == 200


def test_tokens_http_gate_poll_is_one_point_read_on_cosmos_when_cached(
    running_stack: RunningStack, azure_backend: Stores, product: str
) -> None:
    token = running_stack.enroll(product, "f1")
    coord = Coordinator(azure_backend)
    tokens = Tokens(coord)
    tokens.authenticate(token, None, want="any", cached=True)  # verified once: cached
    with azure_backend.counters.measure() as cost:
        principal = tokens.authenticate(token, None, want="any", cached=True)
        coord.queue_state(principal.product)
    assert cost == {"read": 1}
