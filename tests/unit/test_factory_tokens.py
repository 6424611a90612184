"""A factory's tokens after enrollment, on the in-memory twin: a factory's rotation retires
only the token it called with and never starts from a retired one; an operator's retires
them all; revocation, deregistration and the healer's prune leave no token working, whatever
races them or fails midway, and the gate poll's cache forgets them on the instance that did
it (elsewhere within its TTL)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest

from fleet.context import AppContext
from fleet.coordinator import Coordinator
from fleet.coordinator.clock import ManualClock
from fleet.coordinator.factory_tokens import FactoryTokens, TokenInGrace
from fleet.coordinator.fleet_health import FleetHealth
from fleet.coordinator.identity import Principal
from fleet.coordinator.service import SYSTEM_PARTITION
from fleet.coordinator.token_store import TokenDoc, TokenStore, VerifiedCache
from fleet.coordinator.tokens import INVALID, FactoryRevoked, Tokens
from fleet.domain.fleet_state import Beat
from fleet.domain.healer import HEALER, HealthConfig
from fleet.errors import StoreUnavailable, Unauthorized
from fleet.http import factories, fleet_ops
from fleet.http import tokens as tokens_http
from fleet.http.parsing import FactorySelf
from fleet.http.responses import status_for
from fleet.store.memory import MemoryTableStore
from fleet.store.ports import Stores
from fleet.store.queries import TOKENS_OF_FACTORY
from tests.support.handlers import OPERATOR, call

P = "prod"
OPERATOR_ACTOR = "operator:test"


def enroll(tokens: Tokens, name: str = "f1", caps: tuple[str, ...] = ("python",), **kw: Any) -> str:
    issued = tokens.create_enrollment_token(P, OPERATOR_ACTOR, **kw)
    return tokens.enroll(issued.token, name, FactorySelf(capabilities=caps)).token


def factory_of(tokens: Tokens, token: str, *, cached: bool = False) -> Principal:
    return tokens.authenticate(token, None, want="any", cached=cached)


def refused(call: Callable[[], object]) -> str:
    with pytest.raises(Unauthorized) as caught:
        call()
    return caught.value.message


def stored(stores: Stores, factory: str = "f1") -> list[TokenDoc]:
    rows = stores.documents.query(
        TOKENS_OF_FACTORY, SYSTEM_PARTITION, {"product": P, "factoryId": factory}
    )
    return [TokenDoc.from_doc(r) for r in rows]


def operator(tokens: Tokens) -> Principal:
    return tokens.authenticate(OPERATOR, P, want="operator")


# --- a factory's own rotation ----------------------------------------------------------


def test_factory_tokens_rotation_from_grace_is_409_and_writes_nothing(
    tokens: Tokens, stores: Stores
) -> None:
    old = enroll(tokens)
    tokens.rotate(factory_of(tokens, old), "f1")
    before = stored(stores)
    with pytest.raises(TokenInGrace) as caught:
        tokens.rotate(factory_of(tokens, old), "f1")
    assert status_for(caught.value) == 409 and caught.value.code == "token_in_grace"
    assert stored(stores) == before


def test_factory_tokens_rotation_retires_only_the_calling_token(
    tokens: Tokens, stores: Stores, clock: ManualClock
) -> None:
    mine = enroll(tokens)
    store = TokenStore(stores.documents, VerifiedCache(1), secrets.token_urlsafe)
    other, _ = store.issue("factory", P, "test", clock.now(), factoryId="f1")
    rotation = tokens.rotate(factory_of(tokens, mine), "f1")
    graced = {t.createdBy.split(":")[0]: t.graceUntil for t in stored(stores)}
    # Only the enrollment's token (the caller) is retired; the other and the new one are not.
    assert graced == {"enrollment": rotation.previous_valid_until, "test": None, "factory": None}
    clock.advance(300)
    assert refused(lambda: factory_of(tokens, mine)) == INVALID
    assert factory_of(tokens, other).id == "f1"
    assert factory_of(tokens, rotation.token).id == "f1"


def test_factory_tokens_a_retired_token_cannot_retire_the_current_one(
    tokens: Tokens, clock: ManualClock
) -> None:
    """An operator rotated the factory (the old token is in its grace); a thief holding the
    old token can neither mint a new one nor cut the factory's new token short."""
    old = enroll(tokens)
    current = tokens.rotate(operator(tokens), "f1").token
    with pytest.raises(TokenInGrace):
        tokens.rotate(factory_of(tokens, old), "f1")
    clock.advance(3600)
    assert factory_of(tokens, current).id == "f1"


def test_factory_tokens_a_factory_principal_without_its_token_cannot_rotate(
    tokens: Tokens,
) -> None:
    enroll(tokens)
    assert refused(lambda: tokens.rotate(Principal("factory", "f1", P), "f1")) == INVALID


class RacingStore(TokenStore):
    """A token store another request can race: ``before_issue`` runs (to its end) before
    its next ``issue``, ``after_revoke`` after its next ``revoke_of_factory``."""

    before_issue: Callable[[], object] | None = None
    after_revoke: Callable[[], object] | None = None

    def issue(
        self, kind: Any, product: str, actor: str, now: datetime, **fields: Any
    ) -> tuple[str, TokenDoc]:
        race, self.before_issue = self.before_issue, None
        if race is not None:
            race()
        return super().issue(kind, product, actor, now, **fields)

    def revoke_of_factory(self, product: str, factory_id: str, actor: str, now: datetime) -> int:
        count = super().revoke_of_factory(product, factory_id, actor, now)
        race, self.after_revoke = self.after_revoke, None
        if race is not None:
            race()
        return count


def racing(coord: Coordinator, clock: ManualClock) -> tuple[FactoryTokens, RacingStore]:
    """Another instance's rotations and revocations, over a store that can be raced."""
    store = RacingStore(coord.docs, VerifiedCache(10), secrets.token_urlsafe)
    return FactoryTokens(
        store, coord.docs, clock, grace_seconds=300, fleet_log=coord.fleet_log
    ), store


def test_factory_tokens_two_racing_rotations_of_one_token_leave_one_new_token(
    tokens: Tokens, coord: Coordinator, clock: ManualClock, stores: Stores
) -> None:
    old = enroll(tokens)
    caller = factory_of(tokens, old)
    rotations, store = racing(coord, clock)
    won: list[str] = []
    store.before_issue = lambda: won.append(tokens.rotate(caller, "f1").token)
    with pytest.raises(TokenInGrace):
        rotations.rotate(caller, "f1")  # read the token before the other retired it
    live = [t for t in stored(stores) if t.valid_at(clock.now()) and t.graceUntil is None]
    assert len(won) == 1 and [t.createdBy for t in live] == ["factory:f1"]
    assert factory_of(tokens, won[0]).id == "f1"
    lost = [t for t in stored(stores) if t.revoked]
    assert len(lost) == 1  # the loser's new token died unused


# --- an operator's rotation ------------------------------------------------------------


def test_factory_tokens_an_operators_rotation_retires_every_current_token(
    tokens: Tokens, stores: Stores, clock: ManualClock
) -> None:
    first = enroll(tokens)
    store = TokenStore(stores.documents, VerifiedCache(1), secrets.token_urlsafe)
    second, _ = store.issue("factory", P, "test", clock.now(), factoryId="f1")
    rotation = tokens.rotate(operator(tokens), "f1")
    clock.advance(300)
    for token in (first, second):
        assert refused(lambda t=token: factory_of(tokens, t)) == INVALID
    assert factory_of(tokens, rotation.token).id == "f1"


def test_factory_tokens_an_operators_rotation_keeps_the_allowlist_when_no_token_is_live(
    tokens: Tokens,
) -> None:
    enroll(tokens, caps=("python",), capabilities=["python"])
    tokens.revoke_tokens(P, "f1", OPERATOR_ACTOR)  # every token gone, the factory still live
    new = tokens.rotate(operator(tokens), "f1").token
    assert factory_of(tokens, new).allowed_capabilities == frozenset({"python"})


# --- revocation ------------------------------------------------------------------------


def test_factory_tokens_a_revocation_that_fails_midway_leaves_the_tokens_refused(
    tokens: Tokens, coord: Coordinator, stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = enroll(tokens)
    # The tokens' patches go through; the factory's mark is refused (a throttled store).
    original = stores.documents.patch

    def patch(partition: str, doc_id: str, ops: Any, **kw: Any) -> Any:
        if doc_id == "factory-f1":
            raise StoreUnavailable("throttled")
        return original(partition, doc_id, ops, **kw)

    monkeypatch.setattr(stores.documents, "patch", patch)
    with pytest.raises(StoreUnavailable):
        tokens.revoke_factory(P, "f1", OPERATOR_ACTOR)
    assert not coord.factories(P)[0].revoked  # not marked...
    assert refused(lambda: factory_of(tokens, token)) == INVALID  # ...but refused already


def test_factory_tokens_a_rotation_racing_a_revocation_is_revoked_too(
    tokens: Tokens, coord: Coordinator, clock: ManualClock
) -> None:
    enroll(tokens)
    revocations, store = racing(coord, clock)
    rotated: list[str] = []
    # After its first pass over the tokens, before the mark: an operator rotates.
    store.after_revoke = lambda: rotated.append(tokens.rotate(operator(tokens), "f1").token)
    revocations.revoke_factory(P, "f1", OPERATOR_ACTOR)
    assert coord.factories(P)[0].revoked
    assert refused(lambda: factory_of(tokens, rotated[0])) == INVALID
    with pytest.raises(FactoryRevoked):
        tokens.rotate(operator(tokens), "f1")


# --- deregistration and the healer's prune ---------------------------------------------


def beat() -> Beat:
    return Beat(capabilities=("python",), seats=1, load=0)


def test_factory_tokens_deregistration_revokes_them_naming_who(
    app_context: AppContext, tokens: Tokens, stores: Stores
) -> None:
    token = enroll(tokens)
    factory_of(tokens, token, cached=True)
    app_context.health.deregister(P, "f1", "operator:alice")
    assert refused(lambda: factory_of(tokens, token, cached=True)) == INVALID
    assert {(t.revoked, t.revokedBy) for t in stored(stores)} == {(True, "operator:alice")}


def test_factory_tokens_a_factory_deregistering_itself_is_401_next_even_on_the_gate(
    app_context: AppContext, tokens: Tokens, coord: Coordinator
) -> None:
    token = enroll(tokens)
    gate = ("GET", "/api/fleet/queue-state", token)
    assert call(app_context, fleet_ops.queue_state, *gate).status == 200
    status, body, _ = call(
        app_context,
        factories.deregister_factory,
        "DELETE",
        "/api/fleet/factories/f1",
        token,
        id="f1",
    )
    assert (status, body) == (200, {"factory": "f1", "deregistered": True})
    assert call(app_context, fleet_ops.queue_state, *gate).status == 401
    status, _, _ = call(
        app_context,
        tokens_http.rotate_factory_token,
        "POST",
        "/api/fleet/factories/f1/token/rotate",
        token,
        id="f1",
    )
    assert status == 401
    # It left cleanly: it may enroll again, and its new token works.
    again = enroll(tokens)
    assert (
        call(app_context, fleet_ops.queue_state, "GET", "/api/fleet/queue-state", again).status
        == 200
    )
    assert not coord.factories(P)[0].deregistered


def test_factory_tokens_a_pruned_factorys_tokens_are_revoked_by_the_healer(
    app_context: AppContext, tokens: Tokens, stores: Stores, clock: ManualClock
) -> None:
    token = enroll(tokens)
    app_context.health.heartbeat(P, "f1", beat())
    clock.advance(7 * 24 * 3600 - 5)
    factory_of(tokens, token, cached=True)
    clock.advance(5)
    assert app_context.health.heal(P).pruned == ["f1"]
    assert refused(lambda: factory_of(tokens, token, cached=True)) == INVALID
    assert {(t.revoked, t.revokedBy) for t in stored(stores)} == {(True, HEALER)}


def test_factory_tokens_another_instance_forgets_them_within_the_gate_cache_ttl(
    coord: Coordinator, clock: ManualClock
) -> None:
    """The bound: the instance that deregisters (or prunes, or revokes) refuses at once;
    another instance's gate poll may trust its cache for up to ``gate_cache_seconds`` (30 s);
    every other endpoint reads the token and refuses it at once."""
    here, there = Tokens(coord, clock=clock), Tokens(coord, clock=clock)
    health = FleetHealth(coord, HealthConfig(), tokens=here)
    token = enroll(here)
    for instance in (here, there):
        factory_of(instance, token, cached=True)
    health.deregister(P, "f1", "factory:f1")
    assert refused(lambda: factory_of(here, token, cached=True)) == INVALID
    clock.advance(29)
    assert factory_of(there, token, cached=True).id == "f1"
    assert refused(lambda: factory_of(there, token)) == INVALID
    clock.advance(1)
    assert refused(lambda: factory_of(there, token, cached=True)) == INVALID


def test_factory_tokens_deregistration_without_the_apps_tokens_still_revokes_them(
    coord: Coordinator, tokens: Tokens, stores: Stores
) -> None:
    token = enroll(tokens)
    FleetHealth(coord).deregister(P, "f1", "operator:alice")
    assert refused(lambda: factory_of(tokens, token)) == INVALID


def test_factory_tokens_a_deregistration_that_fails_midway_leaves_them_refused(
    app_context: AppContext, tokens: Tokens, stores: Stores, coord: Coordinator
) -> None:
    token = enroll(tokens)
    app_context.health.heartbeat(P, "f1", beat())
    assert isinstance(stores.tables, MemoryTableStore)
    stores.tables.inject("table_write", StoreUnavailable("throttled"))
    with pytest.raises(StoreUnavailable):
        app_context.health.deregister(P, "f1", "operator:alice")
    assert coord.factories(P)[0].deregistered
    assert refused(lambda: factory_of(tokens, token)) == INVALID
    app_context.health.deregister(P, "f1", "operator:alice")  # done again: it completes
    status, _, _ = call(
        app_context,
        factories.deregister_factory,
        "DELETE",
        "/api/fleet/factories/f1",
        OPERATOR,
        product=P,
        id="f1",
    )
    assert status == 200
