"""Scaler tokens (autoscalers: KEDA, ``fleet-factory autoscale``) on the in-memory twin with
an injected clock: created, listed and revoked by the product's admins, stored only as their
SHA-256, shown once; the caller ``demand`` takes them (for their own product, through the
per-instance cache), and every other operation of the app refuses them."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

import azure.functions as func
import pytest

from fleet.context import AppContext
from fleet.coordinator import Coordinator
from fleet.coordinator.clock import ManualClock
from fleet.coordinator.identity import SCALER_ONLY, Caller, Principal, Role, authenticate
from fleet.coordinator.tokens import (
    INVALID,
    ScalerTokenExists,
    ScalerTokenNotFound,
    Tokens,
    hash_token,
)
from fleet.errors import Forbidden, Unauthorized, ValidationFailed
from fleet.http import jobs, scaler_tokens
from fleet.http.openapi import build_document
from fleet.http.operation import Call, Operation, Operations, Reply, operation_of
from fleet.http.parsing import FactorySelf
from fleet.http.responses import reply
from fleet.http.views import View
from fleet.store.memory import MemoryDocumentStore
from fleet.store.ports import Stores
from tests.support.handlers import OPERATOR, call, documented, functions

P = "prod"
ACTOR = "operator:test"
ROUTE = "/api/fleet/scaler-tokens"


def docs(stores: Stores) -> MemoryDocumentStore:
    assert isinstance(stores.documents, MemoryDocumentStore)
    return stores.documents


def scaler(tokens: Tokens, name: str = "keda", product: str = P, **kw: Any) -> str:
    return tokens.create_scaler_token(product, name, ACTOR, **kw).token


def person(tokens: Tokens, name: str, role: Role, products: tuple[str, ...] = ("*",)) -> str:
    return tokens.create_operator_token(name, role, products, ACTOR).token


def factory(tokens: Tokens, name: str = "f1") -> str:
    issued = tokens.create_enrollment_token(P, ACTOR)
    return tokens.enroll(issued.token, name, FactorySelf(capabilities=("python",))).token


def source(token: str, product: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if product is not None:
        headers["X-Fleet-Product"] = product
    return headers


def as_demand(tokens: Tokens, token: str, product: str | None = None) -> Principal:
    """The principal the demand poll's caller admits (a ``GET``: any operator role)."""
    return authenticate(tokens, source(token, product), "demand", role="viewer")


def refused(call: Callable[[], object]) -> str:
    with pytest.raises(Unauthorized) as caught:
        call()
    return caught.value.message


def forbidden(call: Callable[[], object]) -> str:
    with pytest.raises(Forbidden) as caught:
        call()
    return caught.value.message


# --- issuing, storing, listing, revoking ------------------------------------------------


def test_scaler_tokens_are_prefixed_and_stored_only_as_sha256(
    tokens: Tokens, stores: Stores
) -> None:
    issued = tokens.create_scaler_token(P, "keda", ACTOR)
    assert issued.token.startswith("fls_") and len(issued.token) >= 4 + 43
    assert (issued.name, issued.product, issued.expiresAt) == ("keda", P, None)
    stored = json.dumps(docs(stores).all_docs())
    assert issued.token not in stored and hash_token(issued.token) in stored
    [doc] = [d for d in docs(stores).all_docs() if d.get("kind") == "scaler"]
    assert doc["id"] == f"tok-{hash_token(issued.token)}" and doc["productId"] == "_system"
    assert (doc["name"], doc["product"], doc["createdBy"]) == ("keda", P, ACTOR)
    assert "expiresAt" not in doc
    [listed] = tokens.list_scaler_tokens(P)
    assert listed == {
        "id": issued.id,
        "name": "keda",
        "product": P,
        "status": "active",
        "createdAt": "2026-01-01T00:00:00.000000Z",
        "createdBy": ACTOR,
        "expiresAt": None,
        "revokedAt": None,
        "revokedBy": None,
    }
    assert tokens.list_scaler_tokens("other") == []


def test_scaler_tokens_prove_a_named_scaler_of_their_product(tokens: Tokens) -> None:
    principal = as_demand(tokens, scaler(tokens, "keda"))
    assert (principal.kind, principal.id, principal.product) == ("scaler", "keda", P)
    assert principal.actor == "scaler:keda"
    assert as_demand(tokens, scaler(tokens, "ci"), P).product == P  # naming its own: fine


def test_scaler_tokens_names_are_unique_among_the_products_live_ones(
    tokens: Tokens, clock: ManualClock
) -> None:
    first = tokens.create_scaler_token(P, "keda", ACTOR)
    with pytest.raises(ScalerTokenExists) as caught:
        tokens.create_scaler_token(P, "keda", ACTOR)
    assert caught.value.code == "scaler_token_exists"
    scaler(tokens, "keda", "other")  # another product's names are its own
    tokens.revoke_scaler_token(P, first.id, ACTOR)
    scaler(tokens, "keda", expires_in_seconds=60)  # a revoked one frees its name
    clock.advance(60)
    scaler(tokens, "keda")  # so does an expired one
    assert [t["status"] for t in tokens.list_scaler_tokens(P)] == ["revoked", "expired", "active"]


class _RaceOnce(MemoryDocumentStore):
    """Runs ``then`` once, right after answering a query: another instance's write landing
    between this one's check and its own write."""

    then: Callable[[], None] | None = None

    def query(self, query: Any, partition: str, params: Mapping[str, Any] | None = None) -> Any:
        rows = super().query(query, partition, params)
        then, self.then = self.then, None
        if then is not None:
            then()
        return rows


def test_scaler_tokens_racing_creations_of_one_name_never_both_stand(
    stores: Stores, clock: ManualClock
) -> None:
    racing = _RaceOnce(stores.counters)
    coord = Coordinator(
        Stores(
            documents=racing,
            tables=stores.tables,
            blobs=stores.blobs,
            counters=stores.counters,
            queues=stores.queues,
        ),
        clock=clock,
    )
    here, there = Tokens(coord, clock=clock), Tokens(coord, clock=clock)
    won: list[str] = []
    racing.then = lambda: won.append(there.create_scaler_token(P, "keda", ACTOR).id)
    with pytest.raises(ScalerTokenExists):
        here.create_scaler_token(P, "keda", ACTOR)  # checked before the other wrote
    statuses = {t["id"]: t["status"] for t in here.list_scaler_tokens(P)}
    assert statuses.pop(won[0]) == "active"
    assert list(statuses.values()) == ["revoked"]  # its own, never shown to anyone


def test_scaler_tokens_names_and_expiry_are_bounded(tokens: Tokens) -> None:
    for name, expires, path in (
        ("bad name", None, "name"),
        ("x" * 65, None, "name"),
        ("keda", 59, "expiresInSeconds"),
        ("keda", 366 * 24 * 3600 + 1, "expiresInSeconds"),
    ):
        with pytest.raises(ValidationFailed) as caught:
            tokens.create_scaler_token(P, name, ACTOR, expires_in_seconds=expires)
        assert [p.path for p in caught.value.problems] == [path], (name, expires)
    assert tokens.list_scaler_tokens(P) == []


def test_scaler_tokens_revoked_or_expired_are_refused(tokens: Tokens, clock: ManualClock) -> None:
    revoked = tokens.create_scaler_token(P, "keda", ACTOR)
    as_demand(tokens, revoked.token)  # verified: cached on this instance
    view = tokens.revoke_scaler_token(P, revoked.id, "operator:root")
    assert (view["status"], view["revokedBy"]) == ("revoked", "operator:root")
    # The revoking instance forgets it at once, even where the cache is trusted.
    assert refused(lambda: as_demand(tokens, revoked.token)) == INVALID
    again = tokens.revoke_scaler_token(P, revoked.id, "operator:other")
    assert again["revokedBy"] == "operator:root"  # revoking again changes nothing
    expiring = scaler(tokens, "ci", expires_in_seconds=60)
    as_demand(tokens, expiring)
    clock.advance(60)
    assert refused(lambda: as_demand(tokens, expiring)) == INVALID  # the cache never outlives it
    for unknown in ("0123456789ab", "nope"):
        with pytest.raises(ScalerTokenNotFound):
            tokens.revoke_scaler_token(P, unknown, ACTOR)
    with pytest.raises(ScalerTokenNotFound):  # another product's token is not found here
        tokens.revoke_scaler_token("other", revoked.id, ACTOR)


# --- the demand caller --------------------------------------------------------------------


def test_scaler_tokens_demand_admits_operators_as_for_any_read(tokens: Tokens) -> None:
    viewer = person(tokens, "vera", "viewer", (P,))
    principal = as_demand(tokens, viewer, P)
    assert (principal.kind, principal.id, principal.product) == ("operator", "vera", P)
    assert as_demand(tokens, OPERATOR, "anything").kind == "operator"  # bootstrap: every one
    message = forbidden(lambda: as_demand(tokens, viewer, "other"))  # outside its products
    assert message == "this token is not for product other"
    with pytest.raises(Forbidden):  # the operation's role still counts
        authenticate(tokens, source(viewer, P), "demand", role="operator")


def test_scaler_tokens_demand_refuses_another_products_scaler_and_factories(
    tokens: Tokens,
) -> None:
    token = scaler(tokens, "keda")
    assert (
        forbidden(lambda: as_demand(tokens, token, "other")) == "this token is for another product"
    )
    assert "factory tokens cannot" in forbidden(lambda: as_demand(tokens, factory(tokens)))
    assert refused(lambda: as_demand(tokens, "fls_" + "x" * 43)) == INVALID


@pytest.mark.parametrize("caller", ["factory", "holder", "operator", "any", "gate"])
def test_scaler_tokens_every_other_caller_refuses_a_scaler_token(
    tokens: Tokens, caller: Caller
) -> None:
    token = scaler(tokens, "keda")
    assert forbidden(lambda: authenticate(tokens, source(token, P), caller)) == SCALER_ONLY
    assert forbidden(lambda: authenticate(tokens, source(token), caller)) == SCALER_ONLY


@pytest.mark.parametrize("want", ["factory", "operator", "any"])
def test_scaler_tokens_every_other_want_refuses_a_scaler_token(tokens: Tokens, want: Any) -> None:
    token = scaler(tokens, "keda")
    for cached in (False, True):
        message = forbidden(lambda c=cached: tokens.authenticate(token, P, want=want, cached=c))
        assert message == SCALER_ONLY


def test_scaler_tokens_a_warm_demand_poll_costs_no_token_read(
    tokens: Tokens, stores: Stores, clock: ManualClock
) -> None:
    token = scaler(tokens, "keda")
    with stores.counters.measure() as cost:
        as_demand(tokens, token)
    assert cost == {"read": 1}  # the first poll reads the token, and caches it
    clock.advance(29)
    with stores.counters.measure() as cost:
        assert as_demand(tokens, token).actor == "scaler:keda"
    assert cost == {}  # within the cache window: no read
    with stores.counters.measure() as cost, pytest.raises(Forbidden):
        as_demand(tokens, token, "other")  # the cached principal keeps its product
    assert cost == {}
    clock.advance(1)
    with stores.counters.measure() as cost:
        as_demand(tokens, token)
    assert cost == {"read": 1}  # past the window: read again


def test_scaler_tokens_revocation_reaches_other_instances_within_the_cache_window(
    coord: Coordinator, clock: ManualClock
) -> None:
    here, there = Tokens(coord, clock=clock), Tokens(coord, clock=clock)  # own caches
    issued = here.create_scaler_token(P, "keda", ACTOR)
    for instance in (here, there):
        as_demand(instance, issued.token)
    here.revoke_scaler_token(P, issued.id, ACTOR)
    assert refused(lambda: as_demand(here, issued.token)) == INVALID  # at once here
    clock.advance(29)
    assert as_demand(there, issued.token).id == "keda"  # there: still trusted, within 30 s
    clock.advance(1)
    assert refused(lambda: as_demand(there, issued.token)) == INVALID


# --- a demand operation, declared as the demand route declares it ---------------------------


class _Who(View):
    actor: str
    product: str


_probe = Operations()


@_probe.route(
    "fleet/probe-demand",
    "GET",
    caller="demand",
    id="probeDemand",
    summary="Who asks for the product's demand",
    tag="fleet",
    replies={200: Reply("Who.", _Who)},
)
def probe_demand(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    return reply(_Who(actor=call.principal.actor, product=call.principal.product))


def test_scaler_tokens_an_operation_declared_for_demand_serves_scalers_and_operators(
    app_context: AppContext, tokens: Tokens
) -> None:
    app = func.FunctionApp()
    app.register_functions(_probe.blueprint(lambda: app_context))
    [function] = app.get_functions()
    served = function.get_user_function()

    def ask(token: str, product: str | None = None) -> tuple[int, Any]:
        request = func.HttpRequest(
            "GET", "/api/fleet/probe-demand", headers=source(token, product), body=b""
        )
        response = served(request)
        return response.status_code, json.loads(response.get_body())

    token = scaler(tokens, "keda")
    assert ask(token) == (200, {"actor": "scaler:keda", "product": P})
    assert ask(person(tokens, "vera", "viewer", (P,)), P) == (
        200,
        {"actor": "operator:vera", "product": P},
    )
    status, body = ask(token, "other")
    assert (status, body["error"]) == (403, "forbidden")
    assert ask(factory(tokens))[0] == 403
    operation = build_document([function])["paths"]["/api/fleet/probe-demand"]["get"]
    assert operation["description"].startswith(
        "Bearer: an operator token (any role) or the product's scaler token."
    )
    assert operation["x-fleet-role"] == "viewer"
    assert operation["security"] == [{"bearerAuth": []}]
    assert {"401", "403"} <= set(operation["responses"])


# --- through the HTTP handlers ----------------------------------------------------------------


def create(
    context: AppContext, body: Any, token: str = OPERATOR, product: str = P
) -> tuple[int, Any, func.HttpResponse]:
    return call(context, scaler_tokens.create_scaler_token, "POST", ROUTE, token, body, product)


def test_scaler_tokens_http_created_listed_and_revoked(
    app_context: AppContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    status, issued, response = create(app_context, {"name": "keda", "expiresInSeconds": 3600})
    assert status == 201 and issued["token"].startswith("fls_")
    assert (issued["name"], issued["product"]) == ("keda", P)
    assert issued["expiresAt"].startswith("2026-01-01T01:00:00")
    assert response.headers["Cache-Control"] == "no-store"
    documented(issued, "IssuedScalerToken")
    status, listed, _ = call(
        app_context, scaler_tokens.list_scaler_tokens, "GET", ROUTE, OPERATOR, None, P
    )
    assert status == 200 and [t["id"] for t in listed["tokens"]] == [issued["id"]]
    assert listed["tokens"][0]["createdBy"] == f"operator:op-{hash_token(OPERATOR)[:8]}"
    assert issued["token"] not in json.dumps(listed) and "hash" not in listed["tokens"][0]
    documented(listed, "ScalerTokenList")
    status, body, _ = call(
        app_context, scaler_tokens.list_scaler_tokens, "GET", ROUTE, OPERATOR, None, "other"
    )
    assert (status, body) == (200, {"tokens": []})  # the product's own only
    as_demand(app_context.tokens, issued["token"])  # polling: cached on this instance
    status, revoked, _ = call(
        app_context, scaler_tokens.revoke_scaler_token, "DELETE", f"{ROUTE}/{issued['id']}",
        OPERATOR, None, P, id=issued["id"],
    )  # fmt: skip
    assert (status, revoked["status"]) == (200, "revoked")
    documented(revoked, "ScalerToken")
    # Its next request is 401, the demand poll's on this instance too (forgotten at once).
    assert refused(lambda: as_demand(app_context.tokens, issued["token"])) == INVALID
    status, body, _ = call(app_context, jobs.list_jobs, "GET", "/api/fleet/jobs", issued["token"])
    assert (status, body["message"]) == (401, INVALID)
    for product, token_id in ((P, "0123456789ab"), ("other", issued["id"])):
        status, body, _ = call(
            app_context, scaler_tokens.revoke_scaler_token, "DELETE", f"{ROUTE}/{token_id}",
            OPERATOR, None, product, id=token_id,
        )  # fmt: skip
        assert (status, body["error"]) == (404, "not_found")
    assert issued["token"] not in caplog.text  # shown once: never logged
    assert "scaler token" in caplog.text  # (what was logged names it by its id)


def test_scaler_tokens_http_a_live_name_is_409(app_context: AppContext) -> None:
    assert create(app_context, {"name": "keda"})[0] == 201
    status, body, _ = create(app_context, {"name": "keda"})
    assert (status, body["error"]) == (409, "scaler_token_exists")
    assert create(app_context, {"name": "keda"}, product="other")[0] == 201


def test_scaler_tokens_http_bad_bodies_are_400_with_field_paths(
    app_context: AppContext, tokens: Tokens
) -> None:
    for body, paths in (
        ({}, {"name"}),
        ({"name": "bad name"}, {"name"}),
        ({"name": "keda", "expiresInSeconds": 59}, {"expiresInSeconds"}),
        ({"name": "keda", "expiresInSeconds": 366 * 24 * 3600 + 1}, {"expiresInSeconds"}),
        ({"name": "keda", "product": "other"}, {"product"}),
    ):
        status, body_, _ = create(app_context, body)
        assert status == 400, body
        assert {p["path"] for p in body_["details"]["problems"]} == paths, body_
    assert tokens.list_scaler_tokens(P) == []


def test_scaler_tokens_http_are_the_product_admins_to_manage(
    app_context: AppContext, tokens: Tokens
) -> None:
    """Creating, listing and revoking are admins' (as enrollment tokens are): a listing says
    who holds the product's demand poll. A product-scoped admin manages its own products'."""
    issued = tokens.create_scaler_token(P, "keda", ACTOR)
    viewer, operator = person(tokens, "vera", "viewer"), person(tokens, "otto", "operator")
    scoped = person(tokens, "ada", "admin", (P,))
    for token in (viewer, operator):
        for handler, method, url, params in (
            (scaler_tokens.create_scaler_token, "POST", ROUTE, {}),
            (scaler_tokens.list_scaler_tokens, "GET", ROUTE, {}),
            (
                scaler_tokens.revoke_scaler_token,
                "DELETE",
                f"{ROUTE}/{issued.id}",
                {"id": issued.id},
            ),
        ):
            status, body, _ = call(
                app_context, handler, method, url, token, {"name": "x"}, P, **params
            )
            assert (status, body["error"]) == (403, "forbidden"), (url, body)
    assert create(app_context, {"name": "ci"}, scoped)[0] == 201
    status, body, _ = create(app_context, {"name": "ci"}, scoped, "other")
    assert (status, body["message"]) == (403, "this token is not for product other")
    status, body, _ = call(
        app_context, scaler_tokens.revoke_scaler_token, "DELETE", f"{ROUTE}/{issued.id}",
        scoped, None, P, id=issued.id,
    )  # fmt: skip
    assert (status, body["revokedBy"]) == (200, "operator:ada")


def _declared(context: AppContext) -> list[Operation]:
    found = (operation_of(f) for f in functions(context).values())
    return [op for op in found if op is not None]


def test_scaler_tokens_http_every_other_operation_refuses_a_scaler_token(
    app_context: AppContext, tokens: Tokens, stores: Stores, clock: ManualClock
) -> None:
    """Every operation of the app but those declared for the ``demand`` caller refuses a
    scaler token, live, expired or revoked (health and the OpenAPI document take no token:
    there is nothing to refuse). The body would do for enrollment, which reads its body
    before its token."""
    live = scaler(tokens, "keda")
    dead = scaler(tokens, "old", expires_in_seconds=60)
    gone = tokens.create_scaler_token(P, "gone", ACTOR)
    tokens.revoke_scaler_token(P, gone.id, ACTOR)
    clock.advance(60)
    before = docs(stores).all_docs()
    checked, sent = 0, {"name": "scaled"}
    ops = [op for op in _declared(app_context) if op.caller != "demand" and op.bearer != "none"]
    for op in ops:
        params = {
            p.name: P if p.name == "productId" else "x" for p in op.params if p.where == "path"
        }
        for token in (live, dead, gone.token):
            status, body, _ = call(
                app_context, op.handler, op.method, f"/api/{op.route}", token, sent, P, **params
            )
            assert status in (401, 403), (op.id, status, body)
        status, body, _ = call(
            app_context, op.handler, op.method, f"/api/{op.route}", live, sent, P, **params
        )
        if op.caller != "anonymous":  # enrollment and the tracker's ingest say their own
            assert (status, body["message"]) == (403, SCALER_ONLY), op.id
        checked += 1
    assert checked == len(ops) > 60
    assert docs(stores).all_docs() == before  # refused before anything was written
