"""Token documents: the token format, its hash, the stored document and every write on it.

A token is ``<prefix><43 url-safe characters>``; it is stored only as its SHA-256 (hex), in a
``token`` document of the system partition whose id is ``tok-<sha256>``, so authenticating a
request is one point read. Enrollment, factory and scaler tokens belong to a product
(``product``); named operator tokens to none (``product`` is ``*``; ``products`` lists what they may
touch). Every write that ends or shortens a token's life goes through ``TokenStore``, which
also evicts the token from this instance's cache of verified tokens: the gate poll never
trusts a token this instance has itself revoked or rotated out.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any, Literal

from fleet.coordinator.identity import Principal, Role
from fleet.coordinator.service import SYSTEM_PARTITION
from fleet.domain.models import Document, Timestamp, format_ts
from fleet.errors import NotFound, PreconditionFailed, Unauthorized
from fleet.store.expr import Defined, F, Not, all_of
from fleet.store.ports import DocumentStore, Incr, PatchOp, Remove, Set
from fleet.store.queries import TOKENS_OF_FACTORY, TOKENS_OF_PRODUCT

OPERATOR_PREFIX = "flo_"
ENROLLMENT_PREFIX = "fle_"
FACTORY_PREFIX = "flf_"
SCALER_PREFIX = "fls_"
ID_CHARS = 12  # the hex prefix of the hash that names a token in listings
# The ``product`` of an operator token's document: it is no one product's (its ``products``
# say which it may touch), and no product is named so (product names start alphanumeric).
OPERATOR_SCOPE = "*"

TokenKind = Literal["operator", "enrollment", "factory", "scaler"]
PREFIXES: dict[TokenKind, str] = {
    "operator": OPERATOR_PREFIX,
    "enrollment": ENROLLMENT_PREFIX,
    "factory": FACTORY_PREFIX,
    "scaler": SCALER_PREFIX,
}

# The one message for every refused token: never which check failed.
INVALID = "invalid, expired or revoked token"
MISSING = "missing bearer token"


def hash_token(token: str) -> str:
    """SHA-256 of the token, hex: the only form in which a token is stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def by_short_id(docs: Iterable[TokenDoc], token_id: str) -> TokenDoc | None:
    """The token whose listing id (``short_id``: the first ``ID_CHARS`` hex of its hash) is
    ``token_id``, any case; None when none is, or ``token_id`` is no such id."""
    token_id = token_id.lower()
    if len(token_id) != ID_CHARS or any(c not in "0123456789abcdef" for c in token_id):
        return None
    return next((doc for doc in docs if doc.short_id == token_id), None)


def lifetime_status(doc: TokenDoc, now: datetime) -> str:
    """ "revoked", "expired" or "active": what a token's listing says of it."""
    if doc.revoked:
        return "revoked"
    if doc.expiresAt is not None and now >= doc.expiresAt:
        return "expired"
    return "active"


def doc_id(digest: str) -> str:
    return f"tok-{digest}"


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
    name: str | None = None  # operator and scaler tokens: events say operator:NAME, scaler:NAME
    role: Role | None = None  # operator tokens
    products: tuple[str, ...] | None = None  # operator tokens: ("*",) for every product
    maxSeats: int | None = None  # enrollment tokens: the most seats the factory may use
    reviewKind: str | None = None  # enrollment tokens: the factory's review kind, if set
    # Enrollment tokens: how many enrollments it admits. None (written before there was a
    # choice) or 1: single use, spent by ``usedAt``; more: counted by ``uses``.
    maxUses: int | None = None
    uses: int | None = None  # enrollment tokens of several uses: the enrollments so far
    ephemeral: bool | None = None  # enrollment tokens: its factories are ephemeral
    namePrefix: str | None = None  # enrollment tokens: the prefix of the names it generates
    usedAt: Timestamp | None = None  # enrollment tokens of one use: when it was spent
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
        return self.kind != "enrollment" or self.used < self.use_limit

    @property
    def use_limit(self) -> int:
        """How many enrollments it admits (an enrollment token)."""
        return self.maxUses or 1

    @property
    def single_use(self) -> bool:
        return self.use_limit == 1

    @property
    def used(self) -> int:
        """How many enrollments it admitted so far (an enrollment token)."""
        if self.single_use:
            return 1 if self.usedAt is not None else 0
        return self.uses or 0

    def valid_until(self) -> datetime | None:
        ends = [t for t in (self.expiresAt, self.graceUntil) if t is not None]
        return min(ends) if ends else None

    @property
    def short_id(self) -> str:
        return self.hash[:ID_CHARS]


class VerifiedCache:
    """Verified factory, named operator and scaler tokens, per instance: hash -> (principal,
    trusted until). LRU-bounded."""

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


def _revocation(actor: str, now: datetime) -> list[PatchOp]:
    return [Set("/revoked", True), Set("/revokedAt", format_ts(now)), Set("/revokedBy", actor)]


class TokenStore:
    """The token documents of the system partition. ``cache`` is the instance's cache of
    verified tokens, which every write here that ends a token's life evicts it from."""

    def __init__(
        self, docs: DocumentStore, cache: VerifiedCache, entropy: Callable[[int], str]
    ) -> None:
        self.docs = docs
        self.cache = cache
        self._entropy = entropy

    def read(self, digest: str) -> TokenDoc | None:
        try:
            doc = TokenDoc.from_doc(self.docs.read(SYSTEM_PARTITION, doc_id(digest)))
        except NotFound:
            return None
        # The id already matched; compare the stored hash in constant time anyway, so a
        # lookup that somehow returned another document is never taken for this token.
        return doc if hmac.compare_digest(doc.hash, digest) else None

    def issue(
        self, kind: TokenKind, product: str, actor: str, now: datetime, **fields: Any
    ) -> tuple[str, TokenDoc]:
        """A new token and its stored document: the only time the token exists in the clear."""
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

    # --- enrollment tokens -----------------------------------------------------------

    def enrollment_tokens(self, product: str) -> Iterator[TokenDoc]:
        """The product's enrollment tokens, oldest first, read as they are taken."""
        rows = self.docs.query(
            TOKENS_OF_PRODUCT, SYSTEM_PARTITION, {"product": product, "kind": "enrollment"}
        )
        return (TokenDoc.from_doc(r) for r in rows)

    def use(self, token: TokenDoc, name: str, nonce: str, now: datetime) -> None:
        """One use, race-safe. A single-use token: only a patch that finds ``usedAt``
        undefined succeeds. A token of several: only a patch that finds ``uses`` below
        ``maxUses`` succeeds, and it adds one (server-side: racing enrollments never
        count past ``maxUses``). Neither when it is revoked or expired."""
        conditions = [F("/revoked").eq(False)]
        if token.expiresAt is not None:
            conditions.append(F("/expiresAt") > format_ts(now))
        ops: list[PatchOp]
        if token.single_use:
            conditions.append(Not(Defined(F("/usedAt"))))
            ops = [Set("/usedAt", format_ts(now)), Set("/usedBy", name), Set("/useNonce", nonce)]
        else:
            conditions.append(F("/uses") < F("/maxUses"))
            ops = [Incr("/uses", 1)]
        try:
            self.docs.patch(SYSTEM_PARTITION, token.id, ops, condition=all_of(*conditions))
        except (PreconditionFailed, NotFound):
            raise Unauthorized(INVALID) from None

    def unuse(self, token: TokenDoc, nonce: str) -> bool:
        """Give back the use the enrollment ``nonce`` took; False if it could not be.

        A single-use token is given back only by the attempt that used it (its nonce). A
        token of several takes one off its count, never below zero: the count does not say
        whose the uses are, so this is called once per use taken, never retried (a give-back
        whose reply is lost costs one use; it never lets the token admit more than
        ``maxUses``)."""
        ops: list[PatchOp]
        if token.single_use:
            ops = [Remove("/usedAt"), Remove("/usedBy"), Remove("/useNonce")]
            condition = F("/useNonce").eq(nonce)
        else:
            ops = [Incr("/uses", -1)]
            condition = F("/uses") > 0
        try:
            self.docs.patch(SYSTEM_PARTITION, token.id, ops, condition=condition)
        except (PreconditionFailed, NotFound):
            return False
        return True

    def revoke(self, token: TokenDoc, actor: str, now: datetime) -> TokenDoc:
        """Revoke one token; this instance's gate poll stops trusting it at once."""
        revoked = TokenDoc.from_doc(
            self.docs.patch(SYSTEM_PARTITION, token.id, _revocation(actor, now))
        )
        self.cache.evict([token.hash])
        return revoked

    # --- operator tokens -------------------------------------------------------------

    def operator_tokens(self) -> Iterator[TokenDoc]:
        """Every named operator token, oldest first, read as they are taken."""
        rows = self.docs.query(
            TOKENS_OF_PRODUCT, SYSTEM_PARTITION, {"product": OPERATOR_SCOPE, "kind": "operator"}
        )
        return (TokenDoc.from_doc(r) for r in rows)

    # --- scaler tokens ---------------------------------------------------------------

    def scaler_tokens(self, product: str) -> Iterator[TokenDoc]:
        """The product's scaler tokens, oldest first, read as they are taken."""
        rows = self.docs.query(
            TOKENS_OF_PRODUCT, SYSTEM_PARTITION, {"product": product, "kind": "scaler"}
        )
        return (TokenDoc.from_doc(r) for r in rows)

    # --- factory tokens --------------------------------------------------------------

    def of_factory(self, product: str, factory_id: str) -> list[TokenDoc]:
        rows = self.docs.query(
            TOKENS_OF_FACTORY, SYSTEM_PARTITION, {"product": product, "factoryId": factory_id}
        )
        return [TokenDoc.from_doc(r) for r in rows if r.get("kind") == "factory"]

    def rotate_out(self, tokens: list[TokenDoc], grace_until: datetime) -> int:
        """End the tokens at ``grace_until``; one already rotated out keeps its own end.
        How many this call rotated out (a racing rotation's are not counted)."""
        retired = 0
        for old in tokens:
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
            retired += 1
        self.cache.evict(t.hash for t in tokens)
        return retired

    def revoke_of_factory(self, product: str, factory_id: str, actor: str, now: datetime) -> int:
        """Revoke every live token of the factory; how many there were."""
        tokens = [t for t in self.of_factory(product, factory_id) if not t.revoked]
        for token in tokens:
            try:
                self.docs.patch(SYSTEM_PARTITION, token.id, _revocation(actor, now))
            except NotFound:
                continue
        self.cache.evict(t.hash for t in tokens)
        return len(tokens)
