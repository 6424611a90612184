"""``fleet-factory top``'s event log pane: job events, alerts and fleet operations, each on one
line whatever fields they carry, oldest first, following the feed's cursor."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import responses

from factory_cli.api import FleetClient
from factory_cli.top import Control, Feed, top_client
from factory_cli.top_events import event_kind, event_line
from tests.support.cli import API

T0 = datetime(2026, 12, 5, 10, 0, 30, tzinfo=UTC)

JOB_EVENT = {
    "jobId": "j1",
    "seq": 4,
    "type": "transition",
    "at": "2026-12-05T10:00:00.000000Z",
    "actor": "factory:f1",
    "epoch": 2,
    "fromStage": "building",
    "toStage": "review",
    "reason": "tests pass",
}
ALERT_EVENT = {
    "jobId": None,
    "alert": True,
    "seq": 7,
    "type": "alert_raised",
    "kind": "raised",
    "key": "stale_factories",
    "severity": "warning",
    "message": "1 factory stale",
    "details": {"factories": ["f2"]},
    "actor": "system:metrics",
    "reason": "raised",
    "at": "2026-12-05T10:00:01Z",
}
FLEET_EVENT = {
    "fleet": True,
    "jobId": None,
    "factory": "f2",
    "type": "command_queued",
    "at": "2026-12-05T10:00:02Z",
    "actor": "operator:ann",
    "reason": "maintenance window",
    "details": {"command": "pause", "commandId": "cmd-9", "extra": {"nested": 1}},
    "somethingNew": [1, 2, 3],
}


@pytest.mark.parametrize(
    ("event", "kind", "line"),
    [
        (
            JOB_EVENT,
            "job",
            "10:00:00 j1 building>review factory:f1  tests pass",
        ),
        (ALERT_EVENT, "alert", "10:00:01 ALERT raised warning stale_factories: 1 factory stale"),
        (
            FLEET_EVENT,
            "fleet",
            "10:00:02 FLEET command_queued factory f2 by operator:ann: maintenance window "
            "[command=pause, commandId=cmd-9]",
        ),
        (  # a healer verdict on a job, through the fleet feed
            {
                "fleet": True,
                "jobId": "j3",
                "factory": "f1",
                "type": "taken_back",
                "at": "2026-12-05T10:00:03Z",
                "actor": "system:healer",
                "reason": "stalled twice",
                "details": None,
            },
            "fleet",
            "10:00:03 FLEET taken_back factory f1 job j3 by system:healer: stalled twice",
        ),
        (  # a job event that is not a transition
            {"jobId": "j2", "type": "reprioritized", "actor": "operator:ann", "at": None},
            "job",
            "--:--:-- j2 reprioritized operator:ann",
        ),
        (  # a new job with no previous stage
            {"jobId": "j4", "type": "transition", "toStage": "queued", "actor": "operator:bo"},
            "job",
            "--:--:-- j4 new>queued operator:bo",
        ),
        ({}, "job", "--:--:-- ?"),  # nothing known: still one line
        ({"fleet": True}, "fleet", "--:--:-- FLEET ?"),
        ({"alert": True, "at": "garbage"}, "alert", "--:--:-- ALERT alert ?:"),
    ],
)
def test_top_event_line_renders_each_kind(event: dict[str, Any], kind: str, line: str) -> None:
    assert event_kind(event) == kind
    assert event_line(event) == line


def test_top_event_line_keeps_one_event_on_one_line() -> None:
    line = event_line(
        {
            "fleet": True,
            "type": "settings\nchanged",
            "actor": "operator:\x1b[31mred",
            "reason": "a" * 500,
            "details": {"note": "two\nlines", "n": 3, "ok": True, "list": [1], "": ""},
        }
    )
    assert "\n" not in line and "\x1b" not in line
    assert "FLEET settings changed by operator: [31mred: " in line
    assert line.endswith("~ [note=two lines, n=3, ok=True]")
    assert len(line) < 300


def test_top_event_pane_follows_the_cursor_oldest_first(rsps: responses.RequestsMock) -> None:
    pages = [
        {"events": [JOB_EVENT, ALERT_EVENT], "cursor": "c2"},
        {"events": [FLEET_EVENT], "cursor": "c3"},
    ]
    rsps.get(f"{API}/fleet/queue-state", json={"version": 1})
    rsps.get(
        f"{API}/fleet/events",
        json=pages[0],
        match=[responses.matchers.query_param_matcher({"limit": "200"})],
    )
    rsps.get(
        f"{API}/fleet/events",
        json=pages[1],
        match=[responses.matchers.query_param_matcher({"limit": "200", "after": "c2"})],
    )
    rsps.get(f"{API}/fleet/jobs", json={"jobs": []})
    rsps.get(f"{API}/fleet/factories", json={"factories": []})
    rsps.get(f"{API}/fleet/metrics", json={})
    client = top_client(FleetClient(API, "flo_op", product="demo"))
    control = Control(Feed(client, "demo", wall=lambda: T0), client, wall=lambda: T0)
    control.refresh()
    control.refresh()
    lines = control.lines(rows=50, cols=200)
    start = lines.index("EVENTS (latest last, 3 kept)")
    assert lines[start + 1 : start + 4] == [
        "  10:00:00 j1 building>review factory:f1  tests pass",
        "  10:00:01 ALERT raised warning stale_factories: 1 factory stale",
        "  10:00:02 FLEET command_queued factory f2 by operator:ann: maintenance window "
        "[command=pause, commandId=cmd-9]",
    ]


def test_top_event_pane_expands_on_e(rsps: responses.RequestsMock) -> None:
    events = [dict(JOB_EVENT, seq=i, jobId=f"j{i}") for i in range(30)]
    rsps.get(f"{API}/fleet/queue-state", json={"version": 1})
    rsps.get(f"{API}/fleet/events", json={"events": events, "cursor": "c30"})
    rsps.get(
        f"{API}/fleet/jobs", json={"jobs": [{"id": f"q{i}", "stage": "queued"} for i in range(9)]}
    )
    rsps.get(f"{API}/fleet/factories", json={"factories": []})
    rsps.get(f"{API}/fleet/metrics", json={})
    client = top_client(FleetClient(API, "flo_op", product="demo"))
    control = Control(Feed(client, "demo", wall=lambda: T0), client, wall=lambda: T0)
    control.refresh()

    def shown() -> list[str]:
        return [line for line in control.lines(rows=50, cols=200) if " building>review " in line]

    assert len(shown()) == 8 and shown()[-1].startswith("  10:00:00 j29 ")  # latest last
    control.press("e")
    assert len(shown()) == 26 and shown()[-1].startswith("  10:00:00 j29 ")
    assert "    ... 7 below" in control.lines(rows=50, cols=200)  # the job list gave way
    control.press("e")
    assert len(shown()) == 8
