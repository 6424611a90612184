"""The operator's control plane in a real browser, against the real local stack.

Each test works in a product of its own. Factories are driven over HTTP from the test (enroll,
heartbeat, claim, report), as ``devtools/demo.py`` does; the page is never reloaded while
it is expected to follow them: what it shows comes from its own live polling. Waiting is
playwright's auto-waiting ``expect``. Screenshots of each page go to docs/screenshots/.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from playwright.sync_api import BrowserContext, Page, expect

from tests.conftest import RunningStack, free_port
from tests.e2e.conftest import Api, Factory, shot, sign_in

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def card(page: Page, factory: str):  # type: ignore[no-untyped-def]
    return page.locator(f'article.factory[data-factory="{factory}"]')


def confirm(page: Page, label: str, reason: str | None = None) -> None:
    dialog = page.locator("dialog#confirm")
    expect(dialog).to_be_visible()
    if reason is not None:
        dialog.get_by_label(re.compile("Reason")).fill(reason)
    dialog.get_by_role("button", name=label, exact=True).click()
    expect(dialog).to_be_hidden()


def test_fleet_map_shows_health_and_drains_a_factory(
    page: Page, ui_url: str, running_stack: RunningStack, product: str
) -> None:
    api = Api(running_stack, product)
    builder = Factory(running_stack, product, "builder-1", ("python", "node", "os:linux"), seats=2)
    spare = Factory(running_stack, product, "builder-2", ("python",))
    builder.heartbeat()
    spare.heartbeat()
    held = api.submit(title="Add retries to the HTTP client", capabilities=["python", "node"])
    claim = builder.claim()
    assert claim["job"]["id"] == held["id"]
    builder.report(held["id"], claim["lease"]["epoch"], stage="building")
    builder.heartbeat(load=1)
    api.submit(title="Write the changelog", capabilities=["python"], priority=3)

    sign_in(page, ui_url, running_stack.operator_token, product)
    page.get_by_role("link", name="Fleet", exact=True).click()
    expect(page.get_by_role("heading", name="Fleet", level=1)).to_be_visible()
    first = card(page, "builder-1")
    expect(first.locator(".health")).to_have_text("live")
    expect(first.locator(".hb-age")).to_have_text(re.compile(r"\d+ s ago"))
    expect(first.locator(".held")).to_contain_text("Add retries to the HTTP client")
    expect(first).to_contain_text("1/2")
    expect(first).to_contain_text("os:linux")
    expect(first).to_contain_text("1.4.2")
    expect(page.locator(".summary")).to_contain_text("2 live")
    shot(page, "fleet-map")

    second = card(page, "builder-2")
    second.get_by_role("button", name="Drain").click()
    confirm(page, "Drain", reason="maintenance window")
    expect(page.locator("#notice")).to_contain_text("Drain sent to builder-2")
    expect(second.locator(".flag")).to_have_text("draining")
    expect(second.locator(".chip.pending")).to_have_text("drain pending")
    factories = {f["id"]: f for f in api.call("GET", "/fleet/factories")["factories"]}
    assert factories["builder-2"]["draining"] is True
    pending = api.call("GET", "/fleet/factories/builder-2/heartbeat")["pendingCommands"]
    assert [c["kind"] for c in pending] == ["drain"]
    assert pending[0]["reason"] == "maintenance window"


def test_submit_a_job_from_the_form_and_watch_a_factory_finish_it(
    page: Page, ui_url: str, running_stack: RunningStack, product: str
) -> None:
    worker = Factory(running_stack, product, "worker-1", ("python", "node"))
    worker.heartbeat()
    sign_in(page, ui_url, running_stack.operator_token, product)
    page.get_by_role("link", name="New job").click()
    form = page.locator("form.newjob")
    # The picker offers what the live fleet advertises.
    expect(form.locator("label.cap", has_text="python")).to_contain_text("1 live")

    # A capability nobody advertises is flagged at once, before submitting.
    page.get_by_label("Another capability").fill("gpu")
    page.get_by_role("button", name="Add", exact=True).click()
    expect(page.locator(".routing")).to_contain_text("No factory can take this job")

    # A bad manifest: each problem the coordinator reports is shown at its field.
    page.get_by_label("Another capability").fill("Bad_Cap")
    page.get_by_role("button", name="Add", exact=True).click()
    page.get_by_label("Priority", exact=True).fill("12")
    page.get_by_role("button", name="Submit job").click()
    expect(page.locator("#err-title")).to_contain_text("title")
    expect(page.locator("#err-priority")).to_contain_text("less than or equal to 9")
    expect(page.locator("#err-capabilities")).to_contain_text("Bad_Cap")
    expect(page.get_by_label("Priority", exact=True)).to_have_attribute("aria-invalid", "true")
    expect(page.locator(".error-summary")).to_contain_text("refused the job (400")
    page.evaluate("window.scrollTo(0, 0)")
    shot(page, "new-job-errors")

    # Fixed: a good one is submitted and the job detail opens.
    form.locator("label.cap", has_text="Bad_Cap").get_by_role("checkbox").uncheck()
    form.locator("label.cap", has_text="gpu").get_by_role("checkbox").uncheck()
    form.locator("label.cap", has_text="python").get_by_role("checkbox").check()
    page.get_by_label("Title").fill("Fix the flaky upload test")
    page.get_by_label("Priority", exact=True).fill("7")
    page.get_by_label(re.compile("^Instructions")).fill(
        "The upload test fails one run in ten.\n\n- find why\n- make it deterministic"
    )
    expect(page.locator(".routing")).to_contain_text("1 live factory can take it")
    expect(page.locator("#err-priority")).to_be_empty()  # cleared by the edit
    page.evaluate("window.scrollTo(0, 0)")
    shot(page, "new-job")
    page.get_by_role("button", name="Submit job").click()
    expect(page).to_have_url(re.compile(r"#/jobs/j[0-9a-z]{26}$"))
    job_id = page.url.rsplit("/", 1)[1]
    status = page.locator(".job-status .stage")
    expect(status).to_have_text("queued")
    expect(page.locator("pre.manifest")).to_contain_text('capabilities: ["python"]')
    expect(page.locator("pre.body")).to_contain_text("make it deterministic")

    # A real factory claims and works it; the page follows without a reload.
    claim = worker.claim()
    assert claim["job"]["id"] == job_id
    epoch = claim["lease"]["epoch"]
    timeline = page.locator("ol.timeline")
    expect(timeline.locator('li[data-type="assign"]')).to_contain_text("worker-1")
    worker.report(job_id, epoch, stage="building", checkpoint={"branch": "wip/upload", "step": 1})
    expect(status).to_have_text("building")
    worker.ok(
        "POST",
        f"/fleet/jobs/{job_id}/events",
        {
            "leaseEpoch": epoch,
            "events": [
                {"seq": 1, "type": "decision", "payload": {"text": "retry on 503 only"}},
                {"seq": 2, "type": "tool_call", "payload": {"tool": "pytest", "exit": 0}},
            ],
        },
        status=201,
    )
    expect(timeline.locator('li.agent[data-type="tool_call"]')).to_contain_text("pytest")
    worker.report(
        job_id, epoch, stage="shipped", result={"exitCode": 0, "costUsd": 0.42, "pr": 1234}
    )
    expect(status).to_have_text("shipped")
    expect(timeline.locator('li[data-type="complete"]')).to_contain_text("shipped")
    expect(page.locator("table.costs")).to_contain_text("$0.42")
    expect(page.locator(".explain-panel")).to_contain_text("not waiting: stage is shipped")
    shot(page, "job-detail")


def test_budget_pause_and_resume(
    page: Page, ui_url: str, running_stack: RunningStack, product: str
) -> None:
    api = Api(running_stack, product)
    sign_in(page, ui_url, running_stack.operator_token, product)
    page.get_by_role("link", name="Budget").click()
    state = page.locator(".budget-state")
    expect(state).to_contain_text("no ceiling")
    expect(page.locator(".cards")).to_contain_text("unlimited")

    page.get_by_label("Ceiling (USD)").fill("25")
    page.get_by_role("button", name="Save ceiling").click()
    expect(page.locator(".cards")).to_contain_text("$25")
    assert api.call("GET", f"/fleet/budgets/{product}")["ceilingUsd"] == 25

    page.get_by_role("button", name="Pause the product").click()
    confirm(page, "Pause the product")
    expect(state).to_contain_text("Paused by an operator")
    assert api.call("GET", f"/fleet/budgets/{product}")["paused"] is True
    shot(page, "budgets")

    page.get_by_role("button", name="Resume the product").click()
    expect(state).to_contain_text("Running")
    assert api.call("GET", f"/fleet/budgets/{product}")["paused"] is False

    # Channels: limits set from the form show up with their bucket and running count.
    page.get_by_role("link", name="Channels").click()
    expect(page.locator(".empty")).to_contain_text("No channel has limits")
    page.get_by_label("Channel", exact=True).fill("ci")
    page.get_by_label("Starts per minute").fill("6")
    page.get_by_label("Burst").fill("2")
    page.get_by_label("Max running").fill("1")
    page.get_by_role("button", name="Save limits").click()
    row = page.locator('tr[data-channel="ci"]')
    expect(row).to_contain_text("6")
    shot(page, "channels")
    channels = api.call("GET", "/fleet/channels")["channels"]
    assert [(c["channel"], c["maxRunning"]) for c in channels] == [("ci", 1)]


def test_requeue_a_failed_job(
    page: Page, ui_url: str, running_stack: RunningStack, product: str
) -> None:
    api = Api(running_stack, product)
    worker = Factory(running_stack, product, "worker-1")
    worker.heartbeat()
    failed = api.submit(title="Migrate the settings table", capabilities=["python"], priority=8)
    claim = worker.claim()
    worker.report(failed["id"], claim["lease"]["epoch"], stage="failed", reason="tests red")
    for n in range(4):
        api.submit(title=f"Refactor module {n}", capabilities=["python"], channel="ci")

    sign_in(page, ui_url, running_stack.operator_token, product)
    page.get_by_role("link", name="Jobs", exact=True).click()
    expect(page.locator("table.jobs tbody tr")).to_have_count(5)
    expect(page.locator('.count[data-stage="failed"] .n')).to_have_text("1")
    shot(page, "jobs")
    page.locator('.count[data-stage="failed"]').click()
    rows = page.locator("table.jobs tbody tr")
    expect(rows).to_have_count(1)
    rows.first.get_by_role("checkbox").check()
    page.locator(".bulk").get_by_role("button", name="Requeue").click()
    confirm(page, "Requeue", reason="flake fixed")
    expect(page.locator("#notice")).to_contain_text("1 job requeued")
    expect(page.locator('.count[data-stage="failed"] .n')).to_have_text("0")
    expect(page.locator('.count[data-stage="queued"] .n')).to_have_text("5")
    assert api.call("GET", f"/fleet/jobs/{failed['id']}")["stage"] == "queued"

    # Text search and the sortable columns.
    page.locator('.count[data-stage="all"]').click()
    page.get_by_label("Search").fill("module 2")
    expect(rows).to_have_count(1)
    page.get_by_label("Search").fill("")
    page.get_by_role("button", name="Pri.").click()
    expect(rows.first).to_contain_text("Migrate the settings table")


def test_explain_panel_for_an_unroutable_job(
    page: Page, ui_url: str, running_stack: RunningStack, product: str
) -> None:
    api = Api(running_stack, product)
    Factory(running_stack, product, "cpu-1", ("python",)).heartbeat()
    job = api.submit(title="Train the ranking model", capabilities=["gpu"])
    sign_in(page, ui_url, running_stack.operator_token, product)
    page.goto(f"{ui_url}#/jobs/{job['id']}")
    panel = page.locator(".explain-panel")
    expect(panel.locator(".callout.warn")).to_contain_text("Unroutable")
    row = panel.locator('tr[data-factory="cpu-1"]')
    expect(row).to_contain_text("not eligible")
    expect(row.locator(".chip.missing")).to_have_text("gpu")
    expect(page.locator(".job-status")).to_contain_text("unroutable")


def test_an_api_outage_is_shown_as_an_error(
    page: Page, context: BrowserContext, ui_url: str, running_stack: RunningStack, product: str
) -> None:
    Api(running_stack, product).submit(title="Something to list")
    sign_in(page, ui_url, running_stack.operator_token, product)
    page.get_by_role("link", name="Jobs", exact=True).click()
    expect(page.locator("table.jobs tbody tr")).to_have_count(1)

    page.route("**/api/**", lambda route: route.abort())
    live = page.locator("#live")
    expect(live).to_have_text(re.compile("reconnecting|offline"))
    banner = page.locator("#banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("Cannot reach the coordinator API")
    expect(live).to_have_text("offline")
    # What was known stays on screen, marked as such: not replaced by "nothing here".
    expect(page.locator("table.jobs tbody tr")).to_have_count(1)
    page.unroute("**/api/**")
    expect(live).to_have_text("live")
    expect(banner).to_be_hidden()

    # A page whose API base points at a closed port shows an error, never an empty list.
    closed = context.new_page()
    closed.add_init_script(
        f"window.FLEET_API_BASE = 'http://127.0.0.1:{free_port()}';"
        f"sessionStorage.setItem('fleet.operatorToken', '{running_stack.operator_token}');"
        f"sessionStorage.setItem('fleet.product', '{product}');"
    )
    closed.goto(f"{ui_url}#/jobs")
    expect(closed.locator(".error-box")).to_contain_text("Could not load the jobs")
    expect(closed.locator(".error-box")).to_contain_text("Cannot reach the coordinator API")
    expect(closed.locator(".empty")).to_have_count(0)
    shot(closed, "outage")
    closed.close()


def test_first_paint_with_500_jobs_and_50_factories(
    context: BrowserContext, ui_url: str, running_stack: RunningStack, product: str
) -> None:
    """Measured and printed, not asserted: a figure for the README, not a flaky gate."""
    api = Api(running_stack, product)
    session = requests.Session()
    headers = running_stack.operator(product)

    def submit(n: int) -> None:
        response = session.post(
            f"{running_stack.api}/fleet/jobs",
            json={"title": f"Job {n}", "capabilities": ["python"], "priority": n % 10},
            headers=headers,
            timeout=60,
        )
        assert response.status_code == 201, response.text

    def enroll(n: int) -> None:
        Factory(running_stack, product, f"f{n:02d}", ("python", f"pool:{n % 5}"))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(enroll, range(50)))
        list(pool.map(submit, range(500)))
    assert api.call("GET", "/fleet/jobs?limit=1000")["count"] == 500

    page = context.new_page()
    page.add_init_script(
        f"sessionStorage.setItem('fleet.operatorToken', '{running_stack.operator_token}');"
        f"sessionStorage.setItem('fleet.product', '{product}');"
    )
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    figures = {}
    # The jobs table paints the first page (200 jobs by id); the fleet map every factory,
    # each with its last heartbeat from the one list call.
    views = (("jobs", "table.jobs tbody tr", 200), ("fleet", "article.factory", 50))
    for view, locator, count in views:
        page.goto(f"{ui_url}#/{view}")
        page.reload()  # a cold load of this view
        expect(page.locator(locator)).to_have_count(count)
        figures[view] = page.evaluate(f"performance.getEntriesByName('fleet:{view}')[0].startTime")
    assert not [url for url in asked if url.endswith("/heartbeat")]
    page.goto(f"{ui_url}#/jobs")
    rows = page.locator("table.jobs tbody tr")
    expect(rows).to_have_count(200)
    for loaded in (400, 500):
        page.get_by_role("button", name="Load 200 more jobs").click()
        expect(rows).to_have_count(loaded)
    expect(page.get_by_role("button", name="Load 200 more jobs")).to_be_hidden()
    print(
        f"\nfirst paint with data (navigation start to the frame after render), "
        f"500 jobs: {figures['jobs']:.0f} ms; 50 factories: {figures['fleet']:.0f} ms"
    )
    page.close()


def test_review_quorum_in_the_job_view(
    page: Page, ui_url: str, running_stack: RunningStack, product: str
) -> None:
    api = Api(running_stack, product)
    author = Factory(running_stack, product, "author", ("python", "engine:claude"))
    reviewer = Factory(running_stack, product, "reviewer", ("python", "engine:codex"))
    job = api.submit(title="Parser rewrite", capabilities=["python"], review=2)
    epoch = author.claim()["lease"]["epoch"]
    author.report(job["id"], epoch, stage="building")
    assert author.report(job["id"], epoch, stage="shipped")["stage"] == "review"

    sign_in(page, ui_url, running_stack.operator_token, product)
    page.goto(f"{ui_url}#/jobs/{job['id']}")
    card = page.locator(".review-card")
    expect(card).to_contain_text("Round 1 of 3 · 0 of 2 approvals · author author (claude)")
    page.get_by_label("Comments").fill("The error paths need tests.")
    card.get_by_role("button", name="Approve").click()
    expect(page.locator("#notice")).to_contain_text("Vote recorded: the job is review")
    expect(card.locator('.vote[data-reviewer^="operator:"]')).to_contain_text(
        "The error paths need tests."
    )
    card.get_by_role("button", name="Request changes").click()  # a second vote: refused
    expect(page.locator("#notice")).to_contain_text("already voted")
    shot(page, "review")
    reviewer.ok("POST", f"/fleet/jobs/{job['id']}/review", {"verdict": "approve"})
    summary = page.locator("section.review-summary")
    expect(summary).to_contain_text("last round approved")
    expect(page.locator(".job-status .stage")).to_have_text("shipped")
