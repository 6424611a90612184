"""Who is calling: the one seam between requests and principals.

A caller proves who it is with a bearer token (``Authorization: Bearer <token>``); the
token's kind is its prefix (``flo_`` operator, ``flf_`` factory, ``fls_`` scaler, ``fle_``
enrollment) and ``fleet.coordinator.tokens`` verifies it. A factory token names its factory
and its product. An operator token names a person (``operator:NAME`` in every event they
cause), a role and the products it may touch; operators name the product of a call with
``X-Fleet-Product`` (default ``default``), or the path does (``{productId}``). A factory may
send ``X-Fleet-Product`` too, but only its own product (another is 403). A scaler token
(an autoscaler: KEDA, ``fleet-factory autoscale``) names itself (``scaler:NAME``) and one
product, and may call only the operations whose caller is ``demand`` (reading the product's
demand), for that product; every other operation refuses it (403).

Roles, each allowed what the one before it is: a **viewer** reads; an **operator** also acts
(submits, job actions, factory commands, reviews, pauses); an **admin** also manages tokens
(operator, enrollment and scaler tokens, factory token revocation), budgets' ceilings and
adjustments, channels and settings. The bootstrap tokens from ``FLEET_OPERATOR_TOKENS`` are
admins of every product. A token used for a product outside its list is 403.

An HTTP operation declares who may call it (a ``Caller``) and the role an operator needs
(``Role``); the one decorator that serves operations (``fleet.http.operation``) asks
``authenticate`` for the principal, passing in the app's ``Tokens``. Handlers never read
identity headers themselves.

Cost: a call verifies the token with one point read of its document (operator tokens from
settings need none), so a revocation takes effect on the next request — except the idle
gate poll (caller ``gate``), a factory's calls about work it holds (caller ``holder``) and
the demand poll (caller ``demand``), which may use a per-instance cache of verified tokens for
up to ``TokenConfig.gate_cache_seconds``: polling stays one point read and a holder's reports
cost no token read. Revoking a factory takes its jobs back at once, so what the cache still
accepts from it for those seconds is fenced.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

from fleet.errors import Forbidden, Problem, ValidationFailed

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DEFAULT_PRODUCT = "default"
PRODUCT_HEADER = "X-Fleet-Product"

Role = Literal["viewer", "operator", "admin"]
# In order: each role may do what the ones before it may.
ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")
_RANK: dict[Role, int] = {role: rank for rank, role in enumerate(ROLES)}


@dataclass(frozen=True)
class Principal:
    kind: Literal["factory", "operator", "scaler"]
    # A factory's name, the operator's (a bootstrap token's: op-<hash prefix>), or the scaler
    # token's.
    id: str
    product: str  # the product this call is about
    # A factory enrolled with a capability allowlist may advertise only these (None: any).
    allowed_capabilities: frozenset[str] | None = None
    # Operators only: what the token may do, and the products it may touch (None: every
    # one). Unset, an operator may only read: whoever builds a principal says what it may do
    # (``fleet.coordinator.operators``: a bootstrap token is an admin of every product).
    role: Role = "viewer"
    products: frozenset[str] | None = None
    # The SHA-256 of the token that proved it (None: a bootstrap token): which of a
    # factory's tokens called. Not part of who the caller is.
    token_hash: str | None = field(default=None, compare=False, repr=False)

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.id}"

    def may(self, role: Role) -> bool:
        """Whether an operator's role allows what ``role`` may do (factories and scalers: what
        their kind of caller may do is the operation's ``Caller``, not a role)."""
        return self.kind != "operator" or _RANK[self.role] >= _RANK[role]

    def check_role(self, role: Role) -> None:
        """Refuse (403) an operator whose role is below ``role``."""
        if not self.may(role):
            raise Forbidden(
                f"this needs {_article(role)} {role} token: "
                f"{self.id} is {_article(self.role)} {self.role}",
                role=self.role,
                needs=role,
            )

    def check_product(self) -> None:
        """Refuse (403) an operator token used for a product outside its list."""
        if self.kind == "operator" and not self.may_touch(self.product):
            raise Forbidden(f"this token is not for product {self.product}", product=self.product)

    def may_touch(self, product: str) -> bool:
        """Whether the token is for ``product``."""
        if self.kind != "operator":
            return product == self.product
        return self.products is None or product in self.products

    def check_every_product(self) -> None:
        """Refuse (403) an operator token limited to some products (what is fleet-wide,
        such as other people's tokens, is for those of every product)."""
        if self.kind != "operator" or self.products is not None:
            raise Forbidden("this needs an operator token for every product (products: ['*'])")

    def about(self, product: str) -> Principal:
        """The same caller, about ``product``."""
        return replace(self, product=product)

    def check_capabilities(self, capabilities: Iterable[str]) -> None:
        """Refuse (403) capabilities outside the factory's enrollment allowlist."""
        if self.allowed_capabilities is None:
            return
        disallowed = sorted(set(capabilities) - self.allowed_capabilities)
        if disallowed:
            raise Forbidden(
                "capabilities not allowed for this factory: " + ", ".join(disallowed),
                disallowed=disallowed,
            )


def _article(role: Role) -> str:
    return "an" if role[0] in "aeiou" else "a"


class HasHeaders(Protocol):
    @property
    def headers(self) -> Mapping[str, str]: ...


Source = HasHeaders | Mapping[str, str]


def _headers(source: Source) -> Mapping[str, str]:
    return source if isinstance(source, Mapping) else source.headers


def header(source: Source, name: str) -> str | None:
    """A header's value, stripped; None when absent or blank. Names are case-insensitive."""
    for key, value in _headers(source).items():
        if key.lower() == name.lower():
            return value.strip() or None
    return None


def bearer_token(source: Source) -> str | None:
    """The token of ``Authorization: Bearer <token>``; None when there is none."""
    value = header(source, "Authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def product_header(source: Source) -> str | None:
    """``X-Fleet-Product`` if sent (validated: it names a partition), else None."""
    value = header(source, PRODUCT_HEADER)
    if value is not None and not NAME.match(value):
        raise ValidationFailed(
            [
                Problem(
                    path=PRODUCT_HEADER,
                    code="invalid_name",
                    message="1-64 letters, digits, '.', '_' or '-'",
                )
            ],
            f"{PRODUCT_HEADER} must be 1-64 letters, digits, '.', '_' or '-'",
        )
    return value


def product_of(source: Source) -> str:
    return product_header(source) or DEFAULT_PRODUCT


# The kinds of token a call takes: a factory's, an operator's, either, or an operator's or a
# scaler's (the only one that takes a scaler's).
Want = Literal["factory", "operator", "any", "operator_or_scaler"]

# Who may call an operation: a factory token, an operator token, either, either through the
# gate poll's cache of verified tokens, or anyone (the operation authenticates itself, if at
# all: health, the OpenAPI document, enrollment, GitHub's webhook).
# ``holder``: a factory about work it holds (its reports, renewals, releases, events,
# artifacts, heartbeats): as ``factory``, its token trusted from this instance's cache.
# ``demand``: an operator (its role and product checked as for ``operator``) or a scaler token
# of the product, trusted from this instance's cache as ``gate`` is (an autoscaler polls the
# product's demand: one point read). The only caller a scaler token may be.
Caller = Literal["factory", "holder", "operator", "any", "gate", "demand", "anonymous"]

# The token each caller takes, and the callers that trust this instance's cache of verified
# tokens.
_WANT: dict[Caller, Want] = {
    "factory": "factory",
    "holder": "factory",
    "operator": "operator",
    "any": "any",
    "gate": "any",
    "demand": "operator_or_scaler",
}
_CACHED: frozenset[Caller] = frozenset({"gate", "holder", "demand"})
SCALER_ONLY = "a scaler token may only read demand (GET /api/fleet/demand)"


# What an operation is about: one product (the caller must be allowed it), or the fleet
# (who is calling, operator tokens): the product check is the handler's.
Scope = Literal["product", "fleet"]


class Authenticator(Protocol):
    """What verifies a bearer token (``fleet.coordinator.tokens.Tokens``)."""

    def authenticate(
        self, token: str | None, product: str | None, *, want: Want, cached: bool = False
    ) -> Principal: ...


def authenticate(
    tokens: Authenticator,
    source: Source,
    caller: Caller,
    *,
    role: Role = "operator",
    product: str | None = None,
    scope: Scope = "product",
) -> Principal:
    """The principal ``caller`` names, proven by the request's bearer token: 401 when it
    proves nothing, 403 when it proves a principal that may not call — the wrong kind, an
    operator whose role is below ``role``, or (``scope`` product) a token for other
    products; a scaler token anywhere but ``demand``. ``product`` is the product the path
    names (else ``X-Fleet-Product``). ``gate``, ``holder`` and ``demand`` trust a token this
    instance verified within the last ``gate_cache_seconds`` without a read, so the idle poll
    and an autoscaler's demand poll stay one point read and a holder's calls cost no token
    read: a revocation reaches those calls on other instances within that time (the revoking
    instance forgets at once), and cannot reach the work the factory held — revoking it takes
    its jobs back, fencing every write it still sends."""
    if caller == "anonymous":
        raise ValueError("an anonymous operation has no principal to authenticate")
    principal = tokens.authenticate(
        bearer_token(source),
        product if product is not None else product_header(source),
        want=_WANT[caller],
        cached=caller in _CACHED,
    )
    if principal.kind == "scaler" and caller != "demand":
        # ``Tokens`` refuses it already (``want``); said here too, where callers are decided.
        raise Forbidden(SCALER_ONLY)
    principal.check_role(role)
    if scope == "product":
        principal.check_product()
    return principal
