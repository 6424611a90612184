"""The security audit's findings, one test each, over HTTP on the in-memory twin: each
reproduces the finding as it was found and asserts it is closed (and that nothing changed
where the request is refused). The findings whose fix lives in one area are tested there
too; this file is the list."""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta

import pytest

from fleet.context import AppContext
from fleet.coordinator import Coordinator
from fleet.coordinator.clock import ManualClock
from fleet.coordinator.identity import Role
from fleet.coordinator.service import SYSTEM_PARTITION
from fleet.coordinator.token_store import TokenStore, VerifiedCache
from fleet.coordinator.tokens import Tokens
from fleet.domain.manifest import Manifest
from fleet.domain.scheduler import FactoryView
from fleet.domain.stages import Stage
from fleet.errors import StoreUnavailable, Unauthorized
from fleet.http import factories, fleet_ops, jobs, lease, work
from fleet.http import tokens as tokens_http
from fleet.http.parsing import FactorySelf
from fleet.store.memory import MemoryTableStore
from fleet.store.ports import Stores
from fleet.store.queries import DOCS_OF_TYPE, TOKENS_OF_FACTORY
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
    for name in ("TRACKER_ECHO_SECRET", "ALERT_WEBHOOK_SECRET", "ALERT_WEBHOOK_URL"):
        with pytest.raises(SettingsError) as refused:
            Settings.from_env({"FLEET_STORE": "memory", name: reference})
        assert name in str(refused.value) and "kv.vault" not in str(refused.value)


# --- GitHub webhooks bound to their product ------------------------------------------
# Found with the one process-wide TRACKER_WEBHOOK_SECRET: a delivery signed with it landed
# in whatever product ``?product=`` named (creating it), whoever wrote the issue, and a
# non-ASCII signature header was a 500. The contexts below still carry that setting, as a
# deployment did: it no longer authenticates anything.

GITHUB_SECRET = "the-acme-app-webhook-secret"


def github_context(app_context: AppContext) -> AppContext:
    import dataclasses

    from fleet.settings import Settings

    settings = Settings.from_env({"FLEET_STORE": "memory", "TRACKER_WEBHOOK_SECRET": GITHUB_SECRET})
    return dataclasses.replace(app_context, settings=settings)


def github_delivery(
    context: AppContext,
    payload: dict[str, object],
    product: str,
    signature: str | None = None,
    delivery: str = "72d3162e-cc78-11e3-81ab-4c9367dc0958",
) -> tuple[int, dict[str, object]]:
    import hashlib
    import hmac

    raw = json.dumps(payload).encode()
    digest = hmac.new(GITHUB_SECRET.encode(), raw, hashlib.sha256).hexdigest()
    headers = {
        "X-GitHub-Event": "issues",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": signature or f"sha256={digest}",
    }
    status, body, _ = call(
        context, "tracker_ingest", "POST", body=raw, params={"product": product}, headers=headers
    )
    return status, body


def github_issue(repository: str = "acme/app", association: str = "MEMBER") -> dict[str, object]:
    return {
        "action": "opened",
        "repository": {"full_name": repository},
        "issue": {"number": 7, "title": "Bug", "body": "b", "author_association": association},
    }


def bind_github(context: AppContext, product: str, repository: str = "acme/app") -> None:
    body = {"repository": repository, "secret": GITHUB_SECRET}
    status, bound, _ = call(
        context, "put_github_binding", "PUT", token=OPERATOR, product=product, body=body
    )
    assert status == 201, bound


def test_github_a_delivery_replayed_into_another_product_lands_only_in_its_own(
    app_context: AppContext, coord: Coordinator
) -> None:
    context = github_context(app_context)
    bind_github(context, "product-a")
    status, made = github_delivery(context, github_issue(), product="product-b")
    assert status == 201 and made["job"]["productId"] == "product-a"  # type: ignore[index]
    assert len(coord.list_jobs("product-a")) == 1
    assert coord.list_jobs("product-b") == [] and "product-b" not in coord.products()


def test_github_no_delivery_creates_a_product(app_context: AppContext, coord: Coordinator) -> None:
    context = github_context(app_context)
    status, body = github_delivery(context, github_issue("acme/unbound"), product="new-product")
    assert status == 401 and body["error"] == "unauthorized"
    assert coord.products() == [] and coord.list_jobs("new-product") == []


def test_github_a_strangers_issue_creates_nothing(
    app_context: AppContext, coord: Coordinator
) -> None:
    context = github_context(app_context)
    bind_github(context, P)
    status, body = github_delivery(context, github_issue(association="NONE"), product=P)
    assert status == 202 and body["reason"] == "author_association"
    assert coord.list_jobs(P) == []


def test_github_a_non_ascii_signature_is_400_not_500(
    app_context: AppContext, coord: Coordinator
) -> None:
    context = github_context(app_context)
    for signature in ("sha256=" + "é" * 64, "sha256=" + "0" * 63 + "ü"):
        status, body = github_delivery(context, github_issue(), product=P, signature=signature)
        assert status in (400, 401), body
    assert coord.products() == []


# --- tokens that are gone stay gone ----------------------------------------------------


def _gate(context: AppContext, token: str) -> int:
    """The idle gate poll: the one endpoint that may trust this instance's cache."""
    return call(context, fleet_ops.queue_state, "GET", "/api/fleet/queue-state", token).status


def _rotate(context: AppContext, token: str, factory: str = "f1") -> tuple[int, object]:
    status, body, _ = call(
        context,
        tokens_http.rotate_factory_token,
        "POST",
        f"/api/fleet/factories/{factory}/token/rotate",
        token,
        id=factory,
    )
    return status, body


def _tokens_of(stores: Stores, factory: str) -> list[dict[str, object]]:
    rows = stores.documents.query(
        TOKENS_OF_FACTORY, SYSTEM_PARTITION, {"product": P, "factoryId": factory}
    )
    return list(rows)


def test_gone_a_deregistered_factorys_token_is_refused_even_when_deregistering_fails_midway(
    app_context: AppContext, tokens: Tokens, coord: Coordinator, stores: Stores
) -> None:
    token = enroll(tokens, "f1")
    assert _gate(app_context, token) == 200  # verified, so in this instance's gate cache
    assert isinstance(stores.tables, MemoryTableStore)
    stores.tables.inject("table_write", StoreUnavailable("throttled"))  # its heartbeat's delete
    status, _, _ = call(
        app_context,
        factories.deregister_factory,
        "DELETE",
        "/api/fleet/factories/f1",
        OPERATOR,
        product=P,
        id="f1",
    )
    assert status == 503
    (factory,) = coord.factories(P)
    assert factory.deregistered  # marked, though the call failed after it...
    assert _gate(app_context, token) == 401  # ...and its token is refused, on the gate too
    assert claim(app_context, token)[0] == 401


def test_gone_a_pruned_factorys_token_is_refused_even_by_the_gate_cache(
    app_context: AppContext, tokens: Tokens, clock: ManualClock
) -> None:
    token = enroll(tokens, "f1")
    clock.advance(7 * 24 * 3600 - 10)
    assert _gate(app_context, token) == 200  # cached for 30 s
    clock.advance(10)  # silent for the prune window (HEALER_PRUNE_AFTER_SECONDS, 7 days)
    assert app_context.health.heal(P).pruned == ["f1"]
    assert _gate(app_context, token) == 401  # within the cache's 30 s: refused anyway
    assert claim(app_context, token)[0] == 401


def test_gone_a_token_in_its_grace_cannot_rotate_again(
    app_context: AppContext, tokens: Tokens, stores: Stores
) -> None:
    old = enroll(tokens, "f1")
    status, rotation = _rotate(app_context, old)
    assert status == 200
    before = _tokens_of(stores, "f1")
    status, body = _rotate(app_context, old)  # a leaked old token cannot mint fresh ones
    assert (status, body["error"]) == (409, "token_in_grace")  # type: ignore[index]
    assert _tokens_of(stores, "f1") == before
    assert _rotate(app_context, rotation["token"])[0] == 200  # type: ignore[index]


def test_gone_a_factorys_rotation_retires_only_the_token_that_called_it(
    app_context: AppContext, tokens: Tokens, stores: Stores, clock: ManualClock
) -> None:
    mine = enroll(tokens, "f1")
    # A second live token of the factory (two racing rotations could leave two).
    other, _ = TokenStore(stores.documents, VerifiedCache(1), secrets.token_urlsafe).issue(
        "factory", P, "test", clock.now(), factoryId="f1"
    )
    status, rotation = _rotate(app_context, mine)
    assert status == 200
    clock.advance(300)  # the grace period (FLEET_TOKEN_GRACE_SECONDS) is over
    assert claim(app_context, mine)[0] == 401
    assert claim(app_context, other)[0] == 204  # not the caller: not retired
    assert claim(app_context, rotation["token"])[0] == 204  # type: ignore[index]


# --- review kind is not self-declared --------------------------------------------------


def test_review_kind_a_re_registered_factory_still_votes_as_its_enrolled_kind(
    app_context: AppContext, tokens: Tokens, coord: Coordinator
) -> None:
    claude = FactorySelf(capabilities=("engine:claude",), seats=1)
    author, twin = (
        tokens.enroll(tokens.create_enrollment_token(P, "operator:test").token, name, claude).token
        for name in ("author", "twin")
    )
    review = {"approvals": 1, "distinctKind": True}
    job, _ = coord.submit(P, Manifest(title="t", body="b", review=review), "operator:o")
    assert claim(app_context, author)[0] == 200
    for stage in ("building", "shipped"):
        status, _, _ = call(
            app_context,
            lease.report_job,
            "PATCH",
            f"/api/fleet/jobs/{job.id}",
            author,
            {"leaseEpoch": 1, "stage": stage},
            id=job.id,
        )
        assert status == 200
    in_review = coord.get_job(P, job.id)
    assert in_review.reviewState is not None and in_review.reviewState.authorKind == "claude"
    # The twin says it is another engine now...
    status, _, _ = call(
        app_context,
        fleet_ops.register_factory,
        "POST",
        "/api/fleet/factories/register",
        twin,
        {"capabilities": ["engine:codex"], "seats": 1},
    )
    assert status == 200
    before = coord.get_job(P, job.id)
    # ...but it enrolled as claude, and that is what it reviews as.
    status, body, _ = call(
        app_context,
        work.review_job,
        "POST",
        f"/api/fleet/jobs/{job.id}/review",
        twin,
        {"verdict": "approve"},
        id=job.id,
    )
    assert (status, body["error"]) == (403, "same_kind")
    assert coord.get_job(P, job.id) == before


# --- one factory cannot exhaust a product; least exposure -----------------------------


def _held(app_context: AppContext, tokens: Tokens, coord: Coordinator) -> tuple[str, str]:
    """A job held at epoch 1 by a new factory ``f1``: the job's id, the factory's token."""
    factory = enroll(tokens, "f1")
    job, _ = coord.submit(P, Manifest(title="t", body="b"), "operator:o")
    assert claim(app_context, factory)[0] == 200
    return job.id, factory


def test_quota_8000_agent_events_from_one_attempt_stop_at_the_5000th(
    app_context: AppContext, tokens: Tokens, coord: Coordinator, stores: Stores
) -> None:
    job_id, factory = _held(app_context, tokens, coord)
    statuses = []
    for first in range(0, 8000, 100):
        events = [
            {"seq": s, "type": "tool.call", "payload": {"n": s}} for s in range(first, first + 100)
        ]
        status, body, _ = call(
            app_context,
            lease.post_agent_events,
            "POST",
            f"/api/fleet/jobs/{job_id}/events",
            factory,
            {"leaseEpoch": 1, "events": events},
            id=job_id,
        )
        statuses.append(status)
    assert statuses == [201] * 50 + [413] * 30  # the batch holding the 5,001st is refused
    assert (body["error"], body["details"]["quota"]) == ("quota_exceeded", "events")
    stored = stores.documents.query(DOCS_OF_TYPE, P, {"type": "agent_event"})
    assert len(stored) == 5000 and max(int(r["seq"]) for r in stored) == 4999


def test_lists_a_200_kib_checkpoint_stays_out_of_the_job_list(
    app_context: AppContext, tokens: Tokens, coord: Coordinator
) -> None:
    job_id, factory = _held(app_context, tokens, coord)

    def report(body: dict[str, object]) -> tuple[int, dict[str, object]]:
        status, reply, _ = call(
            app_context,
            lease.report_job,
            "PATCH",
            f"/api/fleet/jobs/{job_id}",
            factory,
            {"leaseEpoch": 1, **body},
            id=job_id,
        )
        return status, reply

    checkpoint = {"notes": "x" * 200 * 1024}
    assert report({"checkpoint": checkpoint, "progress": {"step": 1}})[0] == 200
    status, page, response = call(
        app_context, jobs.list_jobs, "GET", "/api/fleet/jobs", OPERATOR, product=P
    )
    (listed,) = page["jobs"]
    assert status == 200 and not {"checkpoint", "progress", "result"} & set(listed)
    assert len(response.get_body()) < 16 * 1024
    assert coord.get_job(P, job_id).checkpoint == checkpoint  # the job itself keeps it
    before = coord.get_job(P, job_id)
    status, reply = report({"checkpoint": {"notes": "x" * 300 * 1024}})
    (problem,) = reply["details"]["problems"]  # type: ignore[index]
    assert (status, problem["path"], problem["code"]) == (400, "checkpoint", "too_large")
    assert coord.get_job(P, job_id) == before


def test_dag_a_factory_does_not_see_the_jobs_it_may_not_read(
    app_context: AppContext, tokens: Tokens, coord: Coordinator
) -> None:
    other = enroll(tokens, "f2", seats=2)
    done, _ = coord.submit(P, Manifest(title="acquire rival", body="b"), "operator:o")
    busy, _ = coord.submit(P, Manifest(title="layoffs plan", body="b"), "operator:o")
    for _ in range(2):
        assert claim(app_context, other, seats=2)[0] == 200
    for stage in (Stage.BUILDING, Stage.SHIPPED):
        coord.report(P, done.id, "f2", 1, stage=stage)
    deps = {"mode": "any", "jobs": [done.id, busy.id]}
    job, _ = coord.submit(P, Manifest(title="t", body="b", deps=deps), "operator:o")
    factory = enroll(tokens, "f1")
    assert claim(app_context, factory)[0] == 200  # the job: one of its dependencies shipped
    status, tree, _ = call(
        app_context, work.job_dag, "GET", f"/api/fleet/jobs/{job.id}/dag", factory, id=job.id
    )
    assert status == 200 and tree["title"] == "t" and tree["holder"] == "f1"
    assert tree["deps"] == [
        {"id": done.id, "stage": "shipped", "redacted": True, "deps": []},
        {"id": busy.id, "stage": "assigned", "redacted": True, "deps": []},
    ]
    status, tree, _ = call(
        app_context,
        work.job_dag,
        "GET",
        f"/api/fleet/jobs/{job.id}/dag",
        OPERATOR,
        product=P,
        id=job.id,
    )
    assert [(d["title"], d["holder"]) for d in tree["deps"]] == [
        ("acquire rival", None),
        ("layoffs plan", "f2"),
    ]  # operators read every job


@pytest.mark.parametrize("kind", ["text/html", "image/svg+xml", "application/javascript"])
def test_artifacts_a_type_a_browser_would_run_is_refused(
    app_context: AppContext, tokens: Tokens, coord: Coordinator, kind: str
) -> None:
    job_id, factory = _held(app_context, tokens, coord)
    status, body, _ = call(
        app_context,
        work.issue_artifact_upload,
        "POST",
        f"/api/fleet/jobs/{job_id}/artifacts",
        factory,
        {"leaseEpoch": 1, "name": "report.html", "contentType": kind},
        id=job_id,
    )
    assert status == 400 and body["details"]["problems"][0]["path"] == "contentType"
    assert coord.artifacts.list(P, job_id) == ([], False)


def test_artifacts_a_read_url_forces_a_download(
    app_context: AppContext, tokens: Tokens, coord: Coordinator, stores: Stores
) -> None:
    job_id, factory = _held(app_context, tokens, coord)
    status, issued, _ = call(
        app_context,
        work.issue_artifact_upload,
        "POST",
        f"/api/fleet/jobs/{job_id}/artifacts",
        factory,
        {"leaseEpoch": 1, "name": "out/page.txt", "contentType": "text/plain"},
        id=job_id,
    )
    assert status == 201
    # Whatever type the holder then sets on its upload...
    stores.blobs.upload("artifacts", issued["blob"], b"<script>", content_type="text/html")
    status, link, _ = call(
        app_context,
        work.download_artifact,
        "GET",
        f"/api/fleet/jobs/{job_id}/artifacts/{issued['artifactId']}",
        OPERATOR,
        product=P,
        id=job_id,
        artifactId=issued["artifactId"],
    )
    # ...the URL answers as a download of an allowed type.
    assert status == 200 and "rscd=attachment%3B%20filename%3D%22page.txt%22" in link["url"]
    assert "rsct=text%2Fplain" in link["url"]


def test_quota_the_101st_artifact_of_an_attempt_is_refused(
    app_context: AppContext, tokens: Tokens, coord: Coordinator
) -> None:
    job_id, factory = _held(app_context, tokens, coord)

    def upload(name: str) -> tuple[int, dict[str, object]]:
        status, body, _ = call(
            app_context,
            work.issue_artifact_upload,
            "POST",
            f"/api/fleet/jobs/{job_id}/artifacts",
            factory,
            {"leaseEpoch": 1, "name": name},
            id=job_id,
        )
        return status, body

    assert {upload(f"a{n}.bin")[0] for n in range(100)} == {201}
    status, body = upload("a100.bin")
    assert (status, body["error"]) == (413, "quota_exceeded")
    assert upload("a7.bin")[0] == 201  # a name asked for again: a new URL, not a new artifact
    assert len(coord.artifacts.list(P, job_id)[0]) == 100


def _person(tokens: Tokens, name: str, role: Role, products: tuple[str, ...] = ("*",)) -> str:
    """A person's operator token, as an admin of every product creates it."""
    return tokens.create_operator_token(name, role, products, "operator:admin").token


def test_operators_a_viewer_reads_but_cannot_mutate(
    app_context: AppContext, tokens: Tokens, coord: Coordinator
) -> None:
    viewer = _person(tokens, "vera", "viewer")
    assert call(app_context, "list_jobs", "GET", "/api/fleet/jobs", viewer, None, P)[0] == 200
    for handler, url, body in (
        ("submit_job", "/api/fleet/jobs", {"title": "t", "body": "b"}),
        ("put_settings", "/api/fleet/settings", {"alerts": {"unroutableJobs": 1}}),
        ("create_enrollment_token", "/api/fleet/enrollment-tokens", {}),
    ):
        status, reply, _ = call(app_context, handler, "POST", url, viewer, body, P)
        assert (status, reply["details"]["role"]) == (403, "viewer"), handler
    assert coord.list_jobs(P) == [] and tokens.list_enrollment_tokens(P) == []


def test_operators_a_product_scoped_token_cannot_touch_another_product(
    app_context: AppContext, tokens: Tokens, coord: Coordinator
) -> None:
    token = _person(tokens, "alice", "admin", (P,))
    job = {"title": "t", "body": "b"}
    assert call(app_context, "submit_job", "POST", "/api/fleet/jobs", token, job, P)[0] == 201
    status, reply, _ = call(app_context, "submit_job", "POST", "/api/fleet/jobs", token, job, "b")
    assert (status, reply["error"]) == (403, "forbidden") and coord.list_jobs("b") == []
    status, _, _ = call(
        app_context, "put_budget", "PUT", "/api/fleet/budgets/b", token, {"ceilingUsd": 1}, P,
        productId="b",
    )  # fmt: skip
    assert status == 403 and coord.budgets.get("b") is None


def test_operators_the_audit_trail_names_the_operator(
    app_context: AppContext, tokens: Tokens, coord: Coordinator
) -> None:
    token = _person(tokens, "alice", "operator", (P,))
    _, submitted, _ = call(
        app_context, "submit_job", "POST", "/api/fleet/jobs", token, {"title": "t", "body": "b"}, P
    )
    job_id = submitted["job"]["id"]
    url = f"/api/fleet/jobs/{job_id}/cancel"
    assert call(app_context, "cancel_job", "POST", url, token, None, P, id=job_id)[0] == 200
    actors = [e.actor for e in coord.job_events(P, job_id)]
    assert actors == ["operator:alice", "operator:alice"]


def test_operators_only_admins_of_every_product_create_operator_tokens(
    app_context: AppContext, tokens: Tokens
) -> None:
    person = {"name": "mallory", "role": "admin", "products": ["*"]}
    for token in (_person(tokens, "olga", "operator"), _person(tokens, "ann", "admin", (P,))):
        status, _, _ = call(
            app_context, "create_operator_token", "POST", "/api/fleet/operator-tokens", token,
            person, P,
        )  # fmt: skip
        assert status == 403
    assert "mallory" not in {t["name"] for t in tokens.list_operator_tokens()}
    status, _, _ = call(
        app_context, "create_operator_token", "POST", "/api/fleet/operator-tokens", OPERATOR, person
    )
    assert status == 201


def test_operators_a_principal_nobody_gave_a_role_may_only_read() -> None:
    from fleet.coordinator.identity import Principal
    from fleet.coordinator.operators import principal_of
    from fleet.coordinator.token_store import TokenDoc
    from fleet.errors import Forbidden

    unsaid = Principal(kind="operator", id="someone", product=P)
    assert unsaid.may("viewer") and not unsaid.may("operator")
    with pytest.raises(Forbidden):
        unsaid.check_role("operator")
    # A stored operator token listing no product touches none (never "every one").
    doc = TokenDoc(
        id="tok-x",
        productId="_system",
        kind="operator",
        hash="0" * 64,
        product="*",
        createdAt=clock_now(),
        createdBy="operator:admin",
        name="empty",
        role="admin",
        products=(),
    )
    assert not principal_of(doc, P).may_touch(P)


def clock_now() -> datetime:
    return datetime(2026, 1, 1, tzinfo=UTC)
