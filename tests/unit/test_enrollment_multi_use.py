"""Enrollment tokens of many uses, and ephemeral factories (autoscaled workers sharing one
token): the count on the twin (race-safe, given back on a taken name, never passed), names
the coordinator generates, the fast prune of an ephemeral factory (the healer's plan and the
sweep agreeing on it), the HTTP bounds, and the factory CLI's client leaving the name out."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import responses

from factory_cli.api import FleetClient, Rejected
from fleet.context import AppContext
from fleet.coordinator import Coordinator
from fleet.coordinator.clock import ManualClock
from fleet.coordinator.enrollment import MAX_USES
from fleet.coordinator.service import SYSTEM_PARTITION
from fleet.coordinator.sweep import _needs_verdict
from fleet.coordinator.tokens import INVALID, FactoryExists, Tokens, hash_token
from fleet.domain.healer import HealthConfig, plan_heal
from fleet.domain.models import Factory
from fleet.errors import Forbidden, Unauthorized, ValidationFailed
from fleet.http import tokens as tokens_http
from fleet.http.parsing import FactorySelf
from fleet.store.memory import MemoryDocumentStore
from fleet.store.ports import Remove, Stores
from fleet.store.queries import FLEET_FACTORIES
from tests.support.builders import T0
from tests.support.builders import job as queued
from tests.support.handlers import OPERATOR, call, documented
from tests.support.races import race_enrollments

P = "prod"
ACTOR = "operator:test"
GENERATED = re.compile(r"^eph-[0-9a-f]{8}$")


def me(caps: tuple[str, ...] = ("python",)) -> FactorySelf:
    return FactorySelf(capabilities=caps)


def stored(stores: Stores, token: str) -> dict[str, Any]:
    """The token's document as the twin holds it."""
    docs = stores.documents
    assert isinstance(docs, MemoryDocumentStore)
    doc = docs.peek(SYSTEM_PARTITION, f"tok-{hash_token(token)}")
    assert doc is not None
    return doc


def listed(tokens: Tokens, token_id: str) -> dict[str, Any]:
    return next(t for t in tokens.list_enrollment_tokens(P) if t["id"] == token_id)


def refused(attempt: Callable[[], object]) -> str:
    with pytest.raises(Unauthorized) as caught:
        attempt()
    return caught.value.message


# --- many uses ---------------------------------------------------------------------------


def test_enrollment_multi_use_admits_max_uses_then_refuses_without_counting_refusals(
    tokens: Tokens, stores: Stores, coord: Coordinator
) -> None:
    issued = tokens.create_enrollment_token(P, ACTOR, max_uses=3, capabilities=["python"])
    assert issued.maxUses == 3 and not issued.ephemeral
    with pytest.raises(Forbidden):  # a refusal before the use: nothing counted
        tokens.enroll(issued.token, "f0", me(("gpu",)))
    for n in (1, 2, 3):
        assert tokens.enroll(issued.token, f"f{n}", me()).factory_id == f"f{n}"
        assert stored(stores, issued.token)["uses"] == n
    for _ in range(3):
        assert refused(lambda: tokens.enroll(issued.token, "f4", me())) == INVALID
    assert stored(stores, issued.token)["uses"] == 3  # refusals never count
    assert [f.id for f in coord.factories(P)] == ["factory-f1", "factory-f2", "factory-f3"]
    view = listed(tokens, issued.id)
    assert (view["status"], view["uses"], view["maxUses"]) == ("used", 3, 3)
    assert view["usedAt"] is None and view["usedBy"] is None  # single-use fields only


def test_enrollment_multi_use_an_active_token_shows_its_count(tokens: Tokens) -> None:
    issued = tokens.create_enrollment_token(P, ACTOR, max_uses=2)
    tokens.enroll(issued.token, "f1", me())
    view = listed(tokens, issued.id)
    assert (view["status"], view["uses"], view["maxUses"], view["ephemeral"]) == (
        "active",
        1,
        2,
        False,
    )


def test_enrollment_multi_use_racing_enrollments_never_pass_max_uses(
    tokens: Tokens, stores: Stores, coord: Coordinator
) -> None:
    issued = tokens.create_enrollment_token(P, ACTOR, max_uses=3)
    racers = 10
    won, lost = race_enrollments(tokens, issued.token, racers, me())
    assert len(won) == 3 and lost == [INVALID] * (racers - 3)
    assert sorted(f.id for f in coord.factories(P)) == sorted(f"factory-{n}" for n in won)
    assert stored(stores, issued.token)["uses"] == 3


def test_enrollment_multi_use_the_count_is_checked_by_the_write_not_the_read(
    tokens: Tokens, stores: Stores
) -> None:
    """Interleaved: every enrollment read the token while it had all its uses left; only
    ``maxUses`` of their writes land."""
    issued = tokens.create_enrollment_token(P, ACTOR, max_uses=2)
    store = tokens._store
    read = store.read(hash_token(issued.token))
    assert read is not None and read.used == 0
    landed = 0
    for n in range(5):
        try:
            store.use(read, f"f{n}", f"nonce{n}", T0)
        except Unauthorized:
            continue
        landed += 1
    assert landed == 2 and stored(stores, issued.token)["uses"] == 2
    # A give-back never takes the count below zero, however often it is called.
    for _ in range(3):
        store.unuse(read, "any")
    assert stored(stores, issued.token)["uses"] == 0


def test_enrollment_multi_use_a_taken_name_gives_the_use_back(
    tokens: Tokens, stores: Stores
) -> None:
    issued = tokens.create_enrollment_token(P, ACTOR, max_uses=2)
    tokens.enroll(issued.token, "f1", me())
    with pytest.raises(FactoryExists):
        tokens.enroll(issued.token, "f1", me())
    assert stored(stores, issued.token)["uses"] == 1
    # Taken between the check and the claim: the use taken is given back.
    other = tokens.create_enrollment_token(P, ACTOR)
    enrollments = tokens._enrollments
    check = enrollments._check_name_free
    enrollments._check_name_free = lambda product, name: None  # type: ignore[method-assign]
    try:
        with pytest.raises(FactoryExists):
            tokens.enroll(issued.token, "f1", me())
    finally:
        enrollments._check_name_free = check  # type: ignore[method-assign]
    assert stored(stores, issued.token)["uses"] == 1
    assert tokens.enroll(issued.token, "f2", me()).factory_id == "f2"
    assert refused(lambda: tokens.enroll(issued.token, "f3", me())) == INVALID
    assert tokens.enroll(other.token, "f3", me()).factory_id == "f3"


def test_enrollment_multi_use_revoked_or_expired_is_refused(
    tokens: Tokens, clock: ManualClock, stores: Stores
) -> None:
    revoked = tokens.create_enrollment_token(P, ACTOR, max_uses=5)
    tokens.enroll(revoked.token, "f1", me())
    assert tokens.revoke_enrollment_token(P, revoked.id, ACTOR)["status"] == "revoked"
    assert refused(lambda: tokens.enroll(revoked.token, "f2", me())) == INVALID
    expiring = tokens.create_enrollment_token(P, ACTOR, max_uses=5, expires_in_seconds=600)
    tokens.enroll(expiring.token, "f3", me())
    clock.advance(600)
    assert refused(lambda: tokens.enroll(expiring.token, "f4", me())) == INVALID
    assert listed(tokens, expiring.id)["status"] == "expired"
    assert stored(stores, revoked.token)["uses"] == stored(stores, expiring.token)["uses"] == 1


def test_enrollment_multi_use_events_one_per_use(
    tokens: Tokens, stores: Stores, clock: ManualClock
) -> None:
    issued = tokens.create_enrollment_token(P, ACTOR, max_uses=3)
    for n in range(3):
        tokens.enroll(issued.token, f"f{n}", me())
    docs = stores.documents
    assert isinstance(docs, MemoryDocumentStore)
    enrolled = [
        e
        for d in docs.all_docs()
        if d["productId"] == P
        for e in d.get("events", ())
        if isinstance(e, dict) and e.get("type") == "factory_enrolled"
    ]
    assert sorted(e["factory"] for e in enrolled) == ["f0", "f1", "f2"]


# --- single use, as before ------------------------------------------------------------------


def test_enrollment_multi_use_single_use_keeps_used_at_and_writes_no_count(
    tokens: Tokens, stores: Stores
) -> None:
    issued = tokens.create_enrollment_token(P, ACTOR)
    assert issued.maxUses == 1
    tokens.enroll(issued.token, "f1", me())
    doc = stored(stores, issued.token)
    assert "uses" not in doc and doc["usedBy"] == "f1" and doc["maxUses"] == 1
    view = listed(tokens, issued.id)
    assert (view["status"], view["uses"], view["maxUses"], view["usedBy"]) == ("used", 1, 1, "f1")


def test_enrollment_multi_use_a_token_written_before_max_uses_is_single_use(
    tokens: Tokens, stores: Stores
) -> None:
    issued = tokens.create_enrollment_token(P, ACTOR)
    stores.documents.patch(
        SYSTEM_PARTITION,
        f"tok-{hash_token(issued.token)}",
        [Remove("/maxUses"), Remove("/ephemeral")],
    )
    view = listed(tokens, issued.id)
    assert (view["status"], view["uses"], view["maxUses"], view["ephemeral"]) == (
        "active",
        0,
        1,
        False,
    )
    tokens.enroll(issued.token, "f1", me())
    assert refused(lambda: tokens.enroll(issued.token, "f2", me())) == INVALID
    assert listed(tokens, issued.id)["status"] == "used"


# --- ephemeral factories ------------------------------------------------------------------


def test_enrollment_ephemeral_factory_is_named_by_the_coordinator_and_marked(
    tokens: Tokens, coord: Coordinator
) -> None:
    issued = tokens.create_enrollment_token(P, ACTOR, max_uses=10, ephemeral=True)
    names = [tokens.enroll(issued.token, None, me()).factory_id for _ in range(3)]
    assert all(GENERATED.match(n) for n in names) and len(set(names)) == 3
    named = tokens.enroll(issued.token, "keda-1", me()).factory_id  # a name may still be given
    assert named == "keda-1"
    factories = coord.factories(P)
    assert sorted(f.id for f in factories) == sorted(f"factory-{n}" for n in [*names, named])
    assert all(f.ephemeral for f in factories)
    plain = tokens.create_enrollment_token(P, ACTOR)
    tokens.enroll(plain.token, "build-01", me())
    assert not next(f for f in coord.factories(P) if f.id == "factory-build-01").ephemeral


def test_enrollment_ephemeral_name_prefix(tokens: Tokens) -> None:
    issued = tokens.create_enrollment_token(
        P, ACTOR, max_uses=2, ephemeral=True, name_prefix="worker"
    )
    assert issued.namePrefix == "worker"
    assert re.match(r"^worker-[0-9a-f]{8}$", tokens.enroll(issued.token, None, me()).factory_id)
    assert listed(tokens, issued.id)["namePrefix"] == "worker"


def test_enrollment_ephemeral_a_generated_name_that_is_taken_is_drawn_again(
    coord: Coordinator, clock: ManualClock
) -> None:
    draws = iter(["same", "same", "other"])

    def entropy(n: int) -> str:
        return next(draws) if n == 16 else secrets.token_urlsafe(n)  # 16: a name's draw

    tokens = Tokens(coord, clock=clock, entropy=entropy)
    issued = tokens.create_enrollment_token(P, ACTOR, max_uses=2, ephemeral=True)
    first = tokens.enroll(issued.token, None, me()).factory_id
    second = tokens.enroll(issued.token, None, me()).factory_id
    assert GENERATED.match(first) and GENERATED.match(second) and first != second


def test_enrollment_ephemeral_every_draw_taken_is_409_and_uses_nothing(
    coord: Coordinator, clock: ManualClock, stores: Stores
) -> None:
    def entropy(n: int) -> str:
        return "same" if n == 16 else secrets.token_urlsafe(n)

    tokens = Tokens(coord, clock=clock, entropy=entropy)
    issued = tokens.create_enrollment_token(P, ACTOR, max_uses=3, ephemeral=True)
    tokens.enroll(issued.token, None, me())
    with pytest.raises(FactoryExists):
        tokens.enroll(issued.token, None, me())
    assert stored(stores, issued.token)["uses"] == 1


def test_enrollment_a_token_that_is_not_ephemeral_needs_a_name(
    tokens: Tokens, stores: Stores
) -> None:
    issued = tokens.create_enrollment_token(P, ACTOR, max_uses=2)
    with pytest.raises(ValidationFailed) as caught:
        tokens.enroll(issued.token, None, me())
    assert [(p.path, p.code) for p in caught.value.problems] == [("name", "missing")]
    assert stored(stores, issued.token)["uses"] == 0


def test_enrollment_name_prefix_only_with_ephemeral_and_uses_in_bounds(tokens: Tokens) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"name_prefix": "w"}, "namePrefix"),
        ({"ephemeral": True, "name_prefix": "-bad"}, "namePrefix"),
        ({"max_uses": 0}, "maxUses"),
        ({"max_uses": MAX_USES + 1}, "maxUses"),
    ]
    for kw, path in cases:
        with pytest.raises(ValidationFailed) as caught:
            tokens.create_enrollment_token(P, ACTOR, **kw)
        assert [p.path for p in caught.value.problems] == [path], kw
    assert tokens.create_enrollment_token(P, ACTOR, max_uses=MAX_USES).maxUses == MAX_USES


# --- HTTP ---------------------------------------------------------------------------------


def create(app_context: AppContext, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    status, reply, _ = call(
        app_context,
        tokens_http.create_enrollment_token,
        "POST",
        "/api/fleet/enrollment-tokens",
        OPERATOR,
        body,
        product=P,
    )
    return status, reply


def test_enrollment_multi_use_http_create_enroll_without_a_name_and_list(
    app_context: AppContext, coord: Coordinator
) -> None:
    status, issued = create(app_context, {"maxUses": 50, "ephemeral": True, "namePrefix": "aca"})
    assert status == 201
    assert (issued["maxUses"], issued["ephemeral"], issued["namePrefix"]) == (50, True, "aca")
    documented(issued, "IssuedEnrollmentToken")
    status, enrolled, _ = call(
        app_context,
        tokens_http.enroll_factory,
        "POST",
        "/api/fleet/factories/enroll",
        issued["token"],
        {"capabilities": ["python"], "seats": 1},
    )
    assert status == 201 and re.match(r"^aca-[0-9a-f]{8}$", enrolled["factoryId"])
    documented(enrolled, "Enrollment")
    (factory,) = coord.factories(P)
    assert factory.id == f"factory-{enrolled['factoryId']}" and factory.ephemeral
    _, tokens_listed, _ = call(
        app_context,
        tokens_http.list_enrollment_tokens,
        "GET",
        "/api/fleet/enrollment-tokens",
        OPERATOR,
        product=P,
    )
    (view,) = tokens_listed["tokens"]
    assert (view["status"], view["uses"], view["maxUses"], view["ephemeral"]) == (
        "active",
        1,
        50,
        True,
    )
    documented(tokens_listed, "EnrollmentTokenList")


def test_enrollment_multi_use_http_defaults_are_single_use(app_context: AppContext) -> None:
    status, issued = create(app_context, {})
    assert status == 201
    assert (issued["maxUses"], issued["ephemeral"], issued["namePrefix"]) == (1, False, None)
    status, body, _ = call(
        app_context,
        tokens_http.enroll_factory,
        "POST",
        "/api/fleet/factories/enroll",
        issued["token"],
        {"capabilities": ["python"]},
    )
    assert status == 400 and [p["path"] for p in body["details"]["problems"]] == ["name"]


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"maxUses": 0}, "maxUses"),
        ({"maxUses": 10001}, "maxUses"),
        ({"maxUses": 2.5}, "maxUses"),
        ({"maxUses": 2.0}, "maxUses"),
        ({"maxUses": "3"}, "maxUses"),
        ({"maxUses": True}, "maxUses"),
        ({"maxUses": None}, "maxUses"),
        ({"ephemeral": "yes"}, "ephemeral"),
        ({"ephemeral": 1}, "ephemeral"),
        ({"ephemeral": True, "namePrefix": "bad prefix"}, "namePrefix"),
        ({"ephemeral": True, "namePrefix": "x" * 56}, "namePrefix"),
        ({"namePrefix": "worker"}, "namePrefix"),  # names are generated for ephemeral only
    ],
)
def test_enrollment_multi_use_http_bad_bodies_are_400_naming_the_field(
    app_context: AppContext, body: dict[str, Any], path: str
) -> None:
    status, reply = create(app_context, body)
    assert status == 400, reply
    assert [p["path"] for p in reply["details"]["problems"]] == [path]


def test_enrollment_multi_use_http_bounds_are_admitted(app_context: AppContext) -> None:
    for uses in (1, 10000):
        status, issued = create(app_context, {"maxUses": uses})
        assert (status, issued["maxUses"]) == (201, uses)
    status, issued = create(app_context, {"ephemeral": True, "namePrefix": "x" * 55})
    assert status == 201


# --- the healer: an ephemeral factory is pruned once down ---------------------------------

CONFIG = HealthConfig().resolved(90)  # stale 90 s, down 600 s, pruned after 7 days
NOW = T0 + timedelta(days=30)
WEEK = 7 * 24 * 3600


def factory(silent: float, *, ephemeral: bool, **kw: Any) -> Factory:
    return Factory(
        id="factory-f1",
        productId=P,
        lastSeen=NOW - timedelta(seconds=silent),
        ephemeral=ephemeral,
        **kw,
    )


def verdict(silent: float, *, ephemeral: bool, **kw: Any) -> str | None:
    plan = plan_heal(NOW, CONFIG, [factory(silent, ephemeral=ephemeral, **kw)], {}, [])
    if plan.prune:
        return "pruned"
    return plan.statuses[0].new if plan.statuses else None


@pytest.mark.parametrize(
    ("silent", "normal", "ephemeral"),
    [
        (89, None, None),
        (90, "stale", "stale"),
        (599, "stale", "stale"),
        (600, "down", "pruned"),  # an ephemeral factory never comes back under its name
        (WEEK - 1, "down", "pruned"),
        (WEEK, "pruned", "pruned"),
    ],
)
def test_enrollment_ephemeral_healer_prunes_it_at_down_after(
    silent: float, normal: str | None, ephemeral: str | None
) -> None:
    assert verdict(silent, ephemeral=False) == normal
    assert verdict(silent, ephemeral=True) == ephemeral


def test_enrollment_ephemeral_healer_revoked_is_pruned_at_down_after_too() -> None:
    assert verdict(599, ephemeral=True, revoked=True) is None
    assert verdict(600, ephemeral=True, revoked=True) == "pruned"
    assert verdict(600, ephemeral=False, revoked=True) is None


def test_enrollment_ephemeral_healer_leaves_a_pruned_holders_jobs_to_the_reaper() -> None:
    """Down: a normal holder's job is taken back by the healer; an ephemeral holder is pruned
    in the same pass, and the reaper takes back what a deregistered holder holds."""
    from fleet.domain import jobs as J
    from fleet.domain.stages import Action

    job = J.assign(queued(id="j1", leaseSeconds=7200), "f1", now=NOW - timedelta(hours=1))
    job = J.holder_report(job, Action.START, "f1", now=NOW - timedelta(hours=1))
    normal = plan_heal(NOW, CONFIG, [factory(700, ephemeral=False)], {}, [job])
    assert [r.kind for r in normal.releases] == ["down"] and normal.prune == ()
    ephemeral = plan_heal(NOW, CONFIG, [factory(700, ephemeral=True)], {}, [job])
    assert ephemeral.releases == () and ephemeral.prune == ("f1",)


STATUSES = ("live", "stale", "down")
SILENCES = (10, 89, 90, 300, 599, 600, 601, 3600, WEEK - 1, WEEK, WEEK + 1)


@pytest.mark.parametrize("ephemeral", [False, True])
@pytest.mark.parametrize("revoked", [False, True])
@pytest.mark.parametrize("status", STATUSES)
def test_enrollment_ephemeral_sweep_agrees_with_the_healer(
    ephemeral: bool, revoked: bool, status: str
) -> None:
    """The sweep finds a factory exactly when the healer's plan has a verdict for it, on the
    row ``FLEET_FACTORIES`` reads of its document."""
    for silent in SILENCES:
        doc = factory(silent, ephemeral=ephemeral, revoked=revoked, status=status)
        row = {k: v for k, v in doc.to_doc().items() if k in FLEET_FACTORIES.select}
        plan = plan_heal(NOW, CONFIG, [doc], {}, [])
        planned = bool(plan.prune or plan.statuses)
        assert _needs_verdict(row, None, NOW, CONFIG) == planned, (silent, json.dumps(row))


# --- the factory CLI's client: no name, the coordinator's choice ------------------------

API = "http://fleet.test/api"


def forward(app_context: AppContext) -> Callable[[Any], tuple[int, dict[str, str], str]]:
    """A ``responses`` callback answering with the coordinator's own enroll handler."""

    def answer(request: Any) -> tuple[int, dict[str, str], str]:
        token = request.headers["Authorization"].removeprefix("Bearer ")
        status, body, _ = call(
            app_context,
            tokens_http.enroll_factory,
            "POST",
            "/api/fleet/factories/enroll",
            token,
            json.loads(request.body),
        )
        return status, {"Content-Type": "application/json"}, json.dumps(body)

    return answer


def sent_names(rsps: responses.RequestsMock) -> list[str | None]:
    return [json.loads(c.request.body or "{}").get("name") for c in rsps.calls]


def test_enrollment_client_without_a_name_lets_an_ephemeral_token_name_it(
    app_context: AppContext, tokens: Tokens, rsps: responses.RequestsMock
) -> None:
    issued = tokens.create_enrollment_token(P, ACTOR, max_uses=2, ephemeral=True)
    rsps.add_callback(
        responses.POST, f"{API}/fleet/factories/enroll", callback=forward(app_context)
    )
    answer = FleetClient(API, None).enroll(
        issued.token,
        name=None,
        capabilities=["python"],
        seats=1,
        version="v",
        fallback_name="host-1",
    )
    assert GENERATED.match(answer["factoryId"]) and sent_names(rsps) == [None]


def test_enrollment_client_without_a_name_falls_back_for_a_token_that_is_not_ephemeral(
    app_context: AppContext, tokens: Tokens, stores: Stores, rsps: responses.RequestsMock
) -> None:
    issued = tokens.create_enrollment_token(P, ACTOR)
    rsps.add_callback(
        responses.POST, f"{API}/fleet/factories/enroll", callback=forward(app_context)
    )
    client = FleetClient(API, None)
    with pytest.raises(Rejected):  # without a fallback: the 400 itself
        client.enroll(issued.token, name=None, capabilities=["python"], seats=1, version="v")
    answer = client.enroll(
        issued.token,
        name=None,
        capabilities=["python"],
        seats=1,
        version="v",
        fallback_name="host-1",
    )
    assert answer["factoryId"] == "host-1"
    assert sent_names(rsps) == [None, None, "host-1"]
    assert stored(stores, issued.token)["usedBy"] == "host-1"


def test_enrollment_client_with_a_name_sends_it_and_never_falls_back(
    rsps: responses.RequestsMock,
) -> None:
    rsps.post(
        f"{API}/fleet/factories/enroll",
        status=400,
        json={
            "error": "validation_failed",
            "message": "invalid request",
            "details": {"problems": [{"path": "name", "code": "missing", "message": "?"}]},
        },
    )
    with pytest.raises(Rejected):
        FleetClient(API, None).enroll(
            "fle_x",
            name="mine",
            capabilities=[],
            seats=1,
            version="v",
            fallback_name="host-1",
        )
    assert sent_names(rsps) == ["mine"]
