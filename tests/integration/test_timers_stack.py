"""The timers and their queue triggers on the local stack: the app's reaper timer (called as
the host calls it) sweeps the Cosmos emulator and hands each due product's pass to a message
on Azurite's queue; the local host's queue runner (``devtools.queues``, as the Functions host
does) delivers each to the app's ``fleet_pass``, retries a failing one and moves it to the
poison queue after ``maxDequeueCount``, where ``fleet_pass_poisoned`` raises ``pass_failed``.

Everything here runs in a Cosmos container and on a queue of the test's own, so the session
host's timers (which sweep the session's container and read the session's queue) never see
it, and it never sees theirs. The app's clock is a manual one: leases expire without a wait.
"""

from __future__ import annotations

import base64
import contextlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.core.exceptions import AzureError
from azure.functions.timer import TimerRequest
from azure.storage.queue import QueueClient

from devtools.host import AppIndex, index_app
from devtools.queues import Delivery, QueueRunner, QueueSettings, storage_queues
from fleet.context import AppContext, context_for
from fleet.coordinator.clock import ManualClock
from fleet.domain.models import format_ts
from fleet.domain.stages import Action, Stage
from fleet.errors import StoreUnavailable
from fleet.settings import Settings
from fleet.store.azure import azure_stores, cosmos_client
from fleet.store.decorator import DocumentsDecorator
from fleet.store.ports import DocumentStore
from fleet.store.queries import NamedQuery
from fleet.timers import pass_message
from function_app import build_app
from tests.support.builders import factory_view as view
from tests.support.builders import manifest

pytestmark = pytest.mark.integration

LEASE_SECONDS = 300  # a job's default lease


class Throttled(DocumentsDecorator):
    """The documents of the products in ``broken`` answer every query with a throttle."""

    def __init__(self, inner: DocumentStore) -> None:
        super().__init__(inner)
        self.broken: set[str] = set()

    def query(
        self, query: NamedQuery, partition: str, params: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        if partition in self.broken:
            raise StoreUnavailable(f"{partition} is throttled")
        return super().query(query, partition, params)


@dataclass
class Stack:
    env: dict[str, str]
    context: AppContext
    clock: ManualClock
    docs: Throttled
    index: AppIndex
    runner: QueueRunner

    @property
    def queue(self) -> str:
        return self.context.settings.passes_queue

    def fire(self, name: str) -> None:
        """The timer function, as the host fires it."""
        (timer,) = [t for t in self.index.timers if t.name == name]
        timer.handler(TimerRequest(past_due=False))  # type: ignore[no-untyped-call]

    def waiting(self, queue: str) -> list[str]:
        client = QueueClient.from_connection_string(self.env["AzureWebJobsStorage"], queue)
        return [base64.b64decode(m.content).decode() for m in client.peek_messages(32)]

    def drain(self, rounds: int = 20) -> list[Delivery]:
        """Poll the queues (the passes', then the poison one) until a round finds nothing."""
        deliveries: list[Delivery] = []
        for _ in range(rounds):
            got = self.runner.poll_once()
            if not got:
                return deliveries
            deliveries += got
        raise AssertionError(f"the queues never emptied: {deliveries}")


@pytest.fixture
def stack(stack_env: dict[str, str]) -> Iterator[Stack]:
    tag = uuid.uuid4().hex[:8]
    env = {**stack_env, "COSMOS_CONTAINER": f"timers-{tag}", "FLEET_PASSES_QUEUE": f"passes-{tag}"}
    settings = Settings.from_env(env)
    stores = azure_stores(settings, ensure=True)  # the container, the queue and its poison
    docs = Throttled(stores.documents)
    clock = ManualClock(datetime.now(UTC))
    context = context_for(settings, replace(stores, documents=docs), clock=clock)
    index = index_app(build_app(lambda: context), env)
    # The host's rules, quicker: a failed message is visible again at once.
    rules = QueueSettings(max_dequeue_count=3, visibility_timeout=0)
    runner = QueueRunner(index.queues, storage_queues(env), rules)
    try:
        yield Stack(env, context, clock, docs, index, runner)
    finally:
        cosmos = settings.cosmos
        assert cosmos is not None
        # Whatever is left behind on the session's stack, nothing reads.
        with contextlib.suppress(AzureError):
            database = cosmos_client(cosmos).get_database_client(cosmos.database)
            database.delete_container(cosmos.container)
        for queue in (settings.passes_queue, f"{settings.passes_queue}-poison"):
            with contextlib.suppress(AzureError):
                QueueClient.from_connection_string(env["AzureWebJobsStorage"], queue).delete_queue()


def claimed(stack: Stack, product: str) -> str:
    coord = stack.context.coordinator
    coord.submit(product, manifest(), "operator:o")
    claim = coord.claim(product, view("f1"))
    assert claim is not None
    return claim.job.id


def expires(stack: Stack, product: str, job_id: str) -> list[int]:
    """The epochs its ``expire`` events brought (one per requeue)."""
    job = stack.context.coordinator.get_job(product, job_id)
    return [e.epoch for e in job.events if e.type == Action.EXPIRE.value]


def test_timers_expired_leases_go_by_queue_to_the_queue_trigger_which_requeues_each_once(
    stack: Stack,
) -> None:
    jobs = {product: claimed(stack, product) for product in ("fan-a", "fan-b", "fan-c")}
    stack.fire("reaper_timer")  # the claims are changes: one pass each, nothing to requeue
    stack.drain()
    stack.clock.advance(LEASE_SECONDS + 1)
    stack.fire("reaper_timer")
    at = format_ts(stack.clock.now())
    assert sorted(stack.waiting(stack.queue)) == sorted(
        pass_message("reaper", product, at) for product in jobs
    )
    deliveries = stack.drain()
    assert sorted((d.function, d.outcome) for d in deliveries) == [("fleet_pass", "done")] * 3
    for product, job_id in jobs.items():
        job = stack.context.coordinator.get_job(product, job_id)
        assert (job.stage, job.epoch, expires(stack, product, job_id)) == (Stage.QUEUED, 2, [2])
    # A message delivered twice (at least once, as queues deliver): nothing done twice.
    client = QueueClient.from_connection_string(stack.env["AzureWebJobsStorage"], stack.queue)
    for _ in range(2):
        client.send_message(
            base64.b64encode(pass_message("reaper", "fan-a", "again").encode()).decode()
        )
    assert [d.outcome for d in stack.drain()] == ["done", "done"]
    assert expires(stack, "fan-a", jobs["fan-a"]) == [2]
    # The jobs wait in the queue now: the next tick passes each product again (waiting, and
    # changed), and a pass finds nothing more to do.
    stack.clock.advance(15)
    stack.fire("reaper_timer")
    assert len(stack.waiting(stack.queue)) == 3
    assert [d.outcome for d in stack.drain()] == ["done"] * 3
    for product, job_id in jobs.items():
        assert expires(stack, product, job_id) == [2]


def test_timers_a_pass_that_fails_every_delivery_is_poisoned_and_raises_pass_failed(
    stack: Stack,
) -> None:
    jobs = {product: claimed(stack, product) for product in ("ok-a", "broken-b")}
    stack.fire("reaper_timer")
    stack.drain()
    stack.clock.advance(LEASE_SECONDS + 1)
    stack.docs.broken.add("broken-b")
    stack.fire("reaper_timer")
    deliveries = stack.drain()
    outcomes = sorted((d.function, d.outcome) for d in deliveries)
    # ok-a done; broken-b failed, retried, then moved to the poison queue, whose function
    # recorded it (its own metrics pass over broken-b failed too: left to the next tick).
    assert outcomes == [
        ("fleet_pass", "done"),
        ("fleet_pass", "poisoned"),
        ("fleet_pass", "retry"),
        ("fleet_pass", "retry"),
        ("fleet_pass_poisoned", "done"),
    ]
    assert stack.waiting(stack.queue) == stack.waiting(f"{stack.queue}-poison") == []
    coord = stack.context.coordinator
    assert coord.get_job("ok-a", jobs["ok-a"]).stage is Stage.QUEUED
    assert coord.get_job("broken-b", jobs["broken-b"]).stage is Stage.ASSIGNED  # not lost
    record = stack.context.stores.documents.read("broken-b", "pass-failures")
    assert [f["timer"] for f in record["failures"]] == ["reaper"]
    # The store recovers; the next ticks pass broken-b (its lease, its record: both due).
    stack.docs.broken.clear()
    stack.clock.advance(15)
    stack.fire("reaper_timer")
    stack.fire("metrics_timer")
    stack.drain()
    assert coord.get_job("broken-b", jobs["broken-b"]).stage is Stage.QUEUED

    def alerts(product: str) -> set[str]:
        return {a["key"] for a in stack.context.monitor.alerts(product)["active"]}

    assert "pass_failed" in alerts("broken-b")
    assert "pass_failed" not in alerts("ok-a")
