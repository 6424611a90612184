"""Tokens: operator, enrollment, factory and scaler credentials (modelled on Buildkite agent
tokens).

A token is ``<prefix><43 url-safe characters>`` (``secrets.token_urlsafe(32)``: 256 bits);
the prefix names its kind so a leaked one is recognisable: ``flo_`` operator, ``fle_``
enrollment, ``flf_`` factory, ``fls_`` scaler. A token is shown once, when it is created,
and stored only as its SHA-256 (hex), in a ``token`` document of the system partition whose
id is ``tok-<sha256>`` — so authenticating a request is one point read.

- Operators create **enrollment tokens** for a product (optional expiry, optional capability
  allowlist). A factory exchanges one, once, for its own **factory token**
  (``enroll``): the exchange is a conditional patch that sets ``usedAt`` only while it is
  undefined, so of two racing enrollments exactly one wins. A token of ``maxUses`` uses
  (autoscaled workers share one) counts them instead, by a conditional patch that adds one
  only while the count is below ``maxUses``; an ``ephemeral`` one's factories may enroll
  without a name (``fleet.coordinator.enrollment``).
- A factory token is **rotated** by the factory itself or an operator: the new token works
  at once, the old ones keep working for a grace period (``TokenConfig.grace_seconds``).
- An operator **revokes** a factory: all its tokens are refused from the next request and
  the factory document is marked ``revoked`` — the reaper then takes back the jobs it held.
- **Bootstrap operator tokens** come from settings (``FLEET_OPERATOR_TOKENS``, plaintext or
  ``sha256:<hex>``): admins of every product, checked against their hashes in memory, no
  read.
- **Named operator tokens** are people (``fleet.coordinator.operators``): an admin of every
  product creates one with a name, a role and the products it may touch; verifying one is a
  point read of its document, like a factory token's.
- **Scaler tokens** are autoscalers (``fleet.coordinator.scaler_tokens``): an admin of a
  product creates one for it with a name; it proves ``scaler:NAME`` of that product, and
  only the ``demand`` caller takes it (403 everywhere else, whatever the ``want``).

Hashes are compared with ``hmac.compare_digest``. A refused token is always the same 401
("invalid, expired or revoked token"): the caller never learns which it was.

The idle gate poll (``GET /api/fleet/queue-state``) and the demand poll
(``GET /api/fleet/demand``) must stay one point read, and a factory's calls about work it
holds (reports, renewals, events, heartbeats) should cost no token read, so they may use a
small per-instance cache of verified factory, named operator and scaler tokens
(``gate_cache_seconds``, bounded to ``gate_cache_size`` entries): there a revoked or expired
token can keep working for up to that long on an instance that verified it just before (the
instance that revokes it forgets it at once, and takes the factory's jobs back, so its writes
are fenced). Every other request — a claim above all — reads the token document.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fleet.coordinator.clock import Clock
from fleet.coordinator.enrollment import (
    Enrollment,
    Enrollments,
    EnrollmentTokenNotFound,
    FactoryExists,
    FactorySelfLike,
    IssuedToken,
    enrollment_view,
)
from fleet.coordinator.factory_tokens import (
    FactoryNotFound,
    FactoryRevoked,
    FactoryTokens,
    Rotation,
)
from fleet.coordinator.identity import DEFAULT_PRODUCT, SCALER_ONLY, Principal, Role, Want
from fleet.coordinator.operators import (
    IssuedOperatorToken,
    OperatorTokenNotFound,
    OperatorTokens,
    bootstrap_principal,
    principal_of,
)
from fleet.coordinator.scaler_tokens import (
    IssuedScalerToken,
    ScalerTokenExists,
    ScalerTokenNotFound,
    ScalerTokens,
)
from fleet.coordinator.service import Coordinator
from fleet.coordinator.token_store import (
    ENROLLMENT_PREFIX,
    FACTORY_PREFIX,
    ID_CHARS,
    INVALID,
    MISSING,
    OPERATOR_PREFIX,
    PREFIXES,
    SCALER_PREFIX,
    TokenDoc,
    TokenKind,
    TokenStore,
    VerifiedCache,
    doc_id,
    hash_token,
)
from fleet.errors import Forbidden, Unauthorized

__all__ = [
    "ENROLLMENT_PREFIX",
    "FACTORY_PREFIX",
    "ID_CHARS",
    "INVALID",
    "MISSING",
    "OPERATOR_PREFIX",
    "PREFIXES",
    "SCALER_PREFIX",
    "Enrollment",
    "EnrollmentTokenNotFound",
    "FactoryExists",
    "FactoryNotFound",
    "FactoryRevoked",
    "FactorySelfLike",
    "IssuedOperatorToken",
    "IssuedScalerToken",
    "IssuedToken",
    "OperatorTokenNotFound",
    "Rotation",
    "ScalerTokenExists",
    "ScalerTokenNotFound",
    "TokenConfig",
    "TokenDoc",
    "TokenKind",
    "Tokens",
    "doc_id",
    "enrollment_view",
    "hash_token",
]


@dataclass(frozen=True)
class TokenConfig:
    grace_seconds: int = 300  # a rotated-out factory token keeps working this long
    # An enrollment token whose creator names no expiry lives this long.
    enrollment_ttl_seconds: int = 7 * 24 * 3600
    gate_cache_seconds: float = 30.0  # the gate poll trusts a verified token this long
    gate_cache_size: int = 10_000  # verified tokens remembered per instance (LRU)


class Tokens:
    """Issues and verifies tokens. Talks only to the document store (through the
    coordinator, which also registers enrolled factories); the clock is injected.

    Authentication is here; enrollment (``fleet.coordinator.enrollment``) and rotation and
    revocation (``fleet.coordinator.factory_tokens``) are parts it builds, all writing token
    documents through one ``TokenStore`` (``fleet.coordinator.token_store``)."""

    def __init__(
        self,
        coordinator: Coordinator,
        *,
        operator_hashes: Iterable[str] = (),
        clock: Clock | None = None,
        config: TokenConfig | None = None,
        entropy: Callable[[int], str] = secrets.token_urlsafe,
    ) -> None:
        self.coordinator = coordinator
        self.docs = coordinator.docs
        self.clock = clock or coordinator.clock
        self.config = config or TokenConfig()
        self._operator_hashes = tuple(sorted({h.lower() for h in operator_hashes}))
        self._cache = VerifiedCache(self.config.gate_cache_size)
        self._store = TokenStore(self.docs, self._cache, entropy)
        self._enrollments = Enrollments(
            self._store,
            self.docs,
            coordinator,
            self.clock,
            entropy,
            default_ttl_seconds=self.config.enrollment_ttl_seconds,
            fleet_log=coordinator.fleet_log,
        )
        self._factories = FactoryTokens(
            self._store,
            self.docs,
            self.clock,
            grace_seconds=self.config.grace_seconds,
            fleet_log=coordinator.fleet_log,
        )
        self._operators = OperatorTokens(self._store, self.clock)
        self._scalers = ScalerTokens(self._store, self.clock, coordinator.fleet_log)

    # --- authentication --------------------------------------------------------------

    def authenticate(
        self,
        token: str | None,
        product: str | None,
        *,
        want: Want,
        cached: bool = False,
    ) -> Principal:
        """The principal a bearer token proves. ``product`` is the ``X-Fleet-Product``
        header if sent. 401 when the token proves nothing; 403 when it proves a principal
        that may not make this call (a scaler token: any ``want`` but
        ``operator_or_scaler``). ``cached``: the gate poll's cache may answer."""
        if token is None:
            raise Unauthorized(MISSING)
        if token.startswith(OPERATOR_PREFIX):
            principal = self._operator(token, product or DEFAULT_PRODUCT, cached=cached)
        elif token.startswith(FACTORY_PREFIX):
            principal = self._verified(hash_token(token), "factory", cached=cached)
        elif token.startswith(SCALER_PREFIX):
            principal = self._verified(hash_token(token), "scaler", cached=cached)
        elif token.startswith(ENROLLMENT_PREFIX):
            raise Unauthorized(
                "an enrollment token only enrolls a factory (POST /api/fleet/factories/enroll)"
            )
        else:
            raise Unauthorized(INVALID)
        if principal.kind == "scaler" and want != "operator_or_scaler":
            raise Forbidden(SCALER_ONLY)
        if want == "operator" and principal.kind != "operator":
            raise Forbidden("factory tokens cannot do this: it needs an operator token")
        if want == "factory" and principal.kind != "factory":
            raise Forbidden("operator tokens cannot do this: it needs a factory token")
        if want == "operator_or_scaler" and principal.kind == "factory":
            raise Forbidden("factory tokens cannot do this: it needs an operator or scaler token")
        if principal.kind != "operator" and product is not None and product != principal.product:
            raise Forbidden("this token is for another product")
        return principal

    def _operator(self, token: str, product: str, *, cached: bool) -> Principal:
        digest = hash_token(token)
        # Compare against every configured hash: the time taken does not say which matched.
        found = False
        for known in self._operator_hashes:
            found |= hmac.compare_digest(known, digest)
        if found:
            return bootstrap_principal(digest, product)
        # A named operator: its cached principal is about whichever product it last named.
        return self._verified(digest, "operator", cached=cached).about(product)

    def _verified(self, digest: str, kind: TokenKind, *, cached: bool) -> Principal:
        """The principal of the live ``kind`` token whose hash is ``digest``: one point
        read, or none when ``cached`` and this instance verified it lately."""
        now = self.clock.now()
        if cached:
            hit = self._cache.get(digest, now)
            if hit is not None and hit.kind == kind:
                return hit
        doc = self._store.read(digest)
        if doc is None or doc.kind != kind or not doc.valid_at(now):
            self._cache.evict([digest])  # refused here: refused on this instance's gate too
            raise Unauthorized(INVALID)
        if kind == "operator" and doc.name is not None and doc.role is not None:
            principal = principal_of(doc, DEFAULT_PRODUCT)
        elif kind == "scaler" and doc.name is not None:
            principal = Principal(
                kind="scaler", id=doc.name, product=doc.product, token_hash=digest
            )
        elif kind == "factory" and doc.factoryId is not None:
            principal = Principal(
                kind="factory",
                id=doc.factoryId,
                product=doc.product,
                allowed_capabilities=(
                    frozenset(doc.capabilities) if doc.capabilities is not None else None
                ),
                token_hash=digest,
            )
        else:
            self._cache.evict([digest])
            raise Unauthorized(INVALID)
        until = now + timedelta(seconds=self.config.gate_cache_seconds)
        ends = doc.valid_until()
        self._cache.put(digest, principal, min(until, ends) if ends else until)
        return principal

    # --- operator tokens (people) ----------------------------------------------------

    def create_operator_token(
        self,
        name: str,
        role: Role,
        products: Iterable[str],
        actor: str,
        *,
        expires_in_seconds: int | None = None,
    ) -> IssuedOperatorToken:
        """A token for the person ``name`` with ``role`` over ``products`` (``["*"]``:
        every one), shown this once."""
        return self._operators.create(
            name, role, products, actor, expires_in_seconds=expires_in_seconds
        )

    def list_operator_tokens(self) -> list[dict[str, Any]]:
        """Every named operator token, oldest first, without secrets or hashes."""
        return self._operators.list()

    def revoke_operator_token(self, token_id: str, actor: str) -> dict[str, Any]:
        """Refuse the operator token from the next request; the token as it is now."""
        return self._operators.revoke(token_id, actor)

    # --- scaler tokens (autoscalers) ------------------------------------------------

    def create_scaler_token(
        self, product: str, name: str, actor: str, *, expires_in_seconds: int | None = None
    ) -> IssuedScalerToken:
        """A token for the autoscaler ``name`` of ``product``, shown this once (409 when the
        product has a live one of that name)."""
        return self._scalers.create(product, name, actor, expires_in_seconds=expires_in_seconds)

    def list_scaler_tokens(self, product: str) -> list[dict[str, Any]]:
        """The product's scaler tokens, oldest first, without secrets or hashes."""
        return self._scalers.list(product)

    def revoke_scaler_token(self, product: str, token_id: str, actor: str) -> dict[str, Any]:
        """Refuse the scaler token from the next request (this instance's cache forgets it
        at once); the token as it is now."""
        return self._scalers.revoke(product, token_id, actor)

    # --- enrollment ------------------------------------------------------------------

    def create_enrollment_token(
        self,
        product: str,
        actor: str,
        *,
        expires_in_seconds: int | None = None,
        capabilities: Iterable[str] | None = None,
        max_seats: int | None = None,
        kind: str | None = None,
        max_uses: int = 1,
        ephemeral: bool = False,
        name_prefix: str | None = None,
    ) -> IssuedToken:
        return self._enrollments.create_enrollment_token(
            product,
            actor,
            expires_in_seconds=expires_in_seconds,
            capabilities=capabilities,
            max_seats=max_seats,
            kind=kind,
            max_uses=max_uses,
            ephemeral=ephemeral,
            name_prefix=name_prefix,
        )

    def list_enrollment_tokens(self, product: str) -> list[dict[str, Any]]:
        """The product's enrollment tokens, oldest first, without secrets or hashes."""
        return self._enrollments.list_enrollment_tokens(product)

    def revoke_enrollment_token(self, product: str, token_id: str, actor: str) -> dict[str, Any]:
        return self._enrollments.revoke_enrollment_token(product, token_id, actor)

    def enroll(
        self, enrollment_token: str | None, name: str | None, view: FactorySelfLike
    ) -> Enrollment:
        """Exchange one use of an enrollment token for a factory token; register the
        factory (``Enrollments.enroll``: 401, 403 and 409 without using the token up;
        ``name`` None: an ephemeral token's factory, named by the coordinator)."""
        return self._enrollments.enroll(enrollment_token, name, view)

    # --- rotation and revocation -----------------------------------------------------

    def rotate(self, principal: Principal, factory_id: str) -> Rotation:
        """A new token for the factory; its current ones keep working for the grace period.
        The factory itself or an admin (of the product in ``principal.product``)."""
        return self._factories.rotate(principal, factory_id)

    def revoke_factory(self, product: str, factory_id: str, actor: str) -> int:
        """Refuse every token of the factory from the next request, mark it revoked and
        take back the jobs it holds at once (fencing whatever it still sends: its token may
        be trusted a little longer by another instance's cache). Returns how many tokens
        were revoked."""
        count = self._factories.revoke_factory(product, factory_id, actor)
        self.coordinator.take_back_from(
            product, factory_id, f"holder {factory_id} was revoked", actor
        )
        return count

    def revoke_tokens(self, product: str, factory_id: str, actor: str) -> int:
        """Refuse every token of the factory from the next request, without marking the
        factory revoked (for deregistration: it left cleanly, it may enroll again)."""
        return self._factories.revoke_tokens(product, factory_id, actor)
