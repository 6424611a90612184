"""Scaler tokens: what an autoscaler (KEDA, ``fleet-factory autoscale``) reads demand with.

An admin of a product creates one for it: a name (unique among the product's live scaler
tokens) and an optional expiry. The token (``fls_...``) is shown once; it is stored only as
its SHA-256 like every other token (``fleet.coordinator.token_store``), in a document whose
``product`` is the product's. Its holder is ``scaler:NAME`` and may call exactly the
operations whose caller is ``demand`` (``fleet.coordinator.identity``), for its own product:
every other operation refuses it.

Verifying one is a point read of its document, or none when this instance verified it within
``TokenConfig.gate_cache_seconds`` (the demand poll trusts the cache, as the gate poll does):
a revoked one is refused at once by the instance that revoked it, and within that time by the
others. Who created and who revoked a token stay on its document (``createdBy``,
``revokedBy``), which the listing shows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fleet.coordinator.audit import FleetLog
from fleet.coordinator.clock import Clock
from fleet.coordinator.identity import NAME
from fleet.coordinator.token_store import TokenDoc, TokenStore, by_short_id, lifetime_status
from fleet.domain.audit import new_event
from fleet.domain.models import format_ts
from fleet.errors import AlreadyExists, NotFound, ValidationFailed

# The records keep the name the other token kinds' have.
log = logging.getLogger("fleet.coordinator.tokens")

MIN_EXPIRY_SECONDS = 60
MAX_EXPIRY_SECONDS = 366 * 24 * 3600


class ScalerTokenNotFound(NotFound):
    """No such scaler token."""

    code = "not_found"


class ScalerTokenExists(AlreadyExists):
    """The product has a live scaler token of this name: revoke it first, or pick another."""

    code = "scaler_token_exists"


@dataclass(frozen=True)
class IssuedScalerToken:
    """A scaler token just created: the only time its plaintext exists outside the caller."""

    token: str
    id: str
    name: str
    product: str
    expiresAt: datetime | None


class ScalerTokens:
    """A product's scaler tokens: create, list, revoke. Token documents through ``store``."""

    def __init__(self, store: TokenStore, clock: Clock, fleet_log: FleetLog) -> None:
        self.store = store
        self.clock = clock
        self.log = fleet_log

    def create(
        self, product: str, name: str, actor: str, *, expires_in_seconds: int | None = None
    ) -> IssuedScalerToken:
        """A token for the autoscaler ``name`` of ``product``, shown this once; no expiry
        unless one is given (60 s to 366 days). 409 ``scaler_token_exists`` when the product
        has a live one of that name: checked before the write, and again after it — a
        creation that then finds another live token of its name revokes its own (never shown
        to anyone) and is 409 too. Of two creations racing for one name, at least the later
        one's check sees the other's write: two live tokens of one name never stand (both
        may be refused; a retry settles it)."""
        _check(name, expires_in_seconds)
        now = self.clock.now()
        if _live_named(self.store, product, name, now):
            raise _exists(product, name)
        expires = now + timedelta(seconds=expires_in_seconds) if expires_in_seconds else None
        token, doc = self.store.issue("scaler", product, actor, now, name=name, expiresAt=expires)
        if any(d.hash != doc.hash for d in _live_named(self.store, product, name, now)):
            self.store.revoke(doc, actor, now)
            raise _exists(product, name)
        event = new_event(
            "scaler_token_created",
            actor,
            now,
            reason=f"token {doc.short_id} ({name})"
            + (f", expires {format_ts(expires)}" if expires else ""),
            tokenId=doc.short_id,
            name=name,
        )
        self.log.beside(product, f"scaler-{doc.short_id}-created", event)
        log.info("scaler token %s (%s) for %s created by %s", doc.short_id, name, product, actor)
        return IssuedScalerToken(
            token=token, id=doc.short_id, name=name, product=product, expiresAt=expires
        )

    def list(self, product: str) -> list[dict[str, Any]]:
        """The product's scaler tokens, oldest first, without secrets or hashes."""
        now = self.clock.now()
        return [scaler_view(doc, now) for doc in self.store.scaler_tokens(product)]

    def revoke(self, product: str, token_id: str, actor: str) -> dict[str, Any]:
        """Refuse the token from the next request (404 when the product has no such token);
        the token as it is now. Revoking a revoked one changes nothing."""
        doc = self._by_id(product, token_id)
        now = self.clock.now()
        if not doc.revoked:
            doc = self.store.revoke(doc, actor, now)
            event = new_event(
                "scaler_token_revoked",
                actor,
                now,
                reason=f"token {doc.short_id} ({doc.name})",
                tokenId=doc.short_id,
                name=doc.name,
            )
            self.log.beside(product, f"scaler-{doc.short_id}-revoked", event)
            log.info("scaler token %s of %s revoked by %s", doc.short_id, product, actor)
        return scaler_view(doc, now)

    def _by_id(self, product: str, token_id: str) -> TokenDoc:
        doc = by_short_id(self.store.scaler_tokens(product), token_id)
        if doc is not None:
            return doc
        raise ScalerTokenNotFound(
            f"no scaler token {token_id} in product {product}", tokenId=token_id
        )


def _check(name: str, expires_in_seconds: int | None) -> None:
    if not NAME.match(name):
        raise ValidationFailed.one("name", "invalid_name", "1-64 letters, digits, '.', '_' or '-'")
    if expires_in_seconds is not None and not (
        MIN_EXPIRY_SECONDS <= expires_in_seconds <= MAX_EXPIRY_SECONDS
    ):
        raise ValidationFailed.one(
            "expiresInSeconds",
            "out_of_range",
            f"{MIN_EXPIRY_SECONDS}..{MAX_EXPIRY_SECONDS} seconds, or omitted (no expiry)",
        )


def _live_named(store: TokenStore, product: str, name: str, now: datetime) -> list[TokenDoc]:
    return [d for d in store.scaler_tokens(product) if d.name == name and d.valid_at(now)]


def _exists(product: str, name: str) -> ScalerTokenExists:
    return ScalerTokenExists(
        f"product {product} has a live scaler token named {name}: revoke it first",
        name=name,
    )


def scaler_view(doc: TokenDoc, now: datetime) -> dict[str, Any]:
    """A scaler token as admins see it: no secret, no full hash."""
    return {
        "id": doc.short_id,
        "name": doc.name,
        "product": doc.product,
        "status": lifetime_status(doc, now),
        "createdAt": format_ts(doc.createdAt),
        "createdBy": doc.createdBy,
        "expiresAt": format_ts(doc.expiresAt) if doc.expiresAt else None,
        "revokedAt": format_ts(doc.revokedAt) if doc.revokedAt else None,
        "revokedBy": doc.revokedBy,
    }
