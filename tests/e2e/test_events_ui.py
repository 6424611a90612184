"""The product's event log page (#/events) in a real browser against the real local stack:
newest first, paged ("Older events"), filtered by type, factory, job and operator (the
filters live in the URL), live (new events arrive at the top), each row linking to its job
and factory, and an outage said beside the list, never shown as a quiet log.
"""

from __future__ import annotations

import re

import pytest
import requests
from playwright.sync_api import Page, expect

from tests.conftest import RunningStack, bearer
from tests.e2e.conftest import Api, Factory, shot, sign_in

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def person(stack: RunningStack, name: str, role: str, product: str) -> str:
    response = requests.post(
        f"{stack.api}/fleet/operator-tokens",
        json={"name": name, "role": role, "products": [product]},
        headers=bearer(stack.operator_token),
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["token"])


def test_the_event_log_is_newest_first_filtered_paged_and_live(
    page: Page, ui_url: str, running_stack: RunningStack, product: str
) -> None:
    api = Api(running_stack, product)
    worker = Factory(running_stack, product, "worker-1")  # an enrollment token, then enrolled
    worker.heartbeat()
    alice = f"alice-{product}"
    alice_headers = bearer(person(running_stack, alice, "operator", product), product)
    session = requests.Session()
    jobs = []
    for n in range(56):
        reply = session.post(
            f"{running_stack.api}/fleet/jobs",
            json={"title": f"Chore {n:02d}", "capabilities": ["gpu"]},
            headers=running_stack.operator(product),
            timeout=30,
        )
        assert reply.status_code == 201, reply.text
        jobs.append(reply.json()["job"])
    cancelled = jobs[3]
    response = session.post(
        f"{running_stack.api}/fleet/jobs/{cancelled['id']}/cancel",
        json={"reason": "not needed"},
        headers=alice_headers,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    api.call(
        "POST",
        "/fleet/factories/worker-1/commands",
        {"command": "drain", "reason": "patching"},
        status=202,
    )

    sign_in(page, ui_url, running_stack.operator_token, product)
    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Events").click()
    expect(page.get_by_role("heading", name="Events", level=1)).to_be_visible()
    rows = page.locator("table.events tbody tr")
    # A page of 50, newest first: the drain command, then Alice's cancel, then the submits.
    expect(rows).to_have_count(50)
    expect(rows.nth(0)).to_have_attribute("data-type", "command_queued")
    expect(rows.nth(0)).to_have_attribute("data-kind", "fleet")
    expect(rows.nth(0).locator(".ev-actor")).to_contain_text("operator:")
    expect(rows.nth(0)).to_contain_text("patching")
    expect(rows.nth(0).locator("a.ev-factory")).to_have_text("worker-1")
    expect(rows.nth(1)).to_have_attribute("data-type", "cancel")
    expect(rows.nth(1).locator(".ev-actor")).to_have_text(f"operator:{alice}")
    expect(rows.nth(1).locator("a.ev-job")).to_have_text("Chore 03")
    expect(rows.nth(2).locator("a.ev-job")).to_have_text("Chore 55")
    times = rows.locator("td.when time").evaluate_all("els => els.map(e => e.dateTime)")
    assert times == sorted(times, reverse=True)
    expect(page.locator("#live-since")).to_have_text(re.compile(r"^since "))
    expect(page.locator(".ev-live")).to_contain_text("Live")

    # Older: the next page, down to the oldest (the enrollment and the factory's first beat).
    older = page.get_by_role("button", name="Older events")
    older.click()
    expect(rows.nth(50)).to_be_visible()
    types = rows.evaluate_all("rs => rs.map(r => r.dataset.type)")
    assert types.count("submit") == 56
    assert "enrollment_token_created" in types
    expect(older).to_be_hidden()

    # Live: a new event arrives at the top without a reload.
    fresh = api.submit(title="Arrived while watching", capabilities=["gpu"])
    expect(rows.nth(0).locator("a.ev-job")).to_have_text("Arrived while watching")
    expect(rows.nth(0)).to_have_attribute("data-type", "submit")
    page.evaluate("window.scrollTo(0, 0)")
    shot(page, "events")

    # Filters, kept in the URL: by operator (a bare name is an operator's), by type, by job.
    page.get_by_label("Operator", exact=True).fill(alice)
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(rf"#/events\?operator={alice}$"))
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-type", "cancel")
    expect(rows.first).to_contain_text("not needed")

    page.get_by_role("button", name="Clear").click()
    expect(rows.nth(0).locator("a.ev-job")).to_have_text("Arrived while watching")
    page.get_by_label("Type", exact=True).fill("command_queued,cancel")
    page.get_by_role("button", name="Filter").click()
    expect(rows).to_have_count(2)
    assert rows.evaluate_all("rs => rs.map(r => r.dataset.type)") == ["command_queued", "cancel"]

    page.goto(f"{ui_url}#/events?job={fresh['id']}")
    expect(rows).to_have_count(1)
    expect(page.get_by_label("Job", exact=True)).to_have_value(fresh["id"])
    # Live under a filter: only what it matches arrives.
    api.call("POST", f"/fleet/jobs/{jobs[10]['id']}/cancel", {})
    api.call("POST", f"/fleet/jobs/{fresh['id']}/reprioritize", {"priority": 8})
    expect(rows).to_have_count(2)
    expect(rows.first).to_have_attribute("data-type", "reprioritize")

    # By factory: what the factory did and what was done to it.
    page.goto(f"{ui_url}#/events?factory=worker-1")
    expect(rows.first).to_have_attribute("data-type", "command_queued")
    factories = rows.locator("a.ev-factory").evaluate_all("els => els.map(e => e.textContent)")
    assert factories and set(factories) == {"worker-1"}

    # Rows link through: the factory to its card on the fleet map, a job to its page.
    rows.first.locator("a.ev-factory").click()
    expect(page).to_have_url(re.compile(r"#/fleet/worker-1$"))
    expect(page.locator('article.factory[data-factory="worker-1"]')).to_have_class(
        re.compile(r"\bfocused\b")
    )
    page.goto(f"{ui_url}#/events?type=cancel")
    expect(rows).to_have_count(2)
    rows.last.locator("a.ev-job").click()
    expect(page.get_by_role("heading", name="Chore 03", level=1)).to_be_visible()

    # An outage: said in the header (since when) and beside the log, whose rows stay.
    page.goto(f"{ui_url}#/events")
    expect(rows).to_have_count(50)
    page.route("**/api/**", lambda route: route.abort())
    expect(page.locator("#live")).to_have_text(re.compile("reconnecting|offline"))
    expect(page.locator("#live-since")).to_have_text(re.compile(r"^since \d"))
    expect(page.locator(".ev-live")).to_contain_text("Not live")
    expect(page.locator("#banner")).to_contain_text("Cannot reach the coordinator API")
    expect(rows).to_have_count(50)
    page.unroute("**/api/**")
    expect(page.locator("#live")).to_have_text("live")
    expect(page.locator(".ev-live")).to_contain_text("Live")


def test_the_event_log_says_when_it_cannot_load(
    page: Page, ui_url: str, running_stack: RunningStack, product: str
) -> None:
    sign_in(page, ui_url, running_stack.operator_token, product)
    page.route(
        re.compile(r"/api/fleet/events\?before="),
        lambda route: route.fulfill(
            status=503,
            content_type="application/json",
            body='{"error": "unavailable", "message": "the store is down"}',
        ),
    )
    page.goto(f"{ui_url}#/events")
    box = page.locator(".error-box")
    expect(box).to_contain_text("Could not load the events")
    expect(box).to_contain_text("the store is down (503 unavailable)")
    expect(page.locator("table.events")).to_have_count(0)
    expect(page.locator(".empty")).to_have_count(0)
