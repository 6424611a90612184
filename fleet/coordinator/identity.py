"""Who is calling: the one seam between requests and principals.

A caller proves who it is with a bearer token (``Authorization: Bearer <token>``); the
token's kind is its prefix (``flo_`` operator, ``flf_`` factory, ``fle_`` enrollment) and
``fleet.coordinator.tokens`` verifies it. A factory token names its factory and its product;
an operator token is not product-scoped, so operators name the product with
``X-Fleet-Product`` (default ``default``). A factory may send ``X-Fleet-Product`` too, but
only its own product (another is 403).

An HTTP operation declares who may call it (a ``Caller``); the one decorator that serves
operations (``fleet.http.operation``) asks ``authenticate`` for the principal, passing in the
app's ``Tokens``. Handlers never read identity headers themselves.

Cost: every call verifies the token with one point read of its document (operator tokens
from settings need none), so a revocation takes effect on the next request — except the
idle gate poll (caller ``gate``), which may use a per-instance cache of verified tokens
for up to ``TokenConfig.gate_cache_seconds`` so that polling stays one point read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, Protocol

from fleet.errors import Forbidden, Problem, ValidationFailed

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DEFAULT_PRODUCT = "default"
PRODUCT_HEADER = "X-Fleet-Product"


@dataclass(frozen=True)
class Principal:
    kind: Literal["factory", "operator"]
    id: str
    product: str
    # A factory enrolled with a capability allowlist may advertise only these (None: any).
    allowed_capabilities: frozenset[str] | None = None

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.id}"

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


Want = Literal["factory", "operator", "any"]

# Who may call an operation: a factory token, an operator token, either, either through the
# gate poll's cache of verified tokens, or anyone (the operation authenticates itself, if at
# all: health, the OpenAPI document, enrollment, GitHub's webhook).
Caller = Literal["factory", "operator", "any", "gate", "anonymous"]


class Authenticator(Protocol):
    """What verifies a bearer token (``fleet.coordinator.tokens.Tokens``)."""

    def authenticate(
        self, token: str | None, product: str | None, *, want: Want, cached: bool = False
    ) -> Principal: ...


def authenticate(tokens: Authenticator, source: Source, caller: Caller) -> Principal:
    """The principal ``caller`` names, proven by the request's bearer token: 401 when it
    proves nothing, 403 when it proves a principal that may not call. ``gate`` trusts a token
    this instance verified within the last ``gate_cache_seconds`` without a read, so the idle
    poll stays one point read (a revocation reaches that endpoint within that time)."""
    if caller == "anonymous":
        raise ValueError("an anonymous operation has no principal to authenticate")
    want: Want = "any" if caller == "gate" else caller
    return tokens.authenticate(
        bearer_token(source), product_header(source), want=want, cached=caller == "gate"
    )
