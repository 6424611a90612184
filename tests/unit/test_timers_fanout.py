"""The timers' ticks (``fleet.timers``) over the in-memory twin with a manual clock: what a
tick costs with nothing due, whatever the number of products; one message per product on
``fleet-passes`` (inline for exactly one); passes run twice change nothing twice; a pass
given up raises ``pass_failed`` until its window is over; a message that is not one is
dropped.

Timers are fired as the host fires them (``tests.support.handlers``): ``tick`` then
delivers the queued messages as the host would; ``fire`` stops before, to look at the queue.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from azure.functions.queue import QueueMessage

from fleet import timers
from fleet.context import AppContext, context_for
from fleet.coordinator import ClaimResult, Coordinator
from fleet.coordinator.clock import ManualClock
from fleet.coordinator.fleet_health import Beat
from fleet.coordinator.metrics import ALERTS_ID, METRICS_ID, PASS_FAILURE_WINDOW_SECONDS
from fleet.coordinator.product import SYSTEM_PARTITION
from fleet.coordinator.sweep import SweepConfig
from fleet.domain.models import Factory, Job, format_ts
from fleet.domain.stages import Action, Stage
from fleet.errors import NotFound, StoreUnavailable
from fleet.settings import Settings
from fleet.store.memory import (
    MemoryDocumentStore,
    MemoryQueueStore,
    MemoryTableStore,
    memory_stores,
)
from fleet.timers import MAX_MESSAGE_CHARS, PASSES_QUEUE, POISON_QUEUE, pass_message, sweep
from tests.support.builders import factory_view as view
from tests.support.builders import manifest
from tests.support.handlers import (
    MAX_DEQUEUE_COUNT,
    OPERATOR,
    call,
    deliver,
    documented,
    functions,
    tick,
)

SETTINGS = Settings.from_env({"FLEET_STORE": "memory", "FLEET_OPERATOR_TOKENS": OPERATOR})
TIMERS = ("reaper_timer", "healer_timer", "metrics_timer")
LEASE_SECONDS = 300  # a job's default lease


def app() -> AppContext:
    return context_for(SETTINGS, memory_stores(), clock=ManualClock())


def clock_of(ctx: AppContext) -> ManualClock:
    clock = ctx.coordinator.clock
    assert isinstance(clock, ManualClock)
    return clock


def queue(ctx: AppContext) -> MemoryQueueStore:
    queues = ctx.stores.queues
    assert isinstance(queues, MemoryQueueStore)
    return queues


def documents(ctx: AppContext) -> MemoryDocumentStore:
    docs = ctx.stores.documents
    assert isinstance(docs, MemoryDocumentStore)
    return docs


def fire(ctx: AppContext, timer: str) -> None:
    """The timer function alone, as the host calls it: its messages are left on the queue."""
    functions(ctx)[timer](SimpleNamespace(past_due=False))


def messages(ctx: AppContext) -> list[dict[str, Any]]:
    return [json.loads(m) for m in queue(ctx).pending(PASSES_QUEUE)]


def idle(coord: Coordinator, product: str) -> None:
    """A product as an operator leaves it: one job submitted, then cancelled."""
    job = coord.submit(product, manifest(), "operator:o")[0]
    coord.operator(product, job.id, Action.CANCEL, "operator:o")


def claimed(coord: Coordinator, product: str) -> ClaimResult:
    coord.submit(product, manifest(), "operator:o")
    claim = coord.claim(product, view("f1"))
    assert claim is not None
    return claim


def heartbeat(ctx: AppContext, product: str) -> None:
    ctx.health.heartbeat(product, "f1", Beat(capabilities=("python",), seats=2))


def job_of(ctx: AppContext, product: str, claim: ClaimResult) -> Job:
    return ctx.coordinator.get_job(product, claim.job.id)


def expired(job: Job) -> list[int]:
    """The epochs of the job's ``expire`` events."""
    return [e.epoch for e in job.events if e.type == Action.EXPIRE.value]


# --- requests per idle tick: flat -------------------------------------------------------


def idle_tick_costs(size: int) -> dict[str, dict[str, int]]:
    """The store requests of one tick of each timer over ``size`` idle products, each with a
    live factory waiting for work, once the timers' first ticks have seen them made."""
    ctx = app()
    products = [f"idle-{n:04d}" for n in range(size)]
    for product in products:
        idle(ctx.coordinator, product)
        heartbeat(ctx, product)
    clock_of(ctx).advance(60)
    for timer in TIMERS:
        tick(ctx, timer)
    clock_of(ctx).advance(60)
    for product in products:  # still beating: none is silent
        heartbeat(ctx, product)
    costs: dict[str, dict[str, int]] = {}
    for timer in TIMERS:
        with ctx.stores.counters.measure() as cost:
            assert tick(ctx, timer) == []
        costs[timer] = dict(cost)
    assert queue(ctx).pending(PASSES_QUEUE) == []
    return costs


def test_tick_requests_with_nothing_due_do_not_grow_with_the_products() -> None:
    few, many = idle_tick_costs(3), idle_tick_costs(30)
    assert few == many
    # Each: the mark's read, and its write when it moved (not the idle healer's: its round
    # robin is where it was). The reaper: the due, waiting, changed and undated-leases
    # queries; the healer: the leased and factories queries and the heartbeats scan; metrics:
    # the due, waiting, leased and changed queries. No send.
    assert few == {
        "reaper_timer": {"query": 4, "read": 1, "write": 1},
        "healer_timer": {"query": 2, "table_query": 1, "read": 1},
        "metrics_timer": {"query": 4, "read": 1, "write": 1},
    }


def expired_lease_tick(idle_products: int) -> tuple[dict[str, int], Job]:
    """One reaper tick over ``idle_products`` idle products and one whose job's lease has
    expired: its store requests, and the job after it."""
    ctx = app()
    clock = clock_of(ctx)
    for n in range(idle_products):
        idle(ctx.coordinator, f"idle-{n:04d}")
    # Made long before: older than a timer's first look back (a burst of changes this large
    # within the sweep's slack is test_sweep's stuck-mark case).
    clock.advance(SweepConfig().first_lookback_seconds + 60)
    assert tick(ctx, "reaper_timer") == []  # the previous tick: its mark
    claim = claimed(ctx.coordinator, "busy")
    clock.advance(LEASE_SECONDS + 1)
    with ctx.stores.counters.measure() as cost:
        assert tick(ctx, "reaper_timer") == []  # one product: passed inline
    return dict(cost), job_of(ctx, "busy", claim)


def test_tick_requeues_an_expired_lease_among_a_thousand_idle_products_at_flat_cost() -> None:
    small_cost, small_job = expired_lease_tick(10)
    large_cost, large_job = expired_lease_tick(1000)
    for job in (small_job, large_job):
        assert job.stage is Stage.QUEUED and expired(job) == [job.epoch]
    assert large_cost == small_cost
    assert "queue_send" not in large_cost


# --- fan-out ------------------------------------------------------------------------------


def test_tick_hands_each_product_s_pass_to_its_own_message() -> None:
    ctx = app()
    clock = clock_of(ctx)
    claims = {}
    for product in ("a-first", "b-second"):
        claims[product] = claimed(ctx.coordinator, product)
        clock.advance(1)  # a-first's lease expires first
    clock.advance(LEASE_SECONDS)
    fire(ctx, "reaper_timer")
    at = format_ts(clock.now())
    assert messages(ctx) == [
        {"timer": "reaper", "product": "a-first", "at": at},
        {"timer": "reaper", "product": "b-second", "at": at},
    ]
    # Handed out, not passed: the leases are still there until the messages are delivered.
    assert [job_of(ctx, p, c).stage for p, c in claims.items()] == [Stage.ASSIGNED] * 2
    assert deliver(ctx) == ["done", "done"]
    assert [job_of(ctx, p, c).stage for p, c in claims.items()] == [Stage.QUEUED] * 2


def test_tick_passes_exactly_one_product_inline() -> None:
    ctx = app()
    idle(ctx.coordinator, "quiet")
    clock_of(ctx).advance(60)
    tick(ctx, "reaper_timer")
    claim = claimed(ctx.coordinator, "busy")
    clock_of(ctx).advance(LEASE_SECONDS + 1)
    with ctx.stores.counters.measure() as cost:
        fire(ctx, "reaper_timer")
    assert messages(ctx) == []
    assert "queue_send" not in cost
    assert job_of(ctx, "busy", claim).stage is Stage.QUEUED


def test_tick_hands_a_failed_inline_pass_to_the_queue(caplog: pytest.LogCaptureFixture) -> None:
    ctx = app()
    heartbeat(ctx, "prod")
    clock_of(ctx).advance(ctx.health.config.stale_seconds)
    assert sweep(ctx).silent(clock_of(ctx).now()) == ["prod"]
    # The healer's pass reads the product's heartbeats (its sweep scans the table apart).
    tables = ctx.stores.tables
    assert isinstance(tables, MemoryTableStore)
    tables.inject("table_query", StoreUnavailable("throttled"))
    with caplog.at_level(logging.WARNING, logger="fleet.timers"):
        fire(ctx, "healer_timer")
    assert [(m["timer"], m["product"]) for m in messages(ctx)] == [("healer", "prod")]
    assert any("handed to the queue" in r.message for r in caplog.records)
    assert Factory.from_doc(ctx.stores.documents.read("prod", "factory-f1")).status == "live"
    assert deliver(ctx) == ["done"]
    assert Factory.from_doc(ctx.stores.documents.read("prod", "factory-f1")).status == "stale"


def test_tick_hands_an_inline_pass_that_fails_in_any_way_to_the_queue(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not only store errors: a pass that raises anything goes to the queue, whose rules
    retry it and, failing every delivery, poison it and raise pass_failed (kept here, it
    would fail every tick and alert no one)."""
    ctx = app()
    idle(ctx.coordinator, "prod")
    clock_of(ctx).advance(60)

    def broken(context: AppContext, product: str) -> None:
        raise RuntimeError("a bug in the pass")

    monkeypatch.setitem(timers.PASSES, "reaper", broken)
    fire(ctx, "reaper_timer")
    assert [(m["timer"], m["product"]) for m in messages(ctx)] == [("reaper", "prod")]
    assert deliver(ctx) == ["poisoned"]
    assert active_alerts(ctx, "prod") == ["pass_failed"]


def test_tick_whose_send_fails_keeps_no_mark_and_the_next_tick_finds_the_same_products() -> None:
    ctx = app()
    for product in ("a-first", "b-second"):
        idle(ctx.coordinator, product)
    clock_of(ctx).advance(60)
    queue(ctx).inject("queue_send", StoreUnavailable("queue throttled"))
    with pytest.raises(StoreUnavailable):
        fire(ctx, "reaper_timer")
    with pytest.raises(NotFound):
        ctx.stores.documents.read(SYSTEM_PARTITION, "sweep-reaper")
    clock_of(ctx).advance(60)
    fire(ctx, "reaper_timer")
    assert [m["product"] for m in messages(ctx)] == ["a-first", "b-second"]


# --- idempotency ----------------------------------------------------------------------------


def test_pass_message_delivered_twice_requeues_the_job_once() -> None:
    ctx = app()
    clock = clock_of(ctx)
    claims = {p: claimed(ctx.coordinator, p) for p in ("a-first", "b-second")}
    clock.advance(LEASE_SECONDS + 1)
    fire(ctx, "reaper_timer")
    for body in queue(ctx).take(PASSES_QUEUE):  # at-least-once: each delivered twice
        queue(ctx).send(PASSES_QUEUE, body)
        queue(ctx).send(PASSES_QUEUE, body)
    assert deliver(ctx) == ["done"] * 4
    for product, claim in claims.items():
        job = job_of(ctx, product, claim)
        assert job.stage is Stage.QUEUED
        assert job.epoch == claim.lease.epoch + 1  # fenced once
        assert expired(job) == [job.epoch]  # one expire event


def test_metrics_message_delivered_twice_raises_its_alert_once() -> None:
    ctx = app()
    ctx.coordinator.record_pass_failure("prod", {"timer": "reaper", "messageId": "m-lost"})
    at = format_ts(clock_of(ctx).now())
    for _ in range(2):
        queue(ctx).send(PASSES_QUEUE, pass_message("metrics", "prod", at))
    assert deliver(ctx) == ["done", "done"]
    alerts = ctx.monitor.alerts("prod")
    assert [a["key"] for a in alerts["active"]] == ["pass_failed"]
    assert [(e["kind"], e["key"]) for e in alerts["history"]] == [("raised", "pass_failed")]


# --- a pass given up ----------------------------------------------------------------------


def two_changed(timer: str) -> AppContext:
    """Two products changed, and ``timer`` fired: their two messages wait on the queue."""
    ctx = app()
    for product in ("a-first", "b-second"):
        idle(ctx.coordinator, product)
        clock_of(ctx).advance(1)
    clock_of(ctx).advance(60)
    fire(ctx, timer)
    assert [m["product"] for m in messages(ctx)] == ["a-first", "b-second"]
    return ctx


def poisoned_metrics_pass() -> AppContext:
    """Two products changed; the metrics tick's pass over the first fails on every delivery
    (its queries throttled) until it is poisoned."""
    ctx = two_changed("metrics_timer")
    documents(ctx).inject("query", StoreUnavailable("throttled"), times=MAX_DEQUEUE_COUNT)
    assert deliver(ctx) == ["poisoned", "done"]
    return ctx


def active_alerts(ctx: AppContext, product: str) -> list[str]:
    return [a["key"] for a in ctx.monitor.alerts(product)["active"]]


def test_pass_failing_every_delivery_is_poisoned_and_raises_pass_failed() -> None:
    ctx = poisoned_metrics_pass()
    now = clock_of(ctx).now()
    record = ctx.stores.documents.read("a-first", "pass-failures")
    assert [(f["timer"], f["at"]) for f in record["failures"]] == [("metrics", format_ts(now))]
    assert record["dueAt"] == format_ts(now + timedelta(seconds=PASS_FAILURE_WINDOW_SECONDS))
    assert active_alerts(ctx, "a-first") == ["pass_failed"]
    assert ctx.stores.documents.read("a-first", ALERTS_ID)["active"]["pass_failed"]["severity"] == (
        "critical"
    )
    # The metrics reply says so (what GET /api/fleet/metrics answers, as documented).
    reply = call(ctx, "metrics", token=OPERATOR, product="a-first")
    assert reply.status == 200
    documented(reply.body, "Metrics")
    assert reply.body["passFailures"] == {
        "count": 1,
        "timers": ["metrics"],
        "lastAt": format_ts(now),
        "windowSeconds": PASS_FAILURE_WINDOW_SECONDS,
    }
    # The other product's pass was done, and raised nothing.
    assert ctx.stores.documents.read("b-second", METRICS_ID)["passFailures"]["count"] == 0
    assert active_alerts(ctx, "b-second") == []
    assert queue(ctx).pending(POISON_QUEUE) == []


def test_pass_given_up_whose_alert_cannot_be_raised_at_once_is_raised_by_the_next_tick(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The poison function records the failure, due at once; its own metrics pass fails too
    (the product's store still throttled): the next metrics tick passes the product for the
    record and raises the alert."""
    ctx = two_changed("metrics_timer")
    run = ctx.monitor.run

    def throttled(product: str) -> Any:  # a-first's passes fail, the poison function's too
        if product == "a-first":
            raise StoreUnavailable("still throttled")
        return run(product)

    monkeypatch.setattr(ctx.monitor, "run", throttled)
    with caplog.at_level(logging.WARNING, logger="fleet.timers"):
        assert deliver(ctx) == ["poisoned", "done"]
    monkeypatch.undo()
    assert any("left to the next metrics tick" in r.message for r in caplog.records)
    assert active_alerts(ctx, "a-first") == []
    now = clock_of(ctx).now()
    assert ctx.stores.documents.read("a-first", "pass-failures")["dueAt"] == format_ts(now)
    clock_of(ctx).advance(30)
    assert tick(ctx, "metrics_timer") == []  # one product, due: inline
    assert active_alerts(ctx, "a-first") == ["pass_failed"]
    record = ctx.stores.documents.read("a-first", "pass-failures")
    assert record["dueAt"] == format_ts(now + timedelta(seconds=PASS_FAILURE_WINDOW_SECONDS))


def test_pass_failed_clears_after_its_window_and_the_product_is_idle_again() -> None:
    ctx = poisoned_metrics_pass()
    clock = clock_of(ctx)
    clock.advance(PASS_FAILURE_WINDOW_SECONDS + 1)
    assert sweep(ctx).due(clock.now()).products == ["a-first"]
    assert tick(ctx, "metrics_timer") == []  # one product: inline
    assert active_alerts(ctx, "a-first") == []
    history = ctx.monitor.alerts("a-first")["history"]
    assert [(e["kind"], e["key"]) for e in history] == [
        ("cleared", "pass_failed"),
        ("raised", "pass_failed"),
    ]
    assert "dueAt" not in ctx.stores.documents.read("a-first", "pass-failures")
    clock.advance(60)
    found = sweep(ctx)
    assert found.due(clock.now()).products == []
    assert {t: found.products(t) for t in ("reaper", "healer", "metrics")} == {
        "reaper": [],
        "healer": [],
        "metrics": [],
    }


# --- a message that is not one ------------------------------------------------------------

MALFORMED = {
    "not JSON": b"reaper prod",
    "not UTF-8": b"\xff\xfe\xfd",
    "not an object": b'["reaper", "prod"]',
    "no product": b'{"timer": "reaper"}',
    "unknown timer": b'{"timer": "janitor", "product": "prod", "at": "x"}',
    "product not a name": b'{"timer": "reaper", "product": "../prod", "at": "x"}',
    "product not text": b'{"timer": "reaper", "product": 7, "at": "x"}',
    "too long": json.dumps(
        {"timer": "reaper", "product": "prod", "at": "x", "pad": "x" * MAX_MESSAGE_CHARS}
    ).encode(),
}


@pytest.mark.parametrize("function", ["fleet_pass", "fleet_pass_poisoned"])
@pytest.mark.parametrize("body", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_pass_message_is_dropped_with_an_error_and_changes_nothing(
    function: str, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = app()
    claim = claimed(ctx.coordinator, "prod")  # what a reaper pass over prod would requeue
    clock_of(ctx).advance(LEASE_SECONDS + 1)
    message = QueueMessage(id="bad-1", body=body, dequeue_count=1)  # type: ignore[no-untyped-call]
    with (
        caplog.at_level(logging.ERROR, logger="fleet.timers"),
        ctx.stores.counters.measure() as cost,
    ):
        functions(ctx)[function](message)
    assert cost == {}
    assert any(
        r.levelno == logging.ERROR and "bad-1" in r.message and "dropped" in r.message
        for r in caplog.records
    )
    assert job_of(ctx, "prod", claim).stage is Stage.ASSIGNED
    with pytest.raises(NotFound):
        ctx.stores.documents.read("prod", "pass-failures")
