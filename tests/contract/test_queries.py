"""Every named query gives the same answer on the twin and on the Cosmos emulator."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fleet.errors import NotFound
from fleet.store.ports import Stores
from fleet.store.queries import (
    ARTIFACTS_OF_JOB,
    CHANGED_PRODUCTS,
    CLAIM_OF_REQUEST,
    COUNT_JOBS_IN_STAGE,
    COUNT_LIVE_LEASES_OF_HOLDER,
    DUE_PRODUCTS,
    EVENTS_CHANGED_SINCE,
    EVENTS_OF_JOB,
    EXPIRED_LEASES,
    FLEET_FACTORIES,
    JOBS_CHANGED_SINCE,
    JOBS_OF_HOLDER_PAGE,
    JOBS_OLDEST_IN_STAGE,
    JOBS_PAGE,
    LEASED_FOR_DEMAND,
    LEASED_PRODUCTS,
    PROFILE_VERSIONS,
    QUEUED_FOR_DEMAND,
    RECENT_RUNS,
    STALLED_JOBS,
    UNDATED_LEASES,
    WAITING_PRODUCTS,
    NamedQuery,
)


def _job(partition: str, n: int, **fields: Any) -> dict[str, Any]:
    return {"id": f"j{n}", "productId": partition, "type": "job", **fields}


def _ids(rows: list[dict[str, Any]]) -> list[str]:
    return [r["id"] for r in rows]


def test_queries_expired_leases_only_leased_and_past_expiry_oldest_first(
    stores: Stores, partition: str
) -> None:
    docs = stores.documents
    docs.create(
        _job(partition, 1, stage="building", lease={"expiresAt": "2026-01-01T00:00:05.000000Z"})
    )
    docs.create(
        _job(partition, 2, stage="assigned", lease={"expiresAt": "2026-01-01T00:00:01.000000Z"})
    )
    docs.create(
        _job(partition, 3, stage="testing", lease={"expiresAt": "2026-01-01T00:01:00.000000Z"})
    )
    docs.create(_job(partition, 4, stage="queued", lease=None))
    docs.create(
        _job(partition, 5, stage="review", lease={"expiresAt": "2026-01-01T00:00:00.000000Z"})
    )
    rows = docs.query(EXPIRED_LEASES, partition, {"now": "2026-01-01T00:00:30.000000Z", "top": 10})
    assert _ids(rows) == ["j2", "j1"]


def test_queries_oldest_in_stage_and_counts(stores: Stores, partition: str) -> None:
    docs = stores.documents
    docs.create(_job(partition, 1, stage="queued", createdAt="2026-01-02", unroutable=True))
    docs.create(_job(partition, 2, stage="queued", createdAt="2026-01-01", unroutable=False))
    docs.create(_job(partition, 3, stage="shipped", createdAt="2025-01-01"))
    docs.create({"id": "x", "productId": partition, "type": "factory", "stage": "queued"})
    assert _ids(docs.query(JOBS_OLDEST_IN_STAGE, partition, {"stage": "queued", "top": 1})) == [
        "j2"
    ]
    assert docs.count(COUNT_JOBS_IN_STAGE, partition, {"stage": "queued"}) == 2
    assert docs.count(COUNT_JOBS_IN_STAGE, partition, {"stage": "failed"}) == 0


def test_queries_for_demand_read_only_its_fields_queued_oldest_first_and_leased(
    stores: Stores, partition: str
) -> None:
    docs = stores.documents
    docs.create(
        _job(partition, 1, stage="queued", createdAt="2026-01-02", capabilities=["python"])
        | {"budgetUsd": 1.5, "body": "large"}
    )
    docs.create(_job(partition, 2, stage="queued", createdAt="2026-01-01", capabilities=[]))
    docs.create(_job(partition, 3, stage="building", createdAt="2026-01-01", capabilities=["gpu"]))
    docs.create(_job(partition, 4, stage="shipped", createdAt="2025-01-01", capabilities=["x"]))
    docs.create({"id": "x", "productId": partition, "type": "factory", "stage": "queued"})
    rows = docs.query(QUEUED_FOR_DEMAND, partition, {"top": 10})
    assert rows == [
        {"capabilities": [], "createdAt": "2026-01-01"},
        {"capabilities": ["python"], "createdAt": "2026-01-02", "budgetUsd": 1.5},
    ]
    assert docs.query(QUEUED_FOR_DEMAND, partition, {"top": 1}) == rows[:1]
    assert docs.query(LEASED_FOR_DEMAND, partition, {"top": 10}) == [{"capabilities": ["gpu"]}]


def test_queries_recent_runs_only_jobs_ever_assigned_newest_first_with_their_fields(
    stores: Stores, partition: str
) -> None:
    docs = stores.documents
    run = {"epoch": 1, "factory": "f1", "outcome": "shipped"}
    docs.create(
        _job(partition, 1, stage="shipped", attempts=1, updatedAt="2026-01-02", runs=[run])
        | {"persona": "dev", "capabilities": ["python"], "body": "large"}
    )
    docs.create(
        _job(partition, 2, stage="failed", attempts=2, updatedAt="2026-01-03", runs=[run, run])
        | {"capabilities": []}
    )
    docs.create(_job(partition, 3, stage="queued", attempts=0, updatedAt="2026-01-04"))
    docs.create({"id": "f", "productId": partition, "type": "factory", "attempts": 3})
    rows = docs.query(RECENT_RUNS, partition, {"top": 10})
    assert rows == [
        {"capabilities": [], "runs": [run, run], "updatedAt": "2026-01-03"},
        {"persona": "dev", "capabilities": ["python"], "runs": [run], "updatedAt": "2026-01-02"},
    ]
    assert docs.query(RECENT_RUNS, partition, {"top": 1}) == rows[:1]


def test_queries_stalled_jobs_only_leased_and_flagged(stores: Stores, partition: str) -> None:
    docs = stores.documents
    docs.create(_job(partition, 1, stage="building", stalled=True, queueKey="5:b"))
    docs.create(_job(partition, 2, stage="testing", stalled=True, queueKey="5:a"))
    docs.create(_job(partition, 3, stage="building", stalled=False, queueKey="5:c"))
    docs.create(_job(partition, 4, stage="queued", stalled=True, queueKey="5:d"))
    docs.create(_job(partition, 5, stage="assigned", queueKey="5:e"))
    assert _ids(docs.query(STALLED_JOBS, partition, {"top": 10})) == ["j2", "j1"]
    assert _ids(docs.query(STALLED_JOBS, partition, {"top": 1})) == ["j2"]


def test_queries_events_of_job_after_a_sequence_in_order(stores: Stores, partition: str) -> None:
    docs = stores.documents
    for seq in (3, 1, 2, 4):
        docs.create(
            {"id": f"ja:{seq}", "productId": partition, "type": "event", "jobId": "ja", "seq": seq}
        )
    docs.create({"id": "jb:1", "productId": partition, "type": "event", "jobId": "jb", "seq": 1})
    rows = docs.query(EVENTS_OF_JOB, partition, {"jobId": "ja", "after": 1})
    assert [r["seq"] for r in rows] == [2, 3, 4]


def test_queries_jobs_changed_since(stores: Stores, partition: str) -> None:
    docs = stores.documents
    docs.create(_job(partition, 1, lastEventAt="2026-01-01T00:00:03.000000Z"))
    docs.create(_job(partition, 2, lastEventAt="2026-01-01T00:00:01.000000Z"))
    docs.create(_job(partition, 3, lastEventAt="2026-01-01T00:00:02.000000Z"))
    rows = docs.query(
        EVENTS_CHANGED_SINCE, partition, {"since": "2026-01-01T00:00:02.000000Z", "top": 10}
    )
    assert _ids(rows) == ["j3", "j1"]
    # any document holding events is in the feed: a factory's, one logged beside its state
    for doc_id, at in (
        ("factory-f1", "2026-01-01T00:00:04.000000Z"),
        ("fev-x", "2026-01-01T00:00:05.000000Z"),
    ):
        docs.create(
            {
                "id": doc_id,
                "productId": partition,
                "type": "fleet_event",
                "lastEventAt": at,
                "events": [{"seq": 1}],
            }
        )
    docs.create({"id": "budget", "productId": partition, "type": "budget"})  # no events: not read
    rows = docs.query(
        EVENTS_CHANGED_SINCE, partition, {"since": "2026-01-01T00:00:02.000000Z", "top": 10}
    )
    assert _ids(rows) == ["j3", "j1", "factory-f1", "fev-x"]
    jobs_only = docs.query(
        JOBS_CHANGED_SINCE, partition, {"since": "2026-01-01T00:00:02.000000Z", "top": 10}
    )
    assert _ids(jobs_only) == ["j3", "j1"]  # the tracker echo's: jobs alone
    assert rows[-1] == {
        "id": "fev-x",
        "type": "fleet_event",
        "lastEventAt": "2026-01-01T00:00:05.000000Z",
        "events": [{"seq": 1}],
    }


def test_queries_profile_versions_newest_first(stores: Stores, partition: str) -> None:
    docs = stores.documents
    for version in (1, 3, 2):
        docs.create(
            {
                "id": f"profile-dev-{version}",
                "productId": partition,
                "type": "profile",
                "name": "dev",
                "version": version,
            }
        )
    rows = docs.query(PROFILE_VERSIONS, partition, {"name": "dev", "top": 2})
    assert [r["version"] for r in rows] == [3, 2]


def test_queries_jobs_page_newest_first_before_a_cursor_in_some_stages(
    stores: Stores, partition: str
) -> None:
    docs = stores.documents
    stages = ["queued", "building", "review", "shipped", "queued", "failed"]
    for n, stage in enumerate(stages):
        docs.create(_job(partition, 9 - n, stage=stage))  # created out of id order
    docs.create({"id": "j0", "productId": partition, "type": "factory", "stage": "queued"})
    every = ["queued", "blocked", "building", "review", "shipped", "failed"]
    page = {"stages": every, "before": "~", "top": 4}
    assert _ids(docs.query(JOBS_PAGE, partition, page)) == ["j9", "j8", "j7", "j6"]
    assert _ids(docs.query(JOBS_PAGE, partition, {**page, "before": "j6"})) == ["j5", "j4"]
    assert _ids(docs.query(JOBS_PAGE, partition, {**page, "before": "j4"})) == []
    queued = {"stages": ["queued"], "before": "j9", "top": 10}
    assert _ids(docs.query(JOBS_PAGE, partition, queued)) == ["j5"]


def test_queries_jobs_of_holder_page(stores: Stores, partition: str) -> None:
    docs = stores.documents
    docs.create(_job(partition, 1, stage="building", lease={"holder": "f1", "epoch": 1}))
    docs.create(_job(partition, 2, stage="review", lease={"holder": "f2", "epoch": 1}))
    docs.create(_job(partition, 3, stage="shipped", lease={"holder": "f1", "epoch": 2}))
    docs.create(_job(partition, 4, stage="queued", lease=None))
    docs.create(_job(partition, 5, stage="testing", lease={"holder": "f1", "epoch": 1}))
    mine = {"holder": "f1", "stages": ["building", "shipped", "testing"], "before": "~", "top": 2}
    assert _ids(docs.query(JOBS_OF_HOLDER_PAGE, partition, mine)) == ["j5", "j3"]
    assert _ids(docs.query(JOBS_OF_HOLDER_PAGE, partition, {**mine, "before": "j3"})) == ["j1"]
    shipped = {**mine, "stages": ["shipped"], "top": 10}
    assert _ids(docs.query(JOBS_OF_HOLDER_PAGE, partition, shipped)) == ["j3"]


def test_queries_claim_of_request_only_assigned_to_that_holder_with_that_id(
    stores: Stores, partition: str
) -> None:
    docs = stores.documents

    def lease(holder: str, request_id: str | None) -> dict[str, Any]:
        return {
            "holder": holder,
            "epoch": 1,
            "expiresAt": "2026-01-01T00:05:00.000000Z",
            "requestId": request_id,
        }

    docs.create(_job(partition, 1, stage="assigned", queueKey="4:b", lease=lease("f1", "r-1")))
    docs.create(_job(partition, 2, stage="assigned", queueKey="4:a", lease=lease("f2", "r-1")))
    docs.create(_job(partition, 3, stage="building", queueKey="4:c", lease=lease("f1", "r-1")))
    docs.create(_job(partition, 4, stage="assigned", queueKey="4:d", lease=lease("f1", "r-2")))
    docs.create(_job(partition, 5, stage="assigned", queueKey="4:e", lease=lease("f1", None)))
    docs.create(_job(partition, 6, stage="queued", queueKey="4:f", lease=None))
    docs.create(
        {
            "id": "x",
            "productId": partition,
            "type": "factory",
            "stage": "assigned",
            "queueKey": "0",
            "lease": lease("f1", "r-1"),
        }
    )
    ask = {"holder": "f1", "requestId": "r-1", "top": 2, "stages": ["assigned"]}
    assert _ids(docs.query(CLAIM_OF_REQUEST, partition, ask)) == ["j1"]
    # a claim that started its job: building too, in queue order
    started = {**ask, "stages": ["assigned", "building"]}
    assert _ids(docs.query(CLAIM_OF_REQUEST, partition, started)) == ["j1", "j3"]
    assert _ids(docs.query(CLAIM_OF_REQUEST, partition, {**ask, "holder": "f2"})) == ["j2"]
    assert _ids(docs.query(CLAIM_OF_REQUEST, partition, {**ask, "requestId": "r-2"})) == ["j4"]
    assert _ids(docs.query(CLAIM_OF_REQUEST, partition, {**ask, "requestId": "r-3"})) == []
    assert _ids(docs.query(CLAIM_OF_REQUEST, partition, {**ask, "holder": "f3"})) == []


def test_queries_count_live_leases_of_holder_only_leased_and_unexpired(
    stores: Stores, partition: str
) -> None:
    docs = stores.documents

    def lease(holder: str, expires: str) -> dict[str, Any]:
        return {"holder": holder, "epoch": 1, "expiresAt": f"2026-01-01T00:{expires}.000000Z"}

    docs.create(_job(partition, 1, stage="assigned", queueKey="1", lease=lease("f1", "05:00")))
    docs.create(_job(partition, 2, stage="building", queueKey="2", lease=lease("f1", "06:00")))
    docs.create(_job(partition, 3, stage="testing", queueKey="3", lease=lease("f1", "01:00")))
    docs.create(_job(partition, 4, stage="review", queueKey="4", lease=lease("f1", "09:00")))
    docs.create(_job(partition, 5, stage="building", queueKey="5", lease=lease("f2", "09:00")))
    docs.create(_job(partition, 6, stage="queued", queueKey="6", lease=None))
    ask = {"holder": "f1", "now": "2026-01-01T00:02:00.000000Z"}
    assert docs.count(COUNT_LIVE_LEASES_OF_HOLDER, partition, ask) == 2
    assert docs.count(COUNT_LIVE_LEASES_OF_HOLDER, partition, {**ask, "holder": "f2"}) == 1
    late = {**ask, "now": "2026-01-01T00:07:00.000000Z"}
    assert docs.count(COUNT_LIVE_LEASES_OF_HOLDER, partition, late) == 0


def test_queries_artifacts_of_job_newest_attempts_first_and_bounded(
    stores: Stores, partition: str
) -> None:
    docs = stores.documents

    def pointer(job: str, epoch: int, name: str) -> dict[str, Any]:
        return {
            "id": f"art-{job}-{epoch}-{name}",
            "productId": partition,
            "type": "artifact",
            "jobId": job,
            "epoch": epoch,
            "name": name,
        }

    for epoch, name in ((1, "a"), (3, "c"), (2, "b")):
        docs.create(pointer("ja", epoch, name))
    docs.create(pointer("jb", 9, "z"))
    docs.create({**pointer("ja", 9, "x"), "type": "agent_event"})
    rows = docs.query(ARTIFACTS_OF_JOB, partition, {"jobId": "ja", "top": 10})
    assert [r["name"] for r in rows] == ["c", "b", "a"]
    assert [
        r["name"] for r in docs.query(ARTIFACTS_OF_JOB, partition, {"jobId": "ja", "top": 2})
    ] == [
        "c",
        "b",
    ]


def test_queries_job_lists_read_only_their_fields(stores: Stores, partition: str) -> None:
    docs = stores.documents
    large = {"body": "b", "events": [{"seq": 1}], "checkpoint": {"c": 1}, "result": None}
    docs.create(
        _job(partition, 1, stage="queued", lastEventAt="2026-01-01T00:00:01.000000Z", **large)
    )
    page = {"stages": ["queued"], "before": "~", "top": 5}
    (row,) = docs.query(JOBS_PAGE, partition, page)
    # The fields the job has of the list's: a null is kept, a field it lacks is left out.
    assert row == {
        "id": "j1",
        "productId": partition,
        "type": "job",
        "stage": "queued",
        "lastEventAt": "2026-01-01T00:00:01.000000Z",
    }
    (row,) = docs.query(EVENTS_CHANGED_SINCE, partition, {"since": "", "top": 5})
    assert row == {
        "id": "j1",
        "type": "job",
        "lastEventAt": "2026-01-01T00:00:01.000000Z",
        "events": [{"seq": 1}],
    }
    docs.create(_job(partition, 2, stage="queued", persona=None))
    rows = docs.query(JOBS_PAGE, partition, page)
    assert rows[0] == {
        "id": "j2",
        "productId": partition,
        "type": "job",
        "stage": "queued",
        "persona": None,
    }


# --- across partitions: the timers' sweeps ---------------------------------------------
# These read the whole container, which on the local stack holds every other test's documents
# too (and is swept by the stack's own timers). So the documents here carry timestamps of an
# era no other document has (year 1 for what is due, 9999 for what changed), the answers are
# compared on the test's own partitions where a query has no such bound, and every document
# made is deleted afterwards.

Make = Callable[[dict[str, Any]], None]


@pytest.fixture
def made(stores: Stores) -> Iterator[Make]:
    """Creates a document; each is deleted once the test is over."""
    docs: list[tuple[str, str]] = []

    def make(doc: dict[str, Any]) -> None:
        stores.documents.create(doc)
        docs.append((doc["productId"], doc["id"]))

    yield make
    for partition, doc_id in docs:
        with contextlib.suppress(NotFound):
            stores.documents.delete(partition, doc_id)


def _early(seconds: int) -> str:
    return f"0001-01-01T00:{seconds // 60:02d}:{seconds % 60:02d}.000000Z"


def _late(seconds: int) -> str:
    return f"9999-01-01T00:{seconds // 60:02d}:{seconds % 60:02d}.000000Z"


def test_queries_due_products_across_partitions_oldest_first(
    stores: Stores, partition: str, made: Make
) -> None:
    a, b, c = partition, f"{partition}-b", f"{partition}-c"
    made({"id": "j1", "productId": a, "type": "job", "dueAt": _early(5)})
    made({"id": "j2", "productId": a, "type": "job", "dueAt": _early(1)})
    made({"id": "pass-failures", "productId": b, "type": "pass_failures", "dueAt": _early(2)})
    made({"id": "j3", "productId": c, "type": "job", "dueAt": _early(90)})  # not yet
    made({"id": "j4", "productId": c, "type": "job", "stage": "cancelled"})  # never
    made({"id": f"due-{a}", "productId": "_system", "type": "x", "dueAt": _early(0)})
    due = {"now": _early(60), "seen": [], "top": 10}
    assert stores.documents.query_across(DUE_PRODUCTS, due) == [
        {"productId": a, "dueAt": _early(1)},
        {"productId": b, "dueAt": _early(2)},
        {"productId": a, "dueAt": _early(5)},
    ]
    rows = stores.documents.query_across(DUE_PRODUCTS, {**due, "seen": [a]})
    assert rows == [{"productId": b, "dueAt": _early(2)}]
    rows = stores.documents.query_across(DUE_PRODUCTS, {**due, "top": 1})
    assert rows == [{"productId": a, "dueAt": _early(1)}]


def test_queries_changed_products_across_partitions_at_or_after_since(
    stores: Stores, partition: str, made: Make
) -> None:
    a, b, c = partition, f"{partition}-b", f"{partition}-c"
    made({"id": "j1", "productId": a, "type": "job", "lastEventAt": _late(3)})
    made({"id": "factory-f1", "productId": b, "type": "factory", "lastEventAt": _late(2)})
    made({"id": "fev-x", "productId": a, "type": "fleet_event", "lastEventAt": _late(7)})
    made({"id": "j2", "productId": c, "type": "job", "lastEventAt": _late(1)})  # before
    made({"id": "budget", "productId": c, "type": "budget"})  # no events
    made({"id": f"fev-{a}", "productId": "_system", "type": "x", "lastEventAt": _late(5)})
    since = {"since": _late(2), "at": [], "seen": [], "top": 10}
    assert stores.documents.query_across(CHANGED_PRODUCTS, since) == [
        {"productId": b, "lastEventAt": _late(2)},
        {"productId": a, "lastEventAt": _late(3)},
        {"productId": a, "lastEventAt": _late(7)},
    ]
    # Passed already for its events at exactly ``since``: those are left out, not later ones.
    rows = stores.documents.query_across(CHANGED_PRODUCTS, {**since, "at": [b, a]})
    assert rows == [
        {"productId": a, "lastEventAt": _late(3)},
        {"productId": a, "lastEventAt": _late(7)},
    ]
    rows = stores.documents.query_across(CHANGED_PRODUCTS, {**since, "seen": [b]})
    assert rows == [
        {"productId": a, "lastEventAt": _late(3)},
        {"productId": a, "lastEventAt": _late(7)},
    ]
    rows = stores.documents.query_across(CHANGED_PRODUCTS, {**since, "top": 1})
    assert rows == [{"productId": b, "lastEventAt": _late(2)}]


@pytest.mark.parametrize(
    ("query", "stages"),
    [
        (LEASED_PRODUCTS, ("assigned", "building", "testing")),
        (WAITING_PRODUCTS, ("queued", "review")),
    ],
    ids=["leased", "waiting"],
)
def test_queries_products_by_stage_across_partitions_in_product_order(
    stores: Stores, partition: str, made: Make, query: NamedQuery, stages: tuple[str, ...]
) -> None:
    a, b, c = partition, f"{partition}-b", f"{partition}-c"
    other = [s for s in ("queued", "building", "cancelled", "blocked") if s not in stages]
    made(_job(b, 1, stage=stages[0]))
    made(_job(a, 2, stage=stages[-1]))
    made(_job(a, 3, stage=stages[0]))
    for n, stage in enumerate(other):
        made(_job(c, 10 + n, stage=stage))
    made({"id": "x", "productId": c, "type": "factory", "stage": stages[0]})
    made(_job("_system", 6, stage=stages[0]) | {"id": f"j-{a}"})
    every = stores.documents.query_across(query, {"after": "", "top": 10_000})
    assert "_system" not in {r["productId"] for r in every}
    ours = [r for r in every if r["productId"] in (a, b, c)]
    assert ours == [{"productId": a}, {"productId": a}, {"productId": b}]
    assert [r["productId"] for r in every] == sorted(r["productId"] for r in every)
    # From after a product: the products after it, in order (a round robin goes on there).
    rows = stores.documents.query_across(query, {"after": a, "top": 10_000})
    assert [r for r in rows if r["productId"] in (a, b, c)] == [{"productId": b}]
    rows = stores.documents.query_across(query, {"after": "", "top": 1})
    assert len(rows) == 1 and rows[0] == every[0]


def test_queries_undated_leases_across_partitions_only_leased_jobs_without_due_at(
    stores: Stores, partition: str, made: Make
) -> None:
    a, b, c = partition, f"{partition}-b", f"{partition}-c"
    made(_job(a, 1, stage="building"))  # written before jobs kept dueAt
    made(_job(a, 2, stage="assigned"))
    made(_job(b, 3, stage="testing", dueAt=_early(1)))  # dated
    made(_job(c, 4, stage="queued"))  # not leased
    made(_job("_system", 5, stage="building") | {"id": f"j-{a}"})
    every = stores.documents.query_across(UNDATED_LEASES, {"seen": [], "top": 10_000})
    assert "_system" not in {r["productId"] for r in every}
    assert [r for r in every if r["productId"] in (a, b, c)] == [{"productId": a}] * 2
    others = sorted({r["productId"] for r in every} - {a})
    rows = stores.documents.query_across(UNDATED_LEASES, {"seen": [*others, a], "top": 10})
    assert rows == []


def test_queries_fleet_factories_across_partitions_only_those_in_a_fleet(
    stores: Stores, partition: str, made: Make
) -> None:
    a, b, c = partition, f"{partition}-b", f"{partition}-c"

    def factory(product: str, name: str, **fields: Any) -> dict[str, Any]:
        return {"id": f"factory-{name}", "productId": product, "type": "factory", **fields}

    seen = {"status": "stale", "revoked": False, "lastSeen": "2026-01-01T00:00:00.000000Z"}
    made(factory(a, "f1", deregistered=False, seats=4, ephemeral=True, **seen))
    made(factory(a, "f2", deregistered=False))  # a row has the fields the document has
    made(factory(b, "f3", deregistered=True, **seen))
    made(factory(c, "f4", **seen))  # not marked either way: not read
    made({**factory(c, "f5", deregistered=False), "type": "budget"})
    made({**factory("_system", f"f-{a}", deregistered=False)})
    rows = stores.documents.query_across(FLEET_FACTORIES)
    assert "_system" not in {r["productId"] for r in rows}
    ours = sorted((r for r in rows if r["productId"] in (a, b, c)), key=lambda r: str(r["id"]))
    assert ours == [
        {"productId": a, "id": "factory-f1", **seen, "ephemeral": True},
        {"productId": a, "id": "factory-f2"},
    ]
