"""The OpenAPI document: valid, served, and in step with the routes function_app registers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import azure.functions as func
from azure.functions.decorators.http import HttpTrigger
from openapi_spec_validator import validate

from fleet.http import jobs
from fleet.http.openapi import build_document
from function_app import app

REPO = Path(__file__).resolve().parents[2]
ROUTE_PREFIX: str = json.loads((REPO / "host.json").read_text())["extensions"]["http"][
    "routePrefix"
]
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


# The app's functions are built once (FleetApp): the host's list, and the document's.
FUNCTIONS = list(app.get_functions())
DOCUMENT = build_document(FUNCTIONS)


def _path(route: str) -> str:
    return f"/{ROUTE_PREFIX}/{route}" if ROUTE_PREFIX else f"/{route}"


def _registered_operations() -> dict[tuple[str, str], str]:
    """(method, documented path) -> the function and route template that serve it."""
    out: dict[tuple[str, str], str] = {}
    for fn in FUNCTIONS:
        trigger = fn.get_trigger()
        if not isinstance(trigger, HttpTrigger):
            continue
        route = str(trigger.route)
        assert trigger.methods, f"{route} accepts every method: list them"
        for method in trigger.methods:
            verb = str(getattr(method, "value", method)).lower()
            out[(verb, _path(route))] = f"{fn.get_function_name()} ({verb.upper()} {route})"
    return out


def _documented_operations() -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): operation
        for path, item in DOCUMENT["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS
    }


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = DOCUMENT
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def test_the_document_is_valid_openapi_3_1() -> None:
    assert DOCUMENT["openapi"].startswith("3.1.")
    validate(DOCUMENT)


def test_every_registered_route_is_documented() -> None:
    documented = _documented_operations()
    missing = sorted(
        f"{method.upper()} {path}: {served_by}"
        for (method, path), served_by in _registered_operations().items()
        if (method, path) not in documented
    )
    assert not missing, "registered but not in the OpenAPI document:\n" + "\n".join(missing)


def test_every_documented_operation_is_registered() -> None:
    registered = _registered_operations()
    extra = sorted(
        f"{method.upper()} {path} ({operation['operationId']})"
        for (method, path), operation in _documented_operations().items()
        if (method, path) not in registered
    )
    assert not extra, "documented but no function serves it:\n" + "\n".join(extra)


def test_operation_ids_are_unique() -> None:
    ids = [operation["operationId"] for operation in _documented_operations().values()]
    assert len(ids) == len(set(ids))


def test_every_error_response_is_an_error_body() -> None:
    for (method, path), operation in _documented_operations().items():
        for status, response in operation["responses"].items():
            if int(status) < 400 or (path == "/api/health" and status == "503"):
                continue
            schema = _resolve(response)["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)
    error = DOCUMENT["components"]["schemas"]["Error"]
    assert error["required"] == ["error", "message"]
    problems = _resolve(error["properties"]["details"])["properties"]["problems"]
    problem = _resolve(problems["items"])
    assert problem["required"] == ["path", "code", "message"]


def test_fenced_writes_document_409_fenced() -> None:
    operations = _documented_operations()
    for key in [
        ("patch", "/api/fleet/jobs/{id}"),
        ("post", "/api/fleet/jobs/{id}/lease/renew"),
        ("post", "/api/fleet/jobs/{id}/lease/release"),
    ]:
        conflict = _resolve(operations[key]["responses"]["409"])
        assert conflict["content"]["application/json"]["example"]["error"] == "fenced", key


def test_submit_and_claim_statuses_and_bearer_identity() -> None:
    operations = _documented_operations()
    submit = operations[("post", "/api/fleet/jobs")]
    assert set(submit["requestBody"]["content"]) == {"text/markdown", "application/json"}
    assert {"200", "201", "400", "401", "403"} <= set(submit["responses"])
    claim = operations[("post", "/api/fleet/claim")]
    assert {"200", "204", "401", "403"} <= set(claim["responses"])
    for operation in (submit, claim):
        assert operation["security"] == [{"bearerAuth": []}]
        headers = {_resolve(p)["name"]: _resolve(p)["required"] for p in operation["parameters"]}
        assert headers == {"X-Fleet-Product": False}
    scheme = DOCUMENT["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    assert "Bearer: an operator token (role `operator` or `admin`)." in submit["description"]
    assert submit["x-fleet-role"] == "operator"
    assert "Bearer: a factory token." in claim["description"]


def test_identity_headers_are_gone_and_anonymous_routes_stay_anonymous() -> None:
    text = json.dumps(DOCUMENT)
    assert "X-Fleet-Factory" not in text and "X-Fleet-Operator" not in text
    operations = _documented_operations()
    for key in [("get", "/api/health"), ("get", "/api/openapi.json")]:
        assert "security" not in operations[key] and "401" not in operations[key]["responses"]
    enroll = operations[("post", "/api/fleet/factories/enroll")]
    assert enroll["security"] == [{"bearerAuth": []}] and "parameters" not in enroll
    assert {"201", "401", "403", "409"} <= set(enroll["responses"])


def test_the_document_is_served() -> None:
    (function,) = [fn for fn in FUNCTIONS if fn.get_function_name() == "openapi_document"]
    trigger = function.get_trigger()
    assert trigger.route == "openapi.json"
    response = function.get_user_function()(func.HttpRequest("GET", "/api/openapi.json", body=b""))
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    served = json.loads(response.get_body())
    assert "openapi" in served and "paths" in served
    assert served == DOCUMENT


def test_the_job_list_documents_its_paging() -> None:
    operation = _documented_operations()[("get", "/api/fleet/jobs")]
    params = {_resolve(p)["name"]: _resolve(p)["schema"] for p in operation["parameters"]}
    assert params["limit"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": jobs.JOBS_PAGE_MAX,
        "default": jobs.JOBS_PAGE_DEFAULT,
    }
    assert params["cursor"] == {"type": "string"} and "stage" in params
    assert "400" in operation["responses"]
    listed = DOCUMENT["components"]["schemas"]["JobList"]
    assert listed["required"] == ["jobs", "count", "next"]


def test_the_fleet_list_documents_the_heartbeat_summary() -> None:
    item = DOCUMENT["components"]["schemas"]["FactoryListItem"]
    assert "heartbeat" in item["properties"] and "heartbeat" not in item["required"]
    summary = DOCUMENT["components"]["schemas"]["HeartbeatSummary"]
    assert set(summary["required"]) == {
        "at",
        "ageSeconds",
        "load",
        "seats",
        "jobs",
        "pendingCount",
        "pendingKinds",
    }


def test_every_tag_an_operation_names_is_described() -> None:
    described = {tag["name"] for tag in DOCUMENT["tags"]}
    used = {tag for operation in _documented_operations().values() for tag in operation["tags"]}
    assert used <= described, used - described
