"""Slices of the benchmarks (``benchmarks/``) kept in the suite: the same measurements, small,
on the real local stack. Counts only: timing is the benchmarks' business, never a test's.

- idle cost: the real ``GET /api/fleet/queue-state`` handler called in-process with a
  factory's bearer token over the Azure adapters: a warm idle poll is one point read;
- claim storm: 4 factories race for 20 jobs over HTTP against the benchmarks' counting host
  (``benchmarks.counting_app``: the real app, plus the host's store counters): every job
  assigned once, and what each claim costs the store (bounds: claims share reads of the
  queue for a second, so the count of reads depends on timing);
- scale curve: a claim's store calls and the documents its query returns do not grow
  between 50 and 500 queued jobs;
- dispatch latency: the benchmark's factories (the CLI's poll loop) take every job exactly
  once with the gate on and off, and with it off never read the gate;
- lifecycle: 2 factories drain 20 jobs (gate poll, claim, building, shipped, heartbeats):
  every job shipped exactly once, each API call counted, the store requests per lifecycle
  counted and within a generous bound, the host's connections and job sizes counted;
- timer ticks: an idle tick of each timer makes the same store requests with 3 and with 12
  idle products, fewer than there are products, and sends no message; the first tick after
  adding products passes each new one by message.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from benchmarks.claim_storm import check_assigned_once, storm
from benchmarks.common import (
    CLAIM_BODY,
    CountingHost,
    HttpApi,
    Target,
    enroll,
    host_calls,
    host_measure,
    list_jobs,
    seed_jobs,
)
from benchmarks.dispatch_latency import run_mode
from benchmarks.idle_cost import gate_costs
from benchmarks.lifecycle import CLAIM, GATE, REPORT, measure_drain
from benchmarks.scale_curve import measure_sizes
from fleet.context import context_for
from fleet.coordinator.claim import Contention
from fleet.coordinator.service import CoordinatorConfig
from fleet.settings import Settings
from fleet.store.ports import Stores
from tests.conftest import RunningStack

pytestmark = pytest.mark.integration

# The token, the top-K query, the seat check (the factory's live leases: asked only when
# there is a candidate), the CAS.
ONE_CLAIM = {"read": 1, "query": 2, "write": 1}


@pytest.fixture(scope="module")
def bench_target(
    running_stack: RunningStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    """The benchmarks' counting host, in front of the session's emulators."""
    logs: Path = tmp_path_factory.mktemp("bench-host")
    with CountingHost(running_stack.env, logs) as host:
        yield Target(
            env=running_stack.env, api=host.api, operator_token=running_stack.operator_token
        )


def test_bench_slice_warm_idle_gate_poll_is_one_point_read(
    running_stack: RunningStack, azure_settings: Settings, azure_backend: Stores, partition: str
) -> None:
    token = running_stack.enroll(partition, "bench-slice")
    # A fresh context: this instance has never verified the token.
    costs = gate_costs(context_for(azure_settings, azure_backend), token, polls=20)
    # The first poll also reads the token (then trusted for 30 s by this instance's cache).
    assert costs.cold == {"read": 2}
    assert costs.warm == [{"read": 1}] * 20


def test_bench_slice_storm_assigns_every_job_once_at_two_queries_and_one_write_a_claim(
    bench_target: Target, azure_settings: Settings, partition: str
) -> None:
    jobs = seed_jobs(azure_settings, partition, 20, threads=4)
    factories = 4
    with HttpApi(bench_target.api) as api:
        tokens = [
            enroll(api, bench_target.operator_token, partition, f"s{i}") for i in range(factories)
        ]
    with host_measure(bench_target.api) as measured:
        claimed, _ = storm(bench_target.api, tokens)
    assert claimed.errors == []
    with HttpApi(bench_target.api) as api:
        stored = list_jobs(api, bench_target.operator_token, partition)
    assert check_assigned_once(jobs, claimed.grants, stored) == []
    assert (len(claimed.grants), claimed.empty) == (20, factories)
    spent = measured[0]
    requests = len(claimed.grants) + claimed.empty
    refused = spent.conflicts.get("replace", 0)
    # The seat check of each claim that found a candidate (every grant, and a last claim that
    # found only what others were taking), plus the top-K reads of the queue: at least one,
    # at most two per request (claims within a second of a read share it, so how many depends
    # on timing); one conditional replace per grant plus one per candidate lost to a racing
    # factory (412), nothing else written.
    assert len(claimed.grants) + 1 <= spent.calls["query"] <= 3 * requests
    assert spent.calls.get("write") == len(claimed.grants) + refused
    assert set(spent.conflicts) <= {"replace"}
    assert {k for k in spent.calls if k not in ("read", "query", "write")} == set()
    # Reads: the token of every request, plus this instance's cold caches (each factory's
    # standing; the product's settings, budget and learned routing, which racing first claims
    # may all miss).
    assert requests + factories + 3 <= spent.calls["read"] <= requests + 4 * factories
    # Warm, a claim is exactly one token read, two queries and one write.
    seed_jobs(azure_settings, partition, 1, threads=1)
    before = host_calls(bench_target.api)
    with HttpApi(bench_target.api) as api:
        status, body = api.call("POST", "fleet/claim", token=tokens[0], body=CLAIM_BODY)
    assert status == 200, body
    assert host_calls(bench_target.api).minus(before).calls == ONE_CLAIM


def test_bench_slice_scale_claim_cost_does_not_grow_with_the_queue(bench_target: Target) -> None:
    runs = measure_sizes(
        bench_target, [50, 500], claims=3, before_claims=0, seed_threads=4, say=lambda _: None
    )
    top = Contention.candidates(CoordinatorConfig().claim_candidates)
    for run in runs:
        assert run.calls == [ONE_CLAIM] * 3, run.queued
        assert run.rows == [top] * 3, run.queued  # the queue's head (and a count), never all
    small, large = runs
    assert small.calls_per_claim() == large.calls_per_claim()


@pytest.mark.parametrize("gate_on", [True, False], ids=["gate-on", "gate-off"])
def test_bench_slice_dispatch_factories_take_every_job_once(
    bench_target: Target, gate_on: bool
) -> None:
    run = run_mode(
        bench_target,
        gate_on=gate_on,
        factories=2,
        jobs=3,
        poll_seconds=0.3,
        gaps=(0.2, 0.4),
        seed=1,
        say=lambda _: None,
    )
    assert (run.unclaimed, run.claimed_twice) == (0, [])
    assert len(run.latencies) == 3
    if gate_on:
        # every claim follows a gate read, or a claim that found a job (no read then)
        found = run.stats.claims - run.stats.empty_claims
        assert run.stats.claims <= run.stats.gate_polls + found
    else:
        assert run.stats.gate_polls == 0


def test_bench_slice_lifecycle_ships_every_job_once_and_counts_its_cost(
    bench_target: Target,
) -> None:
    jobs, factories = 20, 2
    run = measure_drain(bench_target, jobs, factories, seed_threads=4, say=lambda _: None)
    assert run.problems == []
    assert (run.shipped, run.drained.errors) == (jobs, [])
    # Every factory stops at its first empty claim; it polls the gate before its first claim
    # only: each later claim comes just after one that found a job, as the runner's do.
    assert run.drained.empty_claims == factories
    assert run.route_calls(CLAIM) == jobs + factories
    assert run.route_calls(GATE) == factories
    assert run.route_calls(REPORT) == jobs  # shipped: the claim started each job (start)
    # The ship is decided on the job as its claim wrote it (one instance): a write, no read.
    assert run.operations_by_route()[REPORT] == {"replace": jobs}
    # Store requests: at least the claim's CAS (which also starts the job) and the ship's
    # write per lifecycle, and (generously) no more than 30 in all.
    calls = run.calls()
    assert calls.get("write", 0) + calls.get("patch", 0) >= 2 * jobs
    assert 3 <= run.store_requests_per_lifecycle() <= 30
    written = run.operations_by_route()[CLAIM]
    assert written.get("replace", 0) + written.get("patch", 0) >= jobs
    # Connections are counted by endpoint (since the host started: a pool that keeps its
    # connections may open none during the drain).
    assert "cosmos" in {run.endpoints.get(a) for a in run.after["connections"]}
    # The job's size is measured at every step.
    assert set(run.job_sizes()) == {"submitted", "claimed", "shipped"}  # claimed: building
    assert run.ru_per_lifecycle() > 0


def test_bench_slice_ticks_an_idle_tick_costs_the_same_with_four_times_the_products(
    bench_target: Target,
) -> None:
    """The timer-ticks part at its quick sizes (3, then 12 idle products, in a Cosmos
    container of the part's own on the session's stack, so nothing else in it is due or
    changes): an idle tick of each timer is its sweep alone, request for request the same at
    both sizes, and passes nothing. The tick after products are added passes each of them."""
    from benchmarks.timer_ticks import QUICK, TIMERS, parser
    from benchmarks.timer_ticks import measure_sizes as measure_ticks

    sizes = parser().parse_args(QUICK).sizes
    small, large = measure_ticks(bench_target, sizes, ticks=1, say=lambda _: None)
    assert [small.products, large.products] == sizes == [3, 12]
    for name in TIMERS:
        # Flat, exactly: whatever grows with the products would differ here by 9 products.
        assert small.calls[name] == large.calls[name], name
        assert small.messages[name] == large.messages[name] == 0, name
        # A handful: fewer requests than products, so not one a product (the sweep's few
        # queries and its mark; their exact count is fleet.coordinator.sweep's to document).
        assert 0 < large.requests(name) < large.products, (name, large.calls[name])
    # The first tick after adding them passes the new products (changed), one message each;
    # the healer has no lease and no factory to look at.
    assert small.first_messages == {"reaper": 3, "healer": 0, "metrics": 3}
    assert large.first_messages == {"reaper": 9, "healer": 0, "metrics": 9}
    assert small.poisoned == large.poisoned == 0
