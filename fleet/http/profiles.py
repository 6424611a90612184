"""Profiles (personas): immutable versions; PUT creates the next one."""

from __future__ import annotations

import azure.functions as func

from fleet.context import get_context
from fleet.coordinator.identity import any_principal, operator_principal
from fleet.domain.manifest import (
    parse_profile_json,
    parse_profile_markdown,
    validate_profile_name,
)
from fleet.domain.models import Profile
from fleet.http.parsing import body_bytes, int_param, json_value
from fleet.http.responses import handles_errors, json_response

bp = func.Blueprint()  # type: ignore[no-untyped-call]


def profile_view(profile: Profile) -> dict[str, object]:
    return profile.model_dump(mode="json", exclude={"etag", "type", "id"})


@bp.route(route="fleet/profiles/{name}", methods=["PUT"], auth_level=func.AuthLevel.ANONYMOUS)
@handles_errors
def put_profile(req: func.HttpRequest) -> func.HttpResponse:
    principal = operator_principal(req)
    name = validate_profile_name(req.route_params.get("name", ""))
    content_type = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if content_type in ("text/markdown", "text/plain", "text/x-markdown"):
        spec = parse_profile_markdown(body_bytes(req).decode("utf-8", errors="replace"))
    else:
        spec = parse_profile_json(json_value(req))
    profile = get_context().coordinator.put_profile(principal.product, name, spec)
    return json_response(profile_view(profile), 201)


@bp.route(route="fleet/profiles/{name}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@handles_errors
def get_profile(req: func.HttpRequest) -> func.HttpResponse:
    principal = any_principal(req)
    name = validate_profile_name(req.route_params.get("name", ""))
    version = int_param(req, "version", 0, minimum=1) if req.params.get("version") else None
    profile = get_context().coordinator.get_profile(principal.product, name, version)
    return json_response(profile_view(profile))


@bp.route(route="fleet/profiles", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
@handles_errors
def list_profiles(req: func.HttpRequest) -> func.HttpResponse:
    principal = any_principal(req)
    profiles = get_context().coordinator.list_profiles(principal.product)
    return json_response({"profiles": [profile_view(p) for p in profiles]})
