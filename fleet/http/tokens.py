"""Tokens: enrollment tokens (admins), enrollment, rotation and revocation (factories).

A token appears in a response only when it is created; listings show a short id instead.
Operator tokens (people) are in ``fleet.http.operators``.
"""

from __future__ import annotations

from typing import Literal

import azure.functions as func
from pydantic import Field

from fleet.coordinator.identity import bearer_token
from fleet.coordinator.tokens import MISSING
from fleet.domain.models import Timestamp
from fleet.errors import Unauthorized
from fleet.http.operation import Call, Operations, Reply, json_body, path_param
from fleet.http.params import FACTORY_ID
from fleet.http.parsing import EnrollBody, EnrollmentTokenBody, body_model
from fleet.http.responses import reply
from fleet.http.views import View

operations = Operations()

# Tokens must not be cached by anything between the coordinator and the caller.
NO_STORE = {"Cache-Control": "no-store"}
NO_STORE_HEADER = {
    "Cache-Control": {
        "description": "`no-store`: the reply carries a secret.",
        "schema": {"type": "string"},
    }
}

TOKEN_ID = path_param("id", "The token's id from the listing.", "^[0-9a-f]{12}$")


class IssuedEnrollmentToken(View):
    """An enrollment token just created: the only time its secret is shown."""

    token: str = Field(pattern="^fle_", description="The enrollment token: shown this once.")
    id: str = Field(description="Names it in listings.")
    product: str
    expiresAt: Timestamp | None
    capabilities: tuple[str, ...] | None
    maxSeats: int | None = Field(description="The most jobs its factory may hold at once.")
    kind: str | None = Field(description="Its factory's review kind, if an operator set it.")
    maxUses: int = Field(description="How many factories may enroll with it.")
    ephemeral: bool = Field(description="Its factories are ephemeral (autoscaled workers).")
    namePrefix: str | None = Field(description="An ephemeral token's generated names' prefix.")


class EnrollmentToken(View):
    """An enrollment token as operators see it: no secret, no full hash."""

    id: str
    product: str
    status: Literal["active", "used", "expired", "revoked"] = Field(
        description="`used` once it admitted `maxUses` enrollments."
    )
    createdAt: Timestamp
    createdBy: str
    expiresAt: Timestamp | None
    capabilities: tuple[str, ...] | None
    maxSeats: int | None
    kind: str | None
    maxUses: int = Field(description="How many factories may enroll with it (1: single use).")
    uses: int = Field(description="How many did (a use given back is not counted).")
    ephemeral: bool
    namePrefix: str | None
    usedAt: Timestamp | None = Field(description="A single-use token: when it was used.")
    usedBy: str | None = Field(description="A single-use token: the factory that used it.")
    revokedAt: Timestamp | None


class EnrollmentTokenList(View):
    tokens: list[EnrollmentToken]


class Enrollment(View):
    """A factory enrolled: its name, its product and its token."""

    factoryId: str
    product: str
    token: str = Field(pattern="^flf_", description="The factory's token: shown this once.")


class TokenRotation(View):
    factoryId: str
    product: str
    token: str = Field(pattern="^flf_")
    previousValidUntil: Timestamp = Field(description="The old tokens are refused from then on.")


class FactoryRevocation(View):
    factoryId: str
    revoked: bool
    revokedTokens: int


def _factory_id(req: func.HttpRequest) -> str:
    return str(req.route_params.get("id", ""))


@operations.route(
    "fleet/enrollment-tokens",
    "POST",
    caller="operator",
    id="createEnrollmentToken",
    role="admin",
    summary="Create an enrollment token for the product (shown once)",
    tag="tokens",
    description=(
        "A factory exchanges it for its own token (`POST /api/fleet/factories/enroll`): "
        "once, or `maxUses` times (autoscaled workers share one). Optional: an expiry, a "
        "capability allowlist the enrolling factory must stay within, a seat cap, its "
        "review kind (`kind`: what `distinctKind` reviews count it as), and `ephemeral`: "
        "its factories may enroll without a name (named `<namePrefix>-<8 hex>`) and are "
        "pruned once silent for the healer's down threshold. The token is in this "
        "response only; store it now."
    ),
    body=json_body(EnrollmentTokenBody, required=False),
    replies={201: Reply("The token, once.", IssuedEnrollmentToken, NO_STORE_HEADER)},
    errors=(400,),
)
def create_enrollment_token(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """Create an enrollment token for the product (shown once)."""
    principal = call.principal
    body = body_model(req, EnrollmentTokenBody, required=False)
    issued = call.context.tokens.create_enrollment_token(
        principal.product,
        principal.actor,
        expires_in_seconds=body.expiresInSeconds,
        capabilities=body.capabilities,
        max_seats=body.maxSeats,
        kind=body.kind,
        max_uses=body.maxUses,
        ephemeral=body.ephemeral,
        name_prefix=body.namePrefix,
    )
    view = IssuedEnrollmentToken.model_construct(
        token=issued.token,
        id=issued.id,
        product=issued.product,
        expiresAt=issued.expiresAt,
        capabilities=issued.capabilities,
        maxSeats=issued.maxSeats,
        kind=issued.kind,
        maxUses=issued.maxUses,
        ephemeral=issued.ephemeral,
        namePrefix=issued.namePrefix,
    )
    return reply(view, 201, NO_STORE)


@operations.route(
    "fleet/enrollment-tokens",
    "GET",
    caller="operator",
    id="listEnrollmentTokens",
    role="admin",
    summary="The product's enrollment tokens (no secrets)",
    tag="tokens",
    replies={200: Reply("Oldest first.", EnrollmentTokenList)},
)
def list_enrollment_tokens(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    principal = call.principal
    tokens = call.context.tokens.list_enrollment_tokens(principal.product)
    return reply(EnrollmentTokenList.model_validate({"tokens": tokens}))


@operations.route(
    "fleet/enrollment-tokens/{id}",
    "DELETE",
    caller="operator",
    id="revokeEnrollmentToken",
    role="admin",
    summary="Revoke an enrollment token",
    tag="tokens",
    params=(TOKEN_ID,),
    replies={200: Reply("The token, now revoked.", EnrollmentToken)},
    errors=(404,),
)
def revoke_enrollment_token(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    principal = call.principal
    revoked = call.context.tokens.revoke_enrollment_token(
        principal.product, str(req.route_params.get("id", "")), principal.actor
    )
    return reply(EnrollmentToken.model_validate(revoked))


@operations.route(
    "fleet/factories/enroll",
    "POST",
    caller="anonymous",
    bearer="enrollment",
    id="enrollFactory",
    summary="Exchange an enrollment token for this factory's token",
    tag="tokens",
    description=(
        "The bearer is the enrollment token; it works once, or `maxUses` times (a use "
        "past them, also a racing one, is 401). `name` may be left out only with an "
        "ephemeral token (else 400 on `name`): the coordinator names the factory, and "
        "`factoryId` says how. 403 when the capabilities exceed the token's allowlist; "
        "409 `factory_exists` when a factory of this name is enrolled (and not "
        "deregistered) — neither uses the token up. The factory token is in this "
        "response only."
    ),
    body=json_body(EnrollBody),
    replies={201: Reply("Enrolled and registered.", Enrollment, NO_STORE_HEADER)},
    errors=(400, 409),
    conflict="FactoryConflict",
)
def enroll_factory(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """Exchange one use of an enrollment token (the bearer) for this factory's token."""
    token = bearer_token(req)
    if token is None:
        raise Unauthorized(MISSING)
    body = body_model(req, EnrollBody)
    enrollment = call.context.tokens.enroll(token, body.name, body)
    view = Enrollment.model_construct(
        factoryId=enrollment.factory_id, product=enrollment.product, token=enrollment.token
    )
    return reply(view, 201, NO_STORE)


@operations.route(
    "fleet/factories/{id}/token/rotate",
    "POST",
    caller="any",
    id="rotateFactoryToken",
    role="admin",
    summary="A new token for the factory; the old one works for a grace period",
    tag="tokens",
    description=(
        "The factory itself or an admin. A factory's rotation retires the token it called "
        "with; an admin's retires all of the factory's tokens. Retired tokens keep working "
        "until `previousValidUntil` (`FLEET_TOKEN_GRACE_SECONDS`, default 300), then are "
        "401; a retired token cannot rotate again (409 `token_in_grace`)."
    ),
    params=(FACTORY_ID,),
    replies={200: Reply("The new token, once.", TokenRotation, NO_STORE_HEADER)},
    errors=(404, 409),
    conflict="FactoryConflict",
)
def rotate_factory_token(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """A new token for the factory (the factory itself, or an admin); the old ones keep
    working until ``previousValidUntil``."""
    principal = call.principal
    rotation = call.context.tokens.rotate(principal, _factory_id(req))
    view = TokenRotation.model_construct(
        factoryId=rotation.factory_id,
        product=rotation.product,
        token=rotation.token,
        previousValidUntil=rotation.previous_valid_until,
    )
    return reply(view, 200, NO_STORE)


@operations.route(
    "fleet/factories/{id}/token/revoke",
    "POST",
    caller="operator",
    id="revokeFactoryToken",
    role="admin",
    summary="Revoke every token of a factory",
    tag="tokens",
    description=(
        "Its next request is 401, and the factory is marked revoked: the reaper requeues "
        "the jobs it holds (epoch bumped, so it is fenced). The idle gate poll "
        "(`queue-state`) may accept its token for up to 30 s more on an instance that "
        "verified it just before (a per-instance cache keeps that poll one read)."
    ),
    params=(FACTORY_ID,),
    replies={200: Reply("Revoked.", FactoryRevocation)},
    errors=(404,),
)
def revoke_factory_token(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """Refuse every token of the factory from the next request; the reaper requeues the
    jobs it holds."""
    principal = call.principal
    factory_id = _factory_id(req)
    count = call.context.tokens.revoke_factory(principal.product, factory_id, principal.actor)
    return reply(
        FactoryRevocation.model_construct(factoryId=factory_id, revoked=True, revokedTokens=count)
    )
