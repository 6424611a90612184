"""Injected store faults: 429 with a retry-after, 503, timeouts, and writes that succeed but
whose response is lost (the caller sees an error; the write happened).

- Under the simulation (``tests.simulation.sim`` with ``faults``): many seeds, every fault
  kind at random on every store call; the simulation's invariants, plus no acknowledged
  transition lost, none doubled, one job per idempotency key.
- On the in-memory twin, one fault at a time on demand (``FaultyDocuments.force``): a lost
  response on the claim or on a report must not lose or double the transition.
- On the real Cosmos emulator through ``FaultProxy``: the same, with the real SDK deciding
  what it retries (it retries reads after a timeout, never a write).
"""

from __future__ import annotations

import os
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta

import pytest
from azure.cosmos import CosmosClient

from fleet.coordinator import Coordinator
from fleet.coordinator.clock import ManualClock
from fleet.domain.jobs import agrees
from fleet.domain.manifest import Manifest
from fleet.domain.models import Job
from fleet.domain.scheduler import FactoryView
from fleet.domain.stages import Stage
from fleet.errors import StoreUnavailable
from fleet.settings import Settings
from fleet.store.azure import CosmosDocumentStore
from fleet.store.memory import memory_stores
from fleet.store.ports import Stores
from tests.reliability.counts import count
from tests.simulation.sim import InvariantBroken, run_seed
from tests.support.faultproxy import FaultProxy
from tests.support.storefaults import FaultyDocuments

SEEDS = int(os.environ.get("FLEET_FAULT_SIM_SEEDS", "300"))
RATE = 0.1  # a fault on one store call in ten
P = "faults"


def test_faults_simulation_invariants_hold_with_store_faults_on_every_seed() -> None:
    failures: list[str] = []
    injected: Counter[str] = Counter()
    fenced = 0
    for seed in range(SEEDS):
        try:
            result = run_seed(seed, faults=RATE)
        except InvariantBroken as exc:
            failures.append(
                f"seed {seed}: {exc}  (replay: python -m tests.simulation.sim {seed} -v "
                f"--faults {RATE})"
            )
            continue
        injected.update(result.faults)
        fenced += result.fenced
    assert not failures, "\n".join(failures[:20])
    # Every kind of fault, often enough to matter.
    assert all(injected[kind] > SEEDS // 4 for kind in FaultyDocuments.KINDS), injected
    count("faults injected", sum(injected.values()))
    count("lost responses", injected["lost"])
    count("simulated seeds with faults", SEEDS)


# --- one fault at a time, on the twin ------------------------------------------------------


def _faulty(clock: ManualClock) -> tuple[Coordinator, FaultyDocuments]:
    stores = memory_stores()
    faulty = FaultyDocuments(stores.documents, random.Random(0), 0.0)
    stores.documents = faulty
    return Coordinator(stores, clock=clock), faulty


def _factory(name: str) -> FactoryView:
    return FactoryView(id=name, capabilities=frozenset({"python"}), seats=1, load=0)


def _history(coord: Coordinator, product: str, job: Job) -> list[str]:
    events = coord.job_events(product, job.id)
    assert agrees(coord.get_job(product, job.id), events)
    return [e.type for e in events]


def _lost_claim_and_reports(coord: Coordinator, faulty: FaultyDocuments, product: str) -> None:
    """A job with one attempt: the claim's and the final report's responses are lost. The
    claimer still gets the job, the ship still counts, and each happened once."""
    job, _ = coord.submit(product, Manifest(title="once", maxAttempts=1), "operator:t")
    faulty.force("replace", "lost")
    claimed = coord.claim(product, _factory("fa"))
    assert claimed is not None and claimed.job.id == job.id and claimed.lease.epoch == 1
    assert claimed.lease.holder == "fa"
    faulty.force("replace", "lost")
    assert coord.report(product, job.id, "fa", 1, stage=Stage.BUILDING).stage is Stage.BUILDING
    faulty.force("replace", "lost")
    shipped = coord.report(product, job.id, "fa", 1, stage=Stage.SHIPPED)
    assert shipped.stage is Stage.SHIPPED
    assert _history(coord, product, job) == ["submit", "assign", "start", "complete"]
    count("lost responses", 3)


def test_faults_lost_responses_on_claim_and_reports_lose_and_double_nothing() -> None:
    coord, faulty = _faulty(ManualClock())
    _lost_claim_and_reports(coord, faulty, P)


@pytest.mark.parametrize("kind", ["throttled", "unavailable", "timeout"])
def test_faults_write_refused_before_the_store_surfaces_and_a_retry_is_clean(kind: str) -> None:
    clock = ManualClock()
    coord, faulty = _faulty(clock)
    job, _ = coord.submit(P, Manifest(title="t"), "operator:t")
    faulty.force("replace", kind)
    with pytest.raises(StoreUnavailable) as caught:
        coord.claim(P, _factory("fa"))
    assert caught.value.retry_after == (0.25 if kind == "throttled" else None)
    assert coord.get_job(P, job.id).stage is Stage.QUEUED  # nothing happened
    claimed = coord.claim(P, _factory("fa"))  # the retry
    assert claimed is not None and claimed.lease.epoch == 1
    faulty.force("replace", kind)
    with pytest.raises(StoreUnavailable):
        coord.report(P, job.id, "fa", 1, stage=Stage.BUILDING)
    assert coord.report(P, job.id, "fa", 1, stage=Stage.BUILDING).stage is Stage.BUILDING
    assert _history(coord, P, job) == ["submit", "assign", "start"]
    count("faults injected", 2)


def test_faults_lost_expire_is_not_reaped_twice() -> None:
    clock = ManualClock()
    coord, faulty = _faulty(clock)
    job, _ = coord.submit(P, Manifest(title="t", maxAttempts=3), "operator:t")
    assert coord.claim(P, _factory("fa")) is not None
    clock.advance(job.leaseSeconds + 1)
    faulty.force("replace", "lost")
    assert coord.reap(P).requeued == [job.id]  # its answer was lost, the write was not
    assert coord.reap(P).requeued == []  # the first one did it
    assert coord.get_job(P, job.id).stage is Stage.QUEUED
    assert _history(coord, P, job) == ["submit", "assign", "expire"]
    count("lost responses")


@pytest.mark.parametrize("kind", ["throttled", "unavailable", "timeout"])
def test_faults_a_refused_expire_defers_that_job_and_reaps_the_others(kind: str) -> None:
    clock = ManualClock()
    coord, faulty = _faulty(clock)
    first, _ = coord.submit(P, Manifest(title="a"), "operator:t")
    second, _ = coord.submit(P, Manifest(title="b"), "operator:t")
    assert coord.claim(P, _factory("fa")) is not None
    assert coord.claim(P, _factory("fb")) is not None
    clock.advance(first.leaseSeconds + 1)
    faulty.force("replace", kind)  # the first expire write is refused
    report = coord.reap(P)
    assert len(report.deferred) == 1 and len(report.requeued) == 1
    assert set(report.deferred + report.requeued) == {first.id, second.id}
    assert coord.reap(P).requeued == report.deferred  # the next pass does it, once
    for job in (first, second):
        assert _history(coord, P, job) == ["submit", "assign", "expire"]
    count("faults injected")


def test_faults_lost_submit_with_an_idempotency_key_is_one_job() -> None:
    coord, faulty = _faulty(ManualClock())
    coord.submit(P, Manifest(title="another"), "operator:t")
    manifest = Manifest(title="t", idempotencyKey="k-1")
    faulty.force("create", "lost")  # the key's binding document
    with pytest.raises(StoreUnavailable):
        coord.submit(P, manifest, "operator:t")
    faulty.force("create", "lost")  # the job itself
    with pytest.raises(StoreUnavailable):
        coord.submit(P, manifest, "operator:t")
    job, created = coord.submit(P, manifest, "operator:t")
    assert not created
    assert [j.id for j in coord.list_jobs(P) if j.idempotencyKey] == [job.id]
    assert _history(coord, P, job) == ["submit"]
    count("lost responses", 2)


# --- the real SDK and emulator, through the fault proxy -----------------------------------


@pytest.fixture
def proxied(
    azure_settings: Settings, azure_backend: Stores
) -> Iterator[tuple[Coordinator, FaultProxy, ManualClock]]:
    """A coordinator whose documents go through the fault proxy; its clock can run ahead
    (server time is the only clock), so leases expire without waiting."""
    assert azure_settings.cosmos is not None
    proxy = FaultProxy(azure_settings.cosmos.endpoint)
    cosmos = azure_settings.cosmos
    assert cosmos.key is not None
    client = CosmosClient(
        proxy.url,
        credential=cosmos.key,
        enable_endpoint_discovery=False,
        retry_total=1,
        retry_backoff_max=1,
        connection_timeout=1,
        read_timeout=1,
    )
    container = client.get_database_client(cosmos.database).get_container_client(cosmos.container)
    stores = replace(
        azure_backend, documents=CosmosDocumentStore(container, azure_backend.counters)
    )
    clock = ManualClock(start=ManualClock().now().replace(year=2030))
    yield Coordinator(stores, clock=clock), proxy, clock
    proxy.close()


def _job_writes(method: str, path: str) -> bool:
    return method == "PUT" and "/docs/j" in path


@pytest.mark.integration
@pytest.mark.parametrize("status", [503, 0])
def test_faults_emulator_lost_responses_on_claim_report_and_reap(
    proxied: tuple[Coordinator, FaultProxy, ManualClock], partition: str, status: int
) -> None:
    """The write reaches the emulator; its answer is a 503 or a dropped connection (0). (A
    429 is never a lost response: a throttled request was not executed, so the SDK retries
    it, and it is injected here only as a refusal.)"""
    coord, proxy, clock = proxied
    job, _ = coord.submit(partition, Manifest(title="once", maxAttempts=2), "operator:t")
    lost = proxy.inject(status, forward=True, match=_job_writes, times=3)
    claimed = coord.claim(partition, _factory("fa"))
    assert claimed is not None and claimed.lease.holder == "fa" and claimed.lease.epoch == 1
    coord.report(partition, job.id, "fa", 1, stage=Stage.BUILDING)
    coord.report(partition, job.id, "fa", 1, checkpoint={"step": 1})
    assert lost.hits == 3
    # Refused before reaching the store (throttled past the SDK's own retries, 503), then
    # timed out: each surfaces as StoreUnavailable, and the caller's retry is clean.
    refused = proxy.inject(429, headers={"x-ms-retry-after-ms": "100"}, times=10, match=_job_writes)
    clock.advance(1)  # so each renew changes the lease (a renew that changes nothing lands)
    with pytest.raises(StoreUnavailable) as caught:
        coord.renew(partition, job.id, "fa", 1)
    assert caught.value.retry_after == pytest.approx(0.1)
    refused.remaining = 0
    slow = proxy.inject(503, delay=1.5, match=_job_writes)
    clock.advance(1)
    with pytest.raises(StoreUnavailable):
        coord.renew(partition, job.id, "fa", 1)
    clock.advance(1)
    coord.renew(partition, job.id, "fa", 1)
    assert refused.hits >= 1 and slow.hits == 1
    # The lease runs out; the reaper's write lands but its answer is lost: the reaper reads
    # it back and counts it; a second pass has nothing to do.
    clock.advance(job.leaseSeconds + 1)
    expire = proxy.inject(status, forward=True, match=_job_writes)
    assert coord.reap(partition).requeued == [job.id]
    assert expire.hits == 1
    assert coord.reap(partition).requeued == []
    again = coord.claim(partition, _factory("fb"))
    assert again is not None and again.lease.epoch == 3
    shipped = proxy.inject(status, forward=True, match=_job_writes)
    coord.report(partition, job.id, "fb", 3, stage=Stage.BUILDING)
    assert coord.report(partition, job.id, "fb", 3, stage=Stage.SHIPPED).stage is Stage.SHIPPED
    assert shipped.hits == 1
    assert _history(coord, partition, job) == [
        "submit",
        "assign",
        "start",
        "expire",
        "assign",
        "start",
        "complete",
    ]
    count("faults injected", 2 + refused.hits)
    count("lost responses", 5)


@pytest.mark.integration
def test_faults_emulator_read_timeouts_and_throttles_are_retried_or_surface(
    proxied: tuple[Coordinator, FaultProxy, ManualClock], partition: str
) -> None:
    coord, proxy, _clock = proxied
    job, _ = coord.submit(partition, Manifest(title="t"), "operator:t")
    slow = proxy.inject(503, delay=1.5, match=lambda m, p: m == "GET" and "/docs/j" in p)
    assert coord.get_job(partition, job.id).id == job.id  # the SDK retried the read
    throttled = proxy.inject(
        429,
        headers={"x-ms-retry-after-ms": "300"},
        times=5,
        match=lambda m, p: m == "POST" and "/docs" in p,  # queries are POSTs
    )
    with pytest.raises(StoreUnavailable) as caught:
        coord.claim(partition, _factory("fa"))
    assert caught.value.retry_after == pytest.approx(0.3)
    throttled.remaining = 0
    assert coord.claim(partition, _factory("fa")) is not None
    assert slow.hits == 1 and throttled.hits >= 2
    count("faults injected", 1 + throttled.hits)


@pytest.mark.integration
def test_faults_emulator_lost_submit_with_a_key_is_one_job(
    proxied: tuple[Coordinator, FaultProxy, ManualClock], partition: str
) -> None:
    coord, proxy, _clock = proxied
    coord.submit(partition, Manifest(title="another"), "operator:t")
    manifest = Manifest(title="t", idempotencyKey="key-1")
    creates = proxy.inject(
        503, forward=True, times=2, queries=False, match=lambda m, p: m == "POST"
    )
    for _ in range(2):
        with pytest.raises(StoreUnavailable):
            coord.submit(partition, manifest, "operator:t")
    job, created = coord.submit(partition, manifest, "operator:t")
    assert not created and creates.hits == 2
    assert [j.id for j in coord.list_jobs(partition) if j.idempotencyKey] == [job.id]
    count("lost responses", 2)


def test_faults_twin_lost_responses_advance_no_clock() -> None:
    """The clock is the coordinator's: a lost response costs no lease time."""
    clock = ManualClock()
    coord, faulty = _faulty(clock)
    before = clock.now()
    _lost_claim_and_reports(coord, faulty, "p2")
    assert clock.now() - before == timedelta(0)
