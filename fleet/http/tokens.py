"""Tokens: enrollment tokens (operators), enrollment, rotation and revocation (factories).

A token appears in a response only when it is created; listings show a short id instead.
"""

from __future__ import annotations

from typing import Any

import azure.functions as func

from fleet.context import get_context
from fleet.coordinator.identity import (
    Unauthorized,
    any_principal,
    bearer_token,
    operator_principal,
)
from fleet.coordinator.tokens import MISSING, IssuedToken
from fleet.domain.models import format_ts
from fleet.http.parsing import EnrollBody, EnrollmentTokenBody, body_model
from fleet.http.responses import handles_errors, json_response

bp = func.Blueprint()  # type: ignore[no-untyped-call]

# Tokens must not be cached by anything between the coordinator and the caller.
NO_STORE = {"Cache-Control": "no-store"}


def _issued(issued: IssuedToken) -> dict[str, Any]:
    return {
        "token": issued.token,
        "id": issued.id,
        "product": issued.product,
        "expiresAt": format_ts(issued.expiresAt) if issued.expiresAt else None,
        "capabilities": list(issued.capabilities) if issued.capabilities is not None else None,
    }


def _factory_id(req: func.HttpRequest) -> str:
    return str(req.route_params.get("id", ""))


@bp.route(route="fleet/enrollment-tokens", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@handles_errors
def create_enrollment_token(req: func.HttpRequest) -> func.HttpResponse:
    """Create an enrollment token for the product (shown once)."""
    principal = operator_principal(req)
    body = body_model(req, EnrollmentTokenBody, required=False)
    issued = get_context().tokens.create_enrollment_token(
        principal.product,
        principal.actor,
        expires_in_seconds=body.expiresInSeconds,
        capabilities=body.capabilities,
    )
    return json_response(_issued(issued), 201, NO_STORE)


@bp.route(route="fleet/enrollment-tokens", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@handles_errors
def list_enrollment_tokens(req: func.HttpRequest) -> func.HttpResponse:
    principal = operator_principal(req)
    tokens = get_context().tokens.list_enrollment_tokens(principal.product)
    return json_response({"tokens": tokens})


@bp.route(
    route="fleet/enrollment-tokens/{id}", methods=["DELETE"], auth_level=func.AuthLevel.ANONYMOUS
)
@handles_errors
def revoke_enrollment_token(req: func.HttpRequest) -> func.HttpResponse:
    principal = operator_principal(req)
    view = get_context().tokens.revoke_enrollment_token(
        principal.product, str(req.route_params.get("id", "")), principal.actor
    )
    return json_response(view)


@bp.route(route="fleet/factories/enroll", methods=["POST"], auth_level=func.AuthLevel.ANONYMOUS)
@handles_errors
def enroll_factory(req: func.HttpRequest) -> func.HttpResponse:
    """Exchange an enrollment token (the bearer), once, for this factory's token."""
    token = bearer_token(req)
    if token is None:
        raise Unauthorized(MISSING)
    body = body_model(req, EnrollBody)
    enrollment = get_context().tokens.enroll(token, body.name, body)
    return json_response(
        {
            "factoryId": enrollment.factory_id,
            "product": enrollment.product,
            "token": enrollment.token,
        },
        201,
        NO_STORE,
    )


@bp.route(
    route="fleet/factories/{id}/token/rotate",
    methods=["POST"],
    auth_level=func.AuthLevel.ANONYMOUS,
)
@handles_errors
def rotate_factory_token(req: func.HttpRequest) -> func.HttpResponse:
    """A new token for the factory (the factory itself, or an operator); the old ones keep
    working until ``previousValidUntil``."""
    principal = any_principal(req)
    rotation = get_context().tokens.rotate(principal, _factory_id(req))
    return json_response(
        {
            "factoryId": rotation.factory_id,
            "product": rotation.product,
            "token": rotation.token,
            "previousValidUntil": format_ts(rotation.previous_valid_until),
        },
        200,
        NO_STORE,
    )


@bp.route(
    route="fleet/factories/{id}/token/revoke",
    methods=["POST"],
    auth_level=func.AuthLevel.ANONYMOUS,
)
@handles_errors
def revoke_factory_token(req: func.HttpRequest) -> func.HttpResponse:
    """Refuse every token of the factory from the next request; the reaper requeues the
    jobs it holds."""
    principal = operator_principal(req)
    factory_id = _factory_id(req)
    count = get_context().tokens.revoke_factory(principal.product, factory_id, principal.actor)
    return json_response({"factoryId": factory_id, "revoked": True, "revokedTokens": count})
