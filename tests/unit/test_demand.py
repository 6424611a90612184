"""Demand (``GET /api/fleet/demand``): what a product's queued and running work asks of the
fleet, by capability set. The rules (``fleet.domain.demand``), the document the reaper's pass
keeps (``fleet.coordinator.demand``: written only when it changed), and the reply: one point
read, as documented."""

from __future__ import annotations

from datetime import timedelta

import pytest

from fleet.context import AppContext
from fleet.coordinator import Coordinator
from fleet.coordinator.clock import ManualClock
from fleet.coordinator.tokens import Tokens
from fleet.domain.demand import SetDemand, Waiting, demand_of
from fleet.domain.models import format_ts
from fleet.domain.scheduler import FactoryView
from fleet.store.ports import Stores
from tests.support.builders import T0, manifest
from tests.support.builders import factory_view as view
from tests.support.handlers import OPERATOR, call, documented, tick

P = "prod"
AT = format_ts(T0)


def waiting(caps: tuple[str, ...], seconds: int = 0, *, routable: bool = True) -> Waiting:
    return Waiting(caps, format_ts(T0 + timedelta(seconds=seconds)), routable)


def test_demand_groups_by_the_exact_set_required_and_counts_who_could_serve_it() -> None:
    fleet = [
        FactoryView("py", frozenset({"python"}), seats=2),
        FactoryView("py-gpu", frozenset({"python", "gpu"}), seats=3),
        FactoryView("paused", frozenset({"python", "gpu"}), seats=5, paused=True),
        FactoryView("down", frozenset({"python", "gpu"}), seats=7, live=False),
    ]
    sets = demand_of(
        [
            waiting(("python",), 5),
            waiting(("python",), 1),
            waiting(("gpu", "python"), 3, routable=False),
            waiting((), 9),
        ],
        [("python",), ("gpu", "python"), ("gpu", "python"), ("rust",)],
        fleet,
    )
    assert sets == [
        SetDemand((), 1, 1, format_ts(T0 + timedelta(seconds=9)), 0, 5),
        SetDemand(("gpu", "python"), 1, 0, format_ts(T0 + timedelta(seconds=3)), 2, 3),
        SetDemand(("python",), 2, 2, format_ts(T0 + timedelta(seconds=1)), 1, 5),
        SetDemand(("rust",), 0, 0, None, 1, 0),
    ]


def test_demand_of_nothing_is_no_sets() -> None:
    assert demand_of([], [], [FactoryView("py", frozenset({"python"}))]) == []


def test_demand_refresh_reads_what_waits_runs_and_serves_and_writes_only_a_change(
    coord: Coordinator, stores: Stores, clock: ManualClock
) -> None:
    coord.register_factory(P, view("f1", ("python",), seats=2), "1")
    coord.submit(P, manifest(capabilities=("python",)), "operator:o")
    clock.advance(10)
    coord.submit(P, manifest(capabilities=("python",)), "operator:o")
    coord.submit(P, manifest(capabilities=("gpu",)), "operator:o")
    assert coord.claim(P, view("f1", ("python",), seats=2)) is not None
    with stores.counters.measure() as first:
        kept = coord.refresh_demand(P)
    assert [s.as_dict() for s in kept.sets] == [
        {
            "capabilities": ["gpu"],
            "queued": 1,
            "routable": 1,
            "oldestQueuedAt": format_ts(T0 + timedelta(seconds=10)),
            "running": 0,
            "liveSeats": 0,
        },
        {
            "capabilities": ["python"],
            "queued": 1,
            "routable": 1,
            "oldestQueuedAt": format_ts(T0 + timedelta(seconds=10)),
            "running": 1,
            "liveSeats": 2,
        },
    ]
    assert kept.updatedAt == format_ts(clock.now()) and not kept.truncated
    # Queued, leased, the factories: 3 queries; the budget and the stored demand: 2 reads.
    assert first == {"query": 3, "read": 2, "write": 1}
    clock.advance(60)
    with stores.counters.measure() as again:
        assert coord.refresh_demand(P).updatedAt == kept.updatedAt  # unchanged: not written
    assert again == {"query": 3, "read": 2}


def test_demand_routable_follows_the_budget(
    coord: Coordinator, stores: Stores, clock: ManualClock
) -> None:
    coord.submit(P, manifest(capabilities=("python",), budgetUsd=2.0), "operator:o")
    coord.submit(P, manifest(capabilities=("python",), budgetUsd=0.5), "operator:o")
    coord.budgets.put(P, 1.0)
    (python,) = coord.refresh_demand(P).sets
    assert (python.queued, python.routable) == (2, 1)  # 2.00 is over the 1.00 left
    coord.budgets.set_paused(P, True, "operator:o")
    (python,) = coord.refresh_demand(P).sets
    assert (python.queued, python.routable) == (2, 0)


def test_demand_reply_is_one_point_read_documented_and_its_waits_as_of_the_reply(
    app_context: AppContext, coord: Coordinator, stores: Stores, clock: ManualClock
) -> None:
    status, empty, _ = call(app_context, "demand", token=OPERATOR, product=P)
    assert status == 200 and empty == {
        "product": P,
        "sets": [],
        "queued": 0,
        "routable": 0,
        "running": 0,
        "updatedAt": None,
        "truncated": False,
    }
    coord.submit(P, manifest(capabilities=("python",)), "operator:o")
    clock.advance(5)
    tick(app_context, "reaper_timer")  # the submit is a change: the reaper's pass keeps it
    clock.advance(30)
    with stores.counters.measure() as cost:
        status, body, _ = call(app_context, "demand", token=OPERATOR, product=P)
    assert status == 200
    assert cost == {"read": 1}  # the demand document (a bootstrap operator needs no read)
    documented(body, "DemandView")
    assert body["sets"] == [
        {
            "capabilities": ["python"],
            "queued": 1,
            "routable": 1,
            "oldestQueuedSeconds": 35.0,
            "running": 0,
            "liveSeats": 0,
        }
    ]
    assert body["updatedAt"] == format_ts(T0 + timedelta(seconds=5))


@pytest.mark.parametrize("token", [None, "flo_" + "x" * 43])
def test_demand_without_a_valid_token_is_refused(
    app_context: AppContext, token: str | None
) -> None:
    assert call(app_context, "demand", token=token, product=P).status == 401


def test_demand_of_one_capability_set_is_its_figures_as_the_totals(
    app_context: AppContext, coord: Coordinator, clock: ManualClock
) -> None:
    coord.submit(P, manifest(capabilities=("python", "gpu")), "operator:o")
    coord.submit(P, manifest(capabilities=("python",)), "operator:o")
    coord.submit(P, manifest(capabilities=()), "operator:o")
    coord.refresh_demand(P)

    def only(capabilities: str) -> dict[str, object]:
        reply = call(
            app_context, "demand", token=OPERATOR, product=P, params={"capabilities": capabilities}
        )
        assert reply.status == 200
        documented(reply.body, "DemandView")
        return {k: reply.body[k] for k in ("queued", "routable", "running")} | {
            "sets": [s["capabilities"] for s in reply.body["sets"]]
        }

    everything = call(app_context, "demand", token=OPERATOR, product=P).body
    assert (everything["queued"], everything["routable"]) == (3, 3)
    assert only("gpu, python") == {
        "queued": 1,
        "routable": 1,
        "running": 0,
        "sets": [["gpu", "python"]],
    }
    assert only("python,python") == {"queued": 1, "routable": 1, "running": 0, "sets": [["python"]]}
    assert only("") == {"queued": 1, "routable": 1, "running": 0, "sets": [[]]}
    assert only("rust") == {"queued": 0, "routable": 0, "running": 0, "sets": []}


@pytest.mark.parametrize("capabilities", ["Python", "a b", "x" * 129, ",".join(["c"] * 33)])
def test_demand_refuses_a_capabilities_filter_that_names_no_capability_set(
    app_context: AppContext, capabilities: str
) -> None:
    reply = call(
        app_context, "demand", token=OPERATOR, product=P, params={"capabilities": capabilities}
    )
    assert reply.status == 400
    assert reply.body["error"] == "validation_failed"
    assert [p["path"] for p in reply.body["details"]["problems"]] == ["capabilities"]


def test_demand_polled_with_a_scaler_token_is_one_point_read_once_warm(
    app_context: AppContext, coord: Coordinator, tokens: Tokens, stores: Stores
) -> None:
    """What an autoscaler polls with its scaler token: the first poll verifies the token (a
    read of its document); every later one within the cache window is the demand document
    alone. The token reads nothing else: another product's demand is 403."""
    scaler = tokens.create_scaler_token(P, "keda", "operator:o").token
    coord.submit(P, manifest(capabilities=("python",)), "operator:o")
    coord.refresh_demand(P)
    with stores.counters.measure() as first:
        assert call(app_context, "demand", token=scaler).status == 200
    with stores.counters.measure() as warm:
        reply = call(app_context, "demand", token=scaler)
    assert reply.status == 200 and reply.body["product"] == P and reply.body["routable"] == 1
    assert first == {"read": 2} and warm == {"read": 1}
    assert call(app_context, "demand", token=scaler, product="other").status == 403
    assert call(app_context, "list_jobs", token=scaler, product=P).status == 403
