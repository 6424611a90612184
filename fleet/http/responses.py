"""JSON responses, and the one mapping from the error tree to HTTP status."""

from __future__ import annotations

import json
import logging
from typing import Any

import azure.functions as func
from pydantic import BaseModel

from fleet.errors import (
    AlreadyExists,
    AlreadyVoted,
    ConditionFailed,
    Fenced,
    FleetError,
    Forbidden,
    IllegalReport,
    IllegalReprioritize,
    IllegalTransition,
    NotFound,
    NotInReview,
    QuotaExceeded,
    ReviewRefused,
    SettingsError,
    StoreUnavailable,
    Unauthorized,
    ValidationFailed,
)
from fleet.http.parsing import PayloadTooLarge

log = logging.getLogger(__name__)

JSON = "application/json"

_STATUS: tuple[tuple[type[FleetError], int], ...] = (
    (PayloadTooLarge, 413),
    (QuotaExceeded, 413),
    (ValidationFailed, 400),
    (IllegalReport, 400),
    (Unauthorized, 401),
    (Forbidden, 403),
    (ReviewRefused, 403),
    (NotFound, 404),
    (Fenced, 409),
    (IllegalTransition, 409),
    (IllegalReprioritize, 409),
    (NotInReview, 409),
    (AlreadyVoted, 409),
    (AlreadyExists, 409),
    (ConditionFailed, 409),
    (StoreUnavailable, 503),
    (SettingsError, 503),
)


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> func.HttpResponse:
    return func.HttpResponse(
        json.dumps(body, separators=(",", ":"), default=str),
        status_code=status,
        mimetype=JSON,
        charset="utf-8",
        headers=headers,
    )


def reply(
    view: BaseModel, status: int = 200, headers: dict[str, str] | None = None
) -> func.HttpResponse:
    """A reply model as a JSON response (its serialization: what the document says it is)."""
    return func.HttpResponse(
        view.model_dump_json(),
        status_code=status,
        mimetype=JSON,
        charset="utf-8",
        headers=headers,
    )


def status_for(error: FleetError) -> int:
    """The HTTP status of each kind of error: the only place this mapping lives."""
    for kind, status in _STATUS:
        if isinstance(error, kind):
            return status
    return 500


def error_response(error: FleetError) -> func.HttpResponse:
    status = status_for(error)
    if status == 500:
        # Unexpected (a store error the mapping does not know): its message may carry the
        # store's own text; the reply says nothing internal, the log keeps it.
        log.warning("request failed: %s %s", error.code, error.message)
        return json_response({"error": "internal", "message": "internal error"}, 500)
    body: dict[str, Any] = {"error": error.code, "message": error.message}
    details = {k: v for k, v in error.details.items() if v is not None}
    if details:
        body["details"] = details
    headers: dict[str, str] = {}
    if isinstance(error, StoreUnavailable) and error.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(error.retry_after)))
    if isinstance(error, Unauthorized):
        headers["WWW-Authenticate"] = 'Bearer realm="agent-fleet"'
    if status >= 500:
        log.warning("request failed: %s %s", error.code, error.message)
    return json_response(body, status, headers or None)
