"""The header says whether the page is live, and since when, on every page: a coordinator that
stops answering (its requests hang, nothing fails) is shown as stale, never as a quiet fleet.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, Route, expect

from tests.conftest import RunningStack
from tests.e2e.conftest import Api, sign_in

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def test_a_coordinator_that_stops_answering_is_shown_stale_with_since_when(
    page: Page, ui_url: str, running_stack: RunningStack, product: str
) -> None:
    Api(running_stack, product).submit(title="Still here", capabilities=["python"])
    sign_in(page, ui_url, running_stack.operator_token, product)
    page.goto(f"{ui_url}#/settings")
    live = page.locator("#live")
    since = page.locator("#live-since")
    expect(live).to_have_text("live")
    expect(since).to_have_text(re.compile(r"^since \d"))

    hanging: list[Route] = []
    page.route("**/api/fleet/queue-state", lambda route: hanging.append(route))  # never answered
    expect(live).to_have_text("stale", timeout=25_000)
    expect(live).to_have_class(re.compile(r"\bstale\b"))
    expect(since).to_have_text(re.compile(r"^since \d"))
    banner = page.locator("#banner")
    expect(banner).to_contain_text("Stale: the coordinator has not answered for")
    expect(banner).to_contain_text("Showing what was known")
    # What was on screen stays.
    expect(page.get_by_label("Oldest queued job (s)")).to_have_value("900")

    page.unroute("**/api/fleet/queue-state")  # the hanging requests go on to the coordinator
    assert hanging
    expect(live).to_have_text("live", timeout=25_000)
    expect(banner).to_be_hidden()
