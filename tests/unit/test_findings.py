"""The security audit's findings, one test each, over HTTP on the in-memory twin: each
reproduces the finding as it was found and asserts it is closed (and that nothing changed
where the request is refused). The findings whose fix lives in one area are tested there
too; this file is the list."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from fleet.context import AppContext
from fleet.coordinator import Coordinator
from fleet.coordinator.clock import ManualClock
from fleet.coordinator.tokens import Tokens
from fleet.domain.manifest import Manifest
from fleet.domain.scheduler import FactoryView
from fleet.errors import Unauthorized
from fleet.http import fleet_ops, lease
from fleet.http.parsing import FactorySelf
from fleet.store.ports import Stores
from tests.support.handlers import OPERATOR, call

P = "prod"


def enroll(tokens: Tokens, name: str, seats: int = 1) -> str:
    issued = tokens.create_enrollment_token(P, "operator:test")
    return tokens.enroll(issued.token, name, FactorySelf(capabilities=(), seats=seats)).token


def claim(context: AppContext, token: str, seats: int = 1) -> tuple[int, object]:
    status, body, _ = call(
        context, fleet_ops.claim, "POST", "/api/fleet/claim", token, {"seats": seats}
    )
    return status, body


def test_spend_non_finite_numbers_are_not_json(
    app_context: AppContext, tokens: Tokens, coord: Coordinator
) -> None:
    factory = enroll(tokens, "f1")
    job, _ = coord.submit(P, Manifest(title="t", body="b", budgetUsd=1.0), "operator:o")
    assert claim(app_context, factory)[0] == 200
    before = coord.get_job(P, job.id)
    for number in (b"Infinity", b"-Infinity", b"NaN", b"1e400"):
        status, body, _ = call(
            app_context,
            lease.report_job,
            "PATCH",
            f"/api/fleet/jobs/{job.id}",
            factory,
            b'{"leaseEpoch": 1, "progress": {"costUsd": ' + number + b"}}",
            id=job.id,
        )
        assert (status, body["error"]) == (400, "validation_failed"), number
        assert body["details"]["problems"][0]["code"] == "invalid_json"
    assert coord.get_job(P, job.id) == before


def test_spend_a_cost_no_attempt_reaches_is_refused_and_changes_nothing(
    app_context: AppContext, tokens: Tokens, coord: Coordinator
) -> None:
    factory = enroll(tokens, "f1")
    coord.budgets.put(P, 100.0)
    job, _ = coord.submit(P, Manifest(title="t", body="b"), "operator:o")
    assert claim(app_context, factory)[0] == 200
    before = coord.get_job(P, job.id)
    status, body, _ = call(
        app_context,
        lease.report_job,
        "PATCH",
        f"/api/fleet/jobs/{job.id}",
        factory,
        {"leaseEpoch": 1, "stage": "shipped", "result": {"costUsd": 1e300}},
        id=job.id,
    )
    assert status == 400 and body["details"]["problems"][0]["path"] == "result.costUsd"
    assert coord.get_job(P, job.id) == before
    assert coord.budgets.get(P).spentUsd == 0.0  # type: ignore[union-attr]


def test_spend_a_cost_over_the_cap_is_booked_at_the_cap(
    app_context: AppContext, tokens: Tokens, coord: Coordinator
) -> None:
    factory = enroll(tokens, "f1")
    coord.budgets.put(P, 100.0)
    job, _ = coord.submit(P, Manifest(title="t", body="b", budgetUsd=1.0), "operator:o")
    assert claim(app_context, factory)[0] == 200
    status, body, _ = call(
        app_context,
        lease.report_job,
        "PATCH",
        f"/api/fleet/jobs/{job.id}",
        factory,
        {"leaseEpoch": 1, "stage": "shipped", "result": {"costUsd": 99_000}},
        id=job.id,
    )
    assert (status, body["error"]) == (409, "budget_exceeded")
    # Five times its estimate at most: the product's spend is not the factory's to set.
    assert coord.budgets.get(P).spentUsd == pytest.approx(5.0)  # type: ignore[union-attr]


def test_seats_a_one_seat_factory_never_holds_two_leases(
    app_context: AppContext, tokens: Tokens, coord: Coordinator
) -> None:
    factory = enroll(tokens, "f1", seats=1)
    for n in range(2):
        coord.submit(P, Manifest(title=f"t{n}", body="b"), "operator:o")
    assert claim(app_context, factory, seats=4)[0] == 200
    # It says it has four seats now; it enrolled with one, which holds a live lease.
    assert claim(app_context, factory, seats=4)[0] == 204
    other = enroll(tokens, "f2", seats=1)
    assert claim(app_context, other)[0] == 200  # the job was there for someone else


def test_seats_an_expired_lease_frees_its_seat(
    app_context: AppContext, tokens: Tokens, coord: Coordinator, clock: ManualClock
) -> None:
    factory = enroll(tokens, "f1", seats=1)
    for n in range(2):
        coord.submit(P, Manifest(title=f"t{n}", body="b", leaseSeconds=60), "operator:o")
    assert claim(app_context, factory)[0] == 200
    clock.advance(61)  # its lease expired; the reaper has not run yet
    assert claim(app_context, factory)[0] == 200


def test_lease_an_expired_lease_cannot_be_renewed_before_the_reaper_runs(
    app_context: AppContext, tokens: Tokens, coord: Coordinator, clock: ManualClock
) -> None:
    factory = enroll(tokens, "f1")
    job, _ = coord.submit(P, Manifest(title="t", body="b", leaseSeconds=60), "operator:o")
    assert claim(app_context, factory)[0] == 200
    clock.advance(61)
    before = coord.get_job(P, job.id)
    status, body, _ = call(
        app_context,
        lease.renew_lease,
        "POST",
        f"/api/fleet/jobs/{job.id}/lease/renew",
        factory,
        {"leaseEpoch": 1},
        id=job.id,
    )
    assert (status, body["error"]) == (409, "fenced") and "expired" in body["message"]
    assert coord.get_job(P, job.id) == before


def test_seats_an_operator_caps_them_at_enrollment_whatever_the_factory_says(
    app_context: AppContext, tokens: Tokens, coord: Coordinator
) -> None:
    issued = tokens.create_enrollment_token(P, "operator:test", max_seats=1)
    assert issued.maxSeats == 1
    factory = tokens.enroll(issued.token, "f1", FactorySelf(capabilities=(), seats=4)).token
    for n in range(3):
        coord.submit(P, Manifest(title=f"t{n}", body="b"), "operator:o")
    assert claim(app_context, factory, seats=4)[0] == 200
    assert claim(app_context, factory, seats=4)[0] == 204
    coord.register_factory(P, FactoryView(id="f1", capabilities=frozenset(), seats=8), None)
    assert claim(app_context, factory, seats=8)[0] == 204  # re-registering does not lift it
    (listed,) = [t for t in tokens.list_enrollment_tokens(P) if t["id"] == issued.id]
    assert listed["maxSeats"] == 1


def test_enrollment_tokens_expire_by_default(tokens: Tokens, clock: ManualClock) -> None:
    issued = tokens.create_enrollment_token(P, "operator:test")
    assert issued.expiresAt == clock.now() + timedelta(days=7)
    clock.advance(7 * 24 * 3600)
    with pytest.raises(Unauthorized):
        tokens.enroll(issued.token, "late", FactorySelf(capabilities=()))


def test_secrets_the_alert_webhook_status_shows_the_outcome_never_the_url(
    app_context: AppContext, tokens: Tokens, coord: Coordinator
) -> None:
    from dataclasses import replace

    from fleet.coordinator.metrics import Monitor
    from fleet.coordinator.webhooks import Endpoint

    url = "https://hooks.example/alerts?sig=s3cret-in-the-url"

    def refused(target: str, body: bytes, headers: dict[str, str]) -> int:
        raise ConnectionError(f"HTTPSConnectionPool: max retries exceeded with url: {target}")

    context = replace(app_context, monitor=Monitor(coord, Endpoint(url, "k"), refused))
    coord.submit(P, Manifest(title="t", body="b"), "operator:o")  # no factory: an alert
    context.monitor.run(P)
    status, body, _ = call(context, "alerts", "GET", "/api/fleet/alerts", OPERATOR, product=P)
    assert status == 200 and body["webhook"]["lastError"] == "ConnectionError"
    assert "s3cret" not in json.dumps(body) and "hooks.example" not in json.dumps(body)
    factory = enroll(tokens, "f1")
    status, body, _ = call(context, "alerts", "GET", "/api/fleet/alerts", factory)
    assert status == 200 and body["webhook"] is None  # operators only


def test_secrets_an_unexpected_store_error_says_nothing_internal(
    app_context: AppContext, tokens: Tokens, coord: Coordinator, stores: Stores
) -> None:
    from fleet.errors import StoreError

    factory = enroll(tokens, "f1")
    coord.submit(P, Manifest(title="t", body="b"), "operator:o")

    def broken(*args: object, **kwargs: object) -> object:
        raise StoreError("store error 418 for document x: AccountKey=c2VjcmV0 in a message")

    original = stores.documents.query
    stores.documents.query = broken  # type: ignore[method-assign]
    try:
        status, body = claim(app_context, factory)
    finally:
        stores.documents.query = original  # type: ignore[method-assign]
    assert status == 500 and body == {"error": "internal", "message": "internal error"}


def test_secrets_an_unresolved_key_vault_reference_is_refused() -> None:
    from fleet.errors import SettingsError
    from fleet.settings import Settings

    reference = "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/tracker/)"
    for name in ("TRACKER_WEBHOOK_SECRET", "ALERT_WEBHOOK_SECRET", "ALERT_WEBHOOK_URL"):
        with pytest.raises(SettingsError) as refused:
            Settings.from_env({"FLEET_STORE": "memory", name: reference})
        assert name in str(refused.value) and "kv.vault" not in str(refused.value)
