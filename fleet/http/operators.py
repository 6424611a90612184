"""Operators as named people: who is calling, and the operator tokens admins manage.

``GET /api/fleet/whoami`` answers any bearer what its token is (kind, name, role, products):
the web UI shows it and hides what the role may not do. Operator tokens are created, listed
and revoked by admins of every product (``products: ["*"]``, the bootstrap tokens among
them): a product-scoped admin manages its products, not people. A token appears in a reply
only when it is created; listings show a short id instead.
"""

from __future__ import annotations

from typing import Annotated, Literal

import azure.functions as func
from pydantic import Field, StringConstraints

from fleet.coordinator.identity import NAME, Role
from fleet.coordinator.operators import EVERY_PRODUCT, MAX_PRODUCTS
from fleet.domain.models import Timestamp
from fleet.http.operation import Call, Operations, Reply, json_body, path_param
from fleet.http.parsing import Body, body_model
from fleet.http.responses import reply
from fleet.http.tokens import NO_STORE, NO_STORE_HEADER
from fleet.http.views import View

operations = Operations()

OPERATOR_TOKEN_ID = path_param("id", "The token's id from the listing.", "^[0-9a-f]{12}$")

# A product's name, or "*" (every product: then alone).
ProductOrEvery = Annotated[str, StringConstraints(pattern=f"{NAME.pattern}|^\\*$")]
_ROLES_TEXT = (
    "`viewer` reads; `operator` also acts; `admin` also manages tokens, budgets and settings"
)


class OperatorTokenBody(Body):
    """An admin creates a token for a person."""

    name: str = Field(
        pattern=NAME.pattern,
        description="The person: every event they cause names them (`operator:NAME`). "
        "Names starting `op-` are the bootstrap tokens'.",
    )
    role: Role = Field(description=_ROLES_TEXT + ".")
    products: tuple[ProductOrEvery, ...] = Field(
        min_length=1,
        max_length=MAX_PRODUCTS,
        description='The products it may touch, or `["*"]` for every one.',
    )
    expiresInSeconds: int | None = Field(
        default=None, ge=60, le=366 * 24 * 3600, description="Omitted: it does not expire."
    )


class IssuedOperatorToken(View):
    """An operator token just created: the only time its secret is shown."""

    token: str = Field(pattern="^flo_", description="The operator token: shown this once.")
    id: str = Field(description="Names it in listings.")
    name: str
    role: Role
    products: list[str]
    expiresAt: Timestamp | None


class OperatorToken(View):
    """An operator token as admins see it: no secret, no full hash."""

    id: str
    name: str
    role: Role
    products: list[str] = Field(description='`["*"]`: every product.')
    status: Literal["active", "expired", "revoked"]
    createdAt: Timestamp
    createdBy: str
    expiresAt: Timestamp | None
    revokedAt: Timestamp | None
    revokedBy: str | None


class OperatorTokenList(View):
    tokens: list[OperatorToken]


class WhoAmI(View):
    """Who the bearer token says the caller is."""

    kind: Literal["operator", "factory"]
    name: str = Field(
        description="The operator's name (`op-...`: a bootstrap token), or the factory's."
    )
    role: Role | None = Field(description=f"Operators: {_ROLES_TEXT}. Factories: null.")
    products: list[str] = Field(
        description='The products the token may touch (`["*"]`: every one).'
    )


@operations.route(
    "fleet/whoami",
    "GET",
    caller="any",
    scope="fleet",
    id="whoami",
    summary="Who the bearer token says the caller is: kind, name, role, products",
    tag="tokens",
    replies={200: Reply("The caller.", WhoAmI)},
)
def whoami(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """Who the bearer token says the caller is (any valid token: nothing is refused for
    its role or products)."""
    principal = call.principal
    if principal.kind == "operator":
        products = sorted(principal.products) if principal.products is not None else None
        role: Role | None = principal.role
    else:
        products, role = [principal.product], None
    view = WhoAmI.model_construct(
        kind=principal.kind,
        name=principal.id,
        role=role,
        products=products if products is not None else [EVERY_PRODUCT],
    )
    return reply(view)


@operations.route(
    "fleet/operator-tokens",
    "POST",
    caller="operator",
    role="admin",
    scope="fleet",
    id="createOperatorToken",
    summary="Create a token for a person: a name, a role, its products (shown once)",
    tag="tokens",
    description=(
        f"Admins of every product only. Roles: {_ROLES_TEXT}. A token used for a product "
        "outside its `products` is 403. Every event its holder causes names them "
        "(`operator:NAME`). The token is in this response only; store it now."
    ),
    body=json_body(OperatorTokenBody),
    replies={201: Reply("The token, once.", IssuedOperatorToken, NO_STORE_HEADER)},
    errors=(400,),
)
def create_operator_token(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """Create a token for a person (admins of every product): shown this once."""
    principal = call.principal
    principal.check_every_product()
    body = body_model(req, OperatorTokenBody)
    issued = call.context.tokens.create_operator_token(
        body.name,
        body.role,
        body.products,
        principal.actor,
        expires_in_seconds=body.expiresInSeconds,
    )
    view = IssuedOperatorToken.model_construct(
        token=issued.token,
        id=issued.id,
        name=issued.name,
        role=issued.role,
        products=list(issued.products),
        expiresAt=issued.expiresAt,
    )
    return reply(view, 201, NO_STORE)


@operations.route(
    "fleet/operator-tokens",
    "GET",
    caller="operator",
    role="admin",
    scope="fleet",
    id="listOperatorTokens",
    summary="Every operator token (no secrets)",
    tag="tokens",
    description="Admins of every product only. The bootstrap tokens are not listed.",
    replies={200: Reply("Oldest first.", OperatorTokenList)},
)
def list_operator_tokens(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    call.principal.check_every_product()
    tokens = call.context.tokens.list_operator_tokens()
    return reply(OperatorTokenList.model_validate({"tokens": tokens}))


@operations.route(
    "fleet/operator-tokens/{id}",
    "DELETE",
    caller="operator",
    role="admin",
    scope="fleet",
    id="revokeOperatorToken",
    summary="Revoke an operator token",
    tag="tokens",
    description=(
        "Admins of every product only. Its next request is 401; the idle gate poll "
        "(`queue-state`) may accept it for up to 30 s more on an instance that verified it "
        "just before (a per-instance cache keeps that poll one read)."
    ),
    params=(OPERATOR_TOKEN_ID,),
    replies={200: Reply("The token, now revoked.", OperatorToken)},
    errors=(404,),
)
def revoke_operator_token(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    principal = call.principal
    principal.check_every_product()
    revoked = call.context.tokens.revoke_operator_token(
        str(req.route_params.get("id", "")), principal.actor
    )
    return reply(OperatorToken.model_validate(revoked))
