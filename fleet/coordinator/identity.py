"""Who is calling: the one seam between requests and principals.

A caller proves who it is with a bearer token (``Authorization: Bearer <token>``); the
token's kind is its prefix (``flo_`` operator, ``flf_`` factory, ``fle_`` enrollment) and
``fleet.coordinator.tokens`` verifies it. A factory token names its factory and its product;
an operator token is not product-scoped, so operators name the product with
``X-Fleet-Product`` (default ``default``). A factory may send ``X-Fleet-Product`` too, but
only its own product (another is 403).

Handlers ask this module for a principal of the kind they need (``factory_principal``,
``operator_principal``, ``any_principal``, ``gate_principal``) and never read identity
headers themselves. Each takes the request (or just its headers).

Cost: every call verifies the token with one point read of its document (operator tokens
from settings need none), so a revocation takes effect on the next request — except the
idle gate poll (``gate_principal``), which may use a per-instance cache of verified tokens
for up to ``TokenConfig.gate_cache_seconds`` so that polling stays one point read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from fleet.domain.manifest import Problem, ValidationFailed
from fleet.errors import FleetError

if TYPE_CHECKING:
    from fleet.coordinator.tokens import Tokens

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DEFAULT_PRODUCT = "default"
PRODUCT_HEADER = "X-Fleet-Product"


class Unauthorized(FleetError):
    """The request does not prove who is calling."""

    code = "unauthorized"


class Forbidden(FleetError):
    """The caller may not do this."""

    code = "forbidden"


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


def _tokens() -> Tokens:
    # Late import: the context builds the coordinator, which this package also holds.
    from fleet.context import get_context

    return get_context().tokens


def factory_principal(source: Source) -> Principal:
    """A factory token is required; its product is the token's."""
    return _tokens().authenticate(bearer_token(source), product_header(source), want="factory")


def operator_principal(source: Source) -> Principal:
    """An operator token is required; the product is ``X-Fleet-Product``."""
    return _tokens().authenticate(bearer_token(source), product_header(source), want="operator")


def any_principal(source: Source) -> Principal:
    """Either kind (reads open to both: profiles, metrics, the factory list, ...)."""
    return _tokens().authenticate(bearer_token(source), product_header(source), want="any")


def gate_principal(source: Source) -> Principal:
    """Either kind, for the idle poll of ``GET /api/fleet/queue-state`` only: a token this
    instance verified within the last ``gate_cache_seconds`` is trusted without a read, so
    the poll stays one point read (a revocation reaches this endpoint within that time)."""
    return _tokens().authenticate(
        bearer_token(source), product_header(source), want="any", cached=True
    )
