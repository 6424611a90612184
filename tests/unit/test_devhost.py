"""The local Functions host: routing, request/response mapping, static files, settings, timers."""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest
import requests

from devtools.host import (
    DevHost,
    DevHostError,
    RouteError,
    ScheduleError,
    TimerFunction,
    TimerRunner,
    compile_route,
    index_app,
    load_global_headers,
    load_local_settings,
    read_route_prefix,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
WEBUI = REPO_ROOT / "webui"
FAR_FUTURE = "0 0 0 1 1 *"  # once a year: the scheduler thread stays idle during HTTP tests


def make_app(timer_calls: list[func.TimerRequest] | None = None) -> func.FunctionApp:
    bp = func.Blueprint()  # type: ignore[no-untyped-call]

    @bp.route(route="items/{id}", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
    def get_item(req: func.HttpRequest) -> func.HttpResponse:
        payload = {
            "id": req.route_params["id"],
            "params": dict(req.params),
            "x_test": req.headers.get("x-test"),
            "method": req.method,
            "url": req.url,
        }
        return func.HttpResponse(
            json.dumps(payload), mimetype="application/json", headers={"X-Reply": "yes"}
        )

    @bp.route(route="items/{id}", methods=["PUT"])
    def put_item(req: func.HttpRequest) -> func.HttpResponse:
        payload = {
            "id": req.route_params["id"],
            "json": req.get_json(),
            "content_type": req.headers.get("content-type"),
        }
        return func.HttpResponse(json.dumps(payload), status_code=201, mimetype="application/json")

    # Registered after items/{id}: the literal segment must still win.
    @bp.route(route="items/summary", methods=["GET"])
    def items_summary(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("summary")

    @bp.route(route="nums/{n}")
    def nums(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(req.route_params["n"])

    @bp.route(route="boom")
    def boom(req: func.HttpRequest) -> func.HttpResponse:
        raise RuntimeError("kaboom")

    @bp.route(methods=["GET"])
    def plain(req: func.HttpRequest) -> str:
        return "plain text"

    @bp.function_name("renamed")
    @bp.route(methods=["POST"], trigger_arg_name="request")
    async def renamed_handler(request: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse(request.get_body(), mimetype="application/octet-stream")

    @bp.timer_trigger(arg_name="tick", schedule="%TEST_SCHEDULE%")
    def ticker(tick: func.TimerRequest) -> None:
        if timer_calls is not None:
            timer_calls.append(tick)

    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
    app.register_functions(bp)
    return app


def write_root(root: Path, route_prefix: str | None = "api") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    host_json: dict[str, Any] = {"version": "2.0"}
    if route_prefix is not None:
        host_json["extensions"] = {"http": {"routePrefix": route_prefix}}
    (root / "host.json").write_text(json.dumps(host_json))
    webui = root / "webui"
    (webui / "sub").mkdir(parents=True, exist_ok=True)
    (webui / "index.html").write_text("<h1>fleet</h1>")
    (webui / "app.js").write_text("console.log('fleet');")
    (webui / "sub" / "index.html").write_text("<p>sub</p>")
    (root / "secret.txt").write_text("do not serve")
    return root


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DevHost]:
    monkeypatch.setenv("TEST_SCHEDULE", FAR_FUTURE)
    devhost = DevHost(make_app(), root=write_root(tmp_path / "app"), port=0)
    devhost.start()
    try:
        yield devhost
    finally:
        devhost.stop()


def raw_get(host: DevHost, target: str, method: str = "GET") -> tuple[int, bytes]:
    """Send the request-target verbatim (requests would normalise `..` away)."""
    conn = http.client.HTTPConnection(host.host, host.port, timeout=5)
    try:
        conn.request(method, target)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# --------------------------------------------------------------------------- HTTP


def test_start_returns_bound_port_and_url(host: DevHost) -> None:
    assert host.port > 0
    assert host.url == f"http://127.0.0.1:{host.port}"
    assert host.api_url == f"{host.url}/api"


def test_route_params_query_headers_and_response_mapping(host: DevHost) -> None:
    response = requests.get(
        f"{host.url}/api/items/abc%20d?a=1&b=two&a=3", headers={"X-Test": "hello"}, timeout=5
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["X-Reply"] == "yes"
    body = response.json()
    assert body["id"] == "abc d"
    assert body["params"] == {"a": "1,3", "b": "two"}
    assert body["x_test"] == "hello"
    assert body["method"] == "GET"
    assert body["url"] == f"{host.url}/api/items/abc%20d?a=1&b=two&a=3"


def test_body_and_method_select_the_function(host: DevHost) -> None:
    response = requests.put(f"{host.url}/api/items/7", json={"stage": "queued"}, timeout=5)
    assert response.status_code == 201
    assert response.json() == {
        "id": "7",
        "json": {"stage": "queued"},
        "content_type": "application/json",
    }


def test_literal_segment_beats_parameter(host: DevHost) -> None:
    response = requests.get(f"{host.url}/api/items/summary", timeout=5)
    assert response.status_code == 200
    assert response.text == "summary"
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"


def test_routes_match_case_insensitively(host: DevHost) -> None:
    response = requests.get(f"{host.url}/API/Items/Xy", timeout=5)
    assert response.status_code == 200
    assert response.json()["id"] == "Xy"


def test_default_route_is_function_name_and_str_return(host: DevHost) -> None:
    response = requests.get(f"{host.url}/api/plain", timeout=5)
    assert response.status_code == 200
    assert response.text == "plain text"


def test_function_name_decorator_custom_arg_name_and_async_handler(host: DevHost) -> None:
    response = requests.post(f"{host.url}/api/renamed", data=b"\x00\x01raw", timeout=5)
    assert response.status_code == 200
    assert response.content == b"\x00\x01raw"
    assert response.headers["Content-Type"] == "application/octet-stream"


def test_unknown_route_is_404_json(host: DevHost) -> None:
    response = requests.get(f"{host.url}/api/nope", timeout=5)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_wrong_method_is_405_with_allow(host: DevHost) -> None:
    response = requests.delete(f"{host.url}/api/items/1", timeout=5)
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"
    assert response.headers["Allow"] == "GET, PUT"


def test_handler_exception_is_500_json_and_logged(
    host: DevHost, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="devtools"):
        response = requests.get(f"{host.url}/api/boom", timeout=5)
    assert response.status_code == 500
    assert response.json() == {"error": "internal", "message": "kaboom"}
    failure = [r for r in caplog.records if "function boom failed" in r.getMessage()]
    assert failure
    assert "RuntimeError: kaboom" in failure[0].getMessage()
    assert "Traceback" in failure[0].getMessage()


def test_one_log_line_per_request(host: DevHost, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="devtools"):
        requests.get(f"{host.url}/api/nums/5?x=1", timeout=5)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("GET /api/nums/5")]
    assert len(lines) == 1
    assert lines[0].startswith("GET /api/nums/5 200 ")
    assert lines[0].endswith("ms")


def test_keep_alive_connection_serves_several_requests(host: DevHost) -> None:
    with requests.Session() as session:
        for n in range(3):
            assert session.get(f"{host.url}/api/nums/{n}", timeout=5).text == str(n)
        # A 404 leaves the connection usable too (its body was consumed).
        assert session.post(f"{host.url}/api/nope", data=b"x" * 100, timeout=5).status_code == 404
        assert session.get(f"{host.url}/api/nums/9", timeout=5).text == "9"


# --------------------------------------------------------------------------- static files


def test_static_index_and_files(host: DevHost) -> None:
    index = requests.get(f"{host.url}/", timeout=5)
    assert index.status_code == 200
    assert index.text == "<h1>fleet</h1>"
    assert index.headers["Content-Type"].startswith("text/html")
    script = requests.get(f"{host.url}/app.js", timeout=5)
    assert script.text == "console.log('fleet');"
    assert requests.get(f"{host.url}/sub/", timeout=5).text == "<p>sub</p>"
    head = requests.head(f"{host.url}/app.js", timeout=5)
    assert head.status_code == 200
    assert head.headers["Content-Length"] == str(len(script.content))
    assert head.content == b""


def test_static_refuses_other_methods_and_missing_files(host: DevHost) -> None:
    post = requests.post(f"{host.url}/index.html", timeout=5)
    assert post.status_code == 405
    assert post.headers["Allow"] == "GET, HEAD"
    assert requests.get(f"{host.url}/missing.css", timeout=5).status_code == 404


@pytest.mark.parametrize(
    "target", ["/../secret.txt", "/%2e%2e/secret.txt", "/sub/../../secret.txt", "/..%2fsecret.txt"]
)
def test_static_refuses_path_traversal(host: DevHost, target: str) -> None:
    status, body = raw_get(host, target)
    assert status == 404
    assert b"do not serve" not in body


def test_routes_under_prefix_never_fall_back_to_static(host: DevHost) -> None:
    (host.webui / "api").mkdir()
    (host.webui / "api" / "nope").write_text("static shadow")
    response = requests.get(f"{host.url}/api/nope", timeout=5)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


# --------------------------------------------------------------------------- security headers

# The web UI's policy, directive by directive: what the page loads and no more. It loads only
# its own scripts, stylesheet and (favicon) images; it calls the API on its own origin, or,
# deployed as a Static Web App, on the Function App's (webui/config.js FLEET_API_BASE); it has
# no inline script or style, no HTML sinks (Trusted Types), no form that really submits, and
# nothing may frame it.
WEBUI_POLICY = {
    "default-src": ["'none'"],
    "script-src": ["'self'"],
    "style-src": ["'self'"],
    "img-src": ["'self'"],
    "connect-src": ["'self'", "https://*.azurewebsites.net"],
    "base-uri": ["'none'"],
    "form-action": ["'none'"],
    "frame-ancestors": ["'none'"],
    "require-trusted-types-for": ["'script'"],
    "trusted-types": ["'none'"],
}
WEBUI_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def csp_directives(policy: str) -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for part in policy.split(";"):
        name, *values = part.split()
        assert name not in directives, f"{name} repeats"
        directives[name] = values
    return directives


@pytest.fixture
def webui_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DevHost]:
    """The local host serving the repository's own web UI."""
    monkeypatch.setenv("TEST_SCHEDULE", FAR_FUTURE)
    with DevHost(make_app(), root=write_root(tmp_path / "app"), webui=WEBUI, port=0) as devhost:
        yield devhost


def test_staticwebapp_config_is_the_web_uis_policy() -> None:
    config = json.loads((WEBUI / "staticwebapp.config.json").read_text(encoding="utf-8"))
    headers = dict(config["globalHeaders"])
    assert csp_directives(headers.pop("Content-Security-Policy")) == WEBUI_POLICY
    assert headers == WEBUI_HEADERS


@pytest.mark.parametrize(
    ("method", "target", "status"),
    [
        ("GET", "/", 200),
        ("GET", "/js/app.js", 200),
        ("GET", "/style.css", 200),
        ("HEAD", "/index.html", 200),
        ("GET", "/missing.png", 404),
        ("POST", "/index.html", 405),
        ("GET", "/../pyproject.toml", 404),
    ],
)
def test_static_replies_carry_the_staticwebapp_global_headers(
    webui_host: DevHost, method: str, target: str, status: int
) -> None:
    conn = http.client.HTTPConnection(webui_host.host, webui_host.port, timeout=5)
    try:
        conn.request(method, target)
        response = conn.getresponse()
        response.read()
    finally:
        conn.close()
    assert response.status == status
    config = json.loads((WEBUI / "staticwebapp.config.json").read_text(encoding="utf-8"))
    # One source of truth: what Static Web Apps adds is what the local host adds.
    for name, value in config["globalHeaders"].items():
        assert response.getheader(name) == value, name
        assert len(response.headers.get_all(name) or []) == 1, name
    assert "frame-ancestors 'none'" in response.getheader("Content-Security-Policy", "")


def test_api_replies_carry_only_the_functions_headers(webui_host: DevHost) -> None:
    """As on Azure, where the Functions host adds none of the web UI's headers."""
    found = requests.get(f"{webui_host.url}/api/items/3", timeout=5)
    missing = requests.get(f"{webui_host.url}/api/nothing/here", timeout=5)
    for response in (found, missing):
        assert "Content-Security-Policy" not in response.headers
        assert "X-Frame-Options" not in response.headers
        assert "X-Content-Type-Options" not in response.headers
    assert found.headers["X-Reply"] == "yes"


def test_global_headers_are_read_from_the_web_uis_own_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_SCHEDULE", FAR_FUTURE)
    root = write_root(tmp_path / "app")
    (root / "webui" / "staticwebapp.config.json").write_text(
        json.dumps({"globalHeaders": {"X-Test": "from the file", "Referrer-Policy": "same-origin"}})
    )
    with DevHost(make_app(), root=root, port=0) as devhost:
        response = requests.get(f"{devhost.url}/app.js", timeout=5)
    assert response.headers["X-Test"] == "from the file"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert "Content-Security-Policy" not in response.headers


def test_global_headers_absent_config_is_none_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    assert load_global_headers(tmp_path) == ()
    config = tmp_path / "staticwebapp.config.json"
    config.write_text(json.dumps({"routes": []}))
    assert load_global_headers(tmp_path) == ()
    for bad in ("{", json.dumps({"globalHeaders": ["a"]}), json.dumps({"globalHeaders": {"a": 1}})):
        config.write_text(bad)
        with pytest.raises(DevHostError, match=r"staticwebapp\.config\.json"):
            load_global_headers(tmp_path)


def test_web_ui_markup_needs_no_inline_script_or_style() -> None:
    """What the policy refuses, the page must not rely on (the browser tests load every page)."""
    for path in WEBUI.rglob("*.html"):
        html = path.read_text(encoding="utf-8")
        for script in re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.DOTALL | re.I):
            assert "src=" in script[0] and not script[1].strip(), f"{path}: inline script"
        assert not re.search(r"<style\b|\sstyle=|\son[a-z]+=", html, re.I), path
    for path in (WEBUI / "js").rglob("*.js"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", text), path
        assert not re.search(r"setAttribute\(\s*[\"']style", text), path


# --------------------------------------------------------------------------- routePrefix


@pytest.mark.parametrize(
    ("prefix", "path", "other"),
    [
        ("v1", "/v1/items/3", "/api/items/3"),
        ("", "/items/3", "/api/items/3"),
        (None, "/api/items/3", "/items/3"),
    ],
)
def test_route_prefix_from_host_json(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    prefix: str | None,
    path: str,
    other: str,
) -> None:
    monkeypatch.setenv("TEST_SCHEDULE", FAR_FUTURE)
    root = write_root(tmp_path / "app", route_prefix=prefix)
    with DevHost(make_app(), root=root, port=0) as devhost:
        response = requests.get(f"{devhost.url}{path}", timeout=5)
        assert response.status_code == 200
        assert response.json()["id"] == "3"
        assert requests.get(f"{devhost.url}{other}", timeout=5).status_code == 404
        # The web UI is still served at / whatever the prefix.
        assert requests.get(f"{devhost.url}/", timeout=5).text == "<h1>fleet</h1>"


def test_read_route_prefix_strips_slashes_and_defaults(tmp_path: Path) -> None:
    assert read_route_prefix(tmp_path) == "api"
    (tmp_path / "host.json").write_text('{"extensions": {"http": {"routePrefix": "/x/y/"}}}')
    assert read_route_prefix(tmp_path) == "x/y"


# --------------------------------------------------------------------------- route templates


@pytest.mark.parametrize(
    ("template", "path", "values"),
    [
        ("jobs/{id}", "jobs/j1", {"id": "j1"}),
        ("jobs/{id}", "jobs/j1/", {"id": "j1"}),
        ("jobs/{id}", "jobs/j1/x", None),
        ("jobs/{id}", "jobs", None),
        ("jobs/{id}/x", "jobs//x", None),  # a parameter is never empty
        ("jobs", "jobs", {}),
        ("jobs", "jobsx", None),
        ("Fleet/Jobs/{Id}", "fleet/JOBS/AbC", {"Id": "AbC"}),  # values keep their case
        ("jobs/{id}", "jobs/a%20b", {"id": "a b"}),
        ("/jobs/{id}/", "jobs/1", {"id": "1"}),
        ("fleet/jobs/{id}/lease/{op}", "fleet/jobs/j/lease/renew", {"id": "j", "op": "renew"}),
        ("fleet/jobs/{id}/lease/renew", "fleet/jobs/j/lease/renew", {"id": "j"}),
        ("openapi.json", "openapi.json", {}),
        ("", "", {}),
        ("", "x", None),
    ],
)
def test_compile_route_matches_literals_and_whole_segment_parameters(
    template: str, path: str, values: dict[str, str] | None
) -> None:
    assert compile_route(template).match(path) == values


@pytest.mark.parametrize(
    "template",
    [
        "jobs/{id:int}",  # constraint
        "jobs/{id:regex(^[a-z]{{2}}$)}",
        "jobs/{id?}",  # optional
        "jobs/{id=all}",  # default
        "files/{*rest}",  # catch-all
        "files/{**rest}",
        "a/{name}.{ext}",  # parameters inside a segment
        "a/v{n}",
        "a/{{literal}}",  # escaped braces
        "a/{id",
        "a/id}",
        "a/{}",
        "a/{1d}",
        "a/b?",
        "a//b",
    ],
)
def test_compile_route_refuses_unsupported_syntax_naming_the_template(template: str) -> None:
    with pytest.raises(RouteError) as caught:
        compile_route(template)
    assert f"route {template!r}:" in str(caught.value)


def test_compile_route_refuses_a_repeated_parameter() -> None:
    with pytest.raises(RouteError, match="'ID' repeats"):
        compile_route("{id}/{ID}")


def test_index_refuses_an_unsupported_route_naming_function_and_template() -> None:
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    @app.route(route="jobs/{id:int}")
    def get_job(req: func.HttpRequest) -> str:
        return "never served"

    with pytest.raises(RouteError) as caught:
        index_app(app, {})
    message = str(caught.value)
    assert "'get_job'" in message
    assert "'jobs/{id:int}'" in message
    assert "{name}" in message  # says what is supported


def routing_app(routes: list[tuple[str, str, str]]) -> func.FunctionApp:
    """An app of (function name, route, method) whose handlers reply with their name and
    route values, registered in list order."""
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

    def replying_as(name: str) -> Any:
        def handler(req: func.HttpRequest) -> func.HttpResponse:
            payload = {"function": name, "values": dict(req.route_params)}
            return func.HttpResponse(json.dumps(payload), mimetype="application/json")

        return handler

    for name, route, method in routes:
        app.function_name(name)(app.route(route=route, methods=[method])(replying_as(name)))
    return app


# Parameter routes first: registration order must not let them shadow literals.
PRECEDENCE_ROUTES = [
    ("job_action", "fleet/jobs/{id}/{action}", "POST"),
    ("lease_op", "fleet/jobs/{id}/lease/{op}", "POST"),
    ("budget_op", "fleet/budgets/{productId}/{op}", "POST"),
    ("job_events", "fleet/jobs/{id}/events", "GET"),
    ("post_events", "fleet/jobs/{id}/events", "POST"),
    ("cancel", "fleet/jobs/{id}/cancel", "POST"),
    ("lease_renew", "fleet/jobs/{id}/lease/renew", "POST"),
    ("burndown", "fleet/budgets/{productId}/burndown", "GET"),
    ("by_part", "items/{id}/summary", "GET"),
    ("first_part", "items/first/{part}", "GET"),
    ("dup_a", "dup/{a}", "GET"),
    ("dup_b", "dup/{b}", "GET"),
]


@pytest.mark.parametrize(
    ("method", "path", "function", "values"),
    [
        ("GET", "fleet/jobs/j1/events", "job_events", {"id": "j1"}),
        ("POST", "fleet/jobs/j1/events", "post_events", {"id": "j1"}),
        ("POST", "fleet/jobs/j1/cancel", "cancel", {"id": "j1"}),
        ("POST", "fleet/jobs/j1/retry", "job_action", {"id": "j1", "action": "retry"}),
        ("POST", "fleet/jobs/j1/lease/renew", "lease_renew", {"id": "j1"}),
        ("POST", "fleet/jobs/j1/lease/release", "lease_op", {"id": "j1", "op": "release"}),
        ("GET", "fleet/budgets/p1/burndown", "burndown", {"productId": "p1"}),
        # A literal route that does not take the method leaves the path to the parameter.
        ("POST", "fleet/budgets/p1/burndown", "budget_op", {"productId": "p1", "op": "burndown"}),
        # The first position where the templates differ decides.
        ("GET", "items/first/summary", "first_part", {"part": "summary"}),
        ("GET", "items/second/summary", "by_part", {"id": "second"}),
        ("GET", "dup/x", "dup_a", {"a": "x"}),  # equals: registration order
        ("POST", "FLEET/Jobs/J1/EVENTS", "post_events", {"id": "J1"}),
    ],
)
def test_literal_segments_take_precedence_over_parameters(
    tmp_path: Path, method: str, path: str, function: str, values: dict[str, str]
) -> None:
    devhost = DevHost(routing_app(PRECEDENCE_ROUTES), root=tmp_path, port=0)
    reply = devhost.dispatch(method, f"/api/{path}", [("Host", "localhost")], b"")
    assert reply.status == 200, reply.body
    assert json.loads(reply.body) == {"function": function, "values": values}


def test_method_not_allowed_lists_the_methods_of_every_matching_route(tmp_path: Path) -> None:
    devhost = DevHost(routing_app(PRECEDENCE_ROUTES), root=tmp_path, port=0)
    events = devhost.dispatch("DELETE", "/api/fleet/jobs/j1/events", [], b"")
    assert events.status == 405
    assert ("Allow", "GET, POST") in events.headers
    action = devhost.dispatch("GET", "/api/fleet/jobs/j1/retry", [], b"")
    assert action.status == 405
    assert ("Allow", "POST") in action.headers
    # `lease` alone is an {action}; one segment more than any route is no route at all.
    assert devhost.dispatch("POST", "/api/fleet/jobs/j1/lease/renew/now", [], b"").status == 404


# --------------------------------------------------------------------------- settings


def test_local_settings_env_wins_over_file(tmp_path: Path) -> None:
    (tmp_path / "local.settings.json").write_text(
        json.dumps(
            {
                "IsEncrypted": False,
                "Values": {"FROM_FILE": "file", "BOTH": "file", "NUM": 3, "FLAG": True},
            }
        )
    )
    environ = {"BOTH": "env"}
    applied = load_local_settings(tmp_path, environ)
    assert environ == {"FROM_FILE": "file", "BOTH": "env", "NUM": "3", "FLAG": "true"}
    assert applied == {"FROM_FILE": "file", "NUM": "3", "FLAG": "true"}


def test_local_settings_missing_file_is_fine(tmp_path: Path) -> None:
    environ: dict[str, str] = {}
    assert load_local_settings(tmp_path, environ) == {}
    assert environ == {}


def test_cli_loads_local_settings_before_importing_the_app(tmp_path: Path) -> None:
    root = write_root(tmp_path / "app")
    # The module reads its settings at import time, as function_app.py may.
    (root / "probe_app.py").write_text(
        textwrap.dedent(
            """
            import os
            import azure.functions as func

            SEEN = {k: os.environ.get(k) for k in ("PROBE_FILE_ONLY", "PROBE_BOTH")}
            app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)

            @app.route(route="seen")
            def seen(req: func.HttpRequest) -> func.HttpResponse:
                import json
                return func.HttpResponse(json.dumps(SEEN), mimetype="application/json")
            """
        )
    )
    (root / "local.settings.json").write_text(
        json.dumps({"Values": {"PROBE_FILE_ONLY": "file", "PROBE_BOTH": "file"}})
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROBE_")}
    env["PROBE_BOTH"] = "env"
    env["PYTHONPATH"] = str(REPO_ROOT)
    command = [sys.executable, "-m", "devtools", "--root", str(root), "--port", "0"]
    proc = subprocess.Popen(
        [*command, "--app", "probe_app:app"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        url = None
        for line in proc.stderr:
            if "serving on " in line:
                url = line.split("serving on ", 1)[1].split()[0]
                break
        assert url is not None, "the host never reported its address"
        response = requests.get(f"{url}/api/seen", timeout=5)
        assert response.json() == {"PROBE_FILE_ONLY": "file", "PROBE_BOTH": "env"}
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()
    assert proc.returncode == 0  # SIGTERM is a clean shutdown


def test_cli_reports_unresolved_schedule_setting(tmp_path: Path) -> None:
    root = write_root(tmp_path / "app")
    (root / "timer_app.py").write_text(
        textwrap.dedent(
            """
            import azure.functions as func

            app = func.FunctionApp()

            @app.timer_trigger(arg_name="t", schedule="%NOT_A_SETTING_XYZ%")
            def reaper(t: func.TimerRequest) -> None:
                pass
            """
        )
    )
    env = {k: v for k, v in os.environ.items() if k != "NOT_A_SETTING_XYZ"}
    env["PYTHONPATH"] = str(REPO_ROOT)
    result = subprocess.run(
        [sys.executable, "-m", "devtools", "--root", str(root), "--app", "timer_app:app"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert "NOT_A_SETTING_XYZ" in result.stderr
    assert "reaper" in result.stderr


# --------------------------------------------------------------------------- timers

T0 = datetime(2024, 1, 1, 12, 0, 3, tzinfo=UTC)


def recording_timer(
    schedule: str, *, run_on_startup: bool = False, fail: bool = False
) -> tuple[TimerFunction, list[func.TimerRequest]]:
    calls: list[func.TimerRequest] = []

    def handler(tick: func.TimerRequest) -> None:
        calls.append(tick)
        if fail:
            raise RuntimeError("timer broke")

    return TimerFunction("reaper", schedule, "tick", handler, run_on_startup), calls


def test_timer_fires_at_due_time_not_before() -> None:
    timer, calls = recording_timer("*/10 * * * * *")
    runner = TimerRunner([timer])
    assert runner.arm(T0) == []
    assert runner.next_due() == T0.replace(second=10)
    assert runner.tick(T0.replace(second=9, microsecond=999_999)) == []
    assert calls == []
    firings = runner.tick(T0.replace(second=10))
    assert [(f.name, f.past_due, f.error) for f in firings] == [("reaper", False, None)]
    assert len(calls) == 1
    assert calls[0].past_due is False
    assert runner.next_due() == T0.replace(second=20)
    assert runner.tick(T0.replace(second=10, microsecond=500_000)) == []  # not twice


def test_timer_slightly_late_is_not_past_due_but_very_late_is() -> None:
    timer, calls = recording_timer("*/10 * * * * *")
    runner = TimerRunner([timer], past_due_after=timedelta(seconds=5))
    runner.arm(T0)
    runner.tick(T0.replace(second=12))  # 2 s late
    assert calls[-1].past_due is False
    # Next due 12:00:20; 40 s late it fires once, not once per missed occurrence.
    firings = runner.tick(T0.replace(second=0, minute=1))
    assert len(firings) == 1
    assert firings[0].past_due is True
    assert calls[-1].past_due is True
    assert len(calls) == 2
    assert runner.next_due() == T0.replace(minute=1, second=10)


def test_timer_run_on_startup_fires_when_armed() -> None:
    timer, calls = recording_timer(FAR_FUTURE, run_on_startup=True)
    runner = TimerRunner([timer])
    firings = runner.arm(T0)
    assert [f.name for f in firings] == ["reaper"]
    assert len(calls) == 1
    assert calls[0].past_due is False


def test_timer_exception_is_logged_and_does_not_stop_the_schedule(
    caplog: pytest.LogCaptureFixture,
) -> None:
    timer, calls = recording_timer("*/10 * * * * *", fail=True)
    runner = TimerRunner([timer])
    runner.arm(T0)
    with caplog.at_level(logging.ERROR, logger="devtools"):
        first = runner.tick(T0.replace(second=10))
    assert isinstance(first[0].error, RuntimeError)
    assert any("timer reaper failed" in r.getMessage() for r in caplog.records)
    assert runner.tick(T0.replace(second=20))[0].name == "reaper"
    assert len(calls) == 2


def test_timer_times_must_be_aware() -> None:
    timer, _ = recording_timer("*/10 * * * * *")
    with pytest.raises(ValueError, match="timezone-aware"):
        TimerRunner([timer]).arm(datetime(2024, 1, 1, 12, 0, 0))  # noqa: DTZ001


def test_timer_thread_fires_with_injected_clock_and_stops_promptly() -> None:
    fired = threading.Event()
    times = iter([T0])  # arm at T0; every later reading is past the first due time

    def clock() -> datetime:
        return next(times, T0 + timedelta(seconds=10))

    def handler(tick: func.TimerRequest) -> None:
        fired.set()

    runner = TimerRunner([TimerFunction("t", "*/10 * * * * *", "tick", handler)], clock=clock)
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert fired.wait(timeout=5), "the scheduler thread never fired the due timer"
    finally:
        # Next due is 10 s after the frozen clock: the thread is waiting, and must wake now.
        stop.set()
        thread.join(timeout=2)
    assert not thread.is_alive()


def test_schedule_setting_is_resolved_from_environment() -> None:
    calls: list[func.TimerRequest] = []
    index = index_app(make_app(calls), {"TEST_SCHEDULE": "*/5  * * * * *"})
    assert [(t.name, t.schedule, t.arg_name) for t in index.timers] == [
        ("ticker", "*/5 * * * * *", "tick")
    ]
    runner = TimerRunner(index.timers)
    runner.arm(T0)
    runner.tick(T0.replace(second=5))
    assert len(calls) == 1
    assert isinstance(calls[0], func.TimerRequest)


def test_missing_schedule_setting_is_a_clear_error() -> None:
    with pytest.raises(ScheduleError) as caught:
        index_app(make_app(), {})
    message = str(caught.value)
    assert "'TEST_SCHEDULE'" in message
    assert "'ticker'" in message
    assert "local.settings.json" in message


@pytest.mark.parametrize("schedule", ["*/5 * * * *", "not a cron at all x", "99 * * * * *"])
def test_invalid_schedule_is_a_clear_error(schedule: str) -> None:
    with pytest.raises(ScheduleError, match="ticker"):
        index_app(make_app(), {"TEST_SCHEDULE": schedule})


def test_devhost_refuses_to_start_with_unresolved_schedule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TEST_SCHEDULE", raising=False)
    with pytest.raises(ScheduleError, match="TEST_SCHEDULE"):
        DevHost(make_app(), root=write_root(tmp_path / "app"), port=0)


def test_index_reads_methods_and_auth_level() -> None:
    index = index_app(make_app(), {"TEST_SCHEDULE": FAR_FUTURE})
    by_name = {f.name: f for f in index.http}
    assert by_name["get_item"].methods == frozenset({"GET"})
    assert by_name["get_item"].auth_level == "function"
    assert by_name["boom"].auth_level == "anonymous"  # the app default
    assert by_name["boom"].allows("PATCH")  # no methods = all methods
    assert by_name["renamed"].route.template == "renamed"
    assert by_name["renamed"].arg_name == "request"


def test_stack_generates_a_bootstrap_operator_token_and_passes_its_hash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import hashlib

    from devtools.stack import LocalStack, StackConfig
    from fleet.settings import Settings

    monkeypatch.delenv("FLEET_OPERATOR_TOKEN", raising=False)
    first, second = LocalStack(StackConfig()), LocalStack(StackConfig())
    assert first.operator_token.startswith("flo_") and len(first.operator_token) >= 47
    assert first.operator_token != second.operator_token
    env = first.env()
    assert first.operator_token not in env.values()  # the host gets only its hash
    digest = hashlib.sha256(first.operator_token.encode()).hexdigest()
    assert Settings.from_env(env).operator_token_hashes == frozenset({digest})


def test_stack_takes_the_operator_token_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from devtools.stack import LocalStack, StackConfig, StackError

    token = "flo_" + "k" * 43
    monkeypatch.setenv("FLEET_OPERATOR_TOKEN", token)
    assert LocalStack(StackConfig()).operator_token == token
    monkeypatch.setenv("FLEET_OPERATOR_TOKEN", "not-a-token")
    with pytest.raises(StackError, match="FLEET_OPERATOR_TOKEN"):
        LocalStack(StackConfig())
