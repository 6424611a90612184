"""Budgets and channel limits: reserved as part of claiming, on the in-memory twin."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from fleet.coordinator import Coordinator
from fleet.coordinator.budgets import reservation_key
from fleet.coordinator.clock import ManualClock
from fleet.domain.jobs import BudgetExceeded
from fleet.domain.manifest import Manifest
from fleet.domain.scheduler import FactoryView
from fleet.domain.stages import Action, Stage
from fleet.errors import ConcurrencyConflict, Fenced
from fleet.store.memory import MemoryDocumentStore
from fleet.store.ports import Stores

P = "prod"


def submit(coord: Coordinator, **fields: Any) -> str:
    manifest = Manifest(**{"title": "t", "body": "b", **fields})
    return coord.submit(P, manifest, "operator:o")[0].id


def factory(name: str = "f") -> FactoryView:
    return FactoryView(id=name, capabilities=frozenset())


def ship(coord: Coordinator, job_id: str, holder: str, epoch: int, cost: float) -> None:
    coord.report(P, job_id, holder, epoch, stage=Stage.BUILDING)
    coord.report(P, job_id, holder, epoch, stage=Stage.SHIPPED, result={"costUsd": cost})


# --- budgets ---------------------------------------------------------------------------


def test_budget_reserves_at_claim_and_settles_the_reported_cost(coord: Coordinator) -> None:
    coord.budgets.put(P, 10.0)
    job = submit(coord, budget=3.0)
    claim = coord.claim(P, factory())
    assert claim is not None
    budget = coord.budgets.get(P)
    assert budget is not None and budget.reservedUsd == 3.0
    assert list(budget.reservations) == [claim.job.reservation]
    assert claim.job.reservation is not None and claim.job.reservation.startswith(f"{job}-1-")
    ship(coord, job, "f", claim.lease.epoch, cost=1.25)
    budget = coord.budgets.get(P)
    assert budget is not None
    assert (budget.spentUsd, budget.reservedUsd, budget.reservations) == (1.25, 0.0, {})


def test_budget_without_ceiling_tracks_spend_and_never_blocks(coord: Coordinator) -> None:
    coord.budgets.put(P, None)
    job = submit(coord, budget=1_000.0)
    claim = coord.claim(P, factory())
    assert claim is not None
    ship(coord, job, "f", claim.lease.epoch, cost=2.0)
    view = coord.budgets.get(P).view()  # type: ignore[union-attr]
    assert view["spentUsd"] == 2.0 and view["usedFraction"] is None
    assert view["remainingUsd"] is None


def test_budget_skips_a_job_that_does_not_fit_and_takes_a_cheaper_one(
    coord: Coordinator, clock: ManualClock
) -> None:
    coord.budgets.put(P, 5.0)
    dear = submit(coord, budget=8.0, priority=9)
    clock.advance(1)
    cheap = submit(coord, budget=2.0, priority=1)
    claim = coord.claim(P, factory())
    assert claim is not None and claim.job.id == cheap
    explained = coord.explain(P, dear)
    assert "exceeds" in explained["blockers"][0] and explained["summary"].startswith("queued")


def test_budget_auto_pauses_at_the_ceiling_and_resumes_when_raised(coord: Coordinator) -> None:
    coord.budgets.put(P, 4.0)
    jobs = [submit(coord, budget=2.0) for _ in range(3)]
    assert coord.claim(P, factory("a")) is not None
    assert coord.claim(P, factory("b")) is not None
    budget = coord.budgets.get(P)
    assert budget is not None and budget.autoPaused and budget.reservedUsd == 4.0
    assert coord.claim(P, factory("c")) is None
    (waiting,) = [j for j in jobs if coord.get_job(P, j).stage is Stage.QUEUED]
    assert "auto-paused" in coord.explain(P, waiting)["summary"]
    coord.budgets.put(P, 10.0)
    assert coord.claim(P, factory("c")) is not None


def test_budget_operator_pause_stops_claims_and_resume_restarts(coord: Coordinator) -> None:
    coord.budgets.put(P, None)
    submit(coord)
    coord.budgets.set_paused(P, True)
    assert coord.claim(P, factory()) is None
    coord.budgets.set_paused(P, False)
    assert coord.claim(P, factory()) is not None


def test_budget_lost_race_releases_the_reservation(coord: Coordinator, stores: Stores) -> None:
    coord.budgets.put(P, 10.0)
    submit(coord, budget=3.0)
    docs = stores.documents
    assert isinstance(docs, MemoryDocumentStore)
    docs.inject("write", ConcurrencyConflict("another factory won"))
    assert coord.claim(P, factory()) is None
    budget = coord.budgets.get(P)
    assert budget is not None and budget.reservedUsd == 0 and budget.reservations == {}


def test_budget_expired_lease_settles_what_the_attempt_reported(
    coord: Coordinator, clock: ManualClock
) -> None:
    coord.budgets.put(P, 10.0)
    job = submit(coord, budget=3.0, leaseSeconds=60)
    claim = coord.claim(P, factory("dies"))
    assert claim is not None
    coord.report(P, job, "dies", 1, stage=Stage.BUILDING, progress={"costUsd": 0.5})
    clock.advance(61)
    coord.reap(P)
    budget = coord.budgets.get(P)
    assert budget is not None and (budget.spentUsd, budget.reservedUsd) == (0.5, 0.0)


def test_budget_reaper_reconciles_a_reservation_left_by_a_crash(
    coord: Coordinator, clock: ManualClock
) -> None:
    coord.budgets.put(P, 10.0)
    job_id = submit(coord, budget=3.0)
    job = coord.get_job(P, job_id)
    # A claim that crashed after reserving and before writing its job.
    coord.budgets.reserve(P, job, reservation_key(job.id, job.epoch + 1, "dead"))
    coord.reap(P)
    assert coord.budgets.get(P).reservedUsd == 3.0  # type: ignore[union-attr]  # too fresh
    clock.advance(61)
    coord.reap(P)
    budget = coord.budgets.get(P)
    assert budget is not None and budget.reservedUsd == 0 and budget.reservations == {}


def test_budget_concurrent_claims_never_overspend(coord: Coordinator) -> None:
    coord.budgets.put(P, 10.0)
    for _ in range(30):
        submit(coord, budget=1.0)
    won: list[str] = []
    lock = threading.Lock()

    def claimer(name: str) -> None:
        while (claim := coord.claim(P, factory(name))) is not None:
            with lock:
                won.append(claim.job.id)

    threads = [threading.Thread(target=claimer, args=(f"f{i}",)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    budget = coord.budgets.get(P)
    assert budget is not None
    assert len(won) == len(set(won)) == 10
    assert budget.spentUsd + budget.reservedUsd <= 10.0 and budget.autoPaused


def test_budget_reserves_a_running_attempts_spend_past_its_estimate(coord: Coordinator) -> None:
    coord.budgets.put(P, 10.0)
    job = submit(coord, budget=1.0)
    claim = coord.claim(P, factory())
    assert claim is not None
    epoch = claim.lease.epoch
    coord.report(P, job, "f", epoch, stage=Stage.BUILDING, progress={"costUsd": 0.5})
    assert coord.budgets.get(P).reservedUsd == 1.0  # type: ignore[union-attr]  # covered
    coord.report(P, job, "f", epoch, progress={"costUsd": 3.0})
    budget = coord.budgets.get(P)
    assert budget is not None and budget.reservedUsd == 3.0  # the budget sees it at once
    assert budget.reservations[claim.job.reservation or ""].usd == 3.0
    coord.report(P, job, "f", epoch, progress={"costUsd": 3.0})  # the same again: no change
    assert coord.budgets.get(P).reservedUsd == 3.0  # type: ignore[union-attr]
    coord.report(P, job, "f", epoch, stage=Stage.SHIPPED, result={"costUsd": 4.0})
    budget = coord.budgets.get(P)
    assert budget is not None
    assert (budget.spentUsd, budget.reservedUsd, budget.reservations) == (4.0, 0.0, {})


def test_budget_a_running_attempt_the_ceiling_cannot_cover_is_ended(coord: Coordinator) -> None:
    coord.budgets.put(P, 5.0)
    job = submit(coord, budget=1.5, maxAttempts=1)  # its own cap: 1.5 x 5 = 7.5
    claim = coord.claim(P, factory())
    assert claim is not None
    epoch = claim.lease.epoch
    coord.report(P, job, "f", epoch, stage=Stage.BUILDING, progress={"costUsd": 4.0})
    with pytest.raises(BudgetExceeded):
        coord.report(P, job, "f", epoch, progress={"costUsd": 6.0})
    ended = coord.get_job(P, job)
    assert ended.stage is Stage.DEAD_LETTER and ended.epoch == epoch + 1
    run = ended.runs[-1]
    assert run.outcome == "budget_exceeded" and "budget cannot cover" in (run.reason or "")
    budget = coord.budgets.get(P)
    assert budget is not None  # what was spent is booked; nothing stays reserved
    assert (budget.spentUsd, budget.reservedUsd, budget.reservations) == (6.0, 0.0, {})
    with pytest.raises(BudgetExceeded):  # the holder's next call says why, too
        coord.renew(P, job, "f", epoch)


# --- channels ---------------------------------------------------------------------------


def test_channel_rate_limit_allows_burst_then_refills(
    coord: Coordinator, clock: ManualClock
) -> None:
    coord.channels.put(P, "ebay", rate=2.0, burst=2, max_running=None)
    jobs = [submit(coord, channel="ebay") for _ in range(4)]
    assert coord.claim(P, factory("a")) is not None
    assert coord.claim(P, factory("b")) is not None
    assert coord.claim(P, factory("c")) is None
    queued = [j for j in jobs if coord.get_job(P, j).stage is Stage.QUEUED]
    assert "rate limited" in coord.explain(P, queued[0])["blockers"][0]
    clock.advance(30)  # 2 per minute: one token back
    assert coord.claim(P, factory("c")) is not None
    assert coord.claim(P, factory("d")) is None


def test_channel_cap_limits_running_jobs_and_frees_slots(coord: Coordinator) -> None:
    coord.channels.put(P, "gh", rate=None, burst=1, max_running=1)
    first = submit(coord, channel="gh")
    submit(coord, channel="gh")
    other = submit(coord)
    claim = coord.claim(P, factory("a"))
    assert claim is not None and claim.job.id == first
    second = coord.claim(P, factory("b"))
    assert second is not None and second.job.id == other  # the capped channel is skipped
    assert coord.claim(P, factory("c")) is None
    ship(coord, first, "a", claim.lease.epoch, cost=0)
    assert coord.channels.get(P, "gh").running == 0  # type: ignore[union-attr]
    assert coord.claim(P, factory("c")) is not None


def test_channel_limit_change_takes_effect_on_next_claim(coord: Coordinator) -> None:
    coord.channels.put(P, "gh", rate=None, burst=1, max_running=0)
    submit(coord, channel="gh")
    assert coord.claim(P, factory()) is None
    coord.channels.put(P, "gh", rate=None, burst=1, max_running=5)
    assert coord.claim(P, factory()) is not None


def test_channel_concurrent_claims_respect_cap_and_bucket(coord: Coordinator) -> None:
    coord.channels.put(P, "api", rate=1.0, burst=5, max_running=3)
    for _ in range(20):
        submit(coord, channel="api")
    won: list[str] = []
    lock = threading.Lock()

    def claimer(name: str) -> None:
        claim = coord.claim(P, factory(name))
        if claim is not None:
            with lock:
                won.append(claim.job.id)

    threads = [threading.Thread(target=claimer, args=(f"f{i}",)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 3
    assert coord.channels.get(P, "api").running == 3  # type: ignore[union-attr]


def test_channel_slot_returns_when_an_operator_cancels(coord: Coordinator) -> None:
    coord.channels.put(P, "gh", rate=None, burst=1, max_running=1)
    job = submit(coord, channel="gh")
    assert coord.claim(P, factory()) is not None
    coord.operator(P, job, Action.CANCEL, "o")
    assert coord.channels.get(P, "gh").running == 0  # type: ignore[union-attr]


def test_channel_reaper_recounts_after_a_quiet_period(
    coord: Coordinator, clock: ManualClock, stores: Stores
) -> None:
    coord.channels.put(P, "gh", rate=None, burst=1, max_running=2)
    # A crash left a slot taken with no job behind it.
    assert coord.channels.take(P, "gh") == (True, None)
    coord.reap(P)
    assert coord.channels.get(P, "gh").running == 1  # type: ignore[union-attr]
    clock.advance(61)
    coord.reap(P)
    assert coord.channels.get(P, "gh").running == 0  # type: ignore[union-attr]


# --- preemption -------------------------------------------------------------------------


def test_preemption_is_off_by_default(coord: Coordinator, clock: ManualClock) -> None:
    coord.register_factory(P, FactoryView(id="only", capabilities=frozenset(), seats=1), None)
    submit(coord, priority=1)
    assert coord.claim(P, factory("only")) is not None
    submit(coord, priority=9)
    clock.advance(120)
    assert coord.reap(P).preempted == []


def test_preemption_evicts_the_lowest_priority_job_for_a_critical_one(
    coord: Coordinator, clock: ManualClock
) -> None:
    coord.put_product_settings(P, preemption={"enabled": True, "afterSeconds": 60})
    coord.register_factory(P, FactoryView(id="only", capabilities=frozenset(), seats=2), None)
    low = submit(coord, priority=1)
    mid = submit(coord, priority=4)
    for _ in range(2):
        assert coord.claim(P, factory("only")) is not None
    coord.report(P, low, "only", 1, checkpoint={"branch": "wip/low"})
    critical = submit(coord, priority=9)
    clock.advance(30)
    assert coord.reap(P).preempted == []  # not waiting long enough yet
    clock.advance(31)
    assert coord.reap(P).preempted == [low]
    evicted = coord.get_job(P, low)
    assert evicted.stage is Stage.QUEUED and evicted.epoch == 2
    assert evicted.checkpoint == {"branch": "wip/low"}
    assert evicted.attempts == 0 and evicted.failedBy == ()  # not the holder's failure
    assert coord.get_job(P, mid).stage is Stage.ASSIGNED
    assert coord.get_job(P, critical).events[-1].type == "preempted_for"
    with pytest.raises(Fenced):
        coord.renew(P, low, "only", 1)  # the holder stops its engine on this
    assert coord.reap(P).preempted == []  # one eviction per critical job per window
    claim = coord.claim(P, factory("only"))
    assert claim is not None and claim.job.id == critical


def test_preemption_never_when_a_seat_is_free(coord: Coordinator, clock: ManualClock) -> None:
    coord.put_product_settings(P, preemption={"enabled": True, "afterSeconds": 0})
    coord.register_factory(P, FactoryView(id="big", capabilities=frozenset(), seats=3), None)
    submit(coord, priority=1)
    assert coord.claim(P, factory("big")) is not None
    submit(coord, priority=9)
    clock.advance(1)
    assert coord.reap(P).preempted == []
