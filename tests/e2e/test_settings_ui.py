"""The settings pages (#/settings, #/settings/profiles, #/settings/tracker) and the enrollment
tokens' options on the admin page, in a real browser against the real local stack: the
coordinator's validation problems shown at their fields, what is saved checked through the API,
profile versions shown and diffed in the page, repositories bound and unbound; a viewer reads
every page and changes nothing.
"""

from __future__ import annotations

import re

import pytest
import requests
from playwright.sync_api import Page, expect

from tests.conftest import RunningStack, bearer
from tests.e2e.conftest import Api, shot, sign_in

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

REVIEWER_V1 = "You review pull requests.\nBe kind.\nCheck the tests."
REVIEWER_V2 = "You review pull requests.\nBe kind but firm.\nCheck the tests.\nCheck the docs."


def confirm(page: Page, label: str) -> None:
    dialog = page.locator("dialog#confirm")
    expect(dialog).to_be_visible()
    ok = dialog.locator("#confirm-ok")
    expect(ok).to_have_text(label)
    ok.click()
    expect(dialog).to_be_hidden()


def test_settings_form_shows_the_coordinators_problems_at_their_fields_and_saves(
    page: Page, ui_url: str, running_stack: RunningStack, product: str
) -> None:
    api = Api(running_stack, product)
    sign_in(page, ui_url, running_stack.operator_token, product)
    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Settings").click()
    expect(page.get_by_role("heading", name=f"Settings of {product}", level=1)).to_be_visible()
    starvation = page.get_by_label("Oldest queued job (s)")
    expect(starvation).to_have_value("900")
    load = page.get_by_label("load", exact=True)
    expect(load).to_have_value("1")
    expect(page.get_by_label("Preemption on")).not_to_be_checked()

    # Refused: each problem at its field, and nothing saved.
    load.fill("500")
    starvation.fill("-5")
    page.get_by_label("Default attempt timeout (s)").fill("soon")
    page.get_by_role("button", name="Save settings").click()
    expect(page.locator("#set-weights-load-err")).to_contain_text("less than or equal to 100")
    expect(page.locator("#set-alerts-starvationSeconds-err")).to_contain_text(
        "greater than or equal to 0"
    )
    expect(page.locator("#set-timeoutSeconds-err")).not_to_be_empty()
    expect(load).to_have_attribute("aria-invalid", "true")
    expect(page.locator(".error-summary")).to_contain_text("refused the settings")
    page.evaluate("window.scrollTo(0, 0)")
    shot(page, "settings-errors")
    assert api.call("GET", "/fleet/settings")["alerts"]["starvationSeconds"] == 900

    # Fixed: saved, the errors gone, the API holding the new values.
    load.fill("2.5")
    starvation.fill("600")
    page.get_by_label("Default attempt timeout (s)").fill("1800")
    page.get_by_label("Preemption on").check()
    page.get_by_label("Critical from priority").fill("8")
    page.get_by_role("button", name="Save settings").click()
    expect(page.locator("#notice")).to_contain_text("Settings saved")
    expect(page.locator("#set-weights-load-err")).to_be_empty()
    expect(load).not_to_have_attribute("aria-invalid", "true")
    saved = api.call("GET", "/fleet/settings")
    assert saved["weights"]["load"] == 2.5
    assert saved["alerts"]["starvationSeconds"] == 600
    assert saved["timeoutSeconds"] == 1800
    assert saved["preemption"]["enabled"] is True
    assert saved["preemption"]["minPriority"] == 8
    # The event log names the change.
    page.goto(f"{ui_url}#/events?type=settings_changed")
    expect(page.locator("table.events tbody tr")).to_have_count(1)


def test_profiles_show_each_version_and_a_diff_between_two(
    page: Page, ui_url: str, running_stack: RunningStack, product: str
) -> None:
    api = Api(running_stack, product)
    api.call(
        "PUT",
        "/fleet/profiles/reviewer",
        {"preamble": REVIEWER_V1, "engine": "claude", "description": "Reviews PRs"},
        status=201,
    )
    api.call(
        "PUT",
        "/fleet/profiles/reviewer",
        {"preamble": REVIEWER_V2, "engine": "claude", "capabilities": ["python"]},
        status=201,
    )
    api.call("PUT", "/fleet/profiles/builder", {"preamble": "You build things."}, status=201)

    sign_in(page, ui_url, running_stack.operator_token, product)
    page.goto(f"{ui_url}#/settings/profiles")
    rows = page.locator("table.profiles tbody tr")
    expect(rows).to_have_count(2)
    row = page.locator('tr[data-profile="reviewer"]')
    expect(row).to_contain_text("v2")
    expect(row).to_contain_text("claude")
    row.get_by_role("button", name="reviewer").click()

    detail = page.locator("section.profile-detail")
    expect(detail.get_by_role("heading", name="Profile reviewer")).to_be_visible()
    expect(detail.locator("pre.preamble")).to_have_text(REVIEWER_V2)
    detail.get_by_label("Version").select_option("1")
    expect(detail.locator("pre.preamble")).to_have_text(REVIEWER_V1)
    expect(detail.locator("[data-version]")).to_have_text("v1")
    expect(detail).to_contain_text("Reviews PRs")

    # The diff, computed in the page: v1 -> v2.
    detail.get_by_role("button", name="Compare").click()
    lines = detail.locator("ol.line-diff li")
    expect(lines.first).to_be_visible()
    removed = detail.locator('ol.line-diff li[data-op="-"] .text')
    added = detail.locator('ol.line-diff li[data-op="+"] .text')
    expect(removed).to_have_text(["description: Reviews PRs", "Be kind."])
    expect(added).to_have_text(['capabilities: ["python"]', "Be kind but firm.", "Check the docs."])
    expect(detail.locator(".diff-stat")).to_contain_text("+3 \N{MINUS SIGN}2")
    page.evaluate("window.scrollTo(0, 0)")
    shot(page, "profiles")

    # One version only: nothing to compare.
    page.locator('tr[data-profile="builder"]').get_by_role("button", name="builder").click()
    expect(detail.locator("pre.preamble")).to_have_text("You build things.")
    expect(detail).to_contain_text("Only one version so far")


def test_tracker_bindings_are_bound_refused_at_their_field_and_unbound(
    page: Page, ui_url: str, running_stack: RunningStack, product: str
) -> None:
    api = Api(running_stack, product)
    repository = f"acme/{product}"
    sign_in(page, ui_url, running_stack.operator_token, product)
    page.goto(f"{ui_url}#/settings/tracker")
    expect(page.locator(".tracker-bindings .empty")).to_contain_text("No GitHub repository")
    echo = page.locator(".tracker-echo")
    expect(echo.locator(".echo-state")).to_have_attribute(
        "data-configured", re.compile("true|false")
    )
    expect(echo).to_contain_text("Last delivered")

    page.get_by_label("Repository", exact=True).fill(repository)
    page.get_by_label("Webhook secret").fill("short")
    page.get_by_label("Only issues labelled").fill("fleet")
    page.get_by_role("button", name="Bind repository").click()
    expect(page.locator("#tr-secret-err")).to_contain_text("at least 16")
    expect(page.get_by_label("Webhook secret")).to_have_attribute("aria-invalid", "true")
    assert api.call("GET", "/fleet/tracker/github")["bindings"] == []

    page.get_by_label("Webhook secret").fill("a-long-enough-webhook-secret")
    page.locator("label.cap", has_text="CONTRIBUTOR").get_by_role("checkbox").first.check()
    page.get_by_role("button", name="Bind repository").click()
    expect(page.locator("#notice")).to_contain_text(f"{repository} is bound to {product}")
    row = page.locator(f'tr[data-repository="{repository}"]')
    expect(row).to_contain_text("fleet")
    expect(row).to_contain_text("CONTRIBUTOR")
    assert "a-long-enough" not in page.content()
    (bound,) = api.call("GET", "/fleet/tracker/github")["bindings"]
    assert bound["repository"] == repository
    assert bound["label"] == "fleet"
    assert set(bound["allowedAssociations"]) == {"OWNER", "MEMBER", "COLLABORATOR", "CONTRIBUTOR"}
    shot(page, "tracker")

    row.get_by_role("button", name="Unbind").click()
    confirm(page, "Unbind")
    expect(page.locator("#notice")).to_contain_text(f"{repository} unbound")
    expect(row).to_have_count(0)
    assert api.call("GET", "/fleet/tracker/github")["bindings"] == []


def test_enrollment_token_with_seats_kind_and_capabilities(
    page: Page, ui_url: str, running_stack: RunningStack, product: str
) -> None:
    api = Api(running_stack, product)
    sign_in(page, ui_url, running_stack.operator_token, product)
    page.goto(f"{ui_url}#/admin")
    page.get_by_label("Expires in (days)").last.fill("2")
    page.get_by_label("Capabilities allowed").fill("python node")
    page.get_by_label("Max seats").fill("2")
    page.get_by_label("Review kind").fill("Bad Kind")
    page.get_by_role("button", name="Create enrollment token").click()
    expect(page.locator("#en-err")).to_contain_text("kind")
    page.get_by_label("Review kind").fill("claude")
    page.get_by_role("button", name="Create enrollment token").click()
    shown = page.locator("section.admin-enrollment .once-token")
    expect(shown).to_have_value(re.compile(r"^fle_"))
    row = page.locator("table.enrollment-tokens tbody tr")
    expect(row).to_have_count(1)
    expect(row.locator('[data-col="kind"]')).to_have_text("claude")
    expect(row.locator('[data-col="seats"]')).to_have_text("2")
    (listed,) = api.call("GET", "/fleet/enrollment-tokens")["tokens"]
    assert (listed["maxSeats"], listed["kind"], sorted(listed["capabilities"])) == (
        2,
        "claude",
        ["node", "python"],
    )
    # It works once: the factory enrolls and the listing says who used it.
    enrolled = requests.post(
        f"{running_stack.api}/fleet/factories/enroll",
        json={"name": "seated-1", "capabilities": ["python"], "seats": 8},
        headers=bearer(shown.input_value()),
        timeout=30,
    )
    assert enrolled.status_code == 201, enrolled.text
    page.reload()
    expect(row.locator("[data-status]")).to_have_text("used")
    expect(row).to_contain_text("seated-1")


def test_a_viewer_reads_the_settings_and_changes_nothing(
    page: Page, ui_url: str, running_stack: RunningStack, product: str
) -> None:
    response = requests.post(
        f"{running_stack.api}/fleet/operator-tokens",
        json={"name": f"vic-{product}", "role": "viewer", "products": [product]},
        headers=bearer(running_stack.operator_token),
        timeout=30,
    )
    assert response.status_code == 201, response.text
    sign_in(page, ui_url, response.json()["token"], product)
    nav = page.get_by_role("navigation", name="Sections")
    expect(nav.get_by_role("link", name="Admin")).to_be_hidden()
    nav.get_by_role("link", name="Settings").click()
    expect(page.get_by_label("Oldest queued job (s)")).to_have_value("900")
    expect(page.get_by_label("Oldest queued job (s)")).not_to_be_editable()
    expect(page.get_by_label("Alerts on")).to_be_disabled()
    expect(page.get_by_role("button", name="Save settings")).to_have_count(0)
    expect(page.locator("main")).to_contain_text("needs an admin token")
    page.get_by_role("link", name="Tracker").click()
    expect(page.locator(".tracker-bindings .empty")).to_be_visible()
    expect(page.get_by_role("button", name="Bind repository")).to_have_count(0)
    nav.get_by_role("link", name="Events").click()
    expect(page.locator("main .empty")).to_have_text("No event in this product yet.")
