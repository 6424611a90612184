"""Enrollment: operators' enrollment tokens, and a factory's exchange of one for its own.

Operators create enrollment tokens for a product (optional expiry, optional capability
allowlist, seat cap and review kind; how many enrollments it admits, ``maxUses``, and whether
its factories are ephemeral), list and revoke them. A factory exchanges one for its own
factory token (``enroll``). A single-use token (``maxUses`` 1, the default, and every token
written before there was a choice) is spent by a conditional patch that sets ``usedAt`` only
while it is undefined, so of two racing enrollments exactly one wins. A token of several uses
counts them: a conditional patch adds one to ``uses`` only while it is below ``maxUses``, so
racing enrollments never pass it. Either way a refusal after the use (the name is taken) gives
the use back. The enrollment fixes what the operator decided on the token: the factory's seat
cap and its review kind.

Ephemeral tokens are for autoscaled workers (KEDA job executions, ``fleet-factory
autoscale`` children) that share one token: such a factory may enroll without a name (the
coordinator names it ``<namePrefix>-<8 hex>``), and it is marked ``ephemeral``, which the
healer prunes once it is silent for ``down_after`` rather than ``prune_after``
(``fleet.domain.healer``).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from fleet.coordinator.audit import FleetLog
from fleet.coordinator.clock import Clock
from fleet.coordinator.identity import NAME
from fleet.coordinator.token_store import (
    ENROLLMENT_PREFIX,
    INVALID,
    MISSING,
    TokenDoc,
    TokenStore,
    by_short_id,
    hash_token,
)
from fleet.domain.audit import new_event
from fleet.domain.models import Factory, format_ts
from fleet.domain.review import enrolled_kind
from fleet.domain.scheduler import FactoryView
from fleet.errors import (
    AlreadyExists,
    Forbidden,
    NotFound,
    PreconditionFailed,
    Problem,
    Unauthorized,
    ValidationFailed,
)
from fleet.store.expr import F
from fleet.store.ports import DocumentStore, Set

# The records keep the name they had when this was part of fleet.coordinator.tokens.
log = logging.getLogger("fleet.coordinator.tokens")

MAX_USES = 10_000  # the most enrollments one token may admit
EPHEMERAL_PREFIX = "eph"  # generated names are <prefix>-<8 hex>
NAME_SUFFIX_HEX = 8
# A prefix leaves room for "-" and the suffix within a factory name (NAME: 64 characters).
NAME_PREFIX_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,54}$"
NAME_PREFIX = re.compile(NAME_PREFIX_PATTERN)
NAME_ATTEMPTS = 3  # generated names tried before giving up (each clashes 1 in 4e9 or so)


class EnrollmentTokenNotFound(NotFound):
    """No such enrollment token."""

    code = "not_found"


class FactoryExists(AlreadyExists):
    """A factory of this name is enrolled already."""

    code = "factory_exists"


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


class FactoryRegistry(Protocol):
    """Where an enrolled factory is registered (``Coordinator`` is one)."""

    def register_factory(self, product: str, view: FactoryView, version: str | None) -> object: ...


@dataclass(frozen=True)
class IssuedToken:
    """A token just created: the only time its plaintext exists outside the caller."""

    token: str
    id: str
    product: str
    expiresAt: datetime | None = None
    capabilities: tuple[str, ...] | None = None
    maxSeats: int | None = None
    kind: str | None = None
    maxUses: int = 1
    ephemeral: bool = False
    namePrefix: str | None = None


@dataclass(frozen=True)
class Enrollment:
    factory_id: str
    product: str
    token: str


class Enrollments:
    """Enrollment tokens and enrollment: token documents through ``store``, factory
    documents through ``docs``, the enrolled factory registered with ``registry``."""

    def __init__(
        self,
        store: TokenStore,
        docs: DocumentStore,
        registry: FactoryRegistry,
        clock: Clock,
        entropy: Callable[[int], str],
        *,
        default_ttl_seconds: int = 7 * 24 * 3600,
        fleet_log: FleetLog,
    ) -> None:
        self.default_ttl_seconds = default_ttl_seconds
        self.store = store
        self.docs = docs
        self.registry = registry
        self.clock = clock
        # Tokens live in the system partition: their events are logged beside, in the product's.
        self.log = fleet_log
        self._entropy = entropy

    # --- enrollment tokens (operators) -----------------------------------------------

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
        """An enrollment token: it admits ``max_uses`` enrollments (default one), expires
        after ``expires_in_seconds`` (default: the configured TTL, 7 days), may limit the
        enrolled factory's capabilities (an allowlist) and the live leases it may ever hold
        at once (``max_seats``), and may fix its review kind (``kind``; else its allowlist's
        kind, else what it enrolls with). ``ephemeral``: its factories are ephemeral and may
        enroll without a name (named ``<name_prefix>-<8 hex>``, the prefix "eph" by
        default)."""
        _check_options(max_uses, ephemeral, name_prefix)
        now = self.clock.now()
        ttl = expires_in_seconds or self.default_ttl_seconds
        expires = now + timedelta(seconds=ttl)
        allow = tuple(sorted(set(capabilities))) if capabilities is not None else None
        token, doc = self.store.issue(
            "enrollment",
            product,
            actor,
            now,
            expiresAt=expires,
            capabilities=allow,
            maxSeats=max_seats,
            reviewKind=kind,
            maxUses=max_uses,
            uses=0 if max_uses > 1 else None,  # the count a use's condition compares
            ephemeral=ephemeral,
            namePrefix=name_prefix,
        )
        event = new_event(
            "enrollment_token_created",
            actor,
            now,
            reason=f"token {doc.short_id}, expires {format_ts(expires)}",
            tokenId=doc.short_id,
            maxSeats=max_seats,
            kind=kind,
            capabilities=list(allow) if allow is not None else None,
            maxUses=max_uses,
            ephemeral=ephemeral or None,
            namePrefix=name_prefix,
        )
        self.log.beside(product, f"enroll-{doc.short_id}-created", event)
        return IssuedToken(
            token=token,
            id=doc.short_id,
            product=product,
            expiresAt=expires,
            capabilities=allow,
            maxSeats=max_seats,
            kind=kind,
            maxUses=max_uses,
            ephemeral=ephemeral,
            namePrefix=name_prefix,
        )

    def list_enrollment_tokens(self, product: str) -> list[dict[str, Any]]:
        """The product's enrollment tokens, oldest first, without secrets or hashes."""
        now = self.clock.now()
        return [enrollment_view(doc, now) for doc in self.store.enrollment_tokens(product)]

    def revoke_enrollment_token(self, product: str, token_id: str, actor: str) -> dict[str, Any]:
        doc = self._enrollment_by_id(product, token_id)
        now = self.clock.now()
        if not doc.revoked:
            doc = self.store.revoke(doc, actor, now)
            event = new_event(
                "enrollment_token_revoked",
                actor,
                now,
                reason=f"token {doc.short_id}",
                tokenId=doc.short_id,
            )
            self.log.beside(product, f"enroll-{doc.short_id}-revoked", event)
        return enrollment_view(doc, now)

    def _enrollment_by_id(self, product: str, token_id: str) -> TokenDoc:
        doc = by_short_id(self.store.enrollment_tokens(product), token_id)
        if doc is not None:
            return doc
        raise EnrollmentTokenNotFound(
            f"no enrollment token {token_id} in product {product}", tokenId=token_id
        )

    # --- enrollment (factories) ------------------------------------------------------

    def enroll(
        self,
        enrollment_token: str | None,
        name: str | None,
        view: FactorySelfLike,
    ) -> Enrollment:
        """Exchange one use of an enrollment token for a factory token; register the factory.

        401 if the token is not a live enrollment token with a use left; 403 if the
        capabilities exceed its allowlist; 409 if a factory of this name is enrolled (and
        not deregistered). Neither refusal uses the token up. ``name`` None: an ephemeral
        token's factory, named here (the reply says how); any other token's is 400."""
        if enrollment_token is None:
            raise Unauthorized(MISSING)
        if not enrollment_token.startswith(ENROLLMENT_PREFIX):
            raise Unauthorized(INVALID)
        if name is not None and not NAME.match(name):
            raise ValidationFailed(
                [Problem(path="name", code="invalid_name", message="1-64 letters, digits, .-_")],
                "invalid factory name",
            )
        now = self.clock.now()
        digest = hash_token(enrollment_token)
        token = self.store.read(digest)
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
        if name is None:
            name = self._generated_name(product, token)
        else:
            self._check_name_free(product, name)
        nonce = self._entropy(12)
        self.store.use(token, name, nonce, now)
        kind = enrolled_kind(token.reviewKind, token.capabilities, view.capabilities)
        ephemeral = bool(token.ephemeral)
        try:
            self._claim_name(product, name, view, now, token.maxSeats, kind, ephemeral)
        except FactoryExists:
            if not self.store.unuse(token, nonce):
                log.warning("enrollment token %s could not be given back", token.short_id)
            raise
        # A re-enrolled (previously deregistered) name starts clean: its old tokens die.
        self.store.revoke_of_factory(product, name, f"enrollment:{token.short_id}", now)
        issued, _ = self.store.issue(
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
        self.registry.register_factory(product, factory, view.version)
        event = new_event(
            "factory_enrolled",
            f"enrollment:{token.short_id}",
            self.clock.now(),  # after the registration it made: logged after it
            reason=f"enrolled with token {token.short_id}",
            factory=name,
            tokenId=token.short_id,
            kind=kind,
            ephemeral=ephemeral or None,
        )
        # One event per use: a token of several uses has one per enrollment it admitted.
        key = f"enroll-{token.short_id}-used"
        self.log.beside(product, key if token.single_use else f"{key}-{nonce}", event)
        log.info("factory %s enrolled in %s with token %s", name, product, token.short_id)
        return Enrollment(factory_id=name, product=product, token=issued)

    def _generated_name(self, product: str, token: TokenDoc) -> str:
        """A free name for an ephemeral token's factory: ``<namePrefix>-<8 hex>``. 400 when
        the token is not ephemeral (its factory must say its name)."""
        if not token.ephemeral:
            raise ValidationFailed(
                [
                    Problem(
                        path="name",
                        code="missing",
                        message="required: this enrollment token is not ephemeral",
                    )
                ],
                "a factory name is required (only an ephemeral token's factory may omit it)",
            )
        prefix = token.namePrefix or EPHEMERAL_PREFIX
        name = prefix
        for _ in range(NAME_ATTEMPTS):
            name = f"{prefix}-{self._hex(NAME_SUFFIX_HEX)}"
            if self._name_free(product, name):
                return name
        raise FactoryExists(
            f"a factory named {name} is already enrolled in {product}", factory=name
        )

    def _hex(self, digits: int) -> str:
        # From the injected entropy (url-safe text), so tests may make names deterministic.
        return hashlib.sha256(self._entropy(16).encode()).hexdigest()[:digits]

    def _check_name_free(self, product: str, name: str) -> None:
        if not self._name_free(product, name):
            raise FactoryExists(
                f"a factory named {name} is already enrolled in {product}", factory=name
            )

    def _name_free(self, product: str, name: str) -> bool:
        """No factory of this name, or only a deregistered one."""
        try:
            existing = Factory.from_doc(self.docs.read(product, f"factory-{name}"))
        except NotFound:
            return True
        return existing.deregistered

    def _claim_name(
        self,
        product: str,
        name: str,
        view: FactorySelfLike,
        now: datetime,
        max_seats: int | None,
        review_kind: str,
        ephemeral: bool,
    ) -> None:
        """Take the name atomically: create the factory document, or flip a deregistered
        one back (conditional patch). Two enrollments of one name: one wins, one is 409.
        What the enrollment fixes (its seat cap, its review kind, whether it is
        ephemeral) is written either way."""
        doc = Factory(
            id=f"factory-{name}",
            productId=product,
            capabilities=tuple(sorted(set(view.capabilities))),
            seats=view.seats,
            maxSeats=max_seats,
            reviewKind=review_kind,
            load=view.load,
            cost=view.cost,
            version=view.version,
            lastSeen=now,
            ephemeral=ephemeral,
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
                    Set("/maxSeats", max_seats),
                    Set("/reviewKind", review_kind),
                    Set("/ephemeral", ephemeral),
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


def _check_options(max_uses: int, ephemeral: bool, name_prefix: str | None) -> None:
    problems: list[Problem] = []
    if isinstance(max_uses, bool) or not 1 <= max_uses <= MAX_USES:
        problems.append(
            Problem(path="maxUses", code="out_of_range", message=f"from 1 to {MAX_USES}")
        )
    if name_prefix is not None:
        if not ephemeral:
            problems.append(
                Problem(
                    path="namePrefix",
                    code="not_ephemeral",
                    message="names are generated only for an ephemeral token's factories",
                )
            )
        elif not NAME_PREFIX.match(name_prefix):
            problems.append(
                Problem(path="namePrefix", code="invalid_name", message="1-55 letters, digits, .-_")
            )
    if problems:
        raise ValidationFailed(problems)


def enrollment_view(doc: TokenDoc, now: datetime) -> dict[str, Any]:
    """An enrollment token as operators see it: no secret, no full hash. It is "used" once
    it admitted as many enrollments as it may."""
    if doc.revoked:
        status = "revoked"
    elif doc.used >= doc.use_limit:
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
        "maxSeats": doc.maxSeats,
        "kind": doc.reviewKind,
        "maxUses": doc.use_limit,
        "uses": doc.used,
        "ephemeral": bool(doc.ephemeral),
        "namePrefix": doc.namePrefix,
        "usedAt": format_ts(doc.usedAt) if doc.usedAt else None,
        "usedBy": doc.usedBy,
        "revokedAt": format_ts(doc.revokedAt) if doc.revokedAt else None,
    }
