"""Persona profiles as submitted: a preamble (the markdown body) with an engine,
capabilities and a description in the front matter. The coordinator names and versions them.
"""

from __future__ import annotations

from typing import Any

from fleet.domain import front_matter
from fleet.domain.fields import PROFILE_NAME, Capabilities, Description, Engine, Preamble, Strict
from fleet.domain.problems import Contexts, json_object, show, spellings, validate, wrapped
from fleet.errors import ValidationFailed


class ProfileSpec(Strict):
    """A persona profile as submitted; the coordinator names and versions it."""

    preamble: Preamble
    engine: Engine | None = None
    capabilities: Capabilities = ()
    description: Description | None = None


PROFILE_CONTEXTS: Contexts = {(): spellings(ProfileSpec)}


def validate_profile_name(name: object) -> str:
    if not isinstance(name, str):
        raise ValidationFailed.one("name", "string_type", "a profile name should be a string")
    if not PROFILE_NAME.fullmatch(name):
        raise ValidationFailed.one(
            "name",
            "string_pattern_mismatch",
            f"profile name {show(name)} should be 1-63 lower-case letters, digits and '-', "
            "starting with a letter or digit",
        )
    return name


def parse_profile_markdown(text: str) -> ProfileSpec:
    """A profile from markdown: optional front matter (engine, capabilities, description);
    the body is the preamble."""
    split = front_matter.split(text)
    meta = split.front_matter or {}
    problems = front_matter.reserved(meta, "preamble")
    return validate(
        ProfileSpec,
        {**meta, "preamble": split.body},
        problems,
        contexts=PROFILE_CONTEXTS,
        yaml_source=True,
    )


def parse_profile_json(obj: object) -> ProfileSpec:
    """A profile from a JSON object: ``{"profile": "<markdown>"}`` or the fields and
    ``preamble``."""
    data = json_object(obj)
    if "profile" in data:
        return parse_profile_markdown(wrapped(data, "profile"))
    return validate(ProfileSpec, data, [], contexts=PROFILE_CONTEXTS, yaml_source=False)


def render_profile_markdown(profile: ProfileSpec) -> str:
    meta: dict[str, Any] = {}
    if profile.engine is not None:
        meta["engine"] = profile.engine
    if profile.capabilities:
        meta["capabilities"] = list(profile.capabilities)
    if profile.description is not None:
        meta["description"] = profile.description
    return front_matter.render(meta, profile.preamble)
