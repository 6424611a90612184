"""What a holder's report means (``fleet.domain.report``), from one table: the job as read
and the report in, the job's next stage, the event the decision appends and the run's
outcome out (or the error that refuses it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from fleet.context import AppContext
from fleet.coordinator import Coordinator
from fleet.domain import jobs as J
from fleet.domain.jobs import BudgetExceeded, TimedOut
from fleet.domain.manifest import Manifest
from fleet.domain.models import Job, ReviewSpec
from fleet.domain.report import MAX_REPORT_BYTES, Report, check_size, decide_report, opens_review
from fleet.domain.runs import run_at
from fleet.domain.stages import Action, Stage
from fleet.errors import Fenced, IllegalReport, ValidationFailed
from fleet.http import lease
from fleet.http.parsing import FactorySelf
from tests.support.builders import T0, job
from tests.support.handlers import call

NOW = T0 + timedelta(minutes=5)


def held(stage: Stage = Stage.BUILDING, **fields: Any) -> Job:
    """A job leased to ``f1`` at epoch 1, in ``stage`` (assigned, building or testing)."""
    leased = J.assign(job(**fields), "f1", now=T0)
    for action, to in ((Action.START, Stage.BUILDING), (Action.TEST, Stage.TESTING)):
        if leased.stage is not stage:
            leased = J.holder_report(leased, action, "f1", now=T0)
            assert leased.stage is to
    return leased


@dataclass(frozen=True)
class Row:
    name: str
    job: Job
    report: dict[str, Any]
    stage: Stage  # where the job is after the report
    event: str | None  # the type of the event the decision appends (None: none)
    outcome: str | None = None  # how the attempt's run ends (None: it goes on)
    epoch: int = 1
    extra: dict[str, Any] = field(default_factory=dict)  # more fields of the decided job


REVIEWED = {"review": ReviewSpec()}
CAPPED = {"maxCostUsd": 1.0}
OVER = {"costUsd": 1.5}

TABLE = [
    Row("progress alone moves nothing", held(), {"progress": {"note": "x"}}, Stage.BUILDING, None),
    Row("start", held(Stage.ASSIGNED), {"stage": Stage.BUILDING}, Stage.BUILDING, "start"),
    Row("test", held(), {"stage": Stage.TESTING}, Stage.TESTING, "test"),
    Row("shipped", held(), {"stage": Stage.SHIPPED}, Stage.SHIPPED, "complete", "shipped"),
    Row(
        "shipped, the manifest wants a review",
        held(**REVIEWED),
        {"stage": Stage.SHIPPED, "author_kind": "claude"},
        Stage.REVIEW,
        "submit_review",
        "shipped",
        extra={"reviewState.author": "f1", "reviewState.authorKind": "claude"},
    ),
    Row("review", held(), {"stage": Stage.REVIEW}, Stage.REVIEW, "submit_review", "shipped"),
    Row("failed", held(), {"stage": Stage.FAILED}, Stage.FAILED, "fail", "failed"),
    Row(
        "failed, retryable",
        held(),
        {"stage": Stage.FAILED, "retryable": True},
        Stage.QUEUED,
        "retry",
        "retry",
        extra={"failedBy": ("f1",)},
    ),
    Row(
        "failed, retryable, on the last attempt",
        held(maxAttempts=1),
        {"stage": Stage.FAILED, "retryable": True},
        Stage.DEAD_LETTER,
        "retry_final",
        "failed",
    ),
    Row(
        "failed at a limit the holder names",
        held(),
        {"stage": Stage.FAILED, "result": {"outcome": "timeout"}},
        Stage.QUEUED,
        "retry",
        "timeout",
    ),
    Row(
        "a cost is recorded for the attempt",
        held(),
        {"progress": {"costUsd": 0.25}},
        Stage.BUILDING,
        None,
        extra={"costs": {"1": 0.25}},
    ),
    Row(
        "a cost equal to the cap ships",
        held(**CAPPED),
        {"stage": Stage.SHIPPED, "result": {"costUsd": 1.0}},
        Stage.SHIPPED,
        "complete",
        "shipped",
    ),
    Row(
        "shipped over the cap ends the attempt",
        held(**CAPPED),
        {"stage": Stage.SHIPPED, "result": OVER},
        Stage.QUEUED,
        "retry",
        "budget_exceeded",
        epoch=2,
        extra={"costs": {"1": 1.0}},  # recorded at the cap, not as reported
    ),
    Row(
        "progress over the cap ends the attempt",
        held(**CAPPED),
        {"progress": OVER},
        Stage.QUEUED,
        "retry",
        "budget_exceeded",
        epoch=2,
    ),
    Row(
        "shipped over the cap skips the review",
        held(**CAPPED, **REVIEWED),
        {"stage": Stage.SHIPPED, "result": OVER},
        Stage.QUEUED,
        "retry",
        "budget_exceeded",
        epoch=2,
    ),
    Row(
        "no cap of its own: up to five times its estimate goes on",
        held(budgetUsd=1.0),
        {"progress": {"costUsd": 5.0}},
        Stage.BUILDING,
        None,
        extra={"costs": {"1": 5.0}},
    ),
    Row(
        "no cap of its own: past five times its estimate ends the attempt",
        held(budgetUsd=1.0),
        {"stage": Stage.SHIPPED, "result": {"costUsd": 900_000}},
        Stage.QUEUED,
        "retry",
        "budget_exceeded",
        epoch=2,
        extra={"costs": {"1": 5.0}},
    ),
    Row(
        "no cap and no estimate: the product's ceiling alone decides",
        held(),
        {"progress": {"costUsd": 900_000}},
        Stage.BUILDING,
        None,
        extra={"costs": {"1": 900_000.0}},
    ),
    Row(
        "failed over the cap: its cost says why",
        held(**CAPPED),
        {"stage": Stage.FAILED, "result": OVER},
        Stage.QUEUED,
        "retry",
        "budget_exceeded",
    ),
]


@pytest.mark.parametrize("row", TABLE, ids=[row.name for row in TABLE])
def test_report_decides_the_transition(row: Row) -> None:
    decided = decide_report(row.job, Report("f1", 1, **row.report), NOW)
    assert decided.stage is row.stage
    appended = decided.events[len(row.job.events) :]
    assert [e.type for e in appended] == ([row.event] if row.event else [])
    run = run_at(decided.runs, 1)
    assert run is not None and run.outcome == row.outcome
    assert decided.epoch == row.epoch
    for path, expected in row.extra.items():
        value: Any = decided
        for name in path.split("."):
            value = getattr(value, name)
        assert value == expected, path
    if decided.stage is Stage.QUEUED:
        assert decided.lease is None and decided.queueKey == row.job.queueKey


@pytest.mark.parametrize(
    ("name", "current", "report", "error"),
    [
        ("a stage a holder cannot report", held(), Report("f1", 1, Stage.QUEUED), IllegalReport),
        ("another factory", held(), Report("f2", 1, Stage.SHIPPED), Fenced),
        ("a stale epoch", held(), Report("f1", 0, Stage.SHIPPED), Fenced),
        (
            "after its deadline ended the attempt",
            J.end_at_limit(held(), "timeout", now=T0, reason="late"),
            Report("f1", 1, Stage.SHIPPED),
            TimedOut,
        ),
        (
            "a cost no attempt can reach",
            held(),
            Report("f1", 1, progress={"costUsd": 1e300}),
            ValidationFailed,
        ),
        (
            "an integer cost too large for a float",
            held(**CAPPED),
            Report("f1", 1, Stage.SHIPPED, result={"costUsd": 10**400}),
            ValidationFailed,
        ),
        (
            "after its cost ended the attempt",
            decide_report(held(**CAPPED), Report("f1", 1, progress=OVER), NOW),
            Report("f1", 1),
            BudgetExceeded,
        ),
    ],
)
def test_report_refused(name: str, current: Job, report: Report, error: type[Exception]) -> None:
    with pytest.raises(error):
        decide_report(current, report, NOW)
    with pytest.raises(error):
        opens_review(current, report)


def test_a_cost_over_the_cap_is_recorded_at_the_cap_everywhere() -> None:
    decided = decide_report(
        held(**CAPPED),
        Report("f1", 1, Stage.SHIPPED, progress={"costUsd": 7.0}, result={"costUsd": 9.0}),
        NOW,
    )
    run = run_at(decided.runs, 1)
    assert run is not None and run.costUsd == 1.0 and run.outcome == "budget_exceeded"
    assert decided.costs == {"1": 1.0}
    assert decided.progress == {"costUsd": 1.0} and decided.result is not None
    assert decided.result["costUsd"] == 1.0
    assert "reported $9.0000, over its cap $1.0000" in (run.reason or "")


@pytest.mark.parametrize(
    ("current", "report", "opens"),
    [
        (held(**REVIEWED), Report("f1", 1, Stage.SHIPPED), True),
        (held(), Report("f1", 1, Stage.REVIEW), True),
        (held(), Report("f1", 1, Stage.SHIPPED), False),
        (held(**REVIEWED), Report("f1", 1, Stage.FAILED), False),
        (held(**REVIEWED), Report("f1", 1, progress={"note": "x"}), False),
        (held(**CAPPED, **REVIEWED), Report("f1", 1, Stage.SHIPPED, result=OVER), False),
    ],
)
def test_report_opens_review_exactly_when_the_decision_does(
    current: Job, report: Report, opens: bool
) -> None:
    assert opens_review(current, report) is opens
    assert (decide_report(current, report, NOW).stage is Stage.REVIEW) is opens


# --- the size of what a report keeps ------------------------------------------------------


def _text(size: int) -> str:
    """A JSON string of exactly ``size`` bytes (its quotes included)."""
    return "x" * (size - 2)


@pytest.mark.parametrize(
    ("checkpoint", "progress", "result", "path"),
    [
        (_text(MAX_REPORT_BYTES), None, None, None),  # exactly the limit
        (_text(MAX_REPORT_BYTES + 1), None, None, "checkpoint"),
        (_text(100 * 1024), {"log": _text(90 * 1024)}, {"r": _text(70 * 1024)}, "checkpoint"),
        (None, {"log": _text(100 * 1024)}, {"r": _text(157 * 1024)}, "result"),
        (None, {"log": _text(200 * 1024)}, {"r": _text(57 * 1024)}, "progress"),
        ({"é": "é" * 1000}, None, None, None),  # bytes, not characters: well under
    ],
)
def test_report_size_is_capped_together(
    checkpoint: Any, progress: Any, result: Any, path: str | None
) -> None:
    if path is None:
        check_size(checkpoint, progress, result)
        Report(factory="f1", epoch=1, checkpoint=checkpoint, progress=progress, result=result)
        return
    with pytest.raises(ValidationFailed) as refused:
        Report(factory="f1", epoch=1, checkpoint=checkpoint, progress=progress, result=result)
    (problem,) = refused.value.problems
    assert (problem.path, problem.code) == (path, "too_large")


def test_report_size_counts_utf8_bytes() -> None:
    with pytest.raises(ValidationFailed):
        check_size({"k": "é" * (MAX_REPORT_BYTES // 2)})  # two bytes each


P_HTTP = "prod"
_LARGE = {"log": _text(300 * 1024)}


@pytest.mark.parametrize(
    ("handler", "method", "path", "body"),
    [
        (lease.report_job, "PATCH", "", {"progress": _LARGE}),
        (lease.release_lease, "POST", "/lease/release", {"checkpoint": _LARGE}),
    ],
)
def test_report_too_large_over_http_is_400_and_changes_nothing(
    app_context: AppContext,
    coord: Coordinator,
    handler: Any,
    method: str,
    path: str,
    body: dict[str, Any],
) -> None:
    job_id = coord.submit(P_HTTP, Manifest(title="t", body="b"), "operator:o")[0].id
    issued = app_context.tokens.create_enrollment_token(P_HTTP, "operator:test")
    token = app_context.tokens.enroll(issued.token, "f1", FactorySelf(capabilities=())).token
    assert call(app_context, "claim", "POST", "/api/fleet/claim", token, {}).status == 200
    before = coord.get_job(P_HTTP, job_id)
    url = f"/api/fleet/jobs/{job_id}{path}"
    status, reply, _ = call(
        app_context, handler, method, url, token, {"leaseEpoch": 1, **body}, id=job_id
    )
    (problem,) = reply["details"]["problems"]
    assert (status, problem["path"], problem["code"]) == (400, next(iter(body)), "too_large")
    assert coord.get_job(P_HTTP, job_id) == before
