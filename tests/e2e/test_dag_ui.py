"""The dependency graph on the job page, drawn from ``GET /fleet/jobs/{id}/dag``: the whole
tree (a job several others wait for drawn once), each box coloured by its stage and following
it live, each one a link to its job.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import RunningStack
from tests.e2e.conftest import Api, Factory, shot, sign_in

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def test_the_dependency_graph_is_drawn_coloured_live_and_clickable(
    page: Page, ui_url: str, running_stack: RunningStack, product: str
) -> None:
    api = Api(running_stack, product)
    worker = Factory(running_stack, product, "worker-1")
    worker.heartbeat()
    schema = api.submit(title="Design the schema", capabilities=["python"], priority=9)
    fixtures = api.submit(title="Write the fixtures", capabilities=["python"], priority=1)
    either = api.submit(
        title="Pick a migration tool",
        capabilities=["python"],
        deps={"mode": "any", "jobs": [schema["id"], fixtures["id"]]},
    )
    top = api.submit(
        title="Migrate the database",
        capabilities=["python"],
        deps=[either["id"], schema["id"]],
    )
    dag = api.call("GET", f"/fleet/jobs/{top['id']}/dag")
    assert {d["id"] for d in dag["deps"]} == {either["id"], schema["id"]}

    sign_in(page, ui_url, running_stack.operator_token, product)
    page.goto(f"{ui_url}#/jobs/{top['id']}")
    graph = page.locator("section.dag-panel svg.dag")
    expect(graph).to_be_visible()
    nodes = graph.locator("g.dag-node")
    # Four jobs, the schema drawn once although two jobs wait for it; four "waits for" edges.
    expect(nodes).to_have_count(4)
    expect(graph.locator("path.dag-edge")).to_have_count(4)
    expect(graph.locator("path.dag-edge.any")).to_have_count(2)
    expect(graph).to_have_attribute("aria-label", "Dependency graph: 4 jobs")

    def node(job_id: str):  # type: ignore[no-untyped-def]
        return graph.locator(f'g.dag-node[data-job="{job_id}"]')

    expect(node(top["id"])).to_have_class(re.compile(r"\bs-blocked\b.*\bcurrent\b"))
    expect(node(top["id"])).to_contain_text("Migrate the database")
    expect(node(either["id"])).to_have_attribute("data-stage", "blocked")
    expect(node(schema["id"])).to_have_class(re.compile(r"\bs-queued\b"))
    expect(node(fixtures["id"])).to_contain_text("Write the fixtures")
    # Rows: the job, then what it waits for, then theirs (the schema on its longest path).
    y = {
        j["id"]: float(node(j["id"]).locator("rect").get_attribute("y") or "0")
        for j in (top, either, schema, fixtures)
    }
    assert y[top["id"]] < y[either["id"]] < y[schema["id"]] == y[fixtures["id"]]
    # Coloured by the stylesheet, per stage.
    fills = {
        j["id"]: node(j["id"]).locator("rect").evaluate("r => getComputedStyle(r).fill")
        for j in (top, schema)
    }
    assert fills[top["id"]] != fills[schema["id"]]

    # A factory works the schema: its box follows live, and so does the job unblocked by it.
    claim = worker.claim()
    assert claim["job"]["id"] == schema["id"]
    expect(node(schema["id"])).to_have_attribute("data-stage", "assigned")
    expect(node(schema["id"])).to_contain_text("worker-1")
    worker.report(schema["id"], claim["lease"]["epoch"], stage="building")
    worker.report(schema["id"], claim["lease"]["epoch"], stage="shipped", result={"exitCode": 0})
    expect(node(schema["id"])).to_have_attribute("data-stage", "shipped")
    expect(node(either["id"])).to_have_attribute("data-stage", "queued")
    page.evaluate("window.scrollTo(0, 0)")
    shot(page, "job-dag")

    # Each box opens its job.
    graph.locator(f'a:has(g.dag-node[data-job="{fixtures["id"]}"])').click()
    expect(page).to_have_url(re.compile(rf"#/jobs/{fixtures['id']}$"))
    expect(page.get_by_role("heading", name="Write the fixtures", level=1)).to_be_visible()
    # A job waiting for nothing has no graph.
    expect(page.locator("section.dag-panel")).to_have_count(0)
