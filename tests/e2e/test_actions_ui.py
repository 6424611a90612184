"""Every factory button and every job action of the control plane, in a real browser against
the real local stack: each is confirmed in the dialog, reported in the notice, and checked
through the API afterwards (the factory's pending commands, its tokens, the job's stage,
priority and checkpoint). A refusal is shown as the coordinator said it.
"""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import Locator, Page, Route, expect

from tests.conftest import RunningStack
from tests.e2e.conftest import Api, Factory, sign_in

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def card(page: Page, factory: str) -> Locator:
    return page.locator(f'article.factory[data-factory="{factory}"]')


def confirm(page: Page, label: str, reason: str | None = None) -> None:
    """Confirm the open dialog with its action button (labelled ``label``), after a reason."""
    dialog = page.locator("dialog#confirm")
    expect(dialog).to_be_visible()
    if reason is not None:
        dialog.get_by_label(re.compile("^Reason")).fill(reason)
    ok = dialog.locator("#confirm-ok")
    expect(ok).to_have_text(label)
    ok.click()
    expect(dialog).to_be_hidden()


def pending(api: Api, factory: str) -> list[tuple[str, str | None]]:
    commands = api.call("GET", f"/fleet/factories/{factory}/heartbeat")["pendingCommands"]
    return [(c["kind"], c["reason"]) for c in commands]


def test_factory_buttons_pause_resume_restart_revoke_and_deregister(
    page: Page, ui_url: str, running_stack: RunningStack, product: str
) -> None:
    api = Api(running_stack, product)
    keeper = Factory(running_stack, product, "keeper-1")
    rogue = Factory(running_stack, product, "rogue-1")
    old = Factory(running_stack, product, "old-1")
    for f in (keeper, rogue, old):
        f.heartbeat()

    sign_in(page, ui_url, running_stack.operator_token, product)
    notice = page.locator("#notice")
    first = card(page, "keeper-1")
    expect(first.locator(".health")).to_have_text("live")

    # Pause: queued with its reason, shown as pending and paused.
    first.get_by_role("button", name="Pause").click()
    confirm(page, "Pause", reason="disk almost full")
    expect(notice).to_contain_text("Pause sent to keeper-1")
    expect(first.locator(".chip.pending")).to_have_text("pause pending")
    assert pending(api, "keeper-1") == [("pause", "disk almost full")]
    expect(first.locator(".flag")).to_have_text("paused")

    # Resume, then restart its engine: each queued behind the other.
    first.get_by_role("button", name="Resume").click()
    confirm(page, "Resume")
    expect(notice).to_contain_text("Resume sent to keeper-1")
    first.get_by_role("button", name="Restart engine").click()
    confirm(page, "Restart engine", reason="engine wedged")
    expect(notice).to_contain_text("Restart engine sent to keeper-1")
    assert pending(api, "keeper-1") == [
        ("pause", "disk almost full"),
        ("resume", None),
        ("restart-engine", "engine wedged"),
    ]
    expect(first.locator(".chip.pending")).to_have_count(3)

    # The factory acknowledges them on its next heartbeat: nothing pending any more.
    ids = [
        c["id"] for c in api.call("GET", "/fleet/factories/keeper-1/heartbeat")["pendingCommands"]
    ]
    keeper.ok(
        "POST",
        "/fleet/factories/heartbeat",
        {"capabilities": ["python"], "seats": 1, "load": 0, "version": "1.4.2", "ack": ids},
    )
    expect(first.locator(".chip.pending")).to_have_count(0)

    # Revoke (admins): every token refused at once; the card says so and offers nothing more.
    second = card(page, "rogue-1")
    second.get_by_role("button", name="Revoke").click()
    confirm(page, "Revoke every token", reason="laptop stolen")
    expect(notice).to_contain_text("rogue-1 revoked (1 token)")
    expect(second.locator(".health")).to_have_text("revoked")
    expect(second.locator(".actions")).to_have_count(0)
    assert rogue.call("POST", "/fleet/factories/heartbeat", {"seats": 1}).status_code == 401

    # Deregister: it leaves the map for the "deregistered" list, and its token stops working.
    third = card(page, "old-1")
    third.get_by_role("button", name="Deregister").click()
    confirm(page, "Deregister")
    expect(notice).to_contain_text("old-1 deregistered")
    expect(third).to_have_count(0)
    expect(page.locator("details.departed summary")).to_have_text("1 deregistered")
    factories = {f["id"]: f for f in api.call("GET", "/fleet/factories")["factories"]}
    assert factories["old-1"]["deregistered"] is True
    assert old.call("POST", "/fleet/factories/heartbeat", {"seats": 1}).status_code == 401

    # A refusal is shown with the coordinator's words, and nothing is claimed done.
    def refuse(route: Route) -> None:
        route.fulfill(
            status=409,
            content_type="application/json",
            body=json.dumps({"error": "factory_gone", "message": "keeper-1 left the fleet"}),
        )

    page.route(re.compile(r"/api/fleet/factories/keeper-1/commands$"), refuse)
    first.get_by_role("button", name="Drain").click()
    confirm(page, "Drain")
    expect(notice).to_have_text(
        re.compile(r"Drain keeper-1 failed: keeper-1 left the fleet \(409 factory_gone\)")
    )
    expect(notice).to_have_class(re.compile("error"))
    page.unroute(re.compile(r"/api/fleet/factories/keeper-1/commands$"))
    assert pending(api, "keeper-1") == []


def test_job_page_actions_cancel_requeue_with_a_checkpoint_ship_reject_and_reprioritize(
    page: Page, ui_url: str, running_stack: RunningStack, product: str
) -> None:
    api = Api(running_stack, product)
    worker = Factory(running_stack, product, "worker-1", seats=2)
    worker.heartbeat()
    building = api.submit(title="Port the CLI to click", capabilities=["python"])
    testing = api.submit(title="Retire the v1 endpoints", capabilities=["python"])
    claims = {}
    for _ in range(2):
        claim = worker.claim()
        claims[claim["job"]["id"]] = claim["lease"]["epoch"]
    assert set(claims) == {building["id"], testing["id"]}
    waiting = api.submit(title="Tidy the logging setup", capabilities=["python"], priority=2)
    worker.report(building["id"], claims[building["id"]], stage="building")
    worker.report(testing["id"], claims[testing["id"]], stage="building")
    worker.report(testing["id"], claims[testing["id"]], stage="testing")

    sign_in(page, ui_url, running_stack.operator_token, product)
    notice = page.locator("#notice")
    stage = page.locator(".job-status .stage")
    actions = page.get_by_role("group", name="Actions on this job")

    # Reprioritize a queued job.
    page.goto(f"{ui_url}#/jobs/{waiting['id']}")
    expect(stage).to_have_text("queued")
    expect(actions.get_by_role("button", name="Ship")).to_be_disabled()
    page.get_by_label("Priority", exact=True).fill("7")
    actions.get_by_role("button", name="Set").click()
    confirm(page, "Reprioritize", reason="customer waiting")
    expect(notice).to_contain_text("1 job reprioritized")
    expect(page.locator(".job-status")).to_contain_text("priority 7")
    assert api.call("GET", f"/fleet/jobs/{waiting['id']}")["priority"] == 7

    # Cancel it.
    actions.get_by_role("button", name="Cancel").click()
    confirm(page, "Cancel", reason="duplicate")
    expect(notice).to_contain_text("1 job cancelled")
    expect(stage).to_have_text("cancelled")
    timeline = page.locator("ol.timeline")
    expect(timeline.locator('li[data-type="cancel"]')).to_contain_text("duplicate")
    assert api.call("GET", f"/fleet/jobs/{waiting['id']}")["stage"] == "cancelled"

    # Requeue it with the operator's checkpoint: a bad one keeps the dialog open, said why.
    actions.get_by_role("button", name="Requeue").click()
    dialog = page.locator("dialog#confirm")
    area = dialog.get_by_label("Checkpoint (optional)")
    area.fill("{branch: wip}")
    dialog.locator("#confirm-ok").click()
    expect(dialog).to_be_visible()
    expect(dialog.locator("#confirm-error")).to_contain_text("Checkpoint: not JSON")
    expect(area).to_have_attribute("aria-invalid", "true")
    area.fill("[1, 2]")
    dialog.locator("#confirm-ok").click()
    expect(dialog.locator("#confirm-error")).to_contain_text("a JSON object is needed")
    checkpoint = {"branch": "wip/logging", "step": 2, "notes": "keep the handlers"}
    area.fill(json.dumps(checkpoint))
    confirm(page, "Requeue", reason="not a duplicate after all")
    expect(notice).to_contain_text("1 job requeued with the checkpoint given")
    expect(stage).to_have_text("queued")
    expect(page.locator("dl.facts pre").first).to_contain_text('"branch": "wip/logging"')
    after = api.call("GET", f"/fleet/jobs/{waiting['id']}")
    assert after["stage"] == "queued"
    assert after["checkpoint"] == checkpoint

    # Requeue without one keeps the job's checkpoint (and the dialog offers to start from it).
    actions.get_by_role("button", name="Cancel").click()
    confirm(page, "Cancel")
    expect(stage).to_have_text("cancelled")
    actions.get_by_role("button", name="Requeue").click()
    dialog.get_by_role("button", name="Start from the current one").click()
    expect(area).to_have_value(json.dumps(checkpoint, indent=2))
    area.fill("")
    confirm(page, "Requeue")
    expect(notice).to_contain_text("1 job requeued")
    expect(stage).to_have_text("queued")
    assert api.call("GET", f"/fleet/jobs/{waiting['id']}")["checkpoint"] == checkpoint

    # Ship a building job.
    page.goto(f"{ui_url}#/jobs/{building['id']}")
    expect(stage).to_have_text("building")
    actions.get_by_role("button", name="Ship").click()
    confirm(page, "Ship", reason="done by hand")
    expect(notice).to_contain_text("1 job shipped")
    expect(stage).to_have_text("shipped")
    assert api.call("GET", f"/fleet/jobs/{building['id']}")["stage"] == "shipped"

    # Reject a testing job: first refused (the coordinator's words shown), then for real.
    page.goto(f"{ui_url}#/jobs/{testing['id']}")
    expect(stage).to_have_text("testing")
    reject = re.compile(rf"/api/fleet/jobs/{testing['id']}/reject$")

    def refuse(route: Route) -> None:
        route.fulfill(
            status=409,
            content_type="application/json",
            body=json.dumps({"error": "stage_conflict", "message": "the job moved on"}),
        )

    page.route(reject, refuse)
    actions.get_by_role("button", name="Reject").click()
    confirm(page, "Reject")
    expect(notice).to_contain_text("0 rejected; 1 refused: the job moved on (409 stage_conflict)")
    expect(stage).to_have_text("testing")
    page.unroute(reject)
    actions.get_by_role("button", name="Reject").click()
    confirm(page, "Reject", reason="wrong approach")
    expect(notice).to_contain_text("1 job rejected")
    expect(stage).to_have_text("failed")
    rejected = api.call("GET", f"/fleet/jobs/{testing['id']}")
    assert rejected["stage"] == "failed"
    assert any(
        e["type"] == "reject" and e["reason"] == "wrong approach" for e in rejected["events"]
    )
    # The holder is fenced off: its lease ended with the rejection.
    late = worker.call(
        "PATCH",
        f"/fleet/jobs/{testing['id']}",
        {"leaseEpoch": claims[testing["id"]], "stage": "shipped"},
    )
    assert late.status_code == 409
