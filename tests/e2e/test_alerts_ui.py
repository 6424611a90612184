"""The alerts panel and metrics strip on the fleet map, in a real browser.

The metrics timer's pass runs in-process over the stack's own stores (as in
tests/integration/test_metrics_http.py); the page learns of the raised and then cleared alert
from its own live polling of the event feed, never by a reload.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from fleet.coordinator import Coordinator
from fleet.coordinator.metrics import Monitor
from fleet.store.ports import Stores
from tests.conftest import RunningStack
from tests.e2e.conftest import Api, Factory, shot, sign_in

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def test_alerts_panel_shows_metrics_and_follows_an_alert_raised_then_cleared(
    page: Page, ui_url: str, running_stack: RunningStack, azure_backend: Stores, product: str
) -> None:
    api = Api(running_stack, product)
    worker = Factory(running_stack, product, "worker-1", ("python",), seats=2)
    worker.heartbeat()
    gpu = api.submit(title="Train the model", capabilities=["gpu"])
    api.submit(title="Lint", capabilities=["python"])
    worker.claim()
    monitor = Monitor(Coordinator(azure_backend))
    monitor.run(product)

    sign_in(page, ui_url, running_stack.operator_token, product)
    page.get_by_role("link", name="Fleet", exact=True).click()
    panel = page.locator("section.ap")
    expect(panel.locator('[data-metric="utilization"]')).to_contain_text("50% (1 of 2 seats)")
    expect(panel.locator('[data-metric="queued"]')).to_contain_text("1")
    alert = panel.locator('.ap-alert[data-key="unroutable_jobs"]')
    expect(alert).to_contain_text("warning")
    expect(alert).to_contain_text("no known factory can run")
    shot(page, "alerts")

    api.call("POST", f"/fleet/jobs/{gpu['id']}/cancel", {"reason": "no gpu this quarter"})
    monitor.run(product)
    expect(panel.locator(".ap-none")).to_have_text("No active alerts.")
    expect(panel.locator('.ap-event.cleared[data-key="unroutable_jobs"]')).to_have_count(1)
