"""Profiles through the HTTP handlers: each PUT (markdown, JSON fields, or JSON carrying the
markdown) creates the next version; replies show a version without its store-only fields."""

from __future__ import annotations

import pytest

from fleet.context import AppContext
from fleet.http import profiles
from tests.support.handlers import OPERATOR, Reply, call, documented

P = "prod"
MARKDOWN = b"---\nengine: claude\ncapabilities: [python]\ndescription: careful\n---\nBe careful.\n"


def _put(
    context: AppContext, name: str, body: object, content_type: str = "application/json"
) -> Reply:
    return call(
        context,
        profiles.put_profile,
        "PUT",
        f"/api/fleet/profiles/{name}",
        OPERATOR,
        body,
        product=P,
        headers={"Content-Type": content_type},
        name=name,
    )


def test_profiles_http_put_creates_versions_from_markdown_and_json(app_context: AppContext) -> None:
    status, first, _ = _put(app_context, "dev", MARKDOWN, "text/markdown")
    assert status == 201
    assert first == {
        "productId": P,
        "name": "dev",
        "version": 1,
        "preamble": "Be careful.\n",
        "engine": "claude",
        "capabilities": ["python"],
        "description": "careful",
        "createdAt": "2026-01-01T00:00:00.000000Z",
    }
    documented(first, "ProfileView")
    status, second, _ = _put(app_context, "dev", {"preamble": "Be bold."})
    assert (status, second["version"], second["engine"], second["capabilities"]) == (
        201,
        2,
        None,
        [],
    )
    status, third, _ = _put(app_context, "dev", {"profile": "---\nengine: codex\n---\nHi."})
    assert (status, third["version"], third["engine"], third["preamble"]) == (
        201,
        3,
        "codex",
        "Hi.",
    )


def test_profiles_http_get_answers_the_latest_or_the_version_asked_for(
    app_context: AppContext,
) -> None:
    _put(app_context, "dev", MARKDOWN, "text/markdown")
    _put(app_context, "dev", {"preamble": "Be bold."})
    _put(app_context, "ops", {"preamble": "Watch."})

    def get(name: str, **params: str) -> Reply:
        return call(
            app_context,
            profiles.get_profile,
            "GET",
            f"/api/fleet/profiles/{name}",
            OPERATOR,
            product=P,
            params=params,
            name=name,
        )

    status, latest, _ = get("dev")
    assert (status, latest["version"], latest["preamble"]) == (200, 2, "Be bold.")
    assert "id" not in latest and "type" not in latest and "_etag" not in latest
    documented(latest, "ProfileView")
    status, first, _ = get("dev", version="1")
    assert (status, first["version"], first["engine"]) == (200, 1, "claude")
    assert get("nope")[0] == 404
    assert get("dev", version="0")[0] == 400
    status, listed, _ = call(
        app_context, profiles.list_profiles, "GET", "/api/fleet/profiles", OPERATOR, product=P
    )
    assert status == 200
    assert [(p["name"], p["version"]) for p in listed["profiles"]] == [("dev", 2), ("ops", 1)]
    documented(listed, "ProfileList")


@pytest.mark.parametrize(
    "body",
    [{"preamble": 1}, {"preamble": "x", "colour": "red"}, {"profile": "x", "engine": "y"}],
)
def test_profiles_http_bad_bodies_are_400(app_context: AppContext, body: object) -> None:
    status, reply, _ = _put(app_context, "dev", body)
    assert (status, reply["error"]) == (400, "validation_failed")
