"""Operators as named people in a real browser: who is signed in, what a viewer sees (no
action), and the admin page that manages operator and enrollment tokens.

People's tokens are created over HTTP with the stack's bootstrap token (an admin of every
product), or from the admin page itself; what a token may do is checked over HTTP after.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import requests
from playwright.sync_api import Page, expect

from tests.conftest import RunningStack, bearer
from tests.e2e.conftest import Api, Factory, shot, sign_in

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def person(stack: RunningStack, name: str, role: str, products: list[str]) -> dict[str, Any]:
    response = requests.post(
        f"{stack.api}/fleet/operator-tokens",
        json={"name": name, "role": role, "products": products},
        headers=bearer(stack.operator_token),
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def secret(prefix: str) -> re.Pattern[str]:
    """A token as ``to_have_value`` sees it: its prefix, then 43 url-safe characters."""
    return re.compile(f"^{re.escape(prefix)}[A-Za-z0-9_-]{{43}}$")


def confirm(page: Page, label: str) -> None:
    dialog = page.locator("dialog#confirm")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name=label, exact=True).click()
    expect(dialog).to_be_hidden()


def test_a_viewer_sees_who_is_signed_in_and_no_action(
    page: Page, ui_url: str, running_stack: RunningStack, product: str
) -> None:
    api = Api(running_stack, product)
    worker = Factory(running_stack, product, "worker-1", ("python",))
    worker.heartbeat()
    job = api.submit(title="Read, do not touch", capabilities=["python"])
    viewer = person(running_stack, f"vera-{product}", "viewer", [product])

    sign_in(page, ui_url, viewer["token"], product)
    who = page.locator("#who")
    expect(who).to_contain_text(f"vera-{product}")
    expect(who).to_contain_text("(viewer)")
    nav = page.get_by_role("navigation", name="Sections")
    expect(nav.get_by_role("link", name="New job")).to_be_hidden()
    expect(nav.get_by_role("link", name="Admin")).to_be_hidden()

    # The fleet map: the factory, and no action on it.
    expect(page.locator(f'article.factory[data-factory="{worker.name}"]')).to_be_visible()
    expect(page.locator("article.factory .actions")).to_have_count(0)

    # The jobs: the list, with neither selection nor bulk action.
    nav.get_by_role("link", name="Jobs").click()
    expect(page.locator(f'tr[data-id="{job["id"]}"]')).to_be_visible()
    expect(page.locator("main input[type=checkbox]")).to_have_count(0)
    expect(page.locator("main button[data-action]")).to_have_count(0)
    expect(page.locator("main").get_by_role("link", name="New job")).to_have_count(0)

    # One job: everything about it, and no action section.
    page.get_by_role("link", name="Read, do not touch").click()
    expect(page.get_by_role("heading", name="Read, do not touch", level=1)).to_be_visible()
    expect(page.locator("ol.timeline")).to_contain_text("submit")
    expect(page.get_by_role("heading", name="Actions")).to_have_count(0)
    expect(page.locator("main button[data-action]")).to_have_count(0)
    shot(page, "viewer-job")

    # The budget and the channels: read, never changed.
    nav.get_by_role("link", name="Budget").click()
    expect(page.locator(".cards")).to_contain_text("unlimited")
    for name in ("Pause the product", "Save ceiling", "Remove ceiling"):
        expect(page.get_by_role("button", name=name)).to_have_count(0)
    nav.get_by_role("link", name="Channels").click()
    expect(page.locator(".empty")).to_contain_text("No channel has limits")
    expect(page.get_by_role("button", name="Save limits")).to_have_count(0)

    # The token is for one product: the header will not switch to another.
    page.get_by_label("Product").fill("elsewhere")
    page.get_by_role("button", name="Switch").click()
    expect(page.locator("#notice")).to_contain_text(f"is for {product} only")
    expect(page.locator("#live")).to_have_text("live")

    # What the page hides, the coordinator refuses anyway.
    refused = requests.post(
        f"{running_stack.api}/fleet/jobs/{job['id']}/cancel",
        headers=bearer(viewer["token"], product),
        timeout=30,
    )
    assert refused.status_code == 403


def test_the_admin_page_creates_and_revokes_operator_and_enrollment_tokens(
    page: Page, ui_url: str, running_stack: RunningStack, product: str
) -> None:
    api = running_stack.api
    sign_in(page, ui_url, running_stack.operator_token, product)
    expect(page.locator("#who")).to_contain_text("(admin)")
    page.get_by_role("navigation", name="Sections").get_by_role("link", name="Admin").click()
    expect(page.get_by_role("heading", name="Admin", level=1)).to_be_visible()

    # An operator token for a person: shown once, and it works at once.
    name = f"pat-{product}"
    page.get_by_label("Name").fill(name)
    page.get_by_label("Role").select_option("operator")
    page.get_by_label("Products").fill(product)
    page.get_by_role("button", name="Create operator token").click()
    shown = page.locator("section.admin-operators .once-token")
    expect(shown).to_have_value(secret("flo_"))
    token = shown.input_value()
    me = requests.get(f"{api}/fleet/whoami", headers=bearer(token), timeout=30)
    assert me.json() == {
        "kind": "operator",
        "name": name,
        "role": "operator",
        "products": [product],
    }
    row = page.locator(f'table.operator-tokens tr[data-name="{name}"]')
    expect(row).to_contain_text("operator")
    expect(row.locator("[data-status]")).to_have_text("active")
    assert token not in row.inner_text()
    shot(page, "admin-tokens", mask=[shown])

    # Revoked from the page: refused from its next request.
    row.get_by_role("button", name="Revoke").click()
    confirm(page, "Revoke")
    expect(row.locator("[data-status]")).to_have_text("revoked")
    gone = requests.get(f"{api}/fleet/jobs", headers=bearer(token, product), timeout=30)
    assert gone.status_code == 401

    # An enrollment token for the product: shown once, listed, revoked.
    page.get_by_role("button", name="Create enrollment token").click()
    enrollment = page.locator("section.admin-enrollment .once-token")
    expect(enrollment).to_have_value(secret("fle_"))
    enrollment_token = enrollment.input_value()
    listed = page.locator("table.enrollment-tokens tbody tr")
    expect(listed).to_have_count(1)
    expect(listed.locator("[data-status]")).to_have_text("active")
    listed.get_by_role("button", name="Revoke").click()
    confirm(page, "Revoke")
    expect(listed.locator("[data-status]")).to_have_text("revoked")
    enrolled = requests.post(
        f"{api}/fleet/factories/enroll",
        json={"name": "late", "capabilities": ["python"]},
        headers=bearer(enrollment_token),
        timeout=30,
    )
    assert enrolled.status_code == 401
