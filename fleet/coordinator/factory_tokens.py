"""A factory's own tokens after enrollment: rotation and revocation.

A factory token is rotated by the factory itself or an operator: the new token works at
once, the old ones keep working for a grace period. An operator revokes a factory: all its
tokens are refused from the next request and the factory document is marked ``revoked``
(the reaper then takes back the jobs it held).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from fleet.coordinator.clock import Clock
from fleet.coordinator.identity import Principal
from fleet.coordinator.token_store import TokenStore
from fleet.domain.models import Factory
from fleet.errors import ConditionFailed, Forbidden, NotFound
from fleet.store.ports import DocumentStore, Set

# The records keep the name they had when this was part of fleet.coordinator.tokens.
log = logging.getLogger("fleet.coordinator.tokens")


class FactoryNotFound(NotFound):
    """No such factory."""

    code = "not_found"


class FactoryRevoked(ConditionFailed):
    """The factory is revoked: enroll it again (after deregistering it) instead."""

    code = "factory_revoked"


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
        self, store: TokenStore, docs: DocumentStore, clock: Clock, *, grace_seconds: int
    ) -> None:
        self.store = store
        self.docs = docs
        self.clock = clock
        self.grace_seconds = grace_seconds

    def rotate(self, principal: Principal, factory_id: str) -> Rotation:
        """A new token for the factory; its current ones keep working for the grace period.
        The factory itself or an operator (of the product in ``principal.product``)."""
        if principal.kind == "factory" and principal.id != factory_id:
            raise Forbidden("factory tokens can only rotate their own token")
        product = principal.product
        self._live_factory(product, factory_id)
        now = self.clock.now()
        current = [t for t in self.store.of_factory(product, factory_id) if t.valid_at(now)]
        allow = next((t.capabilities for t in current if t.capabilities is not None), None)
        token, _ = self.store.issue(
            "factory", product, principal.actor, now, factoryId=factory_id, capabilities=allow
        )
        grace_until = now + timedelta(seconds=self.grace_seconds)
        self.store.rotate_out(current, grace_until)
        # A revocation that ran while this rotation was issuing must win: it marked the
        # factory first, so reading the factory now sees it, and the new token dies too.
        try:
            self._live_factory(product, factory_id)
        except FactoryRevoked:
            self.store.revoke_of_factory(product, factory_id, "revocation", now)
            raise
        log.info("factory %s in %s rotated its token", factory_id, product)
        return Rotation(
            factory_id=factory_id, product=product, token=token, previous_valid_until=grace_until
        )

    def revoke_factory(self, product: str, factory_id: str, actor: str) -> int:
        """Refuse every token of the factory from the next request and mark it revoked (the
        reaper then requeues the jobs it holds). Returns how many tokens were revoked."""
        try:
            self.docs.patch(product, f"factory-{factory_id}", [Set("/revoked", True)])
        except NotFound:
            raise FactoryNotFound(
                f"no factory {factory_id} in product {product}", factory=factory_id
            ) from None
        count = self.store.revoke_of_factory(product, factory_id, actor, self.clock.now())
        log.info("factory %s in %s revoked by %s (%d tokens)", factory_id, product, actor, count)
        return count

    def revoke_tokens(self, product: str, factory_id: str, actor: str) -> int:
        """Refuse every token of the factory from the next request, without marking the
        factory revoked (for deregistration: it left cleanly, it may enroll again)."""
        return self.store.revoke_of_factory(product, factory_id, actor, self.clock.now())

    def _live_factory(self, product: str, factory_id: str) -> Factory:
        try:
            factory = Factory.from_doc(self.docs.read(product, f"factory-{factory_id}"))
        except NotFound:
            raise FactoryNotFound(
                f"no factory {factory_id} in product {product}", factory=factory_id
            ) from None
        if factory.revoked or factory.deregistered:
            raise FactoryRevoked(
                f"factory {factory_id} is revoked or deregistered; enroll it again",
                factory=factory_id,
            )
        return factory
