"""A factory's own tokens after enrollment: rotation and revocation.

A factory token is rotated by the factory itself or an operator: the new token works at
once, the retired ones keep working for a grace period. A factory's own rotation retires only
the token it called with, and a token already in its grace period cannot rotate again (409
``token_in_grace``): a leaked token, rotated out, cannot mint fresh ones, and a thief's
rotation does not retire the factory's own token. An operator's rotation retires every
current token of the factory.

An operator revokes a factory: all its tokens are refused from the next request and the
factory document is marked ``revoked`` (the reaper then takes back the jobs it held). The
tokens are revoked both before the mark and after it: a crash between the writes leaves a
factory that is refused but not yet marked (never one that is marked and still accepted), and
a rotation racing the revocation either sees the mark or issues before the second pass.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from fleet.coordinator.audit import FleetLog
from fleet.coordinator.clock import Clock
from fleet.coordinator.identity import Principal
from fleet.coordinator.token_store import INVALID, TokenDoc, TokenStore
from fleet.domain.audit import new_event
from fleet.domain.models import Factory, format_ts
from fleet.errors import ConditionFailed, Forbidden, NotFound, Unauthorized
from fleet.store.ports import DocumentStore, Set

# The records keep the name they had when this was part of fleet.coordinator.tokens.
log = logging.getLogger("fleet.coordinator.tokens")


class FactoryNotFound(NotFound):
    """No such factory."""

    code = "not_found"


class FactoryRevoked(ConditionFailed):
    """The factory is revoked: enroll it again (after deregistering it) instead."""

    code = "factory_revoked"


class TokenInGrace(ConditionFailed):
    """This token was rotated out: it works until its grace period ends, but cannot rotate
    again. Use the token its rotation gave."""

    code = "token_in_grace"


@dataclass(frozen=True)
class Rotation:
    factory_id: str
    product: str
    token: str
    previous_valid_until: datetime


class FactoryTokens:
    """Rotation and revocation: token documents through ``store``, factory documents
    through ``docs``. A rotated-out token keeps working for ``grace_seconds``."""

    def __init__(
        self,
        store: TokenStore,
        docs: DocumentStore,
        clock: Clock,
        *,
        grace_seconds: int,
        fleet_log: FleetLog,
    ) -> None:
        self.store = store
        self.docs = docs
        self.clock = clock
        self.grace_seconds = grace_seconds
        self.log = fleet_log

    def rotate(self, principal: Principal, factory_id: str) -> Rotation:
        """A new token for the factory. The factory itself (its token's ``token_hash`` says
        which token called): only that token is retired, and one already retired is 409
        ``token_in_grace``. An operator (of the product in ``principal.product``): every
        current token of the factory is retired. Retired tokens keep working for the grace
        period; one already retired keeps its own end."""
        if principal.kind == "factory" and principal.id != factory_id:
            raise Forbidden("factory tokens can only rotate their own token")
        product = principal.product
        self._live_factory(product, factory_id)
        now = self.clock.now()
        if principal.kind == "factory":
            caller = self._calling_token(principal, product, factory_id, now)
            retiring = [caller]
            allow = caller.capabilities
        else:
            tokens = self.store.of_factory(product, factory_id)
            retiring = [t for t in tokens if t.valid_at(now)]
            allow = _allowlist(retiring or tokens)
        token, issued = self.store.issue(
            "factory", product, principal.actor, now, factoryId=factory_id, capabilities=allow
        )
        grace_until = now + timedelta(seconds=self.grace_seconds)
        retired = self.store.rotate_out(retiring, grace_until)
        if principal.kind == "factory" and retired == 0:
            # Another rotation with the same token won the conditional write first: one
            # rotation per token, so this one's new token dies unused.
            self.store.revoke(issued, principal.actor, now)
            raise TokenInGrace(
                "this token was rotated out already: it cannot rotate again", factory=factory_id
            )
        # A revocation that ran while this rotation was issuing must win: it marked the
        # factory before its last pass over the tokens, so either reading the factory now
        # sees the mark (and the new token dies here) or the new token was issued before
        # that pass (which revokes it).
        try:
            self._live_factory(product, factory_id)
        except FactoryRevoked:
            self.store.revoke_of_factory(product, factory_id, "revocation", now)
            raise
        event = new_event(
            "token_rotated",
            principal.actor,
            now,
            reason=f"{retired} token(s) retired; they work until {format_ts(grace_until)}",
            factory=factory_id,
            tokenId=issued.short_id,
        )
        self.log.beside(product, f"rotate-{issued.short_id}", event)
        log.info("factory %s in %s rotated its token", factory_id, product)
        return Rotation(
            factory_id=factory_id, product=product, token=token, previous_valid_until=grace_until
        )

    def _calling_token(
        self, principal: Principal, product: str, factory_id: str, now: datetime
    ) -> TokenDoc:
        """The token a factory called with (one point read): live, this factory's, and not
        rotated out already."""
        doc = self.store.read(principal.token_hash) if principal.token_hash else None
        if (
            doc is None
            or doc.kind != "factory"
            or doc.product != product
            or doc.factoryId != factory_id
            or not doc.valid_at(now)
        ):
            raise Unauthorized(INVALID)
        if doc.graceUntil is not None:
            raise TokenInGrace(
                "this token was rotated out already: it cannot rotate again", factory=factory_id
            )
        return doc

    def revoke_factory(self, product: str, factory_id: str, actor: str) -> int:
        """Refuse every token of the factory from the next request and mark it revoked (the
        reaper then requeues the jobs it holds). Returns how many tokens were revoked.

        The tokens are revoked first, then the factory is marked, then any token issued
        meanwhile (a racing rotation) is revoked: no moment, and no crash, leaves a marked
        factory with a token that works."""
        self._existing(product, factory_id)
        count = self.revoke_tokens(product, factory_id, actor)
        event = new_event(
            "token_revoked",
            actor,
            self.clock.now(),
            reason="revoked: its tokens are refused and its jobs go back to the queue",
            factory=factory_id,
        )
        try:
            self.log.patch(
                product,
                f"factory-{factory_id}",
                [Set("/revoked", True)],
                event,
                done=lambda doc: bool(doc.get("revoked")),  # once: its event too
            )
        except NotFound:
            raise FactoryNotFound(
                f"no factory {factory_id} in product {product}", factory=factory_id
            ) from None
        count += self.revoke_tokens(product, factory_id, actor)
        log.info("factory %s in %s revoked by %s (%d tokens)", factory_id, product, actor, count)
        return count

    def revoke_tokens(self, product: str, factory_id: str, actor: str) -> int:
        """Refuse every token of the factory from the next request, without marking the
        factory revoked (for deregistration: it left cleanly, it may enroll again)."""
        return self.store.revoke_of_factory(product, factory_id, actor, self.clock.now())

    def _existing(self, product: str, factory_id: str) -> Factory:
        try:
            return Factory.from_doc(self.docs.read(product, f"factory-{factory_id}"))
        except NotFound:
            raise FactoryNotFound(
                f"no factory {factory_id} in product {product}", factory=factory_id
            ) from None

    def _live_factory(self, product: str, factory_id: str) -> Factory:
        factory = self._existing(product, factory_id)
        if factory.revoked or factory.deregistered:
            raise FactoryRevoked(
                f"factory {factory_id} is revoked or deregistered; enroll it again",
                factory=factory_id,
            )
        return factory


def _allowlist(tokens: list[TokenDoc]) -> tuple[str, ...] | None:
    """The capability allowlist a new token of the factory inherits: its newest token's (all
    its tokens descend from one enrollment; after a re-enrollment, the newest is the one)."""
    newest = max(tokens, key=lambda t: t.createdAt, default=None)
    return newest.capabilities if newest is not None else None
