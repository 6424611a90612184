"""The job page's runs table and artifacts, in a real browser against the real local stack.

A factory driven over HTTP works a job with a GitHub repository in two attempts: the first
fails (retryable) without reporting a cost, the second uploads ``engine.log`` through its SAS
URL and ships with usage, cost, diff stat, branch, commit and a pull request. The page shows
one row per attempt and downloads the artifact through a URL fetched on the click only.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Locator, Page, Route, expect

from factory_cli.api import FleetClient
from factory_cli.runs import latest_summary, run_summary
from factory_cli.top import Feed, top_client
from tests.conftest import RunningStack
from tests.e2e.conftest import Api, Factory, shot, sign_in

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

REPO = "https://github.com/acme/widgets.git"
SHA = "3f2a9c1d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a39"
LOG = b"engine says: all tests pass\n"


def test_job_page_shows_runs_and_downloads_an_artifact(
    page: Page, ui_url: str, running_stack: RunningStack, product: str
) -> None:
    api = Api(running_stack, product)
    worker = Factory(running_stack, product, "worker-1")
    worker.heartbeat()
    job = api.submit(
        title="Make the widget cache thread-safe",
        capabilities=["python"],
        repo=REPO,
        base="main",
        pr=True,
        timeoutSeconds=900,
        maxCostUsd=5,
    )
    job_id = job["id"]

    # Attempt 1: fails, retryable, and its engine told no cost (unknown, not $0).
    first = worker.claim()
    assert first["job"]["id"] == job_id
    worker.report(
        job_id,
        first["lease"]["epoch"],
        stage="failed",
        retryable=True,
        reason="engine exited 1: " + "the suite timed out while importing fixtures " * 3,
        result={"exitCode": 1, "engine": "claude", "costUsd": None},
    )

    # Attempt 2: uploads its log through the SAS URL, then ships with the full record.
    second = worker.claim()
    assert second["job"]["id"] == job_id
    epoch = second["lease"]["epoch"]
    worker.report(job_id, epoch, stage="building")
    issued = worker.ok(
        "POST",
        f"/fleet/jobs/{job_id}/artifacts",
        {"leaseEpoch": epoch, "name": "engine.log", "contentType": "text/plain"},
        status=201,
    )
    put = requests.put(issued["url"], data=LOG, headers=issued["headers"], timeout=30)
    assert put.status_code == 201, put.text
    branch = f"fleet/{job_id}"
    worker.report(
        job_id,
        epoch,
        stage="shipped",
        result={
            "exitCode": 0,
            "engine": "claude",
            "engineVersion": "2.1.3",
            "usage": {"input": 12345, "output": 4100, "cacheRead": 48000, "cacheWrite": 2000},
            "tokens": 66445,
            "costUsd": 0.42,
            "diff": {"files": 3, "insertions": 10, "deletions": 2},
            "branch": branch,
            "commit": SHA,
            "prUrl": "https://github.com/acme/widgets/pull/17",
            "artifacts": ["engine.log"],
            "durationSeconds": 312.5,
        },
    )
    runs = api.call("GET", f"/fleet/jobs/{job_id}/runs")["runs"]
    assert [r["outcome"] for r in runs] == ["retry", "shipped"]

    # The terminal side reads the same records from the real list reply: the job documents
    # carry their newest runs.
    client = FleetClient(running_stack.api, running_stack.operator_token, product=product)
    assert [r["epoch"] for r in client.job_runs(job_id)] == [r["epoch"] for r in runs]
    assert [a["name"] for a in client.list_artifacts(job_id)] == ["engine.log"]
    (in_list,) = client.list_jobs()
    assert latest_summary(in_list) == "shipped $0.42 66.4k tok +10-2"
    (row,) = Feed(top_client(client), product).poll().jobs
    assert run_summary(row.last_run) == "shipped $0.42 66.4k tok +10-2"
    client.close()

    sign_in(page, ui_url, running_stack.operator_token, product)
    page.goto(f"{ui_url}#/jobs/{job_id}")
    expect(page.locator(".job-status .stage")).to_have_text("shipped")
    table = page.locator("table.runs")
    expect(table.locator("tbody tr")).to_have_count(2)
    rows = table.locator("tbody tr")
    expect(rows.nth(0)).to_have_attribute("data-epoch", str(first["lease"]["epoch"]))

    failed = rows.nth(0)
    expect(failed.locator('[data-outcome="retry"]')).to_have_text("retry")
    expect(failed.locator("td.cost")).to_have_text("unknown")
    reason = failed.locator("td.reason")
    expect(reason).to_contain_text("…")
    expect(reason).to_have_attribute(
        "title", re.compile(r"^engine exited 1: .*importing fixtures\s*$")
    )

    shipped = rows.nth(1)
    expect(shipped).to_have_attribute("data-epoch", str(epoch))
    expect(shipped.locator('[data-outcome="shipped"]')).to_have_text("shipped")
    expect(shipped).to_contain_text("worker-1")
    expect(shipped).to_contain_text("claude 2.1.3")
    expect(shipped.locator("td.cost")).to_have_text("$0.42")
    expect(shipped.locator("td.tokens")).to_have_text("12.3k / 4.1k / 50k")
    expect(shipped.locator("td.tokens")).to_have_attribute(
        "title", "input 12,345 · output 4,100 · cache read 48,000 · cache write 2,000"
    )
    expect(shipped.locator("td.diff")).to_have_text("+10 \N{MINUS SIGN}2 in 3 files")
    commit = shipped.locator("td.git .commit a")
    expect(commit).to_have_text(SHA[:7])
    expect(commit).to_have_attribute("href", f"https://github.com/acme/widgets/commit/{SHA}")
    expect(shipped.locator("td.git .branch a")).to_have_attribute(
        "href", f"https://github.com/acme/widgets/tree/{branch}"
    )
    expect(shipped.locator("td.pr a")).to_have_text("#17")
    expect(shipped.locator("td.when .started time")).to_have_attribute(
        "title", runs[1]["startedAt"]
    )
    expect(shipped.locator("td.when .ended")).to_contain_text("took 5 min")

    # The job's repository facts are in its overview.
    def fact(label: str) -> Locator:
        return page.locator("dl.facts > div", has=page.locator("dt", has_text=label)).locator("dd")

    expect(fact("Repository").locator("a")).to_have_attribute("href", REPO)
    expect(fact("Base")).to_have_text("main")
    expect(fact("Pull request")).to_have_text("opened when shipped")
    expect(fact("Timeout per attempt")).to_have_text("900 s")
    expect(fact("Max cost per attempt")).to_have_text("$5.00")

    # The artifact: listed with its attempt, size and uploader; no download URL in the page
    # until it is clicked (they are short-lived SAS URLs).
    (artifact,) = api.call("GET", f"/fleet/jobs/{job_id}/artifacts")["artifacts"]
    listed = page.locator(f'table.artifacts tr[data-artifact-row="{artifact["id"]}"]')
    expect(listed).to_contain_text("engine.log")
    expect(listed.locator("td").nth(1)).to_have_text(str(epoch))
    expect(listed).to_contain_text(f"{len(LOG)} B")
    expect(listed).to_contain_text("worker-1")
    expect(
        shipped.locator(f'td.artifacts button[data-artifact="{artifact["id"]}"]')
    ).to_be_visible()
    assert "sig=" not in page.content()
    page.evaluate("window.scrollTo(0, 0)")
    shot(page, "job-runs")

    # A download, never a page: the read URL answers as an attachment.
    asked = f"/api/fleet/jobs/{job_id}/artifacts/{artifact['id']}"
    with (
        page.expect_response(lambda r: r.url.endswith(asked) and r.ok) as answered,
        page.expect_download() as downloading,
    ):
        listed.get_by_role("button", name="engine.log").click()
    download = answered.value.json()
    assert artifact["blob"] in download["url"] and "sig=" in download["url"]
    saved = downloading.value
    assert saved.suggested_filename == "engine.log"
    assert Path(saved.path()).read_bytes() == LOG
    expect(page.locator("#notice")).to_contain_text("Downloading engine.log")
    assert page.url.endswith(f"#/jobs/{job_id}")  # the page stayed
    assert "sig=" not in page.content()

    # A coordinator without the runs route (404): the page shows the runs embedded in the job.
    refused: list[str] = []

    def no_runs_route(route: Route) -> None:
        refused.append(route.request.url)
        route.fulfill(
            status=404,
            content_type="application/json",
            body='{"error": "not_found", "message": "no such route"}',
        )

    page.route(re.compile(r"/api/fleet/jobs/[^/]+/runs$"), no_runs_route)
    page.reload()
    expect(rows).to_have_count(2)
    expect(rows.nth(1).locator("td.cost")).to_have_text("$0.42")
    expect(rows.nth(0).locator("td.cost")).to_have_text("unknown")
    assert refused, "the page did not ask for the runs route"
