"""The operator's lists over HTTP on the in-memory twin: the fleet list carries each factory's
last heartbeat at a fixed cost whatever the fleet's size, and the job list pages by id."""

from __future__ import annotations

from typing import Any

import pytest

from fleet.context import AppContext
from fleet.coordinator import Coordinator
from fleet.coordinator.clock import ManualClock
from fleet.coordinator.fleet_health import Beat, FleetHealth, HealthConfig, JobProgress
from fleet.coordinator.tokens import Tokens
from fleet.domain.manifest import Manifest
from fleet.domain.models import Job
from fleet.domain.scheduler import FactoryView
from fleet.domain.stages import Action, Stage
from fleet.http import fleet_ops, jobs
from fleet.http.parsing import FactorySelf
from fleet.http.views import JobSummary
from fleet.store.ports import Stores
from fleet.store.queries import EVENTS_CHANGED_SINCE, JOB_SUMMARY_FIELDS, JOBS_PAGE
from tests.support.handlers import OPERATOR, call, documented
from tests.unit.conftest import counting_entropy

P = "prod"


@pytest.fixture
def health(coord: Coordinator) -> FleetHealth:
    return FleetHealth(coord, HealthConfig(), entropy=counting_entropy())


def enroll(tokens: Tokens, name: str) -> str:
    issued = tokens.create_enrollment_token(P, "operator:test")
    return tokens.enroll(issued.token, name, FactorySelf(capabilities=("python",), seats=4)).token


def get(
    context: AppContext, handler: Any, token: str, product: str | None = P, **params: str
) -> tuple[int, dict[str, Any]]:
    status, body, _ = call(
        context, handler, "GET", "/api/fleet/x", token, product=product, params=params
    )
    return status, body


def submit(coord: Coordinator, n: int) -> list[str]:
    """``n`` jobs' ids, newest first: the order of a jobs page."""
    ids = [
        coord.submit(P, Manifest(title=f"job {i}", body="x"), "operator:o")[0].id for i in range(n)
    ]
    return ids[::-1]


def held_by(coord: Coordinator, name: str) -> str:
    """A job claimed by ``name`` and reported building."""
    claim = coord.claim(P, FactoryView(id=name, capabilities=frozenset({"python"}), seats=4))
    assert claim is not None
    coord.report(P, claim.job.id, name, claim.lease.epoch, stage=Stage.BUILDING)
    return claim.job.id


# --- the fleet list ------------------------------------------------------------------


def test_lists_factories_cost_the_same_for_any_fleet_size(
    app_context: AppContext, coord: Coordinator, health: FleetHealth, stores: Stores
) -> None:
    costs: dict[int, dict[str, int]] = {}
    fleet = 0
    for size in (1, 5, 40):
        for n in range(fleet, size):
            health.heartbeat(P, f"f{n:02d}", Beat(capabilities=("python",), seats=2, load=1))
            health.command(P, f"f{n:02d}", "drain", by="alice")
        fleet = size
        with stores.counters.measure() as cost:
            status, body = get(app_context, fleet_ops.list_factories, OPERATOR)
        assert status == 200 and len(body["factories"]) == size
        assert all(f["heartbeat"]["pendingCount"] == 1 for f in body["factories"])
        costs[size] = cost
    # One query (the factory documents), two table queries (every heartbeat of the
    # product, every pending command of the product): no call per factory.
    assert costs[1] == costs[5] == costs[40] == {"query": 1, "table_query": 2}


def test_lists_factories_carry_the_last_heartbeat_in_brief(
    app_context: AppContext,
    coord: Coordinator,
    health: FleetHealth,
    tokens: Tokens,
    clock: ManualClock,
) -> None:
    f1 = enroll(tokens, "f1")
    enroll(tokens, "f2")  # never beats
    submit(coord, 1)
    job_id = held_by(coord, "f1")
    progress = JobProgress(job_id=job_id, lease_epoch=1, tokens=10, last_output_line="hi")
    health.heartbeat(P, "f1", Beat(capabilities=("python",), seats=4, load=1, jobs=(progress,)))
    health.command(P, "f1", "pause", by="alice")
    health.command(P, "f1", "restart-engine", by="alice")
    health.command(P, "f2", "drain", by="alice")
    clock.advance(12)
    status, body = get(app_context, fleet_ops.list_factories, OPERATOR)
    assert status == 200
    documented(body, "FactoryList")
    beats = {f["id"]: f["heartbeat"] for f in body["factories"]}
    assert beats["f1"] == {
        "at": "2026-01-01T00:00:00.000000Z",
        "ageSeconds": 12.0,
        "load": 1,
        "seats": 4,
        "jobs": [{"jobId": job_id, "leaseEpoch": 1, "idleSeconds": 12.0}],
        "pendingCount": 2,
        "pendingKinds": ["pause", "restart-engine"],
    }
    # Commands wait for a factory that never beat: no heartbeat, but they are counted.
    assert beats["f2"]["at"] is None and beats["f2"]["pendingKinds"] == ["drain"]
    # The per-factory endpoint (operators) tells as much; a factory's token lists the fleet
    # without anyone's heartbeat, and pays no table query for it.
    with app_context.stores.counters.measure() as cost:
        status, body = get(app_context, fleet_ops.list_factories, f1, product=None)
    assert status == 200 and all("heartbeat" not in f for f in body["factories"])
    documented(body, "FactoryList")
    assert "table_query" not in cost


def test_lists_factories_a_factory_without_heartbeat_or_command_has_null(
    app_context: AppContext, tokens: Tokens
) -> None:
    enroll(tokens, "quiet")
    status, body = get(app_context, fleet_ops.list_factories, OPERATOR)
    assert status == 200 and body["factories"][0]["heartbeat"] is None


# --- the job list: pages ---------------------------------------------------------------


def walk(
    context: AppContext, token: str, product: str | None = P, **params: str
) -> list[list[str]]:
    """Every page of the list, following ``next``."""
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        extra = {**params, **({"cursor": cursor} if cursor else {})}
        status, body = get(context, jobs.list_jobs, token, product, **extra)
        assert status == 200, body
        documented(body, "JobList")
        ids = [j["id"] for j in body["jobs"]]
        assert body["count"] == len(ids)
        pages.append(ids)
        cursor = body["next"]
        if cursor is None:
            return pages
        assert len(pages) < 50


def test_lists_jobs_pages_newest_first_and_follows_next(
    app_context: AppContext, coord: Coordinator, stores: Stores
) -> None:
    ids = submit(coord, 7)
    assert walk(app_context, OPERATOR, limit="3") == [ids[:3], ids[3:6], ids[6:]]
    assert walk(app_context, OPERATOR, limit="7") == [ids]  # exactly a page: no empty page after it
    assert walk(app_context, OPERATOR) == [ids]  # the default page (200)
    with stores.counters.measure() as cost:
        get(app_context, jobs.list_jobs, OPERATOR, limit="3")
    assert cost == {"query": 1}  # a bounded query (operator tokens need no read)


def test_lists_jobs_pages_keep_the_stage_filter(
    app_context: AppContext, coord: Coordinator
) -> None:
    ids = submit(coord, 6)
    for job_id in ids[1::2]:
        coord.operator(P, job_id, Action.CANCEL, "alice", "no")
    assert walk(app_context, OPERATOR, stage="cancelled", limit="2") == [ids[1:4:2], ids[5:]]
    assert walk(app_context, OPERATOR, stage="queued", limit="2") == [ids[0:3:2], ids[4:5]]
    assert walk(app_context, OPERATOR, stage="shipped") == [[]]


def test_lists_jobs_a_factory_pages_through_what_it_holds_and_what_is_in_review(
    app_context: AppContext, coord: Coordinator, tokens: Tokens, stores: Stores
) -> None:
    f1 = enroll(tokens, "f1")
    submit(coord, 8)
    mine = [held_by(coord, "f1") for _ in range(3)]
    theirs = [held_by(coord, "f2") for _ in range(3)]
    # One of f1's jobs and two of f2's go to review: f1 reads all three.
    coord.report(P, mine[0], "f1", 1, stage=Stage.REVIEW)
    for job_id in theirs[:2]:
        coord.report(P, job_id, "f2", 1, stage=Stage.REVIEW)
    readable = sorted([*mine, *theirs[:2]], reverse=True)
    assert walk(app_context, f1, product=None, limit="2") == [
        readable[:2],
        readable[2:4],
        readable[4:],
    ]
    assert walk(app_context, f1, product=None, stage="building") == [sorted(mine[1:], reverse=True)]
    in_review = sorted([mine[0], *theirs[:2]], reverse=True)
    assert walk(app_context, f1, product=None, stage="review", limit="1") == [
        [i] for i in in_review
    ]
    assert walk(app_context, f1, product=None, stage="queued") == [[]]
    # Two bounded queries a page (held, in review), plus the token's point read.
    with stores.counters.measure() as cost:
        get(app_context, jobs.list_jobs, f1, product=None, limit="2")
    assert cost == {"read": 1, "query": 2}


@pytest.mark.parametrize(
    ("params", "path", "code"),
    [
        ({"limit": "0"}, "limit", "invalid_integer"),
        ({"limit": "1001"}, "limit", "invalid_integer"),
        ({"limit": "ten"}, "limit", "invalid_integer"),
        ({"cursor": "not-a-cursor"}, "cursor", "invalid_cursor"),
        ({"cursor": jobs.encode_cursor("j01")}, "cursor", "invalid_cursor"),
        ({"cursor": "eyJ4IjoxfQ"}, "cursor", "invalid_cursor"),  # {"x":1}
        ({"stage": "done"}, "stage", "enum"),
    ],
)
def test_lists_jobs_bad_paging_parameters_are_400_with_the_field(
    app_context: AppContext, params: dict[str, str], path: str, code: str
) -> None:
    status, body = get(app_context, jobs.list_jobs, OPERATOR, **params)
    assert status == 400 and body["error"] == "validation_failed"
    assert [(p["path"], p["code"]) for p in body["details"]["problems"]] == [(path, code)]


def test_lists_jobs_the_largest_page_is_accepted(
    app_context: AppContext, coord: Coordinator
) -> None:
    ids = submit(coord, 2)
    assert get(app_context, jobs.list_jobs, OPERATOR, limit="1000")[1]["jobs"][1]["id"] == ids[1]


def test_lists_jobs_cursor_round_trips() -> None:
    job_id = "j" + "0" * 25 + "a"
    assert jobs.decode_cursor(jobs.encode_cursor(job_id)) == job_id


def test_lists_jobs_leave_out_what_a_holder_reports_and_read_none_of_it(
    app_context: AppContext, coord: Coordinator, stores: Stores
) -> None:
    (job_id,) = submit(coord, 1)
    claim = coord.claim(P, FactoryView(id="f1", capabilities=frozenset({"python"}), seats=4))
    assert claim is not None
    said = {"checkpoint": {"branch": "b"}, "progress": {"step": 2}, "result": {"ok": True}}
    coord.report(P, job_id, "f1", 1, stage=Stage.BUILDING, **said)  # type: ignore[arg-type]
    status, body = get(app_context, jobs.list_jobs, OPERATOR)
    (listed,) = body["jobs"]
    assert status == 200 and not {"body", "events", *said} & set(listed)
    documented(listed, "JobSummary")
    # The query itself reads none of them (nor the body and events).
    rows = stores.documents.query(JOBS_PAGE, P, {"stages": ["building"], "before": "~", "top": 1})
    assert not {"body", "events", *said} & set(rows[0])
    assert coord.get_job(P, job_id).checkpoint == {"branch": "b"}  # the job keeps them


def test_lists_jobs_summary_fields_are_the_jobs_but_the_large_ones() -> None:
    fields = {f.alias or name for name, f in Job.model_fields.items()}
    large = {"body", "events", "checkpoint", "progress", "result"}
    assert set(JOB_SUMMARY_FIELDS) == fields - large - {"_etag"}
    assert all(Job.model_fields[name].is_required() is False for name in large)
    assert set(JobSummary.model_fields) - set(JOB_SUMMARY_FIELDS) == large | {"etag", "holder"}


def test_lists_the_event_feed_reads_each_jobs_events_only(
    app_context: AppContext, coord: Coordinator, stores: Stores
) -> None:
    (job_id,) = submit(coord, 1)
    rows = stores.documents.query(EVENTS_CHANGED_SINCE, P, {"since": "", "top": 10})
    assert [sorted(r) for r in rows] == [["events", "id", "lastEventAt", "type"]]
    status, body = get(app_context, "product_events", OPERATOR)
    assert status == 200 and [e["jobId"] for e in body["events"]] == [job_id]
