"""Tokens: enrollment tokens (operators), enrollment, rotation and revocation (factories).

A token appears in a response only when it is created; listings show a short id instead.
"""

from __future__ import annotations

from typing import Any

import azure.functions as func

from fleet.coordinator.identity import bearer_token
from fleet.coordinator.tokens import MISSING, IssuedToken
from fleet.domain.models import format_ts
from fleet.errors import Unauthorized
from fleet.http.operation import Call, Operations
from fleet.http.parsing import EnrollBody, EnrollmentTokenBody, body_model
from fleet.http.responses import json_response

operations = Operations()

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


@operations.route("fleet/enrollment-tokens", "POST", caller="operator")
def create_enrollment_token(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """Create an enrollment token for the product (shown once)."""
    principal = call.principal
    body = body_model(req, EnrollmentTokenBody, required=False)
    issued = call.context.tokens.create_enrollment_token(
        principal.product,
        principal.actor,
        expires_in_seconds=body.expiresInSeconds,
        capabilities=body.capabilities,
    )
    return json_response(_issued(issued), 201, NO_STORE)


@operations.route("fleet/enrollment-tokens", "GET", caller="operator")
def list_enrollment_tokens(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    principal = call.principal
    tokens = call.context.tokens.list_enrollment_tokens(principal.product)
    return json_response({"tokens": tokens})


@operations.route("fleet/enrollment-tokens/{id}", "DELETE", caller="operator")
def revoke_enrollment_token(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    principal = call.principal
    view = call.context.tokens.revoke_enrollment_token(
        principal.product, str(req.route_params.get("id", "")), principal.actor
    )
    return json_response(view)


@operations.route("fleet/factories/enroll", "POST", caller="anonymous")
def enroll_factory(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """Exchange an enrollment token (the bearer), once, for this factory's token."""
    token = bearer_token(req)
    if token is None:
        raise Unauthorized(MISSING)
    body = body_model(req, EnrollBody)
    enrollment = call.context.tokens.enroll(token, body.name, body)
    return json_response(
        {
            "factoryId": enrollment.factory_id,
            "product": enrollment.product,
            "token": enrollment.token,
        },
        201,
        NO_STORE,
    )


@operations.route("fleet/factories/{id}/token/rotate", "POST", caller="any")
def rotate_factory_token(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """A new token for the factory (the factory itself, or an operator); the old ones keep
    working until ``previousValidUntil``."""
    principal = call.principal
    rotation = call.context.tokens.rotate(principal, _factory_id(req))
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


@operations.route("fleet/factories/{id}/token/revoke", "POST", caller="operator")
def revoke_factory_token(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """Refuse every token of the factory from the next request; the reaper requeues the
    jobs it holds."""
    principal = call.principal
    factory_id = _factory_id(req)
    count = call.context.tokens.revoke_factory(principal.product, factory_id, principal.actor)
    return json_response({"factoryId": factory_id, "revoked": True, "revokedTokens": count})
