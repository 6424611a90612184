"""``fleet-factory top``: the board's data logic, with a fake client (no terminal, no curses)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from factory_cli import top, top_board
from factory_cli.top import Feed, JobRow, Snapshot
from factory_cli.top_live import Link

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def ts(seconds_before: float) -> str:
    return (T0 - timedelta(seconds=seconds_before)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class HttpError(Exception):
    """What the CLI's client raises on an HTTP error: ``.status`` and ``.body``."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status
        self.body = body


class FakeClient:
    """Answers GETs from ``routes`` (a value, an exception to raise, or a callable of the
    params); records every call."""

    def __init__(self, routes: dict[str, Any]) -> None:
        self.routes = routes
        self.gets: list[tuple[str, dict[str, str]]] = []
        self.posts: list[tuple[str, Any]] = []
        self.post_reply: Any = None

    def get(self, path: str, params: Mapping[str, str] | None = None, /) -> Any:
        self.gets.append((path, dict(params or {})))
        answer = self.routes[path]
        if isinstance(answer, Exception):
            raise answer
        return answer(dict(params or {})) if callable(answer) else answer

    def post(self, path: str, json: Any = None, /) -> Any:
        self.posts.append((path, json))
        if isinstance(self.post_reply, Exception):
            raise self.post_reply
        return self.post_reply

    def paths(self) -> list[str]:
        return [path for path, _ in self.gets]


def job(
    job_id: str,
    stage: str,
    *,
    holder: str | None = None,
    epoch: int = 0,
    age: float = 60,
    **extra: Any,
) -> dict[str, Any]:
    lease = {"holder": holder, "epoch": epoch, "expiresAt": ts(-300)} if holder else None
    return {
        "id": job_id,
        "title": f"title of {job_id}",
        "stage": stage,
        "epoch": epoch,
        "lease": lease,
        "holder": holder,
        "lastEventAt": ts(age),
        "updatedAt": ts(age),
        "stalled": False,
        "unroutable": False,
        **extra,
    }


def factory(name: str, status: str = "live", **flags: Any) -> dict[str, Any]:
    return {
        "id": name,
        "status": status,
        "live": status == "live",
        "load": 1,
        "seats": 2,
        "version": "0.1.0",
        "lastSeen": ts(20),
        **flags,
    }


def event(job_id: str, seq: int, to: str, frm: str | None = "queued") -> dict[str, Any]:
    return {
        "jobId": job_id,
        "seq": seq,
        "type": "transition",
        "at": ts(10),
        "actor": "factory:f1",
        "epoch": 1,
        "fromStage": frm,
        "toStage": to,
    }


class Events:
    """The product-wide feed: pages after a cursor."""

    def __init__(self) -> None:
        self.pending: list[dict[str, Any]] = []
        self.served = 0

    def __call__(self, params: dict[str, str]) -> dict[str, Any]:
        page, self.pending = self.pending, []
        self.served += len(page)
        return {"events": page, "cursor": f"c{self.served}" if self.served else params.get("after")}


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
def client(events: Events) -> FakeClient:
    return FakeClient(
        {
            top.QUEUE_STATE: {"version": 3, "maxSkipSeconds": 30},
            top.EVENTS: events,
            top.JOBS: {
                "jobs": [
                    job("j-build", "building", holder="f1", epoch=2, age=125),
                    job("j-review", "review", age=30),
                    job("j-queued", "queued", age=5),
                    job("j-done", "shipped", age=500),
                    job("j-stuck", "testing", holder="f2", epoch=1, age=900, stalled=True),
                ],
                "count": 5,
            },
            top.FACTORIES: {
                "factories": [factory("f1"), factory("f2", "stale"), factory("f3", "down")]
            },
            top.METRICS: {"queueDepth": {"queued": 1}, "oldestQueuedSeconds": 5, "unroutable": 0},
        }
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def feed(client: FakeClient, clock: Clock) -> Feed:
    return Feed(client, "demo", monotonic=clock, wall=lambda: T0)


LISTS = [top.JOBS, top.FACTORIES, top.METRICS]


# --- fetching through the gate -----------------------------------------------------------


def test_top_feed_first_poll_reads_gate_events_then_the_lists(
    feed: Feed, client: FakeClient
) -> None:
    snap = feed.poll()
    assert client.paths() == [top.QUEUE_STATE, top.EVENTS, *LISTS]
    assert snap.version == 3 and snap.max_skip == 30
    assert snap.stages["building"] == 1 and snap.stages["shipped"] == 1
    assert snap.stages["queued"] == 1 and snap.stages["blocked"] == 0
    assert [f.id for f in snap.factories] == ["f3", "f2", "f1"]  # down, stale, live
    assert snap.problems == () and snap.full_at == T0


def test_top_feed_skips_the_lists_while_the_gate_and_the_events_stand_still(
    feed: Feed, client: FakeClient, clock: Clock
) -> None:
    feed.poll()
    client.gets.clear()
    clock.now += 2
    snap = feed.poll()
    assert client.paths() == [top.QUEUE_STATE, top.EVENTS]  # one point read + the cursor
    assert len(snap.jobs) == 5  # the lists are kept


def test_top_feed_refetches_the_lists_when_the_gate_version_moves(
    feed: Feed, client: FakeClient, clock: Clock
) -> None:
    feed.poll()
    client.gets.clear()
    client.routes[top.QUEUE_STATE] = {"version": 4, "maxSkipSeconds": 30}
    clock.now += 2
    assert feed.poll().version == 4
    assert client.paths() == [top.QUEUE_STATE, top.EVENTS, *LISTS]


def test_top_feed_refetches_the_lists_when_events_arrive(
    feed: Feed, client: FakeClient, events: Events, clock: Clock
) -> None:
    feed.poll()
    client.gets.clear()
    events.pending = [event("j-review", 4, "review", "building")]
    clock.now += 2
    snap = feed.poll()
    assert client.paths() == [top.QUEUE_STATE, top.EVENTS, *LISTS]
    assert [e["jobId"] for e in snap.events] == ["j-review"]


def test_top_feed_refetches_the_lists_every_full_every_seconds(
    feed: Feed, client: FakeClient, clock: Clock
) -> None:
    feed.poll()
    client.gets.clear()
    clock.now += top.FULL_EVERY
    feed.poll()
    assert client.paths()[-3:] == LISTS


def test_top_feed_follows_the_event_cursor_and_keeps_the_latest(
    feed: Feed, client: FakeClient, events: Events
) -> None:
    events.pending = [event(f"j{i}", 1, "assigned") for i in range(3)]
    feed.poll()
    events.pending = [event("j9", 2, "building", "assigned")]
    snap = feed.poll()
    after = [params.get("after") for path, params in client.gets if path == top.EVENTS]
    assert after == [None, "c3"]
    assert [e["jobId"] for e in snap.events] == ["j0", "j1", "j2", "j9"]


def test_top_feed_pages_through_a_full_event_page(client: FakeClient) -> None:
    pages = iter(
        [
            {
                "events": [event("a", i, "queued", None) for i in range(top_board.EVENT_PAGE)],
                "cursor": "x",
            },
            {"events": [event("b", 1, "assigned")], "cursor": "y"},
        ]
    )
    client.routes[top.EVENTS] = lambda params: next(pages)
    snap = Feed(client, monotonic=lambda: 0.0, wall=lambda: T0).poll()
    assert [p.get("after") for path, p in client.gets if path == top.EVENTS] == [None, "x"]
    assert len(snap.events) == top.EVENTS_KEPT and snap.events[-1]["jobId"] == "b"


def test_top_feed_with_a_factory_token_reports_events_forbidden_and_stops_asking(
    feed: Feed, client: FakeClient, clock: Clock
) -> None:
    client.routes[top.EVENTS] = HttpError(403, {"error": "forbidden", "message": "operators"})
    first = feed.poll()
    clock.now += 2
    second = feed.poll()
    assert "events: need an operator token" in first.problems
    assert "events: need an operator token" in second.problems
    assert client.paths().count(top.EVENTS) == 1


def test_top_feed_with_a_factory_token_counts_stages_from_the_metrics(
    feed: Feed, client: FakeClient
) -> None:
    # A factory lists only the jobs it holds: counting them would misstate the product.
    client.routes[top.EVENTS] = HttpError(403, {"error": "forbidden"})
    client.routes[top.JOBS] = {"jobs": [job("mine", "building", holder="f1", epoch=1)]}
    client.routes[top.METRICS] = {"queueDepth": {"queued": 7, "building": 2}, "unroutable": 0}
    snap = feed.poll()
    assert snap.stages == {"queued": 7, "building": 2}
    assert [j.id for j in top.running(snap)] == ["mine"]


def test_top_feed_follows_the_job_pages(feed: Feed, client: FakeClient) -> None:
    pages = {
        None: ([job("j1", "building", holder="f1", epoch=1)], "c1"),
        "c1": ([job("j2", "queued"), job("j3", "queued")], None),
    }

    def jobs(params: dict[str, str]) -> dict[str, Any]:
        rows, after = pages[params.get("cursor")]
        return {"jobs": rows, "count": len(rows), "next": after}

    client.routes[top.JOBS] = jobs
    snap = feed.poll()
    asked = [params for path, params in client.gets if path == top.JOBS]
    assert asked == [{"limit": "1000"}, {"limit": "1000", "cursor": "c1"}]
    assert [j.id for j in snap.jobs] == ["j1", "j2", "j3"]
    assert snap.stages["queued"] == 2 and snap.problems == ()


def test_top_feed_lists_a_huge_product_in_part_and_counts_from_the_metrics(
    feed: Feed, client: FakeClient
) -> None:
    def jobs(params: dict[str, str]) -> dict[str, Any]:
        n = int(params.get("cursor", "0"))
        return {"jobs": [job(f"j{n}", "shipped")], "count": 1, "next": str(n + 1)}

    client.routes[top.JOBS] = jobs
    client.routes[top.METRICS] = {"queueDepth": {"shipped": 9000}, "unroutable": 0}
    snap = feed.poll()
    assert len(snap.jobs) == top_board.JOB_PAGES
    assert snap.stages == {"shipped": 9000}  # a partial list would misstate the product
    assert any(p.startswith("jobs: more than") for p in snap.problems)


def test_top_feed_keeps_going_when_one_source_fails(
    feed: Feed, client: FakeClient, clock: Clock
) -> None:
    client.routes[top.METRICS] = HttpError(503, {"error": "store_unavailable", "message": "busy"})
    snap = feed.poll()
    assert snap.problems == ("metrics: 503 store_unavailable: busy",)
    assert len(snap.jobs) == 5 and len(snap.factories) == 3
    client.gets.clear()
    clock.now += 2
    feed.poll()
    assert client.paths() == [top.QUEUE_STATE, top.EVENTS]  # the lists did arrive


def test_top_feed_retries_the_lists_on_the_next_poll_after_they_failed(
    feed: Feed, client: FakeClient, clock: Clock
) -> None:
    good = client.routes[top.JOBS]
    client.routes[top.JOBS] = HttpError(503, None)
    feed.poll()
    client.routes[top.JOBS] = good
    client.gets.clear()
    clock.now += 2
    assert len(feed.poll().jobs) == 5
    assert top.JOBS in client.paths()


def test_top_feed_invalidate_forces_the_lists(feed: Feed, client: FakeClient, clock: Clock) -> None:
    feed.poll()
    client.gets.clear()
    feed.invalidate()
    clock.now += 1
    feed.poll()
    assert client.paths()[-3:] == LISTS


@pytest.mark.parametrize(
    ("last_version", "version", "new_events", "last_full", "now", "expected"),
    [
        (None, 3, 0, None, 0.0, True),  # never fetched
        (3, 3, 0, 100.0, 101.0, False),  # nothing moved
        (3, 4, 0, 100.0, 101.0, True),  # the gate moved
        (3, None, 0, 100.0, 101.0, False),  # the gate could not be read: not a move
        (3, 3, 2, 100.0, 101.0, True),  # events arrived
        (3, 3, 0, 100.0, 100.0 + top.FULL_EVERY, True),  # periodic
        (3, 3, 0, 100.0, 100.0 + top.FULL_EVERY - 0.1, False),
    ],
)
def test_top_needs_full_refresh(
    last_version: int | None,
    version: int | None,
    new_events: int,
    last_full: float | None,
    now: float,
    expected: bool,
) -> None:
    assert (
        top.needs_full_refresh(
            last_version=last_version,
            version=version,
            new_events=new_events,
            last_full=last_full,
            now=now,
        )
        is expected
    )


# --- rows, alerts, selection -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "health", "flags"),
    [
        (factory("a", "live"), "live", ()),
        (factory("a", "stale"), "stale", ()),
        (factory("a", "down"), "down", ()),
        (factory("a", "live", paused=True), "live", ("paused",)),
        (factory("a", "live", draining=True), "live", ("draining",)),
        (factory("a", "live", revoked=True), "down", ("revoked",)),
        (factory("a", "live", deregistered=True), "down", ("deregistered",)),
        ({"id": "a"}, "down", ()),  # no verdict: not shown as healthy
    ],
)
def test_top_factory_health(raw: dict[str, Any], health: str, flags: tuple[str, ...]) -> None:
    row = top.factory_row(raw)
    assert (row.health, row.flags) == (health, flags)


def test_top_job_row_takes_holder_epoch_and_time_in_stage() -> None:
    row = top.job_row(job("j1", "building", holder="f1", epoch=3, age=90))
    assert (row.holder, row.epoch, row.since) == ("f1", 3, T0 - timedelta(seconds=90))
    assert top.job_row({"id": "j2", "stage": "queued"}).since is None


def test_top_alerts_name_stalled_jobs_unroutable_work_and_silent_factories(feed: Feed) -> None:
    snap = feed.poll()
    snap = Snapshot(
        at=snap.at,
        jobs=(*snap.jobs, top.job_row(job("j-gpu", "queued", unroutable=True))),
        factories=snap.factories,
        unroutable=1,
    )
    kinds = [(a.kind, a.text) for a in top.alerts(snap)]
    assert ("stalled", "stalled: j-stuck held by f2 (testing), no progress") in kinds
    assert ("unroutable", "unroutable: 1 queued job(s) no factory can run: j-gpu") in kinds
    assert ("factory", "factory f3 is down") in kinds and (
        "factory",
        "factory f2 is stale",
    ) in kinds
    assert len(kinds) == 4


def test_top_revoked_factories_raise_no_alert() -> None:
    snap = Snapshot(at=T0, factories=(top.factory_row(factory("gone", revoked=True)),))
    assert top.alerts(snap) == []


def test_top_selectable_lists_running_then_waiting_then_queued(feed: Feed) -> None:
    snap = feed.poll()
    assert [j.id for j in top.selectable(snap)] == ["j-build", "j-stuck", "j-review", "j-queued"]
    assert [j.id for j in top.running(snap)] == ["j-stuck", "j-build"]  # oldest first


@pytest.mark.parametrize(
    ("selected", "delta", "count", "expected"),
    [(0, -1, 4, 0), (0, 1, 4, 1), (3, 1, 4, 3), (5, 0, 4, 3), (2, 1, 0, 0)],
)
def test_top_move(selected: int, delta: int, count: int, expected: int) -> None:
    assert top.move(selected, delta, count) == expected


@pytest.mark.parametrize(
    ("count", "selected", "size", "expected"),
    [
        (3, 0, 5, (0, 3)),
        (10, 0, 4, (0, 4)),
        (10, 5, 4, (3, 7)),
        (10, 9, 4, (6, 10)),
        (5, 0, 0, (0, 0)),
    ],
)
def test_top_window(count: int, selected: int, size: int, expected: tuple[int, int]) -> None:
    assert top.window(count, selected, size) == expected


def test_top_follow_keeps_the_selection_on_the_same_job() -> None:
    rows = [
        JobRow("a", "", "building", "f1", 1, None, False, False),
        JobRow("b", "", "review", None, 1, None, False, False),
    ]
    assert top.follow(rows, "b", 0) == 1
    assert top.follow(rows, "gone", 5) == 1
    assert top.follow([], "b", 1) == 0


# --- rendering ---------------------------------------------------------------------------


def test_top_render_shows_every_section(feed: Feed, events: Events) -> None:
    events.pending = [event("j-build", 2, "building", "assigned")]
    lines = top.render(feed.poll(), selected=0, width=120, status="ship j-review: done")
    text = "\n".join(lines)
    assert lines[0] == "fleet top - product demo - live: updated 0s ago"
    assert lines[1] == "util 2/2 seats 100% - gate v3 - lists 0s old - 12:00:00 UTC"
    assert "queued 1" in lines[2] and "building 1" in lines[2] and "(oldest queued 5s)" in lines[2]
    assert "FACTORIES (1 live, 1 stale, 1 down)" in text
    assert any(line.startswith("    f3") and " down " in line for line in lines)
    selected = next(line for line in lines if line.startswith("  > "))
    assert "j-build" in selected and "building" in selected and "f1" in selected
    assert " 2m " in selected  # two minutes in its stage
    assert any("j-stuck" in line and "STALLED" in line for line in lines)
    assert "ALERTS (3)" in text
    assert "12:00:00 j-build assigned>building factory:f1" not in text  # event time is ts(10)
    assert "11:59:50 j-build assigned>building factory:f1" in text
    assert lines[-1] == "ship j-review: done"
    assert all(len(line) <= 120 for line in lines)


def test_top_render_bounds_sections_and_scrolls_to_the_selection() -> None:
    jobs = tuple(top.job_row(job(f"j{i:02d}", "queued", age=100 - i)) for i in range(20))
    factories = tuple(top.factory_row(factory(f"f{i:02d}")) for i in range(10))
    snap = Snapshot(at=T0, jobs=jobs, factories=factories, stages=top.stage_counts(jobs))
    lines = top.render(snap, selected=15, max_jobs=5, max_factories=3)
    assert "    ... 8 more" in lines
    assert "    ... 13 above" in lines and "    ... 2 below" in lines
    assert any(line.startswith("  > j15") for line in lines)


def test_top_render_truncates_to_the_width(feed: Feed) -> None:
    assert all(len(line) <= 40 for line in top.render(feed.poll(), width=40))


def shipped_run(epoch: int, **fields: Any) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "factory": "f1",
        "outcome": "shipped",
        "tokens": {"input": 9000, "output": 2500, "cacheRead": 500, "cacheWrite": 0},
        "costUsd": 0.42,
        "diff": {"files": 3, "insertions": 10, "deletions": 2},
        **fields,
    }


def test_top_render_shows_each_jobs_latest_run() -> None:
    rows = (
        top.job_row(
            job(
                "j-done",
                "failed",
                age=50,
                runs=[shipped_run(1, outcome="retry"), shipped_run(2, outcome="failed")],
            )
        ),
        top.job_row(
            job(
                "j-open",
                "building",
                holder="f1",
                epoch=3,
                age=40,
                runs=[shipped_run(3, outcome=None, costUsd=None, diff=None)],
            )
        ),
        top.job_row(job("j-new", "queued", age=30)),  # no runs listed: degrades to "-"
    )
    lines = top.render(Snapshot(at=T0, jobs=rows), width=160)
    header = next(line for line in lines if line.lstrip().startswith("id "))
    assert "last run" in header
    by_id = {line.split()[0]: line for line in lines if line.startswith("    j-")}
    assert "failed $0.42 12k tok +10-2" in by_id["j-done"]
    assert "running $? 12k tok" in by_id["j-open"]  # unknown cost: never $0.00
    assert "$0.00" not in "\n".join(lines)
    assert " -  " in by_id["j-new"]
    # the title column stays aligned whatever the summaries' lengths
    starts = {line.index("title of") for line in by_id.values()}
    assert len(starts) == 1


def test_top_json_carries_the_latest_run_of_running_jobs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    opened = shipped_run(2, outcome=None, costUsd=None)
    client = FakeClient(
        {
            top.QUEUE_STATE: {"version": 1},
            top.EVENTS: {"events": [], "cursor": None},
            top.JOBS: {"jobs": [job("j1", "building", holder="f1", epoch=2, runs=[opened])]},
            top.FACTORIES: {"factories": []},
            top.METRICS: {},
        }
    )
    assert top.run_top(client, argparse.Namespace(interval=2.0, product="p", json=True)) == 0
    (running,) = json.loads(capsys.readouterr().out)["running"]
    assert running["lastRun"] == opened
    assert running["lastRunSummary"] == "running $? 12k tok +10-2"


def test_top_render_of_an_empty_product() -> None:
    lines = top.render(Snapshot(at=T0, full_at=T0, link=Link(last_good=T0)))
    assert lines[2] == "stages: -"
    assert lines.count("  (none)") == 3 and "    (none)" in lines


def test_top_render_of_a_product_never_read_says_so_rather_than_none() -> None:
    lines = top.render(Snapshot(at=T0))
    assert lines[0].endswith("connecting...") and lines[1].startswith("util ? - gate v?")
    assert "(none)" not in "\n".join(lines)
    assert lines.count("  (not read yet)") == 3 and "    (not read yet)" in lines


# --- actions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "action"), [("s", "ship"), ("r", "requeue"), ("x", "reject"), ("c", "cancel")]
)
def test_top_action_keys_post_the_action_with_a_reason(key: str, action: str) -> None:
    client = FakeClient({})
    client.post_reply = {"id": "j1", "stage": "shipped"}
    assert top.ACTIONS[key].name == action
    line = top.act(client, action, "j1")  # type: ignore[arg-type]
    assert client.posts == [(f"/fleet/jobs/j1/{action}", {"reason": top.REASON})]
    assert line == f"{action} j1: done, now shipped"


def test_top_action_refused_is_a_line_not_a_crash() -> None:
    client = FakeClient({})
    client.post_reply = HttpError(
        409, {"error": "illegal_transition", "message": "ship is not allowed from building"}
    )
    line = top.act(client, "ship", "j1")
    assert line == "ship j1 failed: 409 illegal_transition: ship is not allowed from building"


def test_top_confirm_prompt_names_the_job_and_its_stage() -> None:
    row = top.job_row(job("j1", "review"))
    assert top.confirm_prompt("reject", row) == "reject j1 (title of j1) [review]? y/N"


def test_top_describe_error_reads_status_and_body_or_code_and_message() -> None:
    class ApiError(Exception):  # the CLI client's shape: .status, .code, .message
        def __init__(self) -> None:
            super().__init__("boom")
            self.status, self.code, self.message = 401, "unauthorized", "invalid token"

    assert top.describe_error(ApiError()) == "401 unauthorized: invalid token"
    assert top.describe_error(HttpError(502, "Bad Gateway")) == "502: Bad Gateway"
    assert top.describe_error(ConnectionError("refused")) == "refused"


# --- the command -------------------------------------------------------------------------


def test_top_json_prints_one_snapshot(
    client: FakeClient, capsys: pytest.CaptureFixture[str]
) -> None:
    args = argparse.Namespace(interval=2.0, product="demo", json=True)
    assert top.run_top(client, args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["product"] == "demo" and out["gate"] == {"version": 3, "maxSkipSeconds": 30}
    assert [j["id"] for j in out["running"]] == ["j-stuck", "j-build"]
    assert out["running"][1]["holder"] == "f1" and out["running"][1]["epoch"] == 2
    assert {f["id"]: f["health"] for f in out["factories"]} == {
        "f1": "live",
        "f2": "stale",
        "f3": "down",
    }
    assert {a["kind"] for a in out["alerts"]} == {"stalled", "factory"}
    assert out["problems"] == []


def test_top_without_a_terminal_prints_the_board_once(
    client: FakeClient, capsys: pytest.CaptureFixture[str]
) -> None:
    args = argparse.Namespace(interval=2.0, product=None, json=False)
    assert top.run_top(client, args) == 0
    out = capsys.readouterr().out
    assert out.startswith("fleet top - product (token's product) - live: updated 0s ago\n")
    assert "gate v3" in out.splitlines()[1]
    assert client.paths() == [top.QUEUE_STATE, top.EVENTS, *LISTS]


def test_top_exits_1_when_nothing_can_be_read(capsys: pytest.CaptureFixture[str]) -> None:
    down = ConnectionError("connection refused")
    client = FakeClient({path: down for path in [top.QUEUE_STATE, top.EVENTS, *LISTS]})
    args = argparse.Namespace(interval=2.0, product="demo", json=True)
    assert top.run_top(client, args) == 1
    assert "queue-state: connection refused" in json.loads(capsys.readouterr().out)["problems"]


class RequestOnly:
    """The CLI's ``FleetClient`` shape: one ``request`` method, errors with code/message."""

    def __init__(self, inner: FakeClient) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str]] = []

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        self.calls.append((method, path))
        if method == "GET":
            return self.inner.get(path, params)
        return self.inner.post(path, json_body)


def test_top_runs_over_a_client_with_only_a_request_method(
    client: FakeClient, capsys: pytest.CaptureFixture[str]
) -> None:
    wrapped = RequestOnly(client)
    args = argparse.Namespace(interval=2.0, product="demo")  # no --json flag at all
    assert top.run_top(wrapped, args) == 0
    assert wrapped.calls[:2] == [("GET", top.QUEUE_STATE), ("GET", top.EVENTS)]
    client.post_reply = {"id": "j1", "stage": "queued"}
    assert top.act(top.top_client(wrapped), "requeue", "j1") == "requeue j1: done, now queued"
    assert wrapped.calls[-1] == ("POST", "/fleet/jobs/j1/requeue")
    assert capsys.readouterr().out.startswith("fleet top - product demo")


def test_top_client_refuses_an_object_it_cannot_call() -> None:
    with pytest.raises(TypeError):
        top.top_client(object())  # type: ignore[arg-type]


def test_event_line_names_an_alert_event_without_a_job() -> None:
    line = top.event_line(
        {
            "jobId": None,
            "alert": True,
            "type": "alert_raised",
            "kind": "raised",
            "key": "stale_factories",
            "severity": "warning",
            "message": "1 factory stale",
            "at": "2026-11-23T10:00:00.000000Z",
        }
    )
    assert line == "10:00:00 ALERT raised warning stale_factories: 1 factory stale"
    job = top.event_line(
        {"jobId": "j1", "fromStage": "queued", "toStage": "assigned", "actor": "f1", "at": None}
    )
    assert job == "--:--:-- j1 queued>assigned f1"
