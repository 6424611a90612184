"""Scaler tokens: the product's autoscalers' credentials, managed by its admins.

An admin of a product creates, lists and revokes its scaler tokens, as enrollment tokens are
(a product-scoped admin manages its own products'; viewers and operators do not see them: a
listing names who holds the product's demand poll). A scaler token can call only the demand
poll (``GET /api/fleet/demand``, caller ``demand``) of its product. A token appears in a
reply only when it is created; listings show a short id instead.
"""

from __future__ import annotations

from typing import Literal

import azure.functions as func
from pydantic import Field

from fleet.coordinator.identity import NAME
from fleet.coordinator.scaler_tokens import MAX_EXPIRY_SECONDS, MIN_EXPIRY_SECONDS
from fleet.domain.models import Timestamp
from fleet.http.operation import Call, Operations, Reply, json_body, path_param
from fleet.http.parsing import Body, body_model
from fleet.http.responses import reply
from fleet.http.tokens import NO_STORE, NO_STORE_HEADER
from fleet.http.views import View

operations = Operations()

SCALER_TOKEN_ID = path_param("id", "The token's id from the listing.", "^[0-9a-f]{12}$")


class ScalerTokenBody(Body):
    """An admin creates a token for an autoscaler of the product."""

    name: str = Field(
        pattern=NAME.pattern,
        description="The autoscaler: unique among the product's live scaler tokens; its "
        "calls are `scaler:NAME`.",
    )
    expiresInSeconds: int | None = Field(
        default=None,
        ge=MIN_EXPIRY_SECONDS,
        le=MAX_EXPIRY_SECONDS,
        description="Omitted: it does not expire.",
    )


class IssuedScalerToken(View):
    """A scaler token just created: the only time its secret is shown."""

    token: str = Field(pattern="^fls_", description="The scaler token: shown this once.")
    id: str = Field(description="Names it in listings.")
    name: str
    product: str
    expiresAt: Timestamp | None


class ScalerToken(View):
    """A scaler token as admins see it: no secret, no full hash."""

    id: str
    name: str
    product: str
    status: Literal["active", "expired", "revoked"]
    createdAt: Timestamp
    createdBy: str
    expiresAt: Timestamp | None
    revokedAt: Timestamp | None
    revokedBy: str | None


class ScalerTokenList(View):
    tokens: list[ScalerToken]


@operations.route(
    "fleet/scaler-tokens",
    "POST",
    caller="operator",
    role="admin",
    id="createScalerToken",
    summary="Create a scaler token for the product: an autoscaler's (shown once)",
    tag="tokens",
    description=(
        "A scaler token (`fls_...`) may call only `GET /api/fleet/demand`, for this product; "
        "every other operation refuses it (403). 409 `scaler_token_exists` when the product "
        "has a live scaler token of that name. The token is in this response only; store it "
        "now."
    ),
    body=json_body(ScalerTokenBody),
    replies={201: Reply("The token, once.", IssuedScalerToken, NO_STORE_HEADER)},
    errors=(400, 409),
)
def create_scaler_token(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """Create a scaler token for the product (admins of it): shown this once."""
    principal = call.principal
    body = body_model(req, ScalerTokenBody)
    issued = call.context.tokens.create_scaler_token(
        principal.product, body.name, principal.actor, expires_in_seconds=body.expiresInSeconds
    )
    view = IssuedScalerToken.model_construct(
        token=issued.token,
        id=issued.id,
        name=issued.name,
        product=issued.product,
        expiresAt=issued.expiresAt,
    )
    return reply(view, 201, NO_STORE)


@operations.route(
    "fleet/scaler-tokens",
    "GET",
    caller="operator",
    role="admin",
    id="listScalerTokens",
    summary="The product's scaler tokens (no secrets)",
    tag="tokens",
    replies={200: Reply("Oldest first.", ScalerTokenList)},
)
def list_scaler_tokens(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    tokens = call.context.tokens.list_scaler_tokens(call.principal.product)
    return reply(ScalerTokenList.model_validate({"tokens": tokens}))


@operations.route(
    "fleet/scaler-tokens/{id}",
    "DELETE",
    caller="operator",
    role="admin",
    id="revokeScalerToken",
    summary="Revoke a scaler token",
    tag="tokens",
    description=(
        "Its next request is 401; the demand poll may accept it for up to 30 s more on an "
        "instance that verified it just before (a per-instance cache keeps that poll one "
        "read), never on this one."
    ),
    params=(SCALER_TOKEN_ID,),
    replies={200: Reply("The token, now revoked.", ScalerToken)},
    errors=(404,),
)
def revoke_scaler_token(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    principal = call.principal
    revoked = call.context.tokens.revoke_scaler_token(
        principal.product, str(req.route_params.get("id", "")), principal.actor
    )
    return reply(ScalerToken.model_validate(revoked))
