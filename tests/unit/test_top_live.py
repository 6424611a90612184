"""``fleet-factory top`` says whether it is live, reconnecting or stale, and since when; an
outage never shows as a quiet board. The clocks are injected; nothing sleeps."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests
import responses
from requests import PreparedRequest

from factory_cli import top, top_board
from factory_cli.api import FleetClient
from factory_cli.top import Control, Feed, Snapshot, top_client
from factory_cli.top_live import STALE_AFTER, Link, link_state, link_text
from tests.support.cli import API

T0 = datetime(2026, 12, 5, 14, 1, 55, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("link", "now", "state", "text"),
    [
        (Link(), 0, "connecting", "connecting..."),
        (Link(last_good=T0), 3, "live", "live: updated 3s ago"),
        (Link(last_good=T0), 14, "live", "live: updated 14s ago"),
        (
            Link(last_good=T0, failing_since=at(5), failure="connection refused"),
            10,
            "reconnecting",
            "RECONNECTING since 14:02:00 (connection refused); last good data 14:01:55",
        ),
        (
            Link(last_good=T0, failing_since=at(5), failure="timed out"),
            STALE_AFTER + 5,
            "stale",
            f"STALE: last good data 14:01:55 ({int(STALE_AFTER) + 5}s ago); "
            "reconnecting since 14:02:00 (timed out)",
        ),
        # no poll came back for a while, and none failed either: still not live
        (
            Link(last_good=T0),
            STALE_AFTER,
            "stale",
            f"STALE: last good data 14:01:55 ({int(STALE_AFTER)}s ago)",
        ),
        (
            Link(failing_since=T0, failure="connection refused"),
            60,
            "reconnecting",
            "RECONNECTING since 14:01:55 (connection refused); no data yet",
        ),
    ],
)
def test_top_link_states(link: Link, now: float, state: str, text: str) -> None:
    assert link_state(link, at(now)) == state
    assert link_text(link, at(now)) == text


def test_top_link_remembers_when_the_failures_began_and_forgets_them_on_success() -> None:
    link = Link().ok(T0).failed(at(5), "timed out").failed(at(7), "connection refused")
    assert link == Link(last_good=T0, failing_since=at(5), failure="connection refused")
    assert link.ok(at(9)) == Link(last_good=at(9))


class Coordinator:
    """The coordinator behind ``responses``: up, refusing connections, or failing one route."""

    def __init__(self, rsps: responses.RequestsMock) -> None:
        self.down = False
        self.failing: dict[str, int] = {}  # path -> the status it answers
        self.jobs = [{"id": "j1", "title": "t", "stage": "building", "holder": "f1", "epoch": 1}]
        routes: dict[str, Any] = {
            "/fleet/queue-state": {"version": 3, "maxSkipSeconds": 30},
            "/fleet/events": {"events": [], "cursor": None},
            "/fleet/jobs": None,
            "/fleet/factories": {"factories": [{"id": "f1", "status": "live", "seats": 2}]},
            "/fleet/metrics": {"utilization": {"held": 1, "seats": 2, "fraction": 0.5}},
        }
        for path, body in routes.items():
            rsps.add_callback("GET", f"{API}{path}", callback=self.answer(path, body))

    def answer(self, path: str, body: Any) -> Any:
        def callback(request: PreparedRequest) -> tuple[int, dict[str, str], str]:
            if self.down:
                raise requests.ConnectionError("[Errno 111] Connection refused")
            if path in self.failing:
                error = {"error": "store_unavailable", "message": "try again"}
                return self.failing[path], {}, json.dumps(error)
            reply = {"jobs": self.jobs} if path == "/fleet/jobs" else body
            return 200, {}, json.dumps(reply)

        return callback


@pytest.fixture
def coordinator(rsps: responses.RequestsMock) -> Coordinator:
    return Coordinator(rsps)


class Wall:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def board(wall: Wall) -> Control:
    client = top_client(FleetClient(API, "flo_op", product="demo"))
    return Control(Feed(client, "demo", monotonic=lambda: 0.0, wall=wall), client, wall=wall)


def test_top_goes_live_reconnecting_stale_and_live_again_keeping_its_data(
    coordinator: Coordinator,
) -> None:
    wall = Wall()
    control = board(wall)
    control.refresh()
    assert control.lines()[0] == "fleet top - product demo - live: updated 0s ago"
    wall.now = at(3)  # the board redraws between polls: the age moves with the clock
    assert control.lines()[0].endswith("live: updated 3s ago")
    assert control.state() == "live"

    coordinator.down = True
    wall.now = at(5)
    control.refresh()
    lines = control.lines(cols=200)
    assert lines[0].endswith(
        "RECONNECTING since 14:02:00 (connection refused); last good data 14:01:55"
    )
    assert control.state() == "reconnecting"
    # the last good data stays on the board, marked as not current
    assert any(line.startswith("  > j1") for line in lines)
    assert "JOBS (running 1) - as of 14:01:55, not current" in lines
    assert lines[1].startswith("util 1/2 seats 50%")
    assert (
        "  ? queue-state: GET /fleet/queue-state: ConnectionError: [Errno 111] Connection refused"
        in lines
    )

    wall.now = at(STALE_AFTER)
    control.refresh()
    assert control.state() == "stale"
    assert control.lines(cols=200)[0].endswith(
        f"STALE: last good data 14:01:55 ({int(STALE_AFTER)}s ago); "
        "reconnecting since 14:02:00 (connection refused)"
    )
    assert any(line.startswith("  > j1") for line in control.lines())

    coordinator.down = False
    coordinator.jobs = []  # j1 finished meanwhile; the gate did not move
    wall.now = at(60)
    control.refresh()
    assert control.lines()[0].endswith("live: updated 0s ago")
    assert not any("not current" in line for line in control.lines())
    # back after an outage: the lists are read again at once, not FULL_EVERY later
    assert "lists 0s old" in control.lines()[1] and control.snapshot.jobs == ()


def test_top_a_failing_list_is_an_outage_too_and_keeps_the_last_good_list(
    coordinator: Coordinator,
) -> None:
    wall = Wall()
    control = board(wall)
    control.refresh()
    coordinator.failing["/fleet/jobs"] = 503
    coordinator.jobs = []  # what the coordinator would say, could it
    control.feed.invalidate()
    wall.now = at(4)
    snap = control.refresh()
    assert [j.id for j in snap.jobs] == ["j1"] and snap.full_at == T0
    assert control.lines(cols=200)[0].endswith(
        "RECONNECTING since 14:01:59 (503 store_unavailable: try again); last good data 14:01:55"
    )
    assert "lists 4s old" in control.lines()[1]


def test_top_a_failing_metrics_read_is_not_an_outage(coordinator: Coordinator) -> None:
    coordinator.failing["/fleet/metrics"] = 503
    control = board(Wall())
    control.refresh()
    assert control.state() == "live"
    assert "  ? metrics: 503 store_unavailable: try again" in control.lines()


def test_top_never_read_shows_no_data_not_an_empty_product(
    coordinator: Coordinator, rsps: responses.RequestsMock, capsys: pytest.CaptureFixture[str]
) -> None:
    coordinator.down = True
    control = board(Wall())
    control.refresh()
    lines = control.lines()
    assert lines[0].endswith("RECONNECTING since 14:01:55 (connection refused); no data yet")
    assert "(none)" not in "\n".join(lines) and "    (not read yet)" in lines
    assert lines[1].startswith("util ? - gate v?")
    # refused at once: the other reads are not tried (each would wait as long)
    assert [c.request.url for c in rsps.calls] == [f"{API}/fleet/queue-state"]
    assert (
        top.run_top(FleetClient(API, "flo_op", product="demo"), argparse.Namespace(json=True)) == 1
    )
    out = json.loads(capsys.readouterr().out)
    assert out["link"]["state"] == "reconnecting" and out["link"]["lastGood"] is None
    assert out["link"]["failure"] == "connection refused"
    coordinator.down = False  # back: everything is read, the board goes live
    control.refresh()
    assert control.state() == "live" and "(not read yet)" not in control.lines()


def test_top_json_says_live_and_shows_utilization(
    coordinator: Coordinator, capsys: pytest.CaptureFixture[str]
) -> None:
    args = argparse.Namespace(json=True, interval=2.0, product="demo")
    assert top.run_top(FleetClient(API, "flo_op", product="demo"), args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["link"]["state"] == "live" and out["link"]["failingSince"] is None
    assert out["utilization"] == {"held": 1, "seats": 2, "fraction": 0.5, "source": "metrics"}


# --- utilization, always in the header --------------------------------------------------


def test_top_utilization_from_the_metrics_document() -> None:
    snap = Snapshot(
        at=T0, full_at=T0, utilization=top_board.utilization_of({"held": 3, "seats": 8})
    )
    assert top.render(snap)[1].startswith("util 3/8 seats 38% - gate v?")


def test_top_utilization_counted_from_the_lists_without_metrics() -> None:
    factories = (
        top.factory_row({"id": "a", "status": "live", "seats": 4}),
        top.factory_row({"id": "b", "status": "live", "seats": 2, "revoked": True}),
        top.factory_row({"id": "c", "status": "down", "seats": 8}),
    )
    snap = Snapshot(
        at=T0, full_at=T0, factories=factories, stages={"building": 2, "testing": 1, "queued": 9}
    )
    assert top.render(snap)[1].startswith("util 3/4 seats 75%")
    assert top.render(Snapshot(at=T0, full_at=T0))[1].startswith("util 0/0 seats - gate")


def test_top_header_names_a_paused_budget() -> None:
    assert "BUDGET PAUSED" in top.render(Snapshot(at=T0, budget_paused=True))[1]
    assert "budget" not in top.render(Snapshot(at=T0))[1]
