"""Operator tokens: named people with a role, for some products or every one.

An admin (of every product) creates a token for a person: a name, a role (``viewer`` reads,
``operator`` also acts, ``admin`` also manages tokens, budgets and settings), the products
it may touch (``("*",)``: every one) and an optional expiry. The token (``flo_...``) is shown
once; it is stored only as its SHA-256 like every other token (``fleet.coordinator.
token_store``), in a document whose ``product`` is ``*``. Every event its holder causes
names them: ``operator:NAME``. Several tokens may carry one name (a person's new token
before the old one is revoked); the name ``op-...`` is the bootstrap tokens'
(``FLEET_OPERATOR_TOKENS``), which are admins of every product and need no document.

Verifying one is one point read of its document, like a factory token's; a revoked one is
refused from the next request (the gate poll: see ``fleet.coordinator.tokens``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fleet.coordinator.clock import Clock
from fleet.coordinator.identity import NAME, Principal, Role
from fleet.coordinator.token_store import (
    OPERATOR_SCOPE,
    TokenDoc,
    TokenStore,
    by_short_id,
    lifetime_status,
)
from fleet.domain.models import format_ts
from fleet.errors import NotFound, Problem, ValidationFailed

EVERY_PRODUCT = "*"
MAX_PRODUCTS = 64  # products one token may list (more: give it every product)
BOOTSTRAP_PREFIX = "op-"  # the bootstrap tokens' names: op-<hash prefix>


class OperatorTokenNotFound(NotFound):
    """No such operator token."""

    code = "not_found"


@dataclass(frozen=True)
class IssuedOperatorToken:
    """An operator token just created: the only time its plaintext exists outside the
    caller."""

    token: str
    id: str
    name: str
    role: Role
    products: tuple[str, ...]
    expiresAt: datetime | None


def bootstrap_principal(digest: str, product: str) -> Principal:
    """The principal of a bootstrap token (``FLEET_OPERATOR_TOKENS``): an admin of every
    product, named after its hash."""
    return Principal(
        kind="operator",
        id=f"{BOOTSTRAP_PREFIX}{digest[:8]}",
        product=product,
        role="admin",
        products=None,
    )


def principal_of(doc: TokenDoc, product: str) -> Principal:
    """The principal a verified operator token document proves, about ``product``."""
    if doc.kind != "operator" or doc.name is None or doc.role is None:
        raise ValueError(f"token {doc.short_id} is not a named operator token")
    products = doc.products or ()  # none listed: no product (never "every one")
    return Principal(
        kind="operator",
        id=doc.name,
        product=product,
        role=doc.role,
        products=None if EVERY_PRODUCT in products else frozenset(products),
        token_hash=doc.hash,
    )


def normalized_products(products: Iterable[str]) -> tuple[str, ...]:
    """``("*",)``, or the products' names, sorted and once each; 400 otherwise."""
    listed = list(products)
    if EVERY_PRODUCT in listed:
        if len(listed) != 1:
            raise ValidationFailed.one(
                "products", "every_product_alone", "'*' (every product) stands alone"
            )
        return (EVERY_PRODUCT,)
    unique = sorted(set(listed))
    problems = [
        Problem(f"products[{i}]", "invalid_name", "1-64 letters, digits, '.', '_' or '-'")
        for i, product in enumerate(listed)
        if not NAME.match(product)
    ]
    if not unique:
        problems.append(Problem("products", "too_short", "at least one product, or '*'"))
    if len(unique) > MAX_PRODUCTS:
        problems.append(Problem("products", "too_long", f"at most {MAX_PRODUCTS} products, or '*'"))
    if problems:
        raise ValidationFailed(problems, "invalid products")
    return tuple(unique)


def check_name(name: str) -> None:
    if not NAME.match(name):
        raise ValidationFailed.one("name", "invalid_name", "1-64 letters, digits, '.', '_' or '-'")
    if name.lower().startswith(BOOTSTRAP_PREFIX):
        raise ValidationFailed.one(
            "name",
            "reserved_name",
            f"names starting {BOOTSTRAP_PREFIX!r} are the bootstrap tokens'",
        )


class OperatorTokens:
    """Named operator tokens: create, list, revoke. Token documents through ``store``."""

    def __init__(self, store: TokenStore, clock: Clock) -> None:
        self.store = store
        self.clock = clock

    def create(
        self,
        name: str,
        role: Role,
        products: Iterable[str],
        actor: str,
        *,
        expires_in_seconds: int | None = None,
    ) -> IssuedOperatorToken:
        """A token for the person ``name``, shown this once. No expiry unless one is given."""
        check_name(name)
        scope = normalized_products(products)
        now = self.clock.now()
        expires = now + timedelta(seconds=expires_in_seconds) if expires_in_seconds else None
        token, doc = self.store.issue(
            "operator",
            OPERATOR_SCOPE,
            actor,
            now,
            name=name,
            role=role,
            products=scope,
            expiresAt=expires,
        )
        return IssuedOperatorToken(
            token=token, id=doc.short_id, name=name, role=role, products=scope, expiresAt=expires
        )

    def list(self) -> list[dict[str, Any]]:
        """Every named operator token, oldest first, without secrets or hashes."""
        now = self.clock.now()
        return [operator_view(doc, now) for doc in self.store.operator_tokens()]

    def revoke(self, token_id: str, actor: str) -> dict[str, Any]:
        """Refuse the token from the next request (404 when there is no such token)."""
        doc = self._by_id(token_id)
        now = self.clock.now()
        if not doc.revoked:
            doc = self.store.revoke(doc, actor, now)
        return operator_view(doc, now)

    def _by_id(self, token_id: str) -> TokenDoc:
        doc = by_short_id(self.store.operator_tokens(), token_id)
        if doc is not None:
            return doc
        raise OperatorTokenNotFound(f"no operator token {token_id}", tokenId=token_id)


def operator_view(doc: TokenDoc, now: datetime) -> dict[str, Any]:
    """An operator token as admins see it: no secret, no full hash."""
    status = lifetime_status(doc, now)
    return {
        "id": doc.short_id,
        "name": doc.name,
        "role": doc.role,
        "products": list(doc.products or (EVERY_PRODUCT,)),
        "status": status,
        "createdAt": format_ts(doc.createdAt),
        "createdBy": doc.createdBy,
        "expiresAt": format_ts(doc.expiresAt) if doc.expiresAt else None,
        "revokedAt": format_ts(doc.revokedAt) if doc.revokedAt else None,
        "revokedBy": doc.revokedBy,
    }
