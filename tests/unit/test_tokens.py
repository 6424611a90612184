"""Tokens on the in-memory twin with an injected clock: enrollment, rotation, revocation,
authentication, operator tokens (people with roles); then the same rules through the HTTP
handlers (and the gate poll's cost)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from fleet.context import AppContext
from fleet.coordinator import Coordinator
from fleet.coordinator.clock import ManualClock
from fleet.coordinator.identity import ROLES, Principal, Role
from fleet.coordinator.service import SYSTEM_PARTITION
from fleet.coordinator.tokens import (
    INVALID,
    MISSING,
    EnrollmentTokenNotFound,
    FactoryExists,
    FactoryNotFound,
    FactoryRevoked,
    TokenConfig,
    Tokens,
    hash_token,
)
from fleet.domain.manifest import Manifest
from fleet.domain.scheduler import FactoryView
from fleet.domain.stages import Stage
from fleet.errors import Fenced, Forbidden, NotFound, Unauthorized, ValidationFailed
from fleet.http import actions, budgets, factories, fleet_ops, jobs, lease, operators
from fleet.http import tokens as tokens_http
from fleet.http.operation import Operation, operation_of
from fleet.http.parsing import FactorySelf
from fleet.store.memory import MemoryDocumentStore
from fleet.store.ports import Set, Stores
from tests.support.handlers import OPERATOR, call, documented, functions
from tests.support.races import race_enrollments

P = "prod"
OPERATOR_ACTOR = "operator:test"


def me(caps: tuple[str, ...] = ("python",), **fields: Any) -> FactorySelf:
    return FactorySelf(capabilities=caps, **fields)


def enroll(tokens: Tokens, name: str, caps: tuple[str, ...] = ("python",), **kw: Any) -> str:
    issued = tokens.create_enrollment_token(kw.pop("product", P), OPERATOR_ACTOR, **kw)
    return tokens.enroll(issued.token, name, me(caps)).token


def factory_of(tokens: Tokens, token: str, product: str | None = None) -> Principal:
    return tokens.authenticate(token, product, want="factory")


def refused(call: Callable[[], object]) -> str:
    """The message of the 401 the call raises."""
    with pytest.raises(Unauthorized) as caught:
        call()
    return caught.value.message


def docs(stores: Stores) -> MemoryDocumentStore:
    assert isinstance(stores.documents, MemoryDocumentStore)
    return stores.documents


# --- issuing and storing -------------------------------------------------------------


def test_tokens_are_prefixed_high_entropy_and_stored_only_as_sha256(
    tokens: Tokens, stores: Stores
) -> None:
    issued = tokens.create_enrollment_token(P, OPERATOR_ACTOR)
    factory = tokens.enroll(issued.token, "f1", me()).token
    assert issued.token.startswith("fle_") and factory.startswith("flf_")
    assert len(issued.token) >= 4 + 43 and len(factory) >= 4 + 43
    stored = json.dumps(docs(stores).all_docs())
    assert issued.token not in stored and factory not in stored
    for token, kind in ((issued.token, "enrollment"), (factory, "factory")):
        doc = docs(stores).peek(SYSTEM_PARTITION, f"tok-{hash_token(token)}")
        assert doc is not None and doc["kind"] == kind and doc["hash"] == hash_token(token)
        assert doc["product"] == P and doc["type"] == "token"
    assert issued.id == hash_token(issued.token)[:12]


def test_tokens_two_tokens_never_repeat(tokens: Tokens) -> None:
    issued = {tokens.create_enrollment_token(P, OPERATOR_ACTOR).token for _ in range(50)}
    assert len(issued) == 50


# --- enrollment ----------------------------------------------------------------------


def test_tokens_enrollment_token_works_once(tokens: Tokens, coord: Coordinator) -> None:
    issued = tokens.create_enrollment_token(P, OPERATOR_ACTOR)
    enrollment = tokens.enroll(issued.token, "f1", me(("python", "node"), seats=2))
    assert (enrollment.factory_id, enrollment.product) == ("f1", P)
    assert factory_of(tokens, enrollment.token) == Principal("factory", "f1", P)
    (factory,) = coord.factories(P)
    assert factory.id == "factory-f1" and factory.capabilities == ("node", "python")
    assert factory.seats == 2
    assert refused(lambda: tokens.enroll(issued.token, "f2", me())) == INVALID
    assert [f.id for f in coord.factories(P)] == ["factory-f1"]
    (listed,) = tokens.list_enrollment_tokens(P)
    assert listed["status"] == "used" and listed["usedBy"] == "f1"


def test_tokens_concurrent_enrollments_with_one_token_exactly_one_wins(
    tokens: Tokens, coord: Coordinator
) -> None:
    issued = tokens.create_enrollment_token(P, OPERATOR_ACTOR)
    racers = 8
    won, lost = race_enrollments(tokens, issued.token, racers, me())
    assert len(won) == 1 and lost == [INVALID] * (racers - 1)
    assert [f.id for f in coord.factories(P)] == [f"factory-{won[0]}"]


def test_tokens_expired_enrollment_token_is_refused(tokens: Tokens, clock: ManualClock) -> None:
    issued = tokens.create_enrollment_token(P, OPERATOR_ACTOR, expires_in_seconds=600)
    assert issued.expiresAt is not None
    clock.advance(600)
    assert refused(lambda: tokens.enroll(issued.token, "f1", me())) == INVALID
    (listed,) = tokens.list_enrollment_tokens(P)
    assert listed["status"] == "expired"


def test_tokens_enrollment_token_before_its_expiry_works(
    tokens: Tokens, clock: ManualClock
) -> None:
    issued = tokens.create_enrollment_token(P, OPERATOR_ACTOR, expires_in_seconds=600)
    clock.advance(599)
    assert tokens.enroll(issued.token, "f1", me()).factory_id == "f1"


def test_tokens_revoked_enrollment_token_is_refused(tokens: Tokens) -> None:
    issued = tokens.create_enrollment_token(P, OPERATOR_ACTOR)
    view = tokens.revoke_enrollment_token(P, issued.id, OPERATOR_ACTOR)
    assert view["status"] == "revoked" and view["id"] == issued.id
    assert refused(lambda: tokens.enroll(issued.token, "f1", me())) == INVALID


def test_tokens_revoking_an_unknown_enrollment_token_is_not_found(tokens: Tokens) -> None:
    issued = tokens.create_enrollment_token(P, OPERATOR_ACTOR)
    with pytest.raises(EnrollmentTokenNotFound):
        tokens.revoke_enrollment_token(P, "0" * 12, OPERATOR_ACTOR)
    with pytest.raises(EnrollmentTokenNotFound):
        tokens.revoke_enrollment_token("other", issued.id, OPERATOR_ACTOR)  # another product


def test_tokens_listing_shows_no_secret_and_no_full_hash(tokens: Tokens) -> None:
    issued = tokens.create_enrollment_token(P, OPERATOR_ACTOR, capabilities=["python"])
    tokens.create_enrollment_token("other", OPERATOR_ACTOR)
    (listed,) = tokens.list_enrollment_tokens(P)
    text = json.dumps(listed)
    assert issued.token not in text and hash_token(issued.token) not in text
    assert listed["id"] == issued.id and listed["status"] == "active"
    assert listed["capabilities"] == ["python"] and listed["createdBy"] == OPERATOR_ACTOR


def test_tokens_allowlist_violation_is_forbidden_and_does_not_use_the_token(
    tokens: Tokens,
) -> None:
    issued = tokens.create_enrollment_token(P, OPERATOR_ACTOR, capabilities=["python", "node"])
    with pytest.raises(Forbidden) as caught:
        tokens.enroll(issued.token, "f1", me(("python", "gpu", "docker")))
    assert "docker, gpu" in caught.value.message
    assert caught.value.details["disallowed"] == ["docker", "gpu"]
    enrollment = tokens.enroll(issued.token, "f1", me(("python",)))
    principal = factory_of(tokens, enrollment.token)
    assert principal.allowed_capabilities == frozenset({"python", "node"})
    principal.check_capabilities(["node"])
    with pytest.raises(Forbidden):
        principal.check_capabilities(["python", "gpu"])


def test_tokens_enrolling_a_taken_name_is_409_and_gives_the_token_back(tokens: Tokens) -> None:
    enroll(tokens, "f1")
    issued = tokens.create_enrollment_token(P, OPERATOR_ACTOR)
    with pytest.raises(FactoryExists):
        tokens.enroll(issued.token, "f1", me())
    assert tokens.enroll(issued.token, "f2", me()).factory_id == "f2"


def test_tokens_a_revoked_name_stays_taken(tokens: Tokens) -> None:
    enroll(tokens, "f1")
    tokens.revoke_factory(P, "f1", OPERATOR_ACTOR)
    issued = tokens.create_enrollment_token(P, OPERATOR_ACTOR)
    with pytest.raises(FactoryExists):
        tokens.enroll(issued.token, "f1", me())


def test_tokens_deregistered_name_enrolls_again_and_its_old_tokens_die(
    tokens: Tokens, stores: Stores, coord: Coordinator
) -> None:
    old = enroll(tokens, "f1")
    stores.documents.patch(P, "factory-f1", [Set("/deregistered", True), Set("/paused", True)])
    new = enroll(tokens, "f1")
    assert refused(lambda: factory_of(tokens, old)) == INVALID
    assert factory_of(tokens, new).id == "f1"
    (factory,) = coord.factories(P)
    assert not factory.deregistered and not factory.revoked and not factory.paused


def test_tokens_invalid_factory_name_is_a_validation_error(tokens: Tokens) -> None:
    from fleet.errors import ValidationFailed

    issued = tokens.create_enrollment_token(P, OPERATOR_ACTOR)
    with pytest.raises(ValidationFailed):
        tokens.enroll(issued.token, "no spaces/here", me())
    assert tokens.enroll(issued.token, "ok-name", me()).factory_id == "ok-name"


# --- authentication ------------------------------------------------------------------


def test_tokens_factory_token_is_scoped_to_its_product(tokens: Tokens) -> None:
    token = enroll(tokens, "f1")
    assert factory_of(tokens, token, P).product == P
    with pytest.raises(Forbidden, match="this token is for another product"):
        factory_of(tokens, token, "other")
    with pytest.raises(Forbidden, match="this token is for another product"):
        tokens.authenticate(token, "other", want="any")


def test_tokens_operator_token_names_the_product_with_the_header(tokens: Tokens) -> None:
    principal = tokens.authenticate(OPERATOR, "anything", want="operator")
    assert principal.kind == "operator" and principal.product == "anything"
    assert tokens.authenticate(OPERATOR, None, want="any").product == "default"
    assert principal.id == "op-" + hash_token(OPERATOR)[:8]


def test_tokens_wrong_kind_of_token_is_forbidden(tokens: Tokens) -> None:
    token = enroll(tokens, "f1")
    with pytest.raises(Forbidden, match="factory tokens cannot"):
        tokens.authenticate(token, None, want="operator")
    with pytest.raises(Forbidden, match="operator tokens cannot"):
        tokens.authenticate(OPERATOR, P, want="factory")


@pytest.mark.parametrize(
    ("token", "message"),
    [
        (None, MISSING),
        ("garbage", INVALID),
        ("flf_" + "x" * 43, INVALID),
        ("flo_" + "x" * 43, INVALID),
        ("Bearer", INVALID),
    ],
)
def test_tokens_missing_or_garbage_token_is_401(
    tokens: Tokens, token: str | None, message: str
) -> None:
    assert refused(lambda: tokens.authenticate(token, P, want="any")) == message


def test_tokens_an_enrollment_token_authenticates_nothing_else(tokens: Tokens) -> None:
    issued = tokens.create_enrollment_token(P, OPERATOR_ACTOR)
    assert "only enrolls" in refused(lambda: tokens.authenticate(issued.token, P, want="any"))


def test_tokens_refusals_never_say_which_check_failed(
    tokens: Tokens, clock: ManualClock, stores: Stores
) -> None:
    revoked = enroll(tokens, "revoked")
    tokens.revoke_factory(P, "revoked", OPERATOR_ACTOR)
    rotated = enroll(tokens, "rotated")
    tokens.rotate(factory_of(tokens, rotated), "rotated")
    expiring = enroll(tokens, "expiring")
    stores.documents.patch(
        SYSTEM_PARTITION,
        f"tok-{hash_token(expiring)}",
        [Set("/expiresAt", "2026-01-01T00:00:10.000000Z")],
    )
    clock.advance(301)
    messages = {
        refused(lambda t=t: factory_of(tokens, t))
        for t in (revoked, rotated, expiring, "flf_" + "u" * 43)
    }
    assert messages == {INVALID}


# --- rotation ------------------------------------------------------------------------


def test_tokens_rotated_token_works_during_the_grace_then_is_refused(
    tokens: Tokens, clock: ManualClock
) -> None:
    old = enroll(tokens, "f1")
    rotation = tokens.rotate(factory_of(tokens, old), "f1")
    assert rotation.token != old and rotation.token.startswith("flf_")
    assert (rotation.previous_valid_until - clock.now()).total_seconds() == 300
    clock.advance(299)
    assert factory_of(tokens, old).id == "f1"
    assert factory_of(tokens, rotation.token).id == "f1"
    clock.advance(1)
    assert refused(lambda: factory_of(tokens, old)) == INVALID
    assert factory_of(tokens, rotation.token).id == "f1"


def test_tokens_rotating_twice_does_not_extend_the_first_grace(
    tokens: Tokens, clock: ManualClock
) -> None:
    first = enroll(tokens, "f1")
    second = tokens.rotate(factory_of(tokens, first), "f1").token
    clock.advance(200)
    third = tokens.rotate(factory_of(tokens, second), "f1").token
    clock.advance(100)
    assert refused(lambda: factory_of(tokens, first)) == INVALID
    assert factory_of(tokens, second).id == "f1"  # its own grace runs to 500
    clock.advance(200)
    assert refused(lambda: factory_of(tokens, second)) == INVALID
    assert factory_of(tokens, third).id == "f1"


def test_tokens_rotation_keeps_the_enrollment_allowlist(tokens: Tokens) -> None:
    old = enroll(tokens, "f1", capabilities=["python"])
    new = tokens.rotate(factory_of(tokens, old), "f1").token
    assert factory_of(tokens, new).allowed_capabilities == frozenset({"python"})


def test_tokens_a_factory_rotates_only_its_own_token(tokens: Tokens) -> None:
    f1 = enroll(tokens, "f1")
    enroll(tokens, "f2")
    with pytest.raises(Forbidden, match="only rotate their own"):
        tokens.rotate(factory_of(tokens, f1), "f2")


def test_tokens_an_operator_rotates_any_factory_of_its_product(
    tokens: Tokens, clock: ManualClock
) -> None:
    old = enroll(tokens, "f1")
    operator = tokens.authenticate(OPERATOR, P, want="operator")
    new = tokens.rotate(operator, "f1").token
    clock.advance(300)
    assert factory_of(tokens, new).id == "f1"
    assert refused(lambda: factory_of(tokens, old)) == INVALID
    elsewhere = tokens.authenticate(OPERATOR, "other", want="operator")
    with pytest.raises(FactoryNotFound):
        tokens.rotate(elsewhere, "f1")


def test_tokens_a_revoked_factory_cannot_be_rotated(tokens: Tokens) -> None:
    enroll(tokens, "f1")
    tokens.revoke_factory(P, "f1", OPERATOR_ACTOR)
    with pytest.raises(FactoryRevoked):
        tokens.rotate(tokens.authenticate(OPERATOR, P, want="operator"), "f1")


# --- revocation ----------------------------------------------------------------------


def test_tokens_revoked_mid_job_is_401_and_the_job_is_taken_back_at_once(
    tokens: Tokens, coord: Coordinator
) -> None:
    token = enroll(tokens, "f1")
    rotated = tokens.rotate(factory_of(tokens, token), "f1").token  # both valid now
    job, _ = coord.submit(P, Manifest(title="t", body="b", capabilities=("python",)), "op")
    principal = factory_of(tokens, rotated)
    claim = coord.claim(P, FactoryView(id=principal.id, capabilities=frozenset({"python"})))
    assert claim is not None and claim.job.id == job.id
    assert tokens.revoke_factory(P, "f1", OPERATOR_ACTOR) == 2
    for t in (token, rotated):
        assert refused(lambda t=t: factory_of(tokens, t)) == INVALID
    (factory,) = coord.factories(P)
    assert factory.revoked
    requeued = coord.get_job(P, job.id)  # by the revocation itself: the reaper has nothing
    assert coord.reap(P).requeued == []
    assert requeued.stage is Stage.QUEUED and requeued.epoch == claim.lease.epoch + 1
    with pytest.raises(Fenced):
        coord.report(P, job.id, "f1", claim.lease.epoch, stage=Stage.BUILDING)


def test_tokens_revoking_an_unknown_factory_is_not_found(tokens: Tokens) -> None:
    with pytest.raises(FactoryNotFound):
        tokens.revoke_factory(P, "nobody", OPERATOR_ACTOR)


def test_tokens_revoke_tokens_leaves_the_factory_enrollable(
    tokens: Tokens, coord: Coordinator
) -> None:
    token = enroll(tokens, "f1")
    assert tokens.revoke_tokens(P, "f1", "deregistration") == 1
    assert refused(lambda: factory_of(tokens, token)) == INVALID
    assert not coord.factories(P)[0].revoked


# --- the gate poll's cache -----------------------------------------------------------


def test_tokens_cached_gate_poll_costs_one_point_read(
    tokens: Tokens, coord: Coordinator, stores: Stores
) -> None:
    token = enroll(tokens, "f1")
    tokens.authenticate(token, None, want="any", cached=True)  # verified: now cached
    with stores.counters.measure() as cost:
        principal = tokens.authenticate(token, None, want="any", cached=True)
        coord.queue_state(principal.product)
    assert cost == {"read": 1}
    with stores.counters.measure() as cost:
        tokens.authenticate(token, None, want="any")  # every other endpoint reads the token
    assert cost == {"read": 1}


def test_tokens_revocation_reaches_the_gate_poll_within_the_cache_ttl(
    coord: Coordinator, clock: ManualClock
) -> None:
    here = Tokens(coord, clock=clock)
    there, elsewhere = Tokens(coord, clock=clock), Tokens(coord, clock=clock)  # own caches
    token = enroll(here, "f1")
    for instance in (here, there, elsewhere):
        instance.authenticate(token, None, want="any", cached=True)
    here.revoke_factory(P, "f1", OPERATOR_ACTOR)
    # The revoking instance refuses at once, even on the gate.
    assert refused(lambda: here.authenticate(token, None, want="any", cached=True)) == INVALID
    clock.advance(29)
    # Another instance's gate poll still trusts its cache, within the TTL...
    assert there.authenticate(token, None, want="any", cached=True).id == "f1"
    # ...but any other endpoint reads the token and refuses it, which also clears the cache.
    assert refused(lambda: there.authenticate(token, None, want="any")) == INVALID
    assert refused(lambda: there.authenticate(token, None, want="any", cached=True)) == INVALID
    # And once the TTL has passed, every gate poll reads it again.
    clock.advance(1)
    assert refused(lambda: elsewhere.authenticate(token, None, want="any", cached=True)) == INVALID


def test_tokens_a_holders_calls_cost_no_token_read_and_revocation_still_fences_it(
    coord: Coordinator, clock: ManualClock, stores: Stores
) -> None:
    """A factory's calls about work it holds (report, renew, release, events, artifacts,
    heartbeat: caller ``holder``) trust this instance's cache, as the gate poll does. A
    revocation elsewhere reaches them within the cache's 30 s, and cannot reach the work:
    the revoking instance takes the factory's jobs back at once, so every write it still
    sends is fenced; its claims read the token and are refused at once."""
    from fleet.coordinator.identity import authenticate

    here, there = Tokens(coord, clock=clock), Tokens(coord, clock=clock)  # own caches
    token = enroll(here, "f1")
    source = {"Authorization": f"Bearer {token}"}

    def as_holder(instance: Tokens) -> Principal:
        return authenticate(instance, source, "holder")

    job, _ = coord.submit(P, Manifest(title="t", body="b", capabilities=("python",)), "op")
    claim = coord.claim(P, FactoryView(id="f1", capabilities=frozenset({"python"})))
    assert claim is not None
    as_holder(there)  # verified once: cached
    with stores.counters.measure() as cost:
        assert as_holder(there).id == "f1"
    assert cost == {}  # no token read
    here.revoke_factory(P, "f1", OPERATOR_ACTOR)
    assert refused(lambda: as_holder(here)) == INVALID  # the revoking instance: at once
    clock.advance(29)
    assert as_holder(there).id == "f1"  # still trusted there, within the 30 s...
    with pytest.raises(Fenced):  # ...but the job is no longer its: nothing it sends lands
        coord.report(P, job.id, "f1", claim.lease.epoch, stage=Stage.SHIPPED)
    assert coord.get_job(P, job.id).stage is Stage.QUEUED
    clock.advance(1)
    assert refused(lambda: as_holder(there)) == INVALID  # past the 30 s: read, refused


def test_tokens_a_claim_always_reads_the_token(coord: Coordinator, clock: ManualClock) -> None:
    """New work is never given on trust: a claim reads the token, so a revoked factory's
    claim is refused at once on every instance, which then forgets the token."""
    from fleet.coordinator.identity import authenticate

    here, there = Tokens(coord, clock=clock), Tokens(coord, clock=clock)
    token = enroll(here, "f1")
    source = {"Authorization": f"Bearer {token}"}
    authenticate(there, source, "holder")  # cached there
    here.revoke_factory(P, "f1", OPERATOR_ACTOR)
    assert refused(lambda: authenticate(there, source, "factory")) == INVALID
    assert refused(lambda: authenticate(there, source, "holder")) == INVALID  # forgotten


def test_tokens_the_cache_never_outlives_the_grace(coord: Coordinator, clock: ManualClock) -> None:
    tokens = Tokens(coord, clock=clock, config=TokenConfig(grace_seconds=10))
    old = enroll(tokens, "f1")
    tokens.rotate(factory_of(tokens, old), "f1")
    tokens.authenticate(old, None, want="any", cached=True)
    clock.advance(10)
    assert refused(lambda: tokens.authenticate(old, None, want="any", cached=True)) == INVALID


def test_tokens_the_cache_is_bounded(
    coord: Coordinator, clock: ManualClock, stores: Stores
) -> None:
    tokens = Tokens(coord, clock=clock, config=TokenConfig(gate_cache_size=2))
    a, b, c = (enroll(tokens, name) for name in ("a", "b", "c"))
    for token in (a, b, c):
        tokens.authenticate(token, None, want="any", cached=True)
    with stores.counters.measure() as cost:
        tokens.authenticate(c, None, want="any", cached=True)
        tokens.authenticate(b, None, want="any", cached=True)
    assert cost == {}  # the two most recent are remembered
    with stores.counters.measure() as cost:
        tokens.authenticate(a, None, want="any", cached=True)
    assert cost == {"read": 1}  # the oldest was evicted


# --- through the HTTP handlers -------------------------------------------------------


def test_tokens_http_gate_poll_costs_one_point_read_when_cached(
    app_context: AppContext, tokens: Tokens, stores: Stores
) -> None:
    token = enroll(tokens, "f1")
    status, _, _ = call(app_context, fleet_ops.queue_state, "GET", "/api/fleet/queue-state", token)
    assert status == 200  # the first poll reads the token too, and caches it
    with stores.counters.measure() as cost:
        status, body, _ = call(
            app_context, fleet_ops.queue_state, "GET", "/api/fleet/queue-state", token
        )
    assert status == 200 and body["version"] == 0
    assert cost == {"read": 1}


def test_tokens_http_missing_or_garbage_token_is_401_with_a_bearer_challenge(
    app_context: AppContext,
) -> None:
    for token, message in ((None, MISSING), ("flf_nope", INVALID)):
        status, body, response = call(app_context, jobs.list_jobs, "GET", "/api/fleet/jobs", token)
        assert (status, body["error"], body["message"]) == (401, "unauthorized", message)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_tokens_http_operator_only_endpoints_refuse_factory_tokens(
    app_context: AppContext, tokens: Tokens
) -> None:
    token = enroll(tokens, "f1")
    for handler, method, url, params in (
        (jobs.submit_job, "POST", "/api/fleet/jobs", {}),
        (tokens_http.create_enrollment_token, "POST", "/api/fleet/enrollment-tokens", {}),
        (tokens_http.list_enrollment_tokens, "GET", "/api/fleet/enrollment-tokens", {}),
        (
            tokens_http.revoke_factory_token,
            "POST",
            "/api/fleet/factories/f1/token/revoke",
            {"id": "f1"},
        ),
        (fleet_ops.product_events, "GET", "/api/fleet/events", {}),
    ):
        status, body, _ = call(app_context, handler, method, url, token, {"title": "x"}, **params)
        assert (status, body["error"]) == (403, "forbidden"), (url, body)
        assert "factory tokens cannot" in body["message"]


def test_tokens_http_a_factory_reads_only_the_jobs_it_holds(
    app_context: AppContext, tokens: Tokens, coord: Coordinator
) -> None:
    f1, f2 = enroll(tokens, "f1"), enroll(tokens, "f2")
    first, _ = coord.submit(P, Manifest(title="one", body="b"), "op")
    second, _ = coord.submit(P, Manifest(title="two", body="b"), "op")
    status, claim, _ = call(app_context, fleet_ops.claim, "POST", "/api/fleet/claim", f1, {})
    assert status == 200
    held, other = (first, second) if claim["job"]["id"] == first.id else (second, first)
    for handler, suffix in (
        (jobs.get_job, ""),
        (jobs.job_events, "/events"),
        (jobs.explain_job, "/explain"),
    ):
        url = f"/api/fleet/jobs/{{}}{suffix}"
        assert call(app_context, handler, "GET", url.format(held.id), f1, id=held.id)[0] == 200
        status, body, _ = call(app_context, handler, "GET", url.format(other.id), f1, id=other.id)
        assert (status, body["error"]) == (403, "forbidden")
        assert call(app_context, handler, "GET", url.format(held.id), f2, id=held.id)[0] == 403
        assert (
            call(
                app_context, handler, "GET", url.format(other.id), OPERATOR, product=P, id=other.id
            )[0]
            == 200
        )
    _, listed, _ = call(app_context, jobs.list_jobs, "GET", "/api/fleet/jobs", f1)
    assert [j["id"] for j in listed["jobs"]] == [held.id]
    _, listed, _ = call(app_context, jobs.list_jobs, "GET", "/api/fleet/jobs", OPERATOR, product=P)
    assert {j["id"] for j in listed["jobs"]} == {held.id, other.id}


def test_tokens_http_a_factory_patching_a_job_it_does_not_hold_is_fenced(
    app_context: AppContext, tokens: Tokens, coord: Coordinator
) -> None:
    f1, f2 = enroll(tokens, "f1"), enroll(tokens, "f2")
    job, _ = coord.submit(P, Manifest(title="t", body="b"), "op")
    _, claim, _ = call(app_context, fleet_ops.claim, "POST", "/api/fleet/claim", f1, {})
    epoch = claim["lease"]["epoch"]
    status, body, _ = call(
        app_context,
        lease.report_job,
        "PATCH",
        f"/api/fleet/jobs/{job.id}",
        f2,
        {"leaseEpoch": epoch, "stage": "shipped"},
        id=job.id,
    )
    assert (status, body["error"]) == (409, "fenced")
    assert coord.get_job(P, job.id).stage is Stage.ASSIGNED


def test_tokens_http_claim_outside_the_allowlist_is_403(
    app_context: AppContext, tokens: Tokens
) -> None:
    token = enroll(tokens, "f1", capabilities=["python"])
    status, body, _ = call(
        app_context,
        fleet_ops.claim,
        "POST",
        "/api/fleet/claim",
        token,
        {"capabilities": ["python", "gpu"]},
    )
    assert (status, body["error"], body["details"]["disallowed"]) == (403, "forbidden", ["gpu"])


def test_tokens_http_enroll_register_rotate_revoke(
    app_context: AppContext, tokens: Tokens, coord: Coordinator
) -> None:
    status, issued, response = call(
        app_context,
        tokens_http.create_enrollment_token,
        "POST",
        "/api/fleet/enrollment-tokens",
        OPERATOR,
        {"expiresInSeconds": 3600, "capabilities": ["python"]},
        product=P,
    )
    assert status == 201 and issued["token"].startswith("fle_") and issued["product"] == P
    assert response.headers["Cache-Control"] == "no-store"
    documented(issued, "IssuedEnrollmentToken")
    status, enrolled, _ = call(
        app_context,
        tokens_http.enroll_factory,
        "POST",
        "/api/fleet/factories/enroll",
        issued["token"],
        {"name": "f1", "capabilities": ["python"], "seats": 2, "version": "1.0"},
    )
    assert status == 201 and enrolled["factoryId"] == "f1" and enrolled["product"] == P
    documented(enrolled, "Enrollment")
    token = enrolled["token"]
    status, registered, _ = call(
        app_context,
        fleet_ops.register_factory,
        "POST",
        "/api/fleet/factories/register",
        token,
        {"capabilities": ["python"], "seats": 3},
    )
    assert status == 200 and registered["id"] == "factory-f1" and registered["seats"] == 3
    status, rotated, _ = call(
        app_context,
        tokens_http.rotate_factory_token,
        "POST",
        "/api/fleet/factories/f1/token/rotate",
        token,
        id="f1",
    )
    assert status == 200 and rotated["token"] != token and rotated["previousValidUntil"]
    documented(rotated, "TokenRotation")
    status, revoked, _ = call(
        app_context,
        tokens_http.revoke_factory_token,
        "POST",
        "/api/fleet/factories/f1/token/revoke",
        OPERATOR,
        product=P,
        id="f1",
    )
    assert (status, revoked) == (200, {"factoryId": "f1", "revoked": True, "revokedTokens": 2})
    documented(revoked, "FactoryRevocation")
    for t in (token, rotated["token"]):
        assert call(app_context, fleet_ops.claim, "POST", "/api/fleet/claim", t, {})[0] == 401
    _, listed, _ = call(
        app_context,
        tokens_http.list_enrollment_tokens,
        "GET",
        "/api/fleet/enrollment-tokens",
        OPERATOR,
        product=P,
    )
    assert [t["status"] for t in listed["tokens"]] == ["used"]
    assert "token" not in listed["tokens"][0]
    documented(listed, "EnrollmentTokenList")


def test_tokens_http_revoking_an_enrollment_token_answers_it_revoked(
    app_context: AppContext, tokens: Tokens, clock: ManualClock
) -> None:
    issued = tokens.create_enrollment_token(P, OPERATOR_ACTOR, capabilities=["python"])
    clock.advance(5)
    replies = [
        call(
            app_context,
            tokens_http.revoke_enrollment_token,
            "DELETE",
            f"/api/fleet/enrollment-tokens/{issued.id}",
            OPERATOR,
            product=P,
            id=issued.id,
        )
        for _ in range(2)
    ]
    for status, body, _ in replies:
        assert status == 200 and body["id"] == issued.id and body["status"] == "revoked"
        assert body["revokedAt"] == "2026-01-01T00:00:05.000000Z" and body["usedAt"] is None
        assert body["capabilities"] == ["python"] and "token" not in body
        documented(body, "EnrollmentToken")
    status, body, _ = call(
        app_context,
        tokens_http.revoke_enrollment_token,
        "DELETE",
        "/api/fleet/enrollment-tokens/0123456789ab",
        OPERATOR,
        product=P,
        id="0123456789ab",
    )
    assert (status, body["error"]) == (404, "not_found")


def test_tokens_http_bad_enroll_body_is_400_with_field_paths(
    app_context: AppContext, tokens: Tokens
) -> None:
    issued = tokens.create_enrollment_token(P, OPERATOR_ACTOR)
    status, body, _ = call(
        app_context,
        tokens_http.enroll_factory,
        "POST",
        "/api/fleet/factories/enroll",
        issued.token,
        {"name": "bad name", "seats": 0, "colour": "red"},
    )
    assert status == 400
    assert {"name", "seats", "colour"} <= {p["path"] for p in body["details"]["problems"]}
    status, body, _ = call(
        app_context,
        tokens_http.enroll_factory,
        "POST",
        "/api/fleet/factories/enroll",
        None,
        {"name": "f"},
    )
    assert (status, body["message"]) == (401, MISSING)


# --- operator tokens: people with roles ------------------------------------------------


def person(tokens: Tokens, name: str, role: Role, products: tuple[str, ...] = ("*",)) -> str:
    """A named operator token (an admin of every product creates it)."""
    return tokens.create_operator_token(name, role, products, OPERATOR_ACTOR).token


def operator_of(tokens: Tokens, token: str, product: str | None = None) -> Principal:
    return tokens.authenticate(token, product, want="operator")


def test_tokens_operator_tokens_are_prefixed_and_stored_only_as_sha256(
    tokens: Tokens, stores: Stores
) -> None:
    issued = tokens.create_operator_token("alice", "operator", [P, "other"], OPERATOR_ACTOR)
    assert issued.token.startswith("flo_") and len(issued.token) >= 4 + 43
    assert (issued.name, issued.role, issued.products) == ("alice", "operator", ("other", P))
    assert issued.expiresAt is None  # no expiry unless one is given
    stored = json.dumps(docs(stores).all_docs())
    assert issued.token not in stored and hash_token(issued.token) in stored
    [listed] = tokens.list_operator_tokens()
    assert listed["id"] == issued.id and listed["status"] == "active"
    assert issued.token not in json.dumps(listed) and hash_token(issued.token) not in json.dumps(
        listed
    )


def test_tokens_an_operator_token_proves_its_name_role_and_products(tokens: Tokens) -> None:
    token = person(tokens, "alice", "viewer", (P,))
    principal = operator_of(tokens, token, P)
    assert (principal.kind, principal.id, principal.product) == ("operator", "alice", P)
    assert (principal.role, principal.products) == ("viewer", frozenset({P}))
    assert principal.actor == "operator:alice"
    assert operator_of(tokens, token).product == "default"  # no header: the default product
    assert operator_of(tokens, person(tokens, "root", "admin")).products is None


def test_tokens_bootstrap_tokens_are_admins_of_every_product(
    tokens: Tokens, stores: Stores
) -> None:
    with stores.counters.measure() as cost:
        principal = operator_of(tokens, OPERATOR, "anything")
    assert cost == {}  # checked in memory, no read
    assert principal.id == f"op-{hash_token(OPERATOR)[:8]}"
    assert (principal.role, principal.products, principal.product) == ("admin", None, "anything")
    principal.check_every_product()


def test_tokens_a_named_operator_token_costs_one_point_read(tokens: Tokens, stores: Stores) -> None:
    token = person(tokens, "alice", "operator")
    with stores.counters.measure() as cost:
        operator_of(tokens, token, P)
    assert cost == {"read": 1}


@pytest.mark.parametrize(
    ("need", "allowed"),
    [
        ("viewer", {"viewer", "operator", "admin"}),
        ("operator", {"operator", "admin"}),
        ("admin", {"admin"}),
    ],
)
def test_tokens_each_role_may_do_what_the_ones_before_it_may(
    tokens: Tokens, need: Role, allowed: set[str]
) -> None:
    for role in ROLES:
        principal = operator_of(tokens, person(tokens, f"p-{role}", role))
        assert principal.may(need) == (role in allowed)
        if role not in allowed:
            with pytest.raises(Forbidden) as refused_:
                principal.check_role(need)
            assert refused_.value.details == {"role": role, "needs": need}
    factory = factory_of(tokens, enroll(tokens, "f1"))
    factory.check_role(need)  # a factory's calls are its kind's: no role


def test_tokens_a_token_is_for_its_products_only(tokens: Tokens) -> None:
    token = person(tokens, "alice", "admin", (P,))
    operator_of(tokens, token, P).check_product()
    with pytest.raises(Forbidden):
        operator_of(tokens, token, "other").check_product()
    with pytest.raises(Forbidden):
        operator_of(tokens, token, P).check_every_product()
    # A factory's own product is its only one.
    factory = factory_of(tokens, enroll(tokens, "f1"))
    assert factory.may_touch(P) and not factory.may_touch("other")


def test_tokens_revoked_or_expired_operator_tokens_are_refused(
    tokens: Tokens, clock: ManualClock
) -> None:
    revoked = tokens.create_operator_token("alice", "admin", ["*"], OPERATOR_ACTOR)
    operator_of(tokens, revoked.token)
    view = tokens.revoke_operator_token(revoked.id, "operator:root")
    assert (view["status"], view["revokedBy"]) == ("revoked", "operator:root")
    assert refused(lambda: operator_of(tokens, revoked.token)) == INVALID
    expiring = tokens.create_operator_token(
        "bob", "viewer", ["*"], OPERATOR_ACTOR, expires_in_seconds=60
    )
    operator_of(tokens, expiring.token)
    clock.advance(60)
    assert refused(lambda: operator_of(tokens, expiring.token)) == INVALID
    statuses = {t["name"]: t["status"] for t in tokens.list_operator_tokens()}
    assert statuses == {"alice": "revoked", "bob": "expired"}
    # Revoking twice answers the same; an unknown id is 404.
    assert tokens.revoke_operator_token(revoked.id, "operator:other")["revokedBy"] == (
        "operator:root"
    )
    for unknown in ("0123456789ab", "nope"):
        with pytest.raises(NotFound):
            tokens.revoke_operator_token(unknown, OPERATOR_ACTOR)


def test_tokens_operator_revocation_reaches_the_gate_poll_within_the_cache_ttl(
    coord: Coordinator, clock: ManualClock
) -> None:
    here, there = Tokens(coord, clock=clock), Tokens(coord, clock=clock)  # own caches
    issued = here.create_operator_token("alice", "viewer", ["*"], OPERATOR_ACTOR)
    for instance in (here, there):
        instance.authenticate(issued.token, P, want="any", cached=True)
    here.revoke_operator_token(issued.id, OPERATOR_ACTOR)
    assert refused(lambda: here.authenticate(issued.token, P, want="any", cached=True)) == INVALID
    clock.advance(29)
    # The other instance's gate poll trusts its cache within the TTL, about the product named
    # now; every other endpoint reads the token and refuses it.
    assert there.authenticate(issued.token, "other", want="any", cached=True).product == "other"
    assert refused(lambda: there.authenticate(issued.token, P, want="any")) == INVALID


def test_tokens_operator_names_and_products_are_checked(tokens: Tokens) -> None:
    for name, products, path in (
        ("op-12345678", ["*"], "name"),  # the bootstrap tokens' names
        ("bad name", ["*"], "name"),
        ("alice", ["*", P], "products"),
        ("alice", [], "products"),
        ("alice", ["bad product"], "products[0]"),
        ("alice", [f"p{n}" for n in range(65)], "products"),
    ):
        with pytest.raises(ValidationFailed) as caught:
            tokens.create_operator_token(name, "viewer", products, OPERATOR_ACTOR)
        assert [p.path for p in caught.value.problems] == [path], (name, products)
    assert tokens.list_operator_tokens() == []


# --- operator tokens through the HTTP handlers --------------------------------------------


def declared(context: AppContext) -> list[Operation]:
    found = (operation_of(f) for f in functions(context).values())
    return [op for op in found if op is not None]


def test_tokens_http_every_operation_refuses_a_role_below_its_own(
    app_context: AppContext, tokens: Tokens, stores: Stores
) -> None:
    by_role = {role: person(tokens, f"p-{role}", role) for role in ROLES}
    before = docs(stores).all_docs()
    checked = 0
    for op in declared(app_context):
        if op.caller in ("anonymous", "factory", "holder"):
            continue
        for role in ROLES[: ROLES.index(op.role)]:
            params = {name: P if name == "productId" else "x" for name in _route_params(op)}
            status, body, _ = call(
                app_context, op.handler, op.method, f"/api/{op.route}", by_role[role], {},
                product=P, **params,
            )  # fmt: skip
            assert (status, body["error"]) == (403, "forbidden"), (op.id, role, body)
            assert body["details"] == {"role": role, "needs": op.role}, op.id
            checked += 1
    assert checked > 30
    assert docs(stores).all_docs() == before  # refused before anything was read or written


def _route_params(op: Operation) -> list[str]:
    return [p.name for p in op.params if p.where == "path"]


def test_tokens_http_viewers_read_everything_and_admins_manage(app_context: AppContext) -> None:
    ops = {op.id: op for op in declared(app_context) if op.caller != "factory"}
    reads = {i for i, op in ops.items() if op.method == "GET" and op.role != "viewer"}
    # Tokens are admins'.
    assert reads == {"listEnrollmentTokens", "listOperatorTokens", "listScalerTokens"}
    writes = {i for i, op in ops.items() if op.method != "GET" and op.role == "viewer"}
    assert writes == set()  # a viewer changes nothing
    admins = {i for i, op in ops.items() if op.role == "admin"}
    assert admins >= {
        "createOperatorToken",
        "listOperatorTokens",
        "revokeOperatorToken",
        "createEnrollmentToken",
        "listEnrollmentTokens",
        "revokeEnrollmentToken",
        "rotateFactoryToken",
        "revokeFactoryToken",
        "putBudget",
        "adjustBudget",
        "putChannel",
        "deleteChannel",
        "putSettings",
    }


def test_tokens_http_a_viewer_reads_but_cannot_act(
    app_context: AppContext, tokens: Tokens, coord: Coordinator
) -> None:
    viewer = person(tokens, "vera", "viewer")
    job, _ = coord.submit(P, Manifest(title="t", body="b"), "operator:o")
    status, listed, _ = call(app_context, jobs.list_jobs, "GET", "/api/fleet/jobs", viewer, None, P)
    assert status == 200 and [j["id"] for j in listed["jobs"]] == [job.id]
    before = coord.get_job(P, job.id)
    status, body, _ = call(
        app_context, actions.cancel_job, "POST", f"/api/fleet/jobs/{job.id}/cancel", viewer,
        None, P, id=job.id,
    )  # fmt: skip
    assert (status, body["error"]) == (403, "forbidden")
    assert body["message"] == "this needs an operator token: vera is a viewer"
    assert coord.get_job(P, job.id) == before


def test_tokens_http_an_operator_acts_but_does_not_manage(
    app_context: AppContext, tokens: Tokens, coord: Coordinator
) -> None:
    token = person(tokens, "olga", "operator")
    status, _, _ = call(
        app_context, jobs.submit_job, "POST", "/api/fleet/jobs", token,
        {"title": "t", "body": "b"}, P,
    )  # fmt: skip
    assert status == 201
    for handler, method, url, params in (
        (fleet_ops.put_settings, "PUT", "/api/fleet/settings", {}),
        (budgets.put_budget, "PUT", f"/api/fleet/budgets/{P}", {"productId": P}),
        (tokens_http.create_enrollment_token, "POST", "/api/fleet/enrollment-tokens", {}),
        (operators.create_operator_token, "POST", "/api/fleet/operator-tokens", {}),
    ):
        status, body, _ = call(app_context, handler, method, url, token, {}, P, **params)
        assert (status, body["details"]) == (403, {"role": "operator", "needs": "admin"}), url
    assert coord.product_settings(P) == coord.product_settings("fresh")


def test_tokens_http_a_product_scoped_token_cannot_touch_another_product(
    app_context: AppContext, tokens: Tokens, coord: Coordinator
) -> None:
    token = person(tokens, "alice", "admin", (P,))
    ok, _, _ = call(app_context, jobs.list_jobs, "GET", "/api/fleet/jobs", token, None, P)
    assert ok == 200
    status, body, _ = call(
        app_context, jobs.submit_job, "POST", "/api/fleet/jobs", token,
        {"title": "t", "body": "b"}, "other",
    )  # fmt: skip
    assert (status, body["error"], body["details"]) == (403, "forbidden", {"product": "other"})
    assert coord.list_jobs("other") == []
    # A product in the path is the product of the call, whatever the header says.
    for product, expected in ((P, 200), ("other", 403)):
        status, _, _ = call(
            app_context, budgets.put_budget, "PUT", f"/api/fleet/budgets/{product}", token,
            {"ceilingUsd": 5}, P, productId=product,
        )  # fmt: skip
        assert status == expected, product
    assert coord.budgets.get("other") is None
    # A product-scoped admin manages its product, not people.
    status, _, _ = call(
        app_context, tokens_http.create_enrollment_token, "POST", "/api/fleet/enrollment-tokens",
        token, {}, P,
    )  # fmt: skip
    assert status == 201
    status, body, _ = call(
        app_context, operators.create_operator_token, "POST", "/api/fleet/operator-tokens",
        token, {"name": "mallory", "role": "admin", "products": ["*"]}, P,
    )  # fmt: skip
    assert (status, body["error"]) == (403, "forbidden")
    assert [t["name"] for t in tokens.list_operator_tokens()] == ["alice"]


def test_tokens_http_operator_tokens_created_listed_and_revoked(
    app_context: AppContext, tokens: Tokens
) -> None:
    status, issued, response = call(
        app_context, operators.create_operator_token, "POST", "/api/fleet/operator-tokens",
        OPERATOR, {"name": "alice", "role": "viewer", "products": [P], "expiresInSeconds": 3600},
    )  # fmt: skip
    assert status == 201 and issued["token"].startswith("flo_")
    assert (issued["name"], issued["role"], issued["products"]) == ("alice", "viewer", [P])
    assert issued["expiresAt"].startswith("2026-01-01T01:00:00")
    assert response.headers["Cache-Control"] == "no-store"
    documented(issued, "IssuedOperatorToken")
    status, listed, _ = call(
        app_context, operators.list_operator_tokens, "GET", "/api/fleet/operator-tokens", OPERATOR
    )
    assert status == 200 and [t["id"] for t in listed["tokens"]] == [issued["id"]]
    assert listed["tokens"][0]["createdBy"] == f"operator:op-{hash_token(OPERATOR)[:8]}"
    assert issued["token"] not in json.dumps(listed) and "hash" not in listed["tokens"][0]
    documented(listed, "OperatorTokenList")
    status, revoked, _ = call(
        app_context, operators.revoke_operator_token, "DELETE",
        f"/api/fleet/operator-tokens/{issued['id']}", OPERATOR, id=issued["id"],
    )  # fmt: skip
    assert (status, revoked["status"]) == (200, "revoked")
    documented(revoked, "OperatorToken")
    status, body, _ = call(app_context, jobs.list_jobs, "GET", "/api/fleet/jobs", issued["token"])
    assert (status, body["message"]) == (401, INVALID)
    status, body, _ = call(
        app_context, operators.revoke_operator_token, "DELETE",
        "/api/fleet/operator-tokens/0123456789ab", OPERATOR, id="0123456789ab",
    )  # fmt: skip
    assert (status, body["error"]) == (404, "not_found")


def test_tokens_http_bad_operator_token_bodies_are_400_with_field_paths(
    app_context: AppContext, tokens: Tokens
) -> None:
    for body, paths in (
        ({"name": "bad name", "role": "root", "products": []}, {"name", "role", "products"}),
        ({"name": "a", "role": "viewer", "products": ["*"], "expiresInSeconds": 10},
         {"expiresInSeconds"}),
        ({"name": "a", "role": "viewer", "products": ["*", P]}, {"products"}),
        ({"name": "op-1", "role": "viewer", "products": ["*"]}, {"name"}),
        ({"name": "a", "role": "viewer", "products": ["*"], "colour": "red"}, {"colour"}),
    ):  # fmt: skip
        status, reply, _ = call(
            app_context, operators.create_operator_token, "POST", "/api/fleet/operator-tokens",
            OPERATOR, body,
        )  # fmt: skip
        assert status == 400, body
        assert {p["path"] for p in reply["details"]["problems"]} == paths, reply
    assert tokens.list_operator_tokens() == []


def test_tokens_http_whoami_says_who_any_token_is(app_context: AppContext, tokens: Tokens) -> None:
    def whoami(token: str, product: str | None = None) -> Any:
        status, body, _ = call(
            app_context, operators.whoami, "GET", "/api/fleet/whoami", token, None, product
        )
        assert status == 200, body
        documented(body, "WhoAmI")
        return body

    assert whoami(OPERATOR) == {
        "kind": "operator",
        "name": f"op-{hash_token(OPERATOR)[:8]}",
        "role": "admin",
        "products": ["*"],
    }
    viewer = person(tokens, "vera", "viewer", (P, "b"))
    # Whatever product the header names: who the caller is is no one product's.
    assert whoami(viewer, "elsewhere") == {
        "kind": "operator",
        "name": "vera",
        "role": "viewer",
        "products": ["b", P],
    }
    factory = enroll(tokens, "f1")
    assert whoami(factory) == {"kind": "factory", "name": "f1", "role": None, "products": [P]}


def test_tokens_http_every_event_names_the_operator(
    app_context: AppContext, tokens: Tokens, coord: Coordinator
) -> None:
    token = person(tokens, "alice", "operator", (P,))
    status, submitted, _ = call(
        app_context, jobs.submit_job, "POST", "/api/fleet/jobs", token,
        {"title": "t", "body": "b"}, P,
    )  # fmt: skip
    job_id = submitted["job"]["id"]
    status, _, _ = call(
        app_context, actions.reprioritize_job, "POST", f"/api/fleet/jobs/{job_id}/reprioritize",
        token, {"priority": 9}, P, id=job_id,
    )  # fmt: skip
    status, _, _ = call(
        app_context, actions.cancel_job, "POST", f"/api/fleet/jobs/{job_id}/cancel", token,
        {"reason": "not needed"}, P, id=job_id,
    )  # fmt: skip
    assert status == 200
    events = coord.job_events(P, job_id)
    assert [(e.type, e.actor) for e in events] == [
        ("submit", "operator:alice"),
        ("reprioritize", "operator:alice"),
        ("cancel", "operator:alice"),
    ]
    enroll(tokens, "f1")
    status, issued, _ = call(
        app_context, factories.factory_command, "POST", "/api/fleet/factories/f1/commands", token,
        {"command": "drain"}, P, id="f1",
    )  # fmt: skip
    assert (status, issued["command"]["issuedBy"]) == (202, "operator:alice")


def test_tokens_http_a_viewer_cannot_send_tracker_items(
    app_context: AppContext, tokens: Tokens, coord: Coordinator
) -> None:
    """The tracker's ingest authenticates operators itself: with the operation's role too."""
    item = {"source": "jira", "id": "FLEET-1", "title": "t"}
    for role, expected in (("viewer", 403), ("operator", 201)):
        status, _, _ = call(
            app_context, "tracker_ingest", "POST", "/api/fleet/tracker/ingest",
            person(tokens, f"p-{role}", role), item, P,
        )  # fmt: skip
        assert status == expected, role
    assert len(coord.list_jobs(P)) == 1
