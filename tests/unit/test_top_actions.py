"""``fleet-factory top``'s keys end to end without a terminal: ``Control`` over the CLI's real
``FleetClient``, the coordinator answered by ``responses``; the operator's answers scripted."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
import requests
import responses
from responses import matchers

from factory_cli.api import FleetClient
from factory_cli.top import Control, Feed, key_help, top_client
from factory_cli.top_actions import ACTIONS, REASON, Prompt
from tests.support.cli import API

T0 = datetime(2026, 12, 5, 14, 2, 11, tzinfo=UTC)
STAMP = "14:02:11"


def job(job_id: str, stage: str, *, holder: str | None = None, priority: int = 5) -> dict[str, Any]:
    return {
        "id": job_id,
        "title": f"title of {job_id}",
        "stage": stage,
        "epoch": 1 if holder else 0,
        "holder": holder,
        "priority": priority,
        "lastEventAt": "2026-12-05T14:00:00Z",
    }


JOBS = [job("j-build", "building", holder="f1"), job("j-queued", "queued", priority=3)]
FACTORIES = [
    {"id": "f1", "status": "live", "load": 1, "seats": 2, "lastSeen": "2026-12-05T14:02:00Z"},
    {"id": "f2", "status": "live", "load": 0, "seats": 2, "lastSeen": "2026-12-05T14:02:00Z"},
]
METRICS = {"queueDepth": {}, "utilization": {"held": 1, "seats": 4, "fraction": 0.25}}


class Answers:
    """The operator at the prompt line: scripted answers (None: Esc), the prompts kept."""

    def __init__(self, *answers: str | None) -> None:
        self.answers = list(answers)
        self.prompts: list[Prompt] = []

    def __call__(self, prompt: Prompt) -> str | None:
        self.prompts.append(prompt)
        return self.answers.pop(0)


def serve_board(rsps: responses.RequestsMock) -> None:
    rsps.get(f"{API}/fleet/queue-state", json={"version": 3, "maxSkipSeconds": 30})
    rsps.get(f"{API}/fleet/events", json={"events": [], "cursor": None})
    rsps.get(f"{API}/fleet/jobs", json={"jobs": JOBS, "count": len(JOBS)})
    rsps.get(f"{API}/fleet/factories", json={"factories": FACTORIES})
    rsps.get(f"{API}/fleet/metrics", json=METRICS)


def control(answers: Answers, product: str | None = "demo") -> Control:
    client = top_client(FleetClient(API, "flo_op", product=product))
    feed = Feed(client, product, wall=lambda: T0)
    return Control(feed, client, ask=answers, wall=lambda: T0)


def posts(rsps: responses.RequestsMock) -> list[tuple[str, Any]]:
    return [
        (str(c.request.url).removeprefix(API), json.loads(c.request.body or "null"))
        for c in rsps.calls
        if c.request.method == "POST"
    ]


def gets_of(rsps: responses.RequestsMock, path: str) -> int:
    return sum(
        1
        for c in rsps.calls
        if c.request.method == "GET" and str(c.request.url).split("?")[0] == API + path
    )


# key, what to press first (focus), the operator's answers, the request, the reply, the line
CASES = [
    ("s", [], ["y"], "/fleet/jobs/j-build/ship", {"reason": REASON},
     {"id": "j-build", "stage": "shipped"}, "ship j-build: done, now shipped"),
    ("x", [], ["y"], "/fleet/jobs/j-build/reject", {"reason": REASON},
     {"id": "j-build", "stage": "failed"}, "reject j-build: done, now failed"),
    ("c", [], ["y"], "/fleet/jobs/j-build/cancel", {"reason": REASON},
     {"id": "j-build", "stage": "cancelled"}, "cancel j-build: done, now cancelled"),
    ("r", [], ["flaky runner", "", "y"], "/fleet/jobs/j-build/requeue",
     {"reason": "flaky runner"}, {"id": "j-build", "stage": "queued"},
     "requeue j-build: done, now queued"),
    ("r", ["down"], ["", ' {"branch": "fleet/j-queued", "commit": "abc123"} ', "yes"],
     "/fleet/jobs/j-queued/requeue",
     {"reason": REASON, "checkpoint": {"branch": "fleet/j-queued", "commit": "abc123"}},
     {"id": "j-queued", "stage": "queued"}, "requeue j-queued: done, now queued"),
    ("p", [], [" 9 "], "/fleet/jobs/j-build/reprioritize", {"priority": 9, "reason": REASON},
     {"id": "j-build", "priority": 9}, "reprioritize j-build: done, priority 9"),
    ("P", [], ["maintenance window", "y"], "/fleet/factories/f1/commands",
     {"command": "pause", "reason": "maintenance window"},
     {"command": {"id": "cmd-1", "kind": "pause"}},
     "pause f1: sent (command cmd-1); the factory acts on its next heartbeat"),
    ("U", ["tab", "down"], [""], "/fleet/factories/f2/commands",
     {"command": "resume", "reason": REASON}, {"command": {"id": "cmd-2", "kind": "resume"}},
     "resume f2: sent (command cmd-2); the factory acts on its next heartbeat"),
    ("D", [], ["retiring the host", "y"], "/fleet/factories/f1/commands",
     {"command": "drain", "reason": "retiring the host"}, {"command": {"id": "cmd-3"}},
     "drain f1: sent (command cmd-3); the factory acts on its next heartbeat"),
    ("R", [], ["engine hung", "Y"], "/fleet/factories/f1/commands",
     {"command": "restart-engine", "reason": "engine hung"}, {"command": {"id": "cmd-4"}},
     "restart-engine f1: sent (command cmd-4); the factory acts on its next heartbeat"),
    ("b", [], ["spend spike", "y"], "/fleet/budgets/demo/pause", {"reason": "spend spike"},
     {"product": "demo", "paused": True, "autoPaused": False},
     "budget pause of demo: done, paused"),
    ("B", [], ["reviewed"], "/fleet/budgets/demo/resume", {"reason": "reviewed"},
     {"product": "demo", "paused": False, "autoPaused": True},
     "budget resume of demo: done, resumed (still auto-paused: the ceiling is reached)"),
]  # fmt: skip


@pytest.mark.parametrize(("key", "before", "answers", "path", "body", "reply", "line"), CASES)
def test_top_key_sends_its_request_and_reports_success(
    rsps: responses.RequestsMock,
    key: str,
    before: list[str],
    answers: list[str],
    path: str,
    body: dict[str, Any],
    reply: dict[str, Any],
    line: str,
) -> None:
    serve_board(rsps)
    rsps.post(f"{API}{path}", json=reply, match=[matchers.json_params_matcher(body)])
    board = control(Answers(*answers))
    board.refresh()
    for other in before:
        board.press(other)
    assert board.press(key) is True
    assert posts(rsps) == [(path, body)]
    assert board.status == f"{STAMP} {line}"
    # the board refreshes its lists at once, and shows the line
    assert board.due
    board.refresh()
    assert gets_of(rsps, "/fleet/jobs") == 2
    assert f"{STAMP} {line}" in board.lines(rows=60, cols=200)


@pytest.mark.parametrize(("key", "before", "answers", "path", "body", "reply", "line"), CASES)
def test_top_key_reports_the_servers_refusal(
    rsps: responses.RequestsMock,
    key: str,
    before: list[str],
    answers: list[str],
    path: str,
    body: dict[str, Any],
    reply: dict[str, Any],
    line: str,
) -> None:
    serve_board(rsps)
    refusal = {"error": "illegal_transition", "message": "not allowed from building"}
    rsps.post(f"{API}{path}", status=409, json=refusal)
    board = control(Answers(*answers))
    board.refresh()
    for other in before:
        board.press(other)
    board.press(key)
    subject = path.split("/")[3]  # the job, the factory or the product
    assert posts(rsps) == [(path, body)]
    assert board.status == (
        f"{STAMP} {ACTIONS[key].name} {subject} failed: "
        "409 illegal_transition: not allowed from building"
    )
    lines = board.lines(rows=60, cols=200)
    assert board.status in lines
    # the board is as it was: both jobs listed, the selection where it was
    assert sum(1 for row in lines if row.lstrip(" >").startswith(("j-build ", "j-queued "))) == 2
    assert board.job_id == ("j-queued" if before == ["down"] else "j-build")


def test_top_action_reports_an_unreachable_coordinator(rsps: responses.RequestsMock) -> None:
    serve_board(rsps)
    rsps.post(
        f"{API}/fleet/jobs/j-build/cancel",
        body=requests.ConnectionError("[Errno 111] Connection refused"),
    )
    board = control(Answers("y"))
    board.refresh()
    board.press("c")
    assert board.status is not None
    assert board.status.startswith(f"{STAMP} cancel j-build failed: POST /fleet/jobs/j-build")
    assert "Connection refused" in board.status


@pytest.mark.parametrize(
    ("key", "answers", "line"),
    [
        ("c", ["n"], "cancel j-build: not done"),
        ("c", [""], "cancel j-build: not done"),
        ("s", [None], "ship j-build: not done"),  # Esc at the confirmation
        ("r", [None], "requeue j-build: not done"),  # Esc at the reason
        ("r", ["why", "{not json"], "requeue j-build: the checkpoint is not JSON"),
        ("r", ["why", "[1, 2]"], "requeue j-build: the checkpoint must be a JSON object; not sent"),
        ("p", ["12"], "reprioritize j-build: '12' is not 0-9; not sent"),
        ("p", ["high"], "reprioritize j-build: 'high' is not 0-9; not sent"),
        ("D", ["why", "n"], "drain f1: not done"),
        ("b", ["why", "no"], "budget pause demo: not done"),
    ],
)
def test_top_action_cancelled_or_invalid_sends_nothing(
    rsps: responses.RequestsMock, key: str, answers: list[str | None], line: str
) -> None:
    serve_board(rsps)
    board = control(Answers(*answers))
    board.refresh()
    board.press(key)
    assert posts(rsps) == []
    assert board.status is not None and board.status.startswith(f"{STAMP} {line}")
    assert not board.due


def test_top_actions_ask_in_order_and_name_what_they_act_on(rsps: responses.RequestsMock) -> None:
    serve_board(rsps)
    answers = Answers("why", "", "n")
    board = control(answers)
    board.refresh()
    board.press("r")
    assert [p.question for p in answers.prompts] == ["reason", "checkpoint", "confirm"]
    assert answers.prompts[-1].text == "requeue j-build (title of j-build) [building]? y/N "
    answers = Answers("x")
    board.ask = answers
    board.press("p")
    assert answers.prompts[0].text.endswith("new priority 0-9 (9 most urgent, now 5): ")
    answers = Answers("n")
    board.ask = answers
    board.press("c")  # destructive: confirmation only
    assert [p.question for p in answers.prompts] == ["confirm"]
    answers = Answers(None)
    board.ask = answers
    board.press("R")
    assert answers.prompts[0].text.startswith("restart-engine factory f1: reason")


def test_top_action_without_a_selection_or_a_product_says_so(
    rsps: responses.RequestsMock,
) -> None:
    rsps.get(f"{API}/fleet/queue-state", json={"version": 1})
    rsps.get(f"{API}/fleet/events", json={"events": [], "cursor": None})
    rsps.get(f"{API}/fleet/jobs", json={"jobs": []})
    rsps.get(f"{API}/fleet/factories", json={"factories": []})
    rsps.get(f"{API}/fleet/metrics", json={})
    board = control(Answers(), product=None)
    board.refresh()
    board.press("c")
    assert board.status == f"{STAMP} cancel: no job selected"
    board.press("D")
    assert board.status == f"{STAMP} drain: no factory selected"
    board.press("b")
    assert board.status == f"{STAMP} budget pause: the product is unknown (give --product)"
    assert posts(rsps) == []


def test_top_tab_moves_the_cursor_between_jobs_and_factories(
    rsps: responses.RequestsMock,
) -> None:
    serve_board(rsps)
    board = control(Answers())
    board.refresh()
    board.press("down")
    assert board.job_id == "j-queued"
    board.press("tab")
    board.press("j")
    assert board.focus == "factories" and board.factory_id == "f2"
    selected = board.selected_job()
    assert selected is not None and selected.id == "j-queued"  # the job cursor stays
    marked = [row.split()[1] for row in board.lines(rows=60, cols=200) if row.startswith("  > ")]
    assert marked == ["f2", "j-queued"]
    board.press("k")
    board.press("tab")
    assert board.focus == "jobs" and board.factory_id == "f1"
    assert board.press("q") is False


def test_top_footer_lists_every_key_and_stays_on_a_small_terminal(
    rsps: responses.RequestsMock,
) -> None:
    serve_board(rsps)
    board = control(Answers())
    board.refresh()
    lines = board.lines(rows=12, cols=300)
    assert len(lines) <= 12
    assert lines[-2:] == key_help("jobs")
    help_text = " ".join(key_help("jobs"))
    for key, spec in ACTIONS.items():
        assert f" {key} " in f" {help_text} ", spec.name
    for word in ("up/down", "tab", "e expand events", "q quit", "job:", "factory:", "budget:"):
        assert word in help_text
    board.press("tab")
    board.press("e")
    assert board.lines(rows=12, cols=300)[-2].startswith("[factories] up/down select  tab jobs")
    assert "e shrink events" in board.lines(rows=12, cols=300)[-2]
