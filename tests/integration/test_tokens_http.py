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
from fleet.coordinator.fleet_health import FleetHealth
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
    # The revocation took its job back at once: nothing left for the reaper.
    assert Coordinator(azure_backend).reap(product).requeued == []
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


def test_tokens_http_a_deregistered_factory_is_401_on_its_next_call_even_on_the_gate(
    running_stack: RunningStack, product: str
) -> None:
    api = running_stack.api
    token = running_stack.enroll(product, "f1")
    job = _submit(running_stack, product)
    gate = f"{api}/fleet/queue-state"
    assert requests.get(gate, headers=bearer(token), timeout=30).status_code == 200  # cached
    epoch = _claim(api, token).json()["lease"]["epoch"]
    gone = requests.delete(
        f"{api}/fleet/factories/f1", headers=running_stack.operator(product), timeout=30
    )
    assert gone.status_code == 200, gone.text
    url = f"{api}/fleet/jobs/{job['id']}"
    for response in (
        requests.get(gate, headers=bearer(token), timeout=30),  # within its cache: refused
        requests.patch(url, json={"leaseEpoch": epoch}, headers=bearer(token), timeout=30),
        requests.post(f"{api}/fleet/factories/f1/token/rotate", headers=bearer(token), timeout=30),
        _claim(api, token),
    ):
        assert _refusal(response) == (401, "unauthorized", INVALID)
    # A factory that deregisters itself is refused next too; it may enroll again.
    other = running_stack.enroll(product, "f2")
    assert requests.get(gate, headers=bearer(other), timeout=30).status_code == 200
    left = requests.delete(f"{api}/fleet/factories/f2", headers=bearer(other), timeout=30)
    assert left.status_code == 200, left.text
    assert _refusal(requests.get(gate, headers=bearer(other), timeout=30))[0] == 401
    again = running_stack.enroll(product, "f2")
    assert requests.get(gate, headers=bearer(again), timeout=30).status_code == 200


def test_tokens_http_a_factory_pruned_by_the_healer_is_refused(
    running_stack: RunningStack, azure_backend: Stores, product: str
) -> None:
    token = running_stack.enroll(product, "f1")
    assert _claim(running_stack.api, token).status_code == 204
    # A healer pass a week later (in process, over the same Cosmos and tables).
    later = ManualClock(datetime.now(UTC) + timedelta(days=7, minutes=1))
    coord = Coordinator(azure_backend, clock=later)
    health = FleetHealth(coord, tokens=Tokens(coord, clock=later))
    assert health.heal(product).pruned == ["f1"]
    # Every endpoint refuses it at once (the gate poll of an instance that verified it in the
    # last 30 s may still trust its cache that long: the healer ran elsewhere).
    assert _refusal(_claim(running_stack.api, token)) == (401, "unauthorized", INVALID)


def test_tokens_http_a_token_in_its_grace_cannot_rotate_again(
    running_stack: RunningStack, product: str
) -> None:
    api = running_stack.api
    old = running_stack.enroll(product, "f1")
    url = f"{api}/fleet/factories/f1/token/rotate"
    rotated = requests.post(url, headers=bearer(old), timeout=30)
    assert rotated.status_code == 200, rotated.text
    again = requests.post(url, headers=bearer(old), timeout=30)
    assert (again.status_code, again.json()["error"]) == (409, "token_in_grace")
    new = rotated.json()["token"]
    assert requests.post(url, headers=bearer(new), timeout=30).status_code == 200
    assert _claim(api, old).status_code == 204  # still within its grace for other calls


def test_tokens_http_an_enrollment_token_fixes_the_review_kind(
    running_stack: RunningStack, product: str
) -> None:
    issued = running_stack.enrollment_token(product, kind="claude")
    assert issued["kind"] == "claude"
    listed = requests.get(
        f"{running_stack.api}/fleet/enrollment-tokens",
        headers=running_stack.operator(product),
        timeout=30,
    ).json()["tokens"]
    assert [t["kind"] for t in listed] == ["claude"]
    bad = requests.post(
        f"{running_stack.api}/fleet/enrollment-tokens",
        json={"kind": "Not A Kind"},
        headers=running_stack.operator(product),
        timeout=30,
    )
    assert bad.status_code == 400 and bad.json()["details"]["problems"][0]["path"] == "kind"


# --- operators: named people with roles ---------------------------------------------------


def _person(stack: RunningStack, name: str, role: str, products: list[str]) -> dict[str, Any]:
    """An operator token for a person, created by the stack's bootstrap (admin) token."""
    response = requests.post(
        f"{stack.api}/fleet/operator-tokens",
        json={"name": name, "role": role, "products": products},
        headers=bearer(stack.operator_token),
        timeout=30,
    )
    assert response.status_code == 201, response.text
    assert response.headers["Cache-Control"] == "no-store"
    return response.json()  # type: ignore[no-any-return]


def test_tokens_http_operator_roles_products_and_the_audit_trail(
    running_stack: RunningStack, product: str
) -> None:
    api = running_stack.api
    other = f"{product}x"
    name = f"alice-{product}"
    viewer = _person(running_stack, f"vera-{product}", "viewer", [product])
    alice = _person(running_stack, name, "operator", [product])
    job = {"title": "job", "body": "do it"}

    # Who each one is.
    me = requests.get(f"{api}/fleet/whoami", headers=bearer(alice["token"]), timeout=30).json()
    assert me == {"kind": "operator", "name": name, "role": "operator", "products": [product]}

    # A viewer reads, and cannot mutate.
    seen = requests.get(f"{api}/fleet/jobs", headers=bearer(viewer["token"], product), timeout=30)
    assert seen.status_code == 200
    refused = requests.post(
        f"{api}/fleet/jobs", json=job, headers=bearer(viewer["token"], product), timeout=30
    )
    assert refused.status_code == 403, refused.text
    assert refused.json()["details"] == {"role": "viewer", "needs": "operator"}

    # A product-scoped token cannot touch another product (header or path).
    elsewhere = requests.post(
        f"{api}/fleet/jobs", json=job, headers=bearer(alice["token"], other), timeout=30
    )
    assert (elsewhere.status_code, elsewhere.json()["details"]) == (403, {"product": other})
    paused = requests.post(
        f"{api}/fleet/budgets/{other}/pause", headers=bearer(alice["token"], product), timeout=30
    )
    assert paused.status_code == 403, paused.text
    listed = requests.get(f"{api}/fleet/jobs", headers=running_stack.operator(other), timeout=30)
    assert listed.json()["jobs"] == []

    # An operator acts, but does not manage: settings and tokens are admins'.
    settings = requests.put(
        f"{api}/fleet/settings",
        json={"alerts": {"unroutableJobs": 1}},
        headers=bearer(alice["token"], product),
        timeout=30,
    )
    assert (settings.status_code, settings.json()["details"]["needs"]) == (403, "admin")

    # The audit trail names the operator: the job's events say operator:NAME.
    submitted = requests.post(
        f"{api}/fleet/jobs", json=job, headers=bearer(alice["token"], product), timeout=30
    )
    assert submitted.status_code == 201, submitted.text
    job_id = submitted.json()["job"]["id"]
    cancelled = requests.post(
        f"{api}/fleet/jobs/{job_id}/cancel",
        json={"reason": "not needed"},
        headers=bearer(alice["token"], product),
        timeout=30,
    )
    assert cancelled.status_code == 200, cancelled.text
    events = requests.get(
        f"{api}/fleet/jobs/{job_id}/events", headers=bearer(viewer["token"], product), timeout=30
    ).json()["events"]
    assert [(e["type"], e["actor"]) for e in events] == [
        ("submit", f"operator:{name}"),
        ("cancel", f"operator:{name}"),
    ]

    # Revoked: refused from the next request.
    revoked = requests.delete(
        f"{api}/fleet/operator-tokens/{alice['id']}",
        headers=bearer(running_stack.operator_token),
        timeout=30,
    )
    assert (revoked.status_code, revoked.json()["status"]) == (200, "revoked")
    gone = requests.get(f"{api}/fleet/jobs", headers=bearer(alice["token"], product), timeout=30)
    assert (gone.status_code, gone.json()["message"]) == (401, INVALID)


def test_tokens_http_operator_tokens_are_listed_without_secrets_to_admins_only(
    running_stack: RunningStack, product: str
) -> None:
    api = running_stack.api
    person = _person(running_stack, f"bob-{product}", "admin", [product])
    listed = requests.get(
        f"{api}/fleet/operator-tokens", headers=bearer(running_stack.operator_token), timeout=30
    )
    assert listed.status_code == 200
    mine = [t for t in listed.json()["tokens"] if t["id"] == person["id"]]
    assert [(t["name"], t["role"], t["products"]) for t in mine] == [
        (f"bob-{product}", "admin", [product])
    ]
    assert person["token"] not in listed.text
    # An admin of one product manages that product, not people.
    scoped = requests.get(
        f"{api}/fleet/operator-tokens", headers=bearer(person["token"], product), timeout=30
    )
    assert scoped.status_code == 403
    enrollment = requests.post(
        f"{api}/fleet/enrollment-tokens", json={}, headers=bearer(person["token"], product),
        timeout=30,
    )  # fmt: skip
    assert enrollment.status_code == 201, enrollment.text
