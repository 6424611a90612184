"""Tokens: operator, enrollment and factory credentials (modelled on Buildkite agent tokens).

A token is ``<prefix><43 url-safe characters>`` (``secrets.token_urlsafe(32)``: 256 bits);
the prefix names its kind so a leaked one is recognisable: ``flo_`` operator, ``fle_``
enrollment, ``flf_`` factory. A token is shown once, when it is created, and stored only as
its SHA-256 (hex), in a ``token`` document of the system partition whose id is
``tok-<sha256>`` — so authenticating a request is one point read.

- Operators create **enrollment tokens** for a product (optional expiry, optional capability
  allowlist). A factory exchanges one, once, for its own **factory token**
  (``enroll``): the exchange is a conditional patch that sets ``usedAt`` only while it is
  undefined, so of two racing enrollments exactly one wins.
- A factory token is **rotated** by the factory itself or an operator: the new token works
  at once, the old ones keep working for a grace period (``TokenConfig.grace_seconds``).
- An operator **revokes** a factory: all its tokens are refused from the next request and
  the factory document is marked ``revoked`` — the reaper then takes back the jobs it held.
- **Operator tokens** come from settings (``FLEET_OPERATOR_TOKENS``, plaintext or
  ``sha256:<hex>``): checked against their hashes in memory, no read.

Hashes are compared with ``hmac.compare_digest``. A refused token is always the same 401
("invalid, expired or revoked token"): the caller never learns which it was.

The idle gate poll (``GET /api/fleet/queue-state``) must stay one point read, so it may use
a small per-instance cache of verified factory tokens (``gate_cache_seconds``, bounded to
``gate_cache_size`` entries): on that one endpoint a revoked or expired token can keep
working for up to that long on an instance that verified it just before. Every other
request reads the token document.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, Protocol

from fleet.coordinator.clock import Clock
from fleet.coordinator.identity import DEFAULT_PRODUCT, NAME, Principal
from fleet.coordinator.service import SYSTEM_PARTITION, Coordinator
from fleet.domain.models import Document, Factory, Timestamp, format_ts
from fleet.domain.scheduler import FactoryView
from fleet.errors import (
    AlreadyExists,
    ConditionFailed,
    Forbidden,
    NotFound,
    PreconditionFailed,
    Problem,
    Unauthorized,
    ValidationFailed,
)
from fleet.store.expr import Defined, F, Not, all_of
from fleet.store.ports import Remove, Set
from fleet.store.queries import TOKENS_OF_FACTORY, TOKENS_OF_PRODUCT

log = logging.getLogger(__name__)

OPERATOR_PREFIX = "flo_"
ENROLLMENT_PREFIX = "fle_"
FACTORY_PREFIX = "flf_"
ID_CHARS = 12  # the hex prefix of the hash that names an enrollment token in listings

TokenKind = Literal["operator", "enrollment", "factory"]
PREFIXES: dict[TokenKind, str] = {
    "operator": OPERATOR_PREFIX,
    "enrollment": ENROLLMENT_PREFIX,
    "factory": FACTORY_PREFIX,
}

# The one message for every refused token: never which check failed.
INVALID = "invalid, expired or revoked token"
MISSING = "missing bearer token"


def hash_token(token: str) -> str:
    """SHA-256 of the token, hex: the only form in which a token is stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def doc_id(digest: str) -> str:
    return f"tok-{digest}"


class EnrollmentTokenNotFound(NotFound):
    """No such enrollment token."""

    code = "not_found"


class FactoryNotFound(NotFound):
    """No such factory."""

    code = "not_found"


class FactoryExists(AlreadyExists):
    """A factory of this name is enrolled already."""

    code = "factory_exists"


class FactoryRevoked(ConditionFailed):
    """The factory is revoked: enroll it again (after deregistering it) instead."""

    code = "factory_revoked"


class FactorySelfLike(Protocol):
    """What ``enroll`` needs of the factory's self-description (``FactorySelf`` has it)."""

    @property
    def capabilities(self) -> tuple[str, ...]: ...
    @property
    def seats(self) -> int: ...
    @property
    def load(self) -> int: ...
    @property
    def cost(self) -> float: ...
    @property
    def version(self) -> str | None: ...


class TokenDoc(Document):
    """A token as stored: its hash and what it grants, never the token."""

    type: Literal["token"] = "token"
    kind: TokenKind
    hash: str
    product: str
    factoryId: str | None = None
    createdAt: Timestamp
    createdBy: str
    expiresAt: Timestamp | None = None
    capabilities: tuple[str, ...] | None = None  # allowlist (enrollment and factory tokens)
    usedAt: Timestamp | None = None  # enrollment tokens: single use
    usedBy: str | None = None
    useNonce: str | None = None  # which enrollment attempt used it (to give it back)
    revoked: bool = False
    revokedAt: Timestamp | None = None
    revokedBy: str | None = None
    graceUntil: Timestamp | None = None  # rotated out: valid until then

    def to_doc(self) -> dict[str, Any]:
        # Absent, not null: "never used" is ``NOT IS_DEFINED(c.usedAt)`` in the condition.
        return self.model_dump(mode="json", by_alias=True, exclude={"etag"}, exclude_none=True)

    def valid_at(self, now: datetime) -> bool:
        if self.revoked:
            return False
        if self.expiresAt is not None and now >= self.expiresAt:
            return False
        if self.graceUntil is not None and now >= self.graceUntil:
            return False
        return self.kind != "enrollment" or self.usedAt is None

    def valid_until(self) -> datetime | None:
        ends = [t for t in (self.expiresAt, self.graceUntil) if t is not None]
        return min(ends) if ends else None

    @property
    def short_id(self) -> str:
        return self.hash[:ID_CHARS]


@dataclass(frozen=True)
class TokenConfig:
    grace_seconds: int = 300  # a rotated-out factory token keeps working this long
    gate_cache_seconds: float = 30.0  # the gate poll trusts a verified token this long
    gate_cache_size: int = 10_000  # verified tokens remembered per instance (LRU)


@dataclass(frozen=True)
class IssuedToken:
    """A token just created: the only time its plaintext exists outside the caller."""

    token: str
    id: str
    product: str
    expiresAt: datetime | None = None
    capabilities: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Enrollment:
    factory_id: str
    product: str
    token: str


@dataclass(frozen=True)
class Rotation:
    factory_id: str
    product: str
    token: str
    previous_valid_until: datetime


class _VerifiedCache:
    """Verified factory tokens, per instance: hash -> (principal, trusted until). LRU-bounded."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[Principal, datetime]] = OrderedDict()

    def get(self, digest: str, now: datetime) -> Principal | None:
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            if now >= entry[1]:
                del self._entries[digest]
                return None
            self._entries.move_to_end(digest)
            return entry[0]

    def put(self, digest: str, principal: Principal, until: datetime) -> None:
        with self._lock:
            self._entries[digest] = (principal, until)
            self._entries.move_to_end(digest)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def evict(self, digests: Iterable[str]) -> None:
        with self._lock:
            for digest in digests:
                self._entries.pop(digest, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


class Tokens:
    """Issues and verifies tokens. Talks only to the document store (through the
    coordinator, which also registers enrolled factories); the clock is injected."""

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
        self._entropy = entropy
        self._cache = _VerifiedCache(self.config.gate_cache_size)

    # --- authentication --------------------------------------------------------------

    def authenticate(
        self,
        token: str | None,
        product: str | None,
        *,
        want: Literal["factory", "operator", "any"],
        cached: bool = False,
    ) -> Principal:
        """The principal a bearer token proves. ``product`` is the ``X-Fleet-Product``
        header if sent. 401 when the token proves nothing; 403 when it proves a principal
        that may not make this call. ``cached``: the gate poll's cache may answer."""
        if token is None:
            raise Unauthorized(MISSING)
        if token.startswith(OPERATOR_PREFIX):
            principal = self._operator(token, product)
        elif token.startswith(FACTORY_PREFIX):
            principal = self._factory(token, cached=cached)
        elif token.startswith(ENROLLMENT_PREFIX):
            raise Unauthorized(
                "an enrollment token only enrolls a factory (POST /api/fleet/factories/enroll)"
            )
        else:
            raise Unauthorized(INVALID)
        if want == "operator" and principal.kind != "operator":
            raise Forbidden("factory tokens cannot do this: it needs an operator token")
        if want == "factory" and principal.kind != "factory":
            raise Forbidden("operator tokens cannot do this: it needs a factory token")
        if principal.kind == "factory" and product is not None and product != principal.product:
            raise Forbidden("this token is for another product")
        return principal

    def _operator(self, token: str, product: str | None) -> Principal:
        digest = hash_token(token)
        # Compare against every configured hash: the time taken does not say which matched.
        found = False
        for known in self._operator_hashes:
            found |= hmac.compare_digest(known, digest)
        if not found:
            raise Unauthorized(INVALID)
        return Principal(kind="operator", id=f"op-{digest[:8]}", product=product or DEFAULT_PRODUCT)

    def _factory(self, token: str, *, cached: bool) -> Principal:
        digest = hash_token(token)
        now = self.clock.now()
        if cached:
            hit = self._cache.get(digest, now)
            if hit is not None:
                return hit
        doc = self._read(digest)
        if doc is None or doc.kind != "factory" or doc.factoryId is None or not doc.valid_at(now):
            self._cache.evict([digest])  # refused here: refused on this instance's gate too
            raise Unauthorized(INVALID)
        principal = Principal(
            kind="factory",
            id=doc.factoryId,
            product=doc.product,
            allowed_capabilities=(
                frozenset(doc.capabilities) if doc.capabilities is not None else None
            ),
        )
        until = now + timedelta(seconds=self.config.gate_cache_seconds)
        ends = doc.valid_until()
        self._cache.put(digest, principal, min(until, ends) if ends else until)
        return principal

    def _read(self, digest: str) -> TokenDoc | None:
        try:
            doc = TokenDoc.from_doc(self.docs.read(SYSTEM_PARTITION, doc_id(digest)))
        except NotFound:
            return None
        # The id already matched; compare the stored hash in constant time anyway, so a
        # lookup that somehow returned another document is never taken for this token.
        return doc if hmac.compare_digest(doc.hash, digest) else None

    # --- enrollment tokens (operators) -----------------------------------------------

    def create_enrollment_token(
        self,
        product: str,
        actor: str,
        *,
        expires_in_seconds: int | None = None,
        capabilities: Iterable[str] | None = None,
    ) -> IssuedToken:
        now = self.clock.now()
        expires = now + timedelta(seconds=expires_in_seconds) if expires_in_seconds else None
        allow = tuple(sorted(set(capabilities))) if capabilities is not None else None
        token, doc = self._issue(
            "enrollment", product, actor, now, expiresAt=expires, capabilities=allow
        )
        return IssuedToken(
            token=token, id=doc.short_id, product=product, expiresAt=expires, capabilities=allow
        )

    def list_enrollment_tokens(self, product: str) -> list[dict[str, Any]]:
        """The product's enrollment tokens, oldest first, without secrets or hashes."""
        now = self.clock.now()
        rows = self.docs.query(
            TOKENS_OF_PRODUCT, SYSTEM_PARTITION, {"product": product, "kind": "enrollment"}
        )
        return [enrollment_view(TokenDoc.from_doc(r), now) for r in rows]

    def revoke_enrollment_token(self, product: str, token_id: str, actor: str) -> dict[str, Any]:
        doc = self._enrollment_by_id(product, token_id)
        now = self.clock.now()
        if not doc.revoked:
            stored = self.docs.patch(
                SYSTEM_PARTITION,
                doc.id,
                [
                    Set("/revoked", True),
                    Set("/revokedAt", format_ts(now)),
                    Set("/revokedBy", actor),
                ],
            )
            doc = TokenDoc.from_doc(stored)
        return enrollment_view(doc, now)

    def _enrollment_by_id(self, product: str, token_id: str) -> TokenDoc:
        token_id = token_id.lower()
        if len(token_id) == ID_CHARS and all(c in "0123456789abcdef" for c in token_id):
            rows = self.docs.query(
                TOKENS_OF_PRODUCT, SYSTEM_PARTITION, {"product": product, "kind": "enrollment"}
            )
            for row in rows:
                doc = TokenDoc.from_doc(row)
                if doc.short_id == token_id:
                    return doc
        raise EnrollmentTokenNotFound(
            f"no enrollment token {token_id} in product {product}", tokenId=token_id
        )

    # --- enrollment (factories) ------------------------------------------------------

    def enroll(
        self,
        enrollment_token: str | None,
        name: str,
        view: FactorySelfLike,
    ) -> Enrollment:
        """Exchange an enrollment token, once, for a factory token; register the factory.

        401 if the token is not a live, unused enrollment token; 403 if the capabilities
        exceed its allowlist; 409 if a factory of this name is enrolled (and not
        deregistered). Neither refusal uses the token up."""
        if enrollment_token is None:
            raise Unauthorized(MISSING)
        if not enrollment_token.startswith(ENROLLMENT_PREFIX):
            raise Unauthorized(INVALID)
        if not NAME.match(name):
            raise ValidationFailed(
                [Problem(path="name", code="invalid_name", message="1-64 letters, digits, .-_")],
                "invalid factory name",
            )
        now = self.clock.now()
        digest = hash_token(enrollment_token)
        token = self._read(digest)
        if token is None or token.kind != "enrollment" or not token.valid_at(now):
            raise Unauthorized(INVALID)
        product = token.product
        if token.capabilities is not None:
            disallowed = sorted(set(view.capabilities) - set(token.capabilities))
            if disallowed:
                raise Forbidden(
                    "capabilities not allowed by this enrollment token: " + ", ".join(disallowed),
                    disallowed=disallowed,
                )
        self._check_name_free(product, name)
        nonce = self._entropy(12)
        self._use(token, name, nonce, now)
        try:
            self._claim_name(product, name, view, now)
        except FactoryExists:
            self._unuse(token, nonce)
            raise
        # A re-enrolled (previously deregistered) name starts clean: its old tokens die.
        self._revoke_tokens_of(product, name, f"enrollment:{token.short_id}", now)
        issued, _ = self._issue(
            "factory",
            product,
            f"enrollment:{token.short_id}",
            now,
            factoryId=name,
            capabilities=token.capabilities,
        )
        factory = FactoryView(
            id=name,
            capabilities=frozenset(view.capabilities),
            seats=view.seats,
            load=view.load,
            cost=view.cost,
        )
        self.coordinator.register_factory(product, factory, view.version)
        log.info("factory %s enrolled in %s with token %s", name, product, token.short_id)
        return Enrollment(factory_id=name, product=product, token=issued)

    def _check_name_free(self, product: str, name: str) -> None:
        try:
            existing = Factory.from_doc(self.docs.read(product, f"factory-{name}"))
        except NotFound:
            return
        if not existing.deregistered:
            raise FactoryExists(
                f"a factory named {name} is already enrolled in {product}", factory=name
            )

    def _use(self, token: TokenDoc, name: str, nonce: str, now: datetime) -> None:
        """Single use, race-safe: only a patch that finds ``usedAt`` undefined succeeds."""
        conditions = [Not(Defined(F("/usedAt"))), F("/revoked").eq(False)]
        if token.expiresAt is not None:
            conditions.append(F("/expiresAt") > format_ts(now))
        try:
            self.docs.patch(
                SYSTEM_PARTITION,
                token.id,
                [
                    Set("/usedAt", format_ts(now)),
                    Set("/usedBy", name),
                    Set("/useNonce", nonce),
                ],
                condition=all_of(*conditions),
            )
        except (PreconditionFailed, NotFound):
            raise Unauthorized(INVALID) from None

    def _unuse(self, token: TokenDoc, nonce: str) -> None:
        """Give back a token this enrollment used but could not complete (name taken)."""
        try:
            self.docs.patch(
                SYSTEM_PARTITION,
                token.id,
                [Remove("/usedAt"), Remove("/usedBy"), Remove("/useNonce")],
                condition=F("/useNonce").eq(nonce),
            )
        except (PreconditionFailed, NotFound):
            log.warning("enrollment token %s could not be given back", token.short_id)

    def _claim_name(self, product: str, name: str, view: FactorySelfLike, now: datetime) -> None:
        """Take the name atomically: create the factory document, or flip a deregistered
        one back (conditional patch). Two enrollments of one name: one wins, one is 409."""
        doc = Factory(
            id=f"factory-{name}",
            productId=product,
            capabilities=tuple(sorted(set(view.capabilities))),
            seats=view.seats,
            load=view.load,
            cost=view.cost,
            version=view.version,
            lastSeen=now,
        )
        try:
            self.docs.create(doc.to_doc())
            return
        except AlreadyExists:
            pass
        try:
            self.docs.patch(
                product,
                doc.id,
                [
                    Set("/deregistered", False),
                    Set("/revoked", False),
                    Set("/paused", False),
                    Set("/draining", False),
                ],
                condition=F("/deregistered").eq(True),
            )
        except (PreconditionFailed, NotFound):
            raise FactoryExists(
                f"a factory named {name} is already enrolled in {product}", factory=name
            ) from None

    # --- rotation and revocation -----------------------------------------------------

    def rotate(self, principal: Principal, factory_id: str) -> Rotation:
        """A new token for the factory; its current ones keep working for the grace period.
        The factory itself or an operator (of the product in ``principal.product``)."""
        if principal.kind == "factory" and principal.id != factory_id:
            raise Forbidden("factory tokens can only rotate their own token")
        product = principal.product
        self._live_factory(product, factory_id)
        now = self.clock.now()
        current = [t for t in self._tokens_of(product, factory_id) if t.valid_at(now)]
        allow = next((t.capabilities for t in current if t.capabilities is not None), None)
        token, _ = self._issue(
            "factory", product, principal.actor, now, factoryId=factory_id, capabilities=allow
        )
        grace_until = now + timedelta(seconds=self.config.grace_seconds)
        for old in current:
            if old.graceUntil is not None:
                continue  # already rotated out: its grace is not extended
            try:
                self.docs.patch(
                    SYSTEM_PARTITION,
                    old.id,
                    [Set("/graceUntil", format_ts(grace_until))],
                    condition=Not(Defined(F("/graceUntil"))),
                )
            except (PreconditionFailed, NotFound):
                continue
        self._cache.evict(t.hash for t in current)
        # A revocation that ran while this rotation was issuing must win: it marked the
        # factory first, so reading the factory now sees it, and the new token dies too.
        try:
            self._live_factory(product, factory_id)
        except FactoryRevoked:
            self._revoke_tokens_of(product, factory_id, "revocation", now)
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
        count = self._revoke_tokens_of(product, factory_id, actor, self.clock.now())
        log.info("factory %s in %s revoked by %s (%d tokens)", factory_id, product, actor, count)
        return count

    def revoke_tokens(self, product: str, factory_id: str, actor: str) -> int:
        """Refuse every token of the factory from the next request, without marking the
        factory revoked (for deregistration: it left cleanly, it may enroll again)."""
        return self._revoke_tokens_of(product, factory_id, actor, self.clock.now())

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

    def _tokens_of(self, product: str, factory_id: str) -> list[TokenDoc]:
        rows = self.docs.query(
            TOKENS_OF_FACTORY, SYSTEM_PARTITION, {"product": product, "factoryId": factory_id}
        )
        return [TokenDoc.from_doc(r) for r in rows if r.get("kind") == "factory"]

    def _revoke_tokens_of(self, product: str, factory_id: str, actor: str, now: datetime) -> int:
        tokens = [t for t in self._tokens_of(product, factory_id) if not t.revoked]
        for token in tokens:
            try:
                self.docs.patch(
                    SYSTEM_PARTITION,
                    token.id,
                    [
                        Set("/revoked", True),
                        Set("/revokedAt", format_ts(now)),
                        Set("/revokedBy", actor),
                    ],
                )
            except NotFound:
                continue
        self._cache.evict(t.hash for t in tokens)
        return len(tokens)

    # --- issuing ---------------------------------------------------------------------

    def _issue(
        self, kind: TokenKind, product: str, actor: str, now: datetime, **fields: Any
    ) -> tuple[str, TokenDoc]:
        token = PREFIXES[kind] + self._entropy(32)
        digest = hash_token(token)
        doc = TokenDoc(
            id=doc_id(digest),
            productId=SYSTEM_PARTITION,
            kind=kind,
            hash=digest,
            product=product,
            createdAt=now,
            createdBy=actor,
            **fields,
        )
        # A collision of 256-bit secrets does not happen; AlreadyExists would surface as 409.
        stored = TokenDoc.from_doc(self.docs.create(doc.to_doc()))
        return token, stored


def enrollment_view(doc: TokenDoc, now: datetime) -> dict[str, Any]:
    """An enrollment token as operators see it: no secret, no full hash."""
    if doc.revoked:
        status = "revoked"
    elif doc.usedAt is not None:
        status = "used"
    elif doc.expiresAt is not None and now >= doc.expiresAt:
        status = "expired"
    else:
        status = "active"
    return {
        "id": doc.short_id,
        "product": doc.product,
        "status": status,
        "createdAt": format_ts(doc.createdAt),
        "createdBy": doc.createdBy,
        "expiresAt": format_ts(doc.expiresAt) if doc.expiresAt else None,
        "capabilities": list(doc.capabilities) if doc.capabilities is not None else None,
        "usedAt": format_ts(doc.usedAt) if doc.usedAt else None,
        "usedBy": doc.usedBy,
        "revokedAt": format_ts(doc.revokedAt) if doc.revokedAt else None,
    }
