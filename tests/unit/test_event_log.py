"""One event log: every fleet operation is an event in the product's feed, with its actor and
reason, written with the state it describes (or beside it, once)."""

from __future__ import annotations

from typing import Any

import pytest

from fleet.context import AppContext
from fleet.coordinator import Coordinator
from fleet.coordinator.clock import ManualClock
from fleet.domain.audit import EMBEDDED, TYPES, FleetEvent, new_event, with_event
from fleet.domain.manifest import Manifest
from fleet.domain.models import Factory
from fleet.http import budgets, factories, fleet_ops, profiles, scaler_tokens, tokens, tracker
from fleet.store.queries import EVENTS_CHANGED_SINCE
from tests.support.handlers import OPERATOR, call

P = "prod"
ADMIN = "operator:op-"  # the bootstrap operator's actor starts so (op-<hash prefix>)


def ok(
    context: AppContext, handler: Any, method: str, token: str, body: Any = None, **kw: Any
) -> Any:
    product = kw.pop("product", P if token == OPERATOR else None)
    params = kw.pop("params", None)
    status, reply, _ = call(
        context, handler, method, "/api", token, body, product, params=params, **kw
    )
    assert status < 300, reply
    return reply


def feed(context: AppContext, **params: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    cursor = ""
    while True:
        page = ok(
            context, fleet_ops.product_events, "GET", OPERATOR, params={"after": cursor, **params}
        )
        events += page["events"]
        if not page["events"]:
            return events
        cursor = page["cursor"]


def fleet_events(context: AppContext, **params: str) -> list[dict[str, Any]]:
    return [e for e in feed(context, **params) if e.get("fleet")]


def test_event_log_every_fleet_operation_is_in_the_feed(
    app_context: AppContext, coord: Coordinator, clock: ManualClock
) -> None:
    ctx = app_context
    # enrollment token created, used; the factory enrolls (registers), registers again
    issued = ok(ctx, tokens.create_enrollment_token, "POST", OPERATOR, {"maxSeats": 2})
    enrolled = ok(
        ctx,
        tokens.enroll_factory,
        "POST",
        issued["token"],
        {"name": "f1", "capabilities": ["python"]},
    )
    f1 = enrolled["token"]
    ok(ctx, fleet_ops.register_factory, "POST", f1, {"capabilities": ["python"]})
    spare = ok(ctx, tokens.create_enrollment_token, "POST", OPERATOR, {})
    ok(ctx, tokens.revoke_enrollment_token, "DELETE", OPERATOR, id=spare["id"])
    scaler = ok(ctx, scaler_tokens.create_scaler_token, "POST", OPERATOR, {"name": "keda"})
    ok(ctx, scaler_tokens.revoke_scaler_token, "DELETE", OPERATOR, id=scaler["id"])
    # commands: queued, then acknowledged on a heartbeat
    coord.submit(P, Manifest(title="a", body="x"), "operator:o")
    job_id = ok(ctx, fleet_ops.claim, "POST", f1, {"capabilities": ["python"]})["job"]["id"]
    queued = [
        ok(ctx, factories.factory_command, "POST", OPERATOR, body, id="f1")["command"]["id"]
        for body in (
            {"command": "pause", "reason": "maintenance"},
            {"command": "resume"},
            {"command": "drain"},
            {"command": "restart-engine", "jobId": job_id},
            {"command": "cancel-job", "jobId": job_id},
        )
    ]
    ok(ctx, factories.factory_heartbeat, "POST", f1, {"capabilities": ["python"], "ack": queued})
    f1 = ok(ctx, tokens.rotate_factory_token, "POST", OPERATOR, id="f1")["token"]
    # live -> stale -> down (the healer), then live again (its own heartbeat)
    clock.advance(100)
    ctx.health.heal(P)
    clock.advance(1000)
    ctx.health.heal(P)
    ok(ctx, factories.factory_heartbeat, "POST", f1, {"capabilities": ["python"]})
    # budgets, settings, channels, profiles, tracker bindings
    ok(ctx, budgets.put_budget, "PUT", OPERATOR, {"ceilingUsd": 50}, productId=P)
    ok(ctx, budgets.pause_budget, "POST", OPERATOR, {"reason": "audit"}, productId=P)
    ok(ctx, budgets.resume_budget, "POST", OPERATOR, None, productId=P)
    adjust = {"deltaUsd": 1.5, "reason": "refund"}
    ok(ctx, budgets.adjust_budget, "POST", OPERATOR, adjust, productId=P)
    ok(ctx, fleet_ops.put_settings, "PUT", OPERATOR, {"weights": {"priority": 3}})
    ok(ctx, budgets.put_channel, "PUT", OPERATOR, {"burst": 2}, channel="gpu")
    ok(ctx, budgets.delete_channel, "DELETE", OPERATOR, channel="gpu")
    ok(ctx, profiles.put_profile, "PUT", OPERATOR, {"preamble": "be brief"}, name="dev")
    binding = {"repository": "acme/app", "secret": "s" * 24}
    ok(ctx, tracker.put_github_binding, "PUT", OPERATOR, binding)
    ok(ctx, tracker.delete_github_binding, "DELETE", OPERATOR, params={"repository": "acme/app"})
    # leaving: revoked, deregistered; a silent factory pruned by the healer
    issued2 = ok(ctx, tokens.create_enrollment_token, "POST", OPERATOR, {})
    ok(ctx, tokens.enroll_factory, "POST", issued2["token"], {"name": "f2"})
    issued3 = ok(ctx, tokens.create_enrollment_token, "POST", OPERATOR, {})
    ok(ctx, tokens.enroll_factory, "POST", issued3["token"], {"name": "f3"})
    ok(ctx, tokens.revoke_factory_token, "POST", OPERATOR, id="f1")
    ok(ctx, factories.deregister_factory, "DELETE", OPERATOR, id="f2")
    clock.advance(30 * 24 * 3600)
    ctx.health.heal(P)

    events = fleet_events(ctx)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for event in events:
        by_type.setdefault(event["type"], []).append(event)
    assert set(TYPES) - set(by_type) == set(), "every fleet event type is written"
    for event in events:
        assert event["actor"] and event["reason"], event
    # who did what
    assert by_type["factory_enrolled"][0]["factory"] == "f1"
    assert by_type["factory_registered"][0]["actor"] == "factory:f1"
    assert "f3" in {e["factory"] for e in by_type["factory_pruned"]}  # (f1 too: revoked)
    assert by_type["factory_pruned"][0]["actor"] == "healer"
    assert sorted(e["details"]["command"] for e in by_type["command_queued"]) == [
        "cancel-job",
        "drain",
        "pause",
        "restart-engine",
        "resume",
    ]
    assert "maintenance" in {e["reason"] for e in by_type["command_queued"]}
    assert by_type["command_queued"][0]["actor"].startswith(ADMIN)
    assert len(by_type["command_acked"]) == 5
    assert all(e["actor"] == "factory:f1" for e in by_type["command_acked"])
    assert [e["type"] for e in events if e["type"].startswith("factory_") and e["factory"] == "f1"][
        :6
    ] == [
        "factory_registered",  # enrolled: joined
        "factory_registered",  # started: registered again
        "factory_enrolled",  # (logged beside, after the registration it made)
        "factory_stale",
        "factory_down",
        "factory_live",
    ]
    assert by_type["budget_paused"][0]["reason"] == "audit"
    assert by_type["budget_adjusted"][0]["details"]["deltaUsd"] == 1.5
    assert by_type["settings_changed"][0]["details"]["after"]["weights"]["priority"] == 3
    # job events and alerts are in the same feed
    assert any(e.get("jobId") == job_id and e["type"] == "cancel" for e in feed(ctx))


def test_event_log_the_state_and_its_event_are_one_write(
    app_context: AppContext, coord: Coordinator, clock: ManualClock
) -> None:
    """The factory document says it is stale and holds the event saying so."""
    issued = ok(app_context, tokens.create_enrollment_token, "POST", OPERATOR, {})
    ok(app_context, tokens.enroll_factory, "POST", issued["token"], {"name": "f1"})
    clock.advance(100)
    app_context.health.heal(P)
    doc = coord.docs.read(P, "factory-f1")
    factory = Factory.from_doc(doc)
    assert factory.status == "stale"
    assert [e["type"] for e in doc["events"]][-1] == "factory_stale"
    assert doc["lastEventAt"] == doc["events"][-1]["at"]


def test_event_log_a_retried_operation_logs_once(app_context: AppContext) -> None:
    issued = ok(app_context, tokens.create_enrollment_token, "POST", OPERATOR, {})
    f1 = ok(app_context, tokens.enroll_factory, "POST", issued["token"], {"name": "f1"})["token"]
    command = ok(
        app_context, factories.factory_command, "POST", OPERATOR, {"command": "drain"}, id="f1"
    )
    ack = {"ack": [command["command"]["id"]]}
    for _ in range(3):  # the factory acknowledges again (a lost reply)
        ok(app_context, factories.factory_heartbeat, "POST", f1, ack)
    assert [e["type"] for e in fleet_events(app_context)].count("command_acked") == 1


def test_event_log_filters_and_newest_first_pages(
    app_context: AppContext, coord: Coordinator, clock: ManualClock
) -> None:
    ctx = app_context
    for name in ("f1", "f2"):
        issued = ok(ctx, tokens.create_enrollment_token, "POST", OPERATOR, {})
        ok(ctx, tokens.enroll_factory, "POST", issued["token"], {"name": name})
        clock.advance(1)
    for _ in range(5):
        ok(ctx, factories.factory_command, "POST", OPERATOR, {"command": "pause"}, id="f1")
        clock.advance(1)
    f1_only = fleet_events(ctx, factory="f1")
    assert f1_only and all(e["factory"] == "f1" for e in f1_only)
    typed = fleet_events(ctx, type="command_queued,factory_enrolled")
    assert {e["type"] for e in typed} == {"command_queued", "factory_enrolled"}
    mine = fleet_events(ctx, operator=ADMIN + "x")  # no such operator
    assert mine == []
    # newest first, paged with `before`, nothing skipped or repeated
    everything = feed(ctx)
    pages: list[dict[str, Any]] = []
    cursor = ""
    for _ in range(20):
        page = ok(
            ctx, fleet_ops.product_events, "GET", OPERATOR, params={"before": cursor, "limit": "3"}
        )
        pages += page["events"]
        if not page["more"]:
            break
        cursor = page["cursor"]
    assert pages == list(reversed(everything))
    assert len(pages) == len({(e["at"], e.get("jobId"), e["type"], e["seq"]) for e in pages})


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"after": "x|y|1", "before": ""}, "before"),
        ({"factory": "f" * 201}, "factory"),
        ({"before": "not a cursor"}, "before"),
        ({"before": "abc|x|1"}, "before"),
        ({"before": "0001-01-01T00:00:00Z|x|1"}, "before"),
        ({"before": "0001-01-01T00:00:00.000000Z|x|1"}, "before"),
        ({"after": "2026-13-01T00:00:00Z|x|1"}, "after"),
    ],
)
def test_event_log_bad_queries_are_refused(
    app_context: AppContext, params: dict[str, str], field: str
) -> None:
    status, reply, _ = call(
        app_context, fleet_ops.product_events, "GET", "/api", OPERATOR, None, P, params=params
    )
    assert status == 400 and field in str(reply)


def test_event_log_a_document_keeps_its_latest_events_and_spills_the_rest(
    app_context: AppContext, coord: Coordinator, clock: ManualClock
) -> None:
    """A factory commanded many times keeps a bounded list; every event is still in the
    feed, once, in order."""
    issued = ok(app_context, tokens.create_enrollment_token, "POST", OPERATOR, {})
    ok(app_context, tokens.enroll_factory, "POST", issued["token"], {"name": "f1"})
    for n in range(3 * EMBEDDED):
        kind = "pause" if n % 2 == 0 else "resume"
        ok(app_context, factories.factory_command, "POST", OPERATOR, {"command": kind}, id="f1")
        clock.advance(1)
    doc = coord.docs.read(P, "factory-f1")
    assert len(doc["events"]) <= EMBEDDED
    queued = [e for e in fleet_events(app_context) if e["type"] == "command_queued"]
    assert len(queued) == 3 * EMBEDDED
    assert [e["at"] for e in queued] == sorted(e["at"] for e in queued)
    rows = coord.docs.query(EVENTS_CHANGED_SINCE, P, {"since": "", "top": 1000})
    assert any(r.get("type") == "fleet_event" and r.get("source") == "factory-f1" for r in rows)


def test_event_log_with_event_numbers_and_spills_by_halves(clock: ManualClock) -> None:
    doc: dict[str, Any] = {"id": "d", "productId": P}
    spilled: list[FleetEvent] = []
    for _ in range(EMBEDDED + 1):
        doc, spill = with_event(doc, new_event("budget_set", "operator:a", clock.now()))
        spilled += spill
    assert doc["eventSeq"] == EMBEDDED + 1
    assert [e["seq"] for e in doc["events"]] == list(range(len(spilled) + 1, EMBEDDED + 2))
    assert [e.seq for e in spilled] == list(range(1, len(spilled) + 1))
    with pytest.raises(ValueError, match="unknown fleet event type"):
        new_event("made_up", "x", clock.now())


def test_event_log_newest_first_skips_nothing_in_a_busy_product(
    app_context: AppContext, clock: ManualClock
) -> None:
    """Many documents changed, a small page: every page is the next older slice, nothing
    skipped, the newest first (the first page ends at the newest event)."""
    for n in range(300):
        ok(app_context, budgets.put_channel, "PUT", OPERATOR, {"burst": 1 + n % 5}, channel=f"c{n}")
        clock.advance(0.5)
    everything = feed(app_context)
    assert len(everything) == 300
    pages: list[dict[str, Any]] = []
    cursor = ""
    while True:
        page = ok(
            app_context,
            fleet_ops.product_events,
            "GET",
            OPERATOR,
            params={"before": cursor, "limit": "7"},
        )
        pages += page["events"]
        if not page["more"] or not page["events"]:
            break
        cursor = page["cursor"]
    assert pages[0]["details"]["channel"] == "c299"
    assert pages == list(reversed(everything))


def test_event_log_a_viewer_sees_that_a_token_was_made_not_its_particulars(
    app_context: AppContext,
) -> None:
    from fleet.http import operators

    made = {"name": "vera", "role": "viewer", "products": [P]}
    viewer = ok(app_context, operators.create_operator_token, "POST", OPERATOR, made)["token"]
    ok(app_context, tokens.create_enrollment_token, "POST", OPERATOR, {"maxSeats": 3})
    as_admin = [e for e in fleet_events(app_context) if e["type"] == "enrollment_token_created"]
    assert as_admin[0]["details"]["maxSeats"] == 3
    status, page, _ = call(
        app_context, fleet_ops.product_events, "GET", "/api", viewer, None, P, params={}
    )
    assert status == 200
    (seen,) = [e for e in page["events"] if e["type"] == "enrollment_token_created"]
    assert seen["details"] == {} and seen["actor"] == as_admin[0]["actor"]
    assert as_admin[0]["details"]["tokenId"] not in str(seen)
