"""Browser fixtures for the web UI's end-to-end tests.

Playwright drives Debian's ``chromium`` (``/usr/bin/chromium``, installed by ``make install``),
never a browser that playwright downloads. The UI is the one the local host serves at ``/``
of the session's ``running_stack``; its API calls go to ``/api`` on the same origin.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Locator,
    Page,
    expect,
    sync_playwright,
)

from tests.conftest import REPO, RunningStack, bearer

CHROMIUM = os.environ.get("FLEET_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SCREENSHOTS = REPO / "docs" / "screenshots"
VIEWPORT = {"width": 1366, "height": 860}  # a laptop screen

# Live updates poll every 2 s; give the UI a few polls before failing an expectation.
expect.set_options(timeout=15_000)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make install` installs Debian's chromium")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="session")
def ui_url(running_stack: RunningStack) -> str:
    """The web UI: the API's base URL minus ``/api``."""
    return running_stack.api.removesuffix("/api") + "/"


@pytest.fixture
def product() -> str:
    return f"ui{uuid.uuid4().hex[:10]}"


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport=VIEWPORT)
    try:
        yield ctx
    finally:
        ctx.close()


def is_policy_violation(message: ConsoleMessage) -> bool:
    """Chromium reports what the Content-Security-Policy refused as a console error
    ("... violates the following Content Security Policy directive ...", "This document
    requires 'TrustedScript' assignment ...")."""
    return message.type == "error" and (
        "Content Security Policy" in message.text or "requires 'Trusted" in message.text
    )


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    """A tab; an uncaught script error on it, or anything the page's Content-Security-Policy
    refuses (webui/staticwebapp.config.json: every page of every test runs under it), fails
    the test."""
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if is_policy_violation(m) else None)
    yield page
    assert not errors, f"uncaught errors or policy violations in the page: {errors}"


def sign_in(page: Page, ui_url: str, token: str, product: str) -> None:
    """Sign in the way an operator does: the product, then the token, in the header."""
    page.goto(ui_url)
    page.get_by_label("Product").fill(product)
    page.get_by_role("button", name="Switch").click()
    page.get_by_label("Operator token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#live")).to_have_text("live")
    assert token not in page.url


def shot(page: Page, name: str, mask: Sequence[Locator] = ()) -> None:
    """A screenshot for the docs; ``mask`` covers what must not be in one (a secret)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), mask=list(mask))


class Api:
    """Operator calls over HTTP, for setting the scene and checking what the UI did."""

    def __init__(self, stack: RunningStack, product: str) -> None:
        self.stack = stack
        self.product = product

    def call(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        response = requests.request(
            method,
            f"{self.stack.api}{path}",
            json=body,
            headers=self.stack.operator(self.product),
            timeout=30,
        )
        assert response.status_code == status, f"{method} {path}: {response.text}"
        return response.json() if response.content else None

    def submit(self, **fields: Any) -> dict[str, Any]:
        out: dict[str, Any] = self.call("POST", "/fleet/jobs", fields, status=201)["job"]
        return out


class Factory:
    """A factory driven over HTTP the way devtools/demo.py does: enroll, heartbeat,
    claim, report."""

    def __init__(
        self,
        stack: RunningStack,
        product: str,
        name: str,
        capabilities: tuple[str, ...] = ("python",),
        seats: int = 1,
    ) -> None:
        self.stack = stack
        self.name = name
        self.capabilities = list(capabilities)
        self.seats = seats
        self.token = stack.enroll(product, name, capabilities, seats=seats, version="1.4.2")

    def call(self, method: str, path: str, body: Any = None) -> requests.Response:
        return requests.request(
            method, f"{self.stack.api}{path}", json=body, headers=bearer(self.token), timeout=30
        )

    def ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        response = self.call(method, path, body)
        assert response.status_code == status, f"{method} {path}: {response.text}"
        return response.json() if response.content else None

    def heartbeat(self, load: int = 0) -> Any:
        return self.ok(
            "POST",
            "/fleet/factories/heartbeat",
            {
                "capabilities": self.capabilities,
                "seats": self.seats,
                "load": load,
                "version": "1.4.2",
            },
        )

    def claim(self) -> dict[str, Any]:
        out: dict[str, Any] = self.ok(
            "POST", "/fleet/claim", {"capabilities": self.capabilities, "seats": self.seats}
        )
        return out

    def report(self, job_id: str, epoch: int, **body: Any) -> Any:
        return self.ok("PATCH", f"/fleet/jobs/{job_id}", {"leaseEpoch": epoch, **body})
