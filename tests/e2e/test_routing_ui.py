"""The learned routing panel on the fleet map, in a real browser.

Two factories claim and report jobs over HTTP (one ships them all, the other few); the
metrics pass (``Coordinator.refresh_routing``, then the metrics and alerts) then runs
in-process over the stack's own stores, as tests/e2e/test_alerts_ui.py runs it. The panel shows
what ``GET /api/fleet/recommendations`` says.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from fleet.coordinator import Coordinator
from fleet.coordinator.metrics import Monitor
from fleet.domain.routing import MIN_RUNS_TO_RECOMMEND, recommendations
from fleet.store.ports import Stores
from tests.conftest import RunningStack
from tests.e2e.conftest import Api, Factory, shot, sign_in

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def ship_or_fail(api: Api, factory: Factory, shipped: bool) -> None:
    """A backend-dev job, claimed by ``factory`` and reported shipped or failed."""
    api.submit(title="Add the endpoint", body="x", persona="backend-dev")
    engine = factory.capabilities[0].removeprefix("engine:")
    claim = {"capabilities": factory.capabilities, "seats": 1, "start": True}
    job = factory.ok("POST", "/fleet/claim", claim)["job"]
    seconds = 600.0 if engine == "claude" else 900.0
    result = {"engine": engine, "durationSeconds": seconds, "costUsd": 0.5}
    stage = "shipped" if shipped else "failed"
    factory.report(job["id"], job["epoch"], stage=stage, result=result)


def test_routing_panel_shows_the_recommendation_learned_from_runs(
    page: Page, ui_url: str, running_stack: RunningStack, azure_backend: Stores, product: str
) -> None:
    api = Api(running_stack, product)
    api.call("PUT", "/fleet/profiles/backend-dev", {"preamble": "You write code."}, status=201)
    mac = Factory(running_stack, product, "mac-2", ("engine:claude",))
    linux = Factory(running_stack, product, "linux-3", ("engine:codex",))
    for n in range(MIN_RUNS_TO_RECOMMEND):
        ship_or_fail(api, mac, shipped=True)
        ship_or_fail(api, linux, shipped=n == 0)
    coordinator = Coordinator(azure_backend)
    kept = coordinator.refresh_routing(product)
    Monitor(coordinator).run(product)
    (found,) = recommendations(kept.learned)
    sentence = found.sentence()
    assert sentence.startswith("backend-dev jobs: engine:claude on mac-2 ships ")

    sign_in(page, ui_url, running_stack.operator_token, product)
    page.get_by_role("link", name="Fleet", exact=True).click()
    panel = page.get_by_role("region", name="Learned routing")
    expect(panel.locator(".lr-sentence").first).to_have_text(sentence)
    expect(panel.locator('[data-routing="mode"]')).to_contain_text("shadow")
    expect(panel.locator('[data-routing="weight"]')).to_contain_text("weights.outcome 0")
    expect(panel.locator('[data-routing="learned"]')).to_contain_text(
        f"from {2 * MIN_RUNS_TO_RECOMMEND} jobs"
    )
    shot(page, "learned-routing")
