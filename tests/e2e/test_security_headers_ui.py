"""The web UI cannot be framed or injected: its Content-Security-Policy in a real browser.

The local host serves the web UI with the headers of webui/staticwebapp.config.json (what Azure
Static Web Apps adds); here Chromium enforces them. A page on another origin (a plain
http.server on another port) frames the UI and a control page; the UI's frame is refused and
its scripts never load, while the control page, served without the headers, loads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, ConsoleMessage, expect

from tests.e2e.conftest import is_policy_violation

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


class _Pages(BaseHTTPRequestHandler):
    """Serves the HTML its server holds, by path, with no security headers."""

    server: _Site

    def do_GET(self) -> None:
        body = self.server.pages.get(self.path)
        if body is None:
            self.send_error(404)
            return
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Site(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Pages)
        self.pages: dict[str, str] = {}

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


@pytest.fixture
def site() -> Iterator[Callable[[], _Site]]:
    """Starts static sites, each on its own port (so its own origin); stops them after."""
    started: list[tuple[_Site, threading.Thread]] = []

    def start() -> _Site:
        server = _Site()
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        started.append((server, thread))
        return server

    yield start
    for server, thread in started:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_another_origin_cannot_frame_the_web_ui(
    context: BrowserContext, ui_url: str, site: Callable[[], _Site]
) -> None:
    control = site()
    control.pages["/"] = "<!doctype html><p id=control>framed fine</p>"
    framer = site()
    framer.pages["/frame.html"] = (
        "<!doctype html><title>framer</title>"
        f'<iframe id="ui" src="{ui_url}"></iframe>'
        f'<iframe id="control" src="{control.url("/")}"></iframe>'
    )
    page = context.new_page()
    requested: list[str] = []
    page.on("request", lambda r: requested.append(r.url))
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if is_policy_violation(m) else None)

    with page.expect_console_message(
        lambda m: "frame-ancestors 'none'" in m.text, timeout=15_000
    ) as refused:
        page.goto(framer.url("/frame.html"))

    assert ui_url.rstrip("/") in refused.value.text
    # The control frame, from another origin without the headers, loads ...
    expect(page.frame_locator("#control").locator("#control")).to_have_text("framed fine")
    # ... the UI's does not: none of its content, none of its scripts or styles requested.
    ui_frame = page.locator("#ui").element_handle().content_frame()
    assert ui_frame is not None
    assert ui_frame.url != ui_url
    assert ui_frame.locator(".brand").count() == 0
    assert requested.count(ui_url) == 1  # the document itself, refused on arrival
    assert not [u for u in requested if u.startswith(ui_url) and u != ui_url], requested
    assert any("frame-ancestors" in v for v in violations)


def test_the_web_ui_refuses_injected_script(context: BrowserContext, ui_url: str) -> None:
    page = context.new_page()
    violations: list[ConsoleMessage] = []
    page.on("console", lambda m: violations.append(m) if is_policy_violation(m) else None)
    response = page.goto(ui_url)
    assert response is not None
    headers = response.headers
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    expect(page.locator(".brand")).to_have_text("agent-fleet")  # the page itself runs

    # Text set on a script element: the sink Trusted Types guards refuses a plain string.
    sink = page.evaluate(
        """() => {
            const s = document.createElement("script");
            try { s.textContent = "window.__injected = 'sink'"; } catch (e) { return e.name; }
            document.head.append(s);
            return "assigned";
        }"""
    )
    assert sink == "TypeError"
    # A script built from a text node, and an inline event handler: the policy refuses both.
    refused = page.evaluate(
        """() => new Promise((resolve) => {
            const seen = [];
            document.addEventListener(
                "securitypolicyviolation", (e) => seen.push(e.effectiveDirective));
            const s = document.createElement("script");
            s.append(document.createTextNode("window.__injected = 'node'"));
            document.head.append(s);
            const img = document.createElement("img");
            try {
                img.setAttribute("onerror", "window.__injected = 'handler'");
            } catch (e) { seen.push(e.name); }
            img.src = "/missing.png";
            document.body.append(img);
            setTimeout(() => resolve(seen), 1500);
        })"""
    )
    assert page.evaluate("window.__injected") is None
    assert "require-trusted-types-for" in refused, refused
    assert violations
