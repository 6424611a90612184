"""Profiles (personas): immutable versions; PUT creates the next one."""

from __future__ import annotations

from typing import Literal, Self

import azure.functions as func
from pydantic import ConfigDict, Field

from fleet.domain.manifest import (
    PROFILE_NAME_PATTERN,
    ProfileSpec,
    parse_profile_json,
    parse_profile_markdown,
    validate_profile_name,
)
from fleet.domain.models import Profile
from fleet.http.operation import Body, Call, OneOf, Operations, Reply, path_param, query_param
from fleet.http.parsing import body_bytes, int_param, json_value
from fleet.http.responses import JSON, reply
from fleet.http.views import View

operations = Operations()

MARKDOWN = "text/markdown"
PROFILE_NAME = path_param("name", "The profile (persona) name.", PROFILE_NAME_PATTERN)


class ProfileDocument(View):
    """A profile submitted as JSON carrying its markdown."""

    model_config = ConfigDict(extra="forbid")

    profile: str = Field(description="The profile as markdown.")


class ProfileView(Profile):
    """A profile version as replies show it: without its store-only fields."""

    type: Literal["profile"] = Field(default="profile", exclude=True)
    id: str = Field(default="", exclude=True)

    @classmethod
    def of(cls, profile: Profile) -> Self:
        return cls.model_construct(**profile.__dict__)


class ProfileList(View):
    profiles: list[ProfileView]


@operations.route(
    "fleet/profiles/{name}",
    "PUT",
    caller="operator",
    id="putProfile",
    summary="Create the next version of a profile",
    tag="profiles",
    description=(
        "Profiles are immutable: each PUT creates the next version. The body is markdown "
        "(optional front matter: engine, capabilities, description; the body is the "
        'preamble) or JSON: the fields, or `{"profile": "<markdown>"}`.'
    ),
    params=(PROFILE_NAME,),
    body=Body(
        {
            MARKDOWN: {"type": "string", "description": "The profile as markdown."},
            JSON: OneOf((ProfileSpec, ProfileDocument)),
        }
    ),
    replies={201: Reply("The new version.", ProfileView)},
    errors=(400, 409),
)
def put_profile(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    principal = call.principal
    name = validate_profile_name(req.route_params.get("name", ""))
    content_type = (req.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if content_type in ("text/markdown", "text/plain", "text/x-markdown"):
        spec = parse_profile_markdown(body_bytes(req).decode("utf-8", errors="replace"))
    else:
        spec = parse_profile_json(json_value(req))
    profile = call.context.coordinator.put_profile(principal.product, name, spec, principal.actor)
    return reply(ProfileView.of(profile), 201)


@operations.route(
    "fleet/profiles/{name}",
    "GET",
    caller="any",
    id="getProfile",
    summary="A profile: the latest version, or the one asked for",
    tag="profiles",
    params=(
        PROFILE_NAME,
        query_param(
            "version", "This version (default: the latest).", {"type": "integer", "minimum": 1}
        ),
    ),
    replies={200: Reply("The profile.", ProfileView)},
    errors=(400, 404),
)
def get_profile(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    principal = call.principal
    name = validate_profile_name(req.route_params.get("name", ""))
    version = int_param(req, "version", 0, minimum=1) if req.params.get("version") else None
    profile = call.context.coordinator.get_profile(principal.product, name, version)
    return reply(ProfileView.of(profile))


@operations.route(
    "fleet/profiles",
    "GET",
    caller="any",
    id="listProfiles",
    summary="The latest version of every profile",
    tag="profiles",
    replies={200: Reply("The profiles, by name.", ProfileList)},
)
def list_profiles(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    principal = call.principal
    profiles = call.context.coordinator.list_profiles(principal.product)
    return reply(ProfileList.model_construct(profiles=[ProfileView.of(p) for p in profiles]))
