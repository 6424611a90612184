"""Profiles (personas): immutable versions; PUT creates the next one."""

from __future__ import annotations

import azure.functions as func

from fleet.domain.manifest import (
    parse_profile_json,
    parse_profile_markdown,
    validate_profile_name,
)
from fleet.domain.models import Profile
from fleet.http.operation import Call, Operations
from fleet.http.parsing import body_bytes, int_param, json_value
from fleet.http.responses import json_response

operations = Operations()


def profile_view(profile: Profile) -> dict[str, object]:
    return profile.model_dump(mode="json", exclude={"etag", "type", "id"})


@operations.route("fleet/profiles/{name}", "PUT", caller="operator")
def put_profile(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    principal = call.principal
    name = validate_profile_name(req.route_params.get("name", ""))
    content_type = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if content_type in ("text/markdown", "text/plain", "text/x-markdown"):
        spec = parse_profile_markdown(body_bytes(req).decode("utf-8", errors="replace"))
    else:
        spec = parse_profile_json(json_value(req))
    profile = call.context.coordinator.put_profile(principal.product, name, spec)
    return json_response(profile_view(profile), 201)


@operations.route("fleet/profiles/{name}", "GET", caller="any")
def get_profile(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    principal = call.principal
    name = validate_profile_name(req.route_params.get("name", ""))
    version = int_param(req, "version", 0, minimum=1) if req.params.get("version") else None
    profile = call.context.coordinator.get_profile(principal.product, name, version)
    return json_response(profile_view(profile))


@operations.route("fleet/profiles", "GET", caller="any")
def list_profiles(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    principal = call.principal
    profiles = call.context.coordinator.list_profiles(principal.product)
    return json_response({"profiles": [profile_view(p) for p in profiles]})
