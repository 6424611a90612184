"""Run records and per-attempt limits: the pure rules (fleet.domain.runs) and every way an
attempt ends, on the coordinator over the in-memory twin."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fleet.context import AppContext
from fleet.coordinator import Coordinator
from fleet.coordinator.clock import ManualClock
from fleet.coordinator.tokens import Tokens
from fleet.domain import jobs as J
from fleet.domain import runs as RU
from fleet.domain.manifest import Manifest
from fleet.domain.models import Job, Run
from fleet.domain.scheduler import FactoryView
from fleet.domain.stages import LEASED, Action, Stage
from fleet.errors import Fenced
from fleet.http import fleet_ops
from fleet.http import jobs as jobs_http
from fleet.http.parsing import FactorySelf
from fleet.store.queries import RUNS_OF_JOB
from tests.support.handlers import OPERATOR, call, documented

P = "prod"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def factory(name: str = "f1", **kw: Any) -> FactoryView:
    return FactoryView(id=name, capabilities=frozenset(), **kw)


def submit(coord: Coordinator, **fields: Any) -> str:
    job, _ = coord.submit(P, Manifest(**{"title": "t", "body": "x", **fields}), "operator:o")
    return job.id


def claim(coord: Coordinator, name: str = "f1") -> Job:
    result = coord.claim(P, factory(name))
    assert result is not None
    return result.job


def last_run(coord: Coordinator, job_id: str) -> Run:
    return coord.get_job(P, job_id).runs[-1]


def assert_runs_consistent(job: Job) -> None:
    """The invariant the simulation checks too: at most one open run, the current epoch's
    while leased; none open otherwise."""
    open_runs = [r for r in job.runs if r.outcome is None]
    if job.stage in LEASED:
        assert [r.epoch for r in open_runs] == [job.epoch]
    else:
        assert open_runs == []


# --- the pure rules ---------------------------------------------------------------------


def _leased_job(stage: Stage = Stage.BUILDING, attempts: int = 1, max_attempts: int = 3) -> Job:
    job = Job(
        id="j" + "0" * 26,
        productId=P,
        title="t",
        stage=Stage.QUEUED,
        createdAt=T0,
        updatedAt=T0,
        lastEventAt=T0,
        queueKey="k",
        maxAttempts=max_attempts,
        attempts=attempts - 1,
        maxCostUsd=2.0,
    )
    job = J.assign(job, "f1", now=T0, timeout_seconds=60)
    if stage is not Stage.ASSIGNED:
        job = J.holder_report(job, Action.START, "f1", now=T0)
    return job


def test_runs_assign_opens_a_run_with_its_limits() -> None:
    job = _leased_job(Stage.ASSIGNED)
    (run,) = job.runs
    assert run.epoch == 1 and run.factory == "f1" and run.outcome is None
    assert run.deadlineAt == T0 + timedelta(seconds=60) and run.maxCostUsd == 2.0
    assert run.costUsd is None  # unknown until reported, never 0
    assert RU.limits(run) == {
        "timeoutSeconds": 60,
        "deadlineAt": "2026-01-01T00:01:00.000000Z",
        "maxCostUsd": 2.0,
    }


@pytest.mark.parametrize(
    ("move", "outcome"),
    [
        (lambda j, t: J.holder_report(j, Action.COMPLETE, "f1", now=t), "shipped"),
        (lambda j, t: J.holder_report(j, Action.SUBMIT_REVIEW, "f1", now=t), "shipped"),
        (lambda j, t: J.holder_report(j, Action.FAIL, "f1", now=t), "failed"),
        (lambda j, t: J.holder_report(j, Action.RETRY, "f1", now=t), "retry"),
        (lambda j, t: J.holder_report(j, Action.RELEASE, "f1", now=t), "released"),
        (lambda j, t: J.expire(j, now=t), "taken_back"),
        (lambda j, t: J.preempt(j, now=t, for_job="jx"), "taken_back"),
        (lambda j, t: J.operator_action(j, Action.CANCEL, "o", now=t), "fenced"),
        (lambda j, t: J.operator_action(j, Action.REQUEUE, "o", now=t), "fenced"),
        (lambda j, t: J.operator_action(j, Action.SHIP, "o", now=t), "fenced"),
        (lambda j, t: J.end_at_limit(j, "timeout", now=t, reason="late"), "timeout"),
        (
            lambda j, t: J.end_at_limit(j, "budget_exceeded", now=t, reason="dear"),
            "budget_exceeded",
        ),
    ],
)
def test_runs_every_end_of_an_attempt_closes_its_run(move: Any, outcome: str) -> None:
    later = T0 + timedelta(seconds=5)
    ended = move(_leased_job(), later)
    run = ended.runs[-1]
    assert run.outcome == outcome and run.endedAt == later
    assert ended.events[-1].at == later  # in the same document as the transition
    assert_runs_consistent(ended)


def test_runs_retry_on_the_last_attempt_is_failed() -> None:
    job = _leased_job(attempts=3, max_attempts=3)
    ended = J.holder_report(job, Action.RETRY, "f1", now=T0)
    assert ended.stage is Stage.DEAD_LETTER and ended.runs[-1].outcome == "failed"


def test_runs_table_covers_every_action_that_ends_a_lease() -> None:
    ends = {Action.EXPIRE, Action.EXPIRE_FINAL, Action.PREEMPT, Action.SUBMIT_REVIEW}
    ends |= {Action.TAKE_BACK, Action.TAKE_BACK_FINAL}
    ends |= {Action.COMPLETE, Action.FAIL, Action.RETRY, Action.RETRY_FINAL, Action.RELEASE}
    ends |= {Action.CANCEL, Action.REQUEUE, Action.SHIP, Action.REJECT}
    assert set(RU.OUTCOME_OF) == ends
    assert set(RU.OUTCOME_OF.values()) <= RU.OUTCOMES


def test_runs_moves_inside_the_lease_leave_the_run_open() -> None:
    job = J.holder_report(_leased_job(), Action.TEST, "f1", now=T0)
    assert job.runs[-1].outcome is None


def test_runs_a_failed_report_naming_a_limit_takes_that_outcome_and_is_retried() -> None:
    report = RU.HolderReport(result={"outcome": "timeout", "exitCode": 143})
    ended = J.holder_report(_leased_job(), Action.FAIL, "f1", now=T0, report=report)
    assert ended.stage is Stage.QUEUED  # retried following maxAttempts
    assert ended.runs[-1].outcome == "timeout" and ended.runs[-1].exitCode == 143


def test_runs_merge_keeps_what_a_report_leaves_out_and_bounds_sizes() -> None:
    run = RU.open_run("f1", 1, now=T0)
    run = RU.merged(
        run,
        progress={"usage": {"input": 10, "output": 2}, "costUsd": 0.5},
        result={
            "usage": {"output": 7, "cacheRead": 3},
            "costUsd": None,  # unknown at the end: the running figure stays
            "engine": "claude",
            "engineVersion": "2.1.3",
            "diff": {"files": 2, "insertions": 10, "deletions": 1},
            "branch": "fleet/j1",
            "commit": "a" * 400,
            "prUrl": None,
            "artifacts": [f"a{i}" for i in range(80)] + [3],
            "artifactErrors": ["x" * 1000],
            "exitCode": True,  # not an exit code
            "durationSeconds": 12.5,
        },
    )
    assert run.tokens.model_dump() == {"input": 10, "output": 7, "cacheRead": 3, "cacheWrite": 0}
    assert run.costUsd == 0.5 and run.engine == "claude" and run.engineVersion == "2.1.3"
    assert run.diff is not None and run.diff.insertions == 10
    assert run.branch == "fleet/j1" and len(run.commit or "") == RU.MAX_NAME_CHARS
    assert len(run.artifacts) == RU.MAX_LIST_ITEMS and run.prUrl is None
    assert len(run.artifactErrors[0]) == RU.MAX_ITEM_CHARS
    assert run.exitCode is None and run.durationSeconds == 12.5


@pytest.mark.parametrize(
    ("cap", "cost", "over"),
    [(None, 5.0, False), (1.0, None, False), (1.0, 1.0, False), (1.0, 1.01, True)],
)
def test_runs_over_cap(cap: float | None, cost: float | None, over: bool) -> None:
    run = RU.open_run("f1", 1, now=T0, max_cost_usd=cap)
    assert RU.over_cap(RU.cost_cap(run, None), cost) is over


@pytest.mark.parametrize(
    ("max_cost", "budget", "cap"),
    [
        (2.0, 10.0, 2.0),  # its own cap wins
        (None, 1.5, 1.5 * RU.ESTIMATE_CAP_FACTOR),  # else a multiple of its estimate
        (None, None, None),  # else none: the product's ceiling alone
        (None, 0.0, None),
    ],
)
def test_runs_cost_cap(max_cost: float | None, budget: float | None, cap: float | None) -> None:
    run = RU.open_run("f1", 1, now=T0, max_cost_usd=max_cost)
    assert RU.cost_cap(run, budget) == cap
    assert RU.cost_cap(None, budget) is None


def test_runs_check_fence_names_the_limit_that_ended_the_attempt() -> None:
    ended = J.end_at_limit(_leased_job(), "timeout", now=T0, reason="late")
    with pytest.raises(J.TimedOut) as caught:
        J.check_fence(ended, "f1", 1)
    assert caught.value.code == "timeout"
    with pytest.raises(Fenced) as other:
        J.check_fence(ended, "f2", 1)  # not that run's holder: plain fenced
    assert other.value.code == "fenced"


# --- the coordinator: each way an attempt ends ------------------------------------------


def test_runs_ship_records_the_report(coord: Coordinator) -> None:
    job_id = submit(coord)
    claim(coord)
    coord.report(P, job_id, "f1", 1, stage=Stage.BUILDING, progress={"costUsd": 0.1})
    assert last_run(coord, job_id).costUsd == 0.1
    result = {"costUsd": 0.3, "usage": {"input": 5}, "branch": "fleet/x", "commit": "abc"}
    job = coord.report(P, job_id, "f1", 1, stage=Stage.SHIPPED, result=result, reason="done")
    run = job.runs[-1]
    assert job.stage is Stage.SHIPPED and run.outcome == "shipped" and run.reason == "done"
    assert run.costUsd == 0.3 and run.tokens.input == 5 and run.commit == "abc"


def test_runs_fail_retry_and_retry_final(coord: Coordinator) -> None:
    failed = submit(coord)
    claim(coord)
    coord.report(P, failed, "f1", 1, stage=Stage.FAILED, result={"exitCode": 2})
    assert last_run(coord, failed).outcome == "failed"
    assert last_run(coord, failed).exitCode == 2

    retried = submit(coord, maxAttempts=2)
    for epoch, outcome in ((1, "retry"), (2, "failed")):
        claim(coord)
        job = coord.report(P, retried, "f1", epoch, stage=Stage.FAILED, retryable=True)
        assert job.runs[-1].outcome == outcome
    assert job.stage is Stage.DEAD_LETTER and [r.epoch for r in job.runs] == [1, 2]


def test_runs_release_reaper_take_back_and_cancel(coord: Coordinator, clock: ManualClock) -> None:
    job_id = submit(coord)
    claim(coord)
    assert coord.release(P, job_id, "f1", 1).runs[-1].outcome == "released"
    claim(coord)
    clock.advance(400)  # past the 300 s lease
    coord.reap(P)
    assert last_run(coord, job_id).outcome == "taken_back"
    held = claim(coord)
    taken = coord.take_back(P, job_id, held.epoch, "stalled")
    assert taken is not None and taken.runs[-1].outcome == "taken_back"
    claim(coord, "f2")  # f1 failed it twice: the scheduler prefers another factory
    job = coord.operator(P, job_id, Action.CANCEL, "o")
    assert job.runs[-1].outcome == "fenced"
    assert [r.outcome for r in job.runs] == ["released", "taken_back", "taken_back", "fenced"]
    assert all(r.endedAt is not None for r in job.runs)


def test_runs_preemption_takes_the_attempt_back(coord: Coordinator, clock: ManualClock) -> None:
    coord.put_product_settings(P, preemption={"enabled": True, "afterSeconds": 0})
    coord.register_factory(P, factory("only", seats=1), None)
    low = submit(coord, priority=1)
    claim(coord, "only")
    submit(coord, priority=9)
    clock.advance(1)
    assert coord.reap(P).preempted == [low]
    assert last_run(coord, low).outcome == "taken_back"


def test_runs_review_closes_the_attempt_as_shipped(coord: Coordinator) -> None:
    job_id = submit(coord, review=1)
    claim(coord)
    coord.report(P, job_id, "f1", 1, stage=Stage.BUILDING)
    job = coord.report(P, job_id, "f1", 1, stage=Stage.SHIPPED, result={"costUsd": 0.2})
    assert job.stage is Stage.REVIEW
    assert job.runs[-1].outcome == "shipped" and job.runs[-1].costUsd == 0.2


# --- limits -------------------------------------------------------------------------------


def test_runs_claim_limits_come_from_the_manifest_else_the_product(
    coord: Coordinator, clock: ManualClock
) -> None:
    own = submit(coord, timeoutSeconds=60, maxCostUsd=1.5, priority=9)
    result = coord.claim(P, factory())
    assert result is not None and result.job.id == own
    assert result.limits["timeoutSeconds"] == 60 and result.limits["maxCostUsd"] == 1.5
    settings = coord.put_product_settings(P, timeout_seconds=120)
    assert settings["timeoutSeconds"] == 120
    submit(coord)
    result = coord.claim(P, factory())
    assert result is not None and result.limits["timeoutSeconds"] == 120
    assert result.limits["maxCostUsd"] is None
    assert coord.put_product_settings(P, alerts={})["timeoutSeconds"] == 120  # kept
    assert coord.put_product_settings(P, timeout_seconds=None)["timeoutSeconds"] is None
    submit(coord)
    result = coord.claim(P, factory())
    assert result is not None and result.limits == {
        "timeoutSeconds": None,
        "deadlineAt": None,
        "maxCostUsd": None,
    }


def test_runs_renew_past_the_deadline_ends_the_attempt_with_timeout(
    coord: Coordinator, clock: ManualClock
) -> None:
    job_id = submit(coord, timeoutSeconds=10)
    claim(coord)
    clock.advance(5)
    coord.renew(P, job_id, "f1", 1)  # before the deadline: renewed
    clock.advance(5)
    with pytest.raises(J.TimedOut):
        coord.renew(P, job_id, "f1", 1)
    job = coord.get_job(P, job_id)  # the write landed before the 409
    assert job.stage is Stage.QUEUED and job.epoch == 2 and job.lease is None
    assert job.runs[-1].outcome == "timeout" and job.failedBy == ("f1",)
    assert job.events[-1].actor == "coordinator" and "deadline" in (job.events[-1].reason or "")
    for later in (
        lambda: coord.renew(P, job_id, "f1", 1),
        lambda: coord.report(P, job_id, "f1", 1, progress={"tokens": 5}),
        lambda: coord.release(P, job_id, "f1", 1),
    ):
        with pytest.raises(J.TimedOut):  # later calls at that epoch say why
            later()
    assert_runs_consistent(job)


def test_runs_timeout_on_the_last_attempt_dead_letters(
    coord: Coordinator, clock: ManualClock
) -> None:
    job_id = submit(coord, timeoutSeconds=10, maxAttempts=1)
    claim(coord)
    clock.advance(11)
    with pytest.raises(J.TimedOut):
        coord.renew(P, job_id, "f1", 1)
    job = coord.get_job(P, job_id)
    assert job.stage is Stage.DEAD_LETTER and job.runs[-1].outcome == "timeout"
    assert "attempts exhausted" in (job.events[-1].reason or "")


def test_runs_a_cost_over_the_cap_ends_the_attempt_and_settles_the_budget(
    coord: Coordinator,
) -> None:
    coord.budgets.put(P, 100.0)
    job_id = submit(coord, maxCostUsd=1.0, budget=2.0)
    claim(coord)
    coord.report(P, job_id, "f1", 1, progress={"costUsd": 0.9})  # under: recorded
    with pytest.raises(J.BudgetExceeded) as caught:
        coord.report(P, job_id, "f1", 1, progress={"costUsd": 1.25, "usage": {"output": 9}})
    assert caught.value.code == "budget_exceeded"
    job = coord.get_job(P, job_id)
    run = job.runs[-1]
    assert job.stage is Stage.QUEUED and job.epoch == 2 and job.costs == {"1": 1.0}
    # Recorded at the cap, not as reported: a factory cannot make the product's spend.
    assert run.outcome == "budget_exceeded" and run.costUsd == 1.0 and run.tokens.output == 9
    budget = coord.budgets.get(P)
    assert budget is not None and budget.spentUsd == pytest.approx(1.0)
    assert budget.reservedUsd == 0.0
    with pytest.raises(J.BudgetExceeded):
        coord.renew(P, job_id, "f1", 1)


def test_runs_a_shipped_report_over_the_cap_is_not_shipped(coord: Coordinator) -> None:
    job_id = submit(coord, maxCostUsd=1.0)
    claim(coord)
    coord.report(P, job_id, "f1", 1, stage=Stage.BUILDING)
    with pytest.raises(J.BudgetExceeded):
        coord.report(P, job_id, "f1", 1, stage=Stage.SHIPPED, result={"costUsd": 3.0})
    assert coord.get_job(P, job_id).stage is Stage.QUEUED


def test_runs_the_factorys_own_limit_failure_is_answered_normally(coord: Coordinator) -> None:
    job_id = submit(coord, maxCostUsd=1.0)
    claim(coord)
    job = coord.report(
        P,
        job_id,
        "f1",
        1,
        stage=Stage.FAILED,
        reason="cost cap reached",
        result={"costUsd": 1.1, "outcome": "budget_exceeded"},
    )
    assert job.stage is Stage.QUEUED and job.runs[-1].outcome == "budget_exceeded"
    over = submit(coord, maxCostUsd=1.0)
    claim(coord)
    job = coord.report(P, over, "f1", 1, stage=Stage.FAILED, result={"costUsd": 1.5})
    assert job.runs[-1].outcome == "budget_exceeded"  # its cost says why


# --- spilling and the read ---------------------------------------------------------------


def test_runs_spill_past_the_embedded_ones_and_read_back_oldest_first(
    coord: Coordinator,
) -> None:
    job_id = submit(coord, maxAttempts=20)
    total = RU.EMBEDDED_RUNS + 5
    for epoch in range(1, total + 1):
        claim(coord)
        coord.release(P, job_id, "f1", epoch)
    job = coord.get_job(P, job_id)
    assert len(job.runs) == RU.EMBEDDED_RUNS
    assert job.runsSpilledThrough == total - RU.EMBEDDED_RUNS
    spilled = coord.docs.query(RUNS_OF_JOB, P, {"jobId": job_id})
    assert [d["id"] for d in spilled][:2] == [f"run:{job_id}:1", f"run:{job_id}:2"]
    runs = coord.job_runs(P, job_id)
    assert [r.epoch for r in runs] == list(range(1, total + 1))
    assert all(r.outcome == "released" for r in runs)


def test_runs_http_reply_and_claim_limits_are_documented(
    app_context: AppContext, coord: Coordinator, tokens: Tokens
) -> None:
    job_id = submit(coord, timeoutSeconds=30, maxCostUsd=2.0, repo="https://example.com/r.git")
    issued = tokens.create_enrollment_token(P, "operator:test")
    token = tokens.enroll(issued.token, "fa", FactorySelf()).token
    reply = call(app_context, fleet_ops.claim, "POST", "/api/fleet/claim", token, {}).body
    documented(reply, "ClaimReply")
    assert reply["limits"]["timeoutSeconds"] == 30 and reply["limits"]["maxCostUsd"] == 2.0
    assert reply["job"]["repo"] == "https://example.com/r.git" and reply["job"]["pr"] is False
    coord.report(P, job_id, "fa", 1, stage=Stage.BUILDING)
    coord.report(P, job_id, "fa", 1, stage=Stage.SHIPPED, result={"costUsd": 0.5})
    runs = f"/api/fleet/jobs/{job_id}/runs"
    status, body, _ = call(
        app_context, jobs_http.job_runs, "GET", runs, OPERATOR, product=P, id=job_id
    )
    assert status == 200
    documented(body, "JobRuns")
    assert [r["outcome"] for r in body["runs"]] == ["shipped"]
    assert body["runs"][0]["costUsd"] == 0.5
    status, _, _ = call(app_context, jobs_http.job_runs, "GET", runs, token, product=P, id=job_id)
    assert status == 403  # no longer its job: same rule as GET job
