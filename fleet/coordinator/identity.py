"""Who is calling: the one seam between requests and principals.

Until enrollment tokens exist, a factory names itself (``X-Fleet-Factory``) and the product
(``X-Fleet-Product``, default ``default``); operator calls name the operator
(``X-Fleet-Operator``, default ``operator``). Handlers ask this module for a principal of the
kind they need and never read identity headers themselves, so tokens can replace the
mechanism here without touching a handler.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from fleet.errors import FleetError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
DEFAULT_PRODUCT = "default"


class Unauthorized(FleetError):
    """The request does not say who is calling."""

    code = "unauthorized"


class Forbidden(FleetError):
    """The caller may not do this."""

    code = "forbidden"


@dataclass(frozen=True)
class Principal:
    kind: Literal["factory", "operator"]
    id: str
    product: str

    @property
    def actor(self) -> str:
        return f"{self.kind}:{self.id}"


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name.lower():
            return value.strip() or None
    return None


def _name(value: str | None, header: str, default: str | None) -> str:
    if value is None:
        if default is None:
            raise Unauthorized(f"missing {header} header", header=header)
        return default
    if not NAME.match(value):
        raise Unauthorized(f"{header} must be 1-64 letters, digits, '.', '_' or '-'", header=header)
    return value


def product_of(headers: Mapping[str, str]) -> str:
    return _name(_header(headers, "X-Fleet-Product"), "X-Fleet-Product", DEFAULT_PRODUCT)


def factory_principal(headers: Mapping[str, str]) -> Principal:
    factory = _name(_header(headers, "X-Fleet-Factory"), "X-Fleet-Factory", None)
    return Principal(kind="factory", id=factory, product=product_of(headers))


def operator_principal(headers: Mapping[str, str]) -> Principal:
    operator = _name(_header(headers, "X-Fleet-Operator"), "X-Fleet-Operator", "operator")
    return Principal(kind="operator", id=operator, product=product_of(headers))


def any_principal(headers: Mapping[str, str]) -> Principal:
    """Reads open to both kinds (queue-state, job detail): a factory if it names itself."""
    if _header(headers, "X-Fleet-Factory") is not None:
        return factory_principal(headers)
    return operator_principal(headers)
