"""The timers' sweeps (``fleet.coordinator.sweep``) on the in-memory twin with a manual clock:
what each set finds, what it leaves to the next tick, and the ``dueAt`` each job keeps in its
own write (``fleet.domain.models.Job.due_at``) that the due set reads."""

from __future__ import annotations

from datetime import timedelta

import pytest

from fleet.context import AppContext, context_for
from fleet.coordinator import ClaimResult, Coordinator
from fleet.coordinator.clock import ManualClock
from fleet.coordinator.fleet_health import Beat
from fleet.coordinator.sweep import TIMERS, Sweep, SweepConfig
from fleet.domain.models import Lease, format_ts
from fleet.domain.stages import Action, Stage
from fleet.http.parsing import FactorySelf
from fleet.settings import Settings
from fleet.store.ports import Set, Stores
from tests.support.builders import T0, manifest
from tests.support.builders import factory_view as view
from tests.support.builders import job as job_doc

P = "prod"
SETTINGS = Settings.from_env({"FLEET_STORE": "memory"})


@pytest.fixture
def ctx(stores: Stores, clock: ManualClock) -> AppContext:
    return context_for(SETTINGS, stores, clock=clock)


def sweep_of(ctx: AppContext, config: SweepConfig | None = None) -> Sweep:
    coord = ctx.coordinator
    return Sweep(coord.docs, coord.stores.tables, coord.clock, ctx.health.config, config)


def idle(coord: Coordinator, product: str) -> None:
    """A product as an operator leaves it: one job submitted, then cancelled."""
    job = coord.submit(product, manifest(), "operator:o")[0]
    coord.operator(product, job.id, Action.CANCEL, "operator:o")


def claimed(coord: Coordinator, product: str, factory: str = "f1") -> ClaimResult:
    """A job of ``product`` claimed by ``factory``, under the default 300 s lease."""
    coord.submit(product, manifest(), "operator:o")
    claim = coord.claim(product, view(factory))
    assert claim is not None
    return claim


def heartbeat(ctx: AppContext, product: str, factory: str = "f1") -> None:
    ctx.health.heartbeat(product, factory, Beat(capabilities=("python",), seats=2))


# --- dueAt: kept by each job in its own write -------------------------------------------

UPDATED = T0 + timedelta(seconds=10)
LEASE = Lease(holder="f1", epoch=1, expiresAt=T0 + timedelta(seconds=300))
LEASE_ENDS = "2026-01-01T00:05:00.000000Z"
WRITTEN = "2026-01-01T00:00:10.000000Z"
DUE_AT: list[tuple[Stage, Lease | None, str | None]] = [
    (Stage.ASSIGNED, LEASE, LEASE_ENDS),
    (Stage.BUILDING, LEASE, LEASE_ENDS),
    (Stage.TESTING, LEASE, LEASE_ENDS),
    (Stage.BUILDING, None, WRITTEN),  # a leased stage without a lease: from its last write
    (Stage.QUEUED, None, None),  # waiting: found by its stage (the waiting set), not dueAt
    (Stage.REVIEW, LEASE, None),  # in review a lease decides nothing
    (Stage.BLOCKED, None, None),
    (Stage.SHIPPED, None, None),
    (Stage.FAILED, None, None),
    (Stage.DEAD_LETTER, None, None),
    (Stage.CANCELLED, None, None),
]


def test_job_due_at_table_covers_every_stage() -> None:
    assert {stage for stage, _, _ in DUE_AT} == set(Stage)


@pytest.mark.parametrize(("stage", "lease", "due"), DUE_AT)
def test_job_to_doc_keeps_due_at_by_stage(
    stage: Stage, lease: Lease | None, due: str | None
) -> None:
    doc = job_doc(stage=stage, lease=lease, epoch=1, updatedAt=UPDATED).to_doc()
    # None: no field at all (not a null), so the due query never reads the job.
    assert doc.get("dueAt", "absent") == (due if due is not None else "absent")


def test_job_renewed_lease_moves_due_at_in_the_renewal_write(
    ctx: AppContext, stores: Stores, clock: ManualClock
) -> None:
    claim = claimed(ctx.coordinator, P)
    assert stores.documents.read(P, claim.job.id)["dueAt"] == LEASE_ENDS
    clock.advance(100)
    with stores.counters.measure() as cost:
        renewed = ctx.coordinator.renew(P, claim.job.id, "f1", claim.lease.epoch)
    assert cost == {"write": 1}  # the lease and its dueAt: one write
    assert renewed.lease is not None
    assert renewed.lease.expiresAt == claim.lease.expiresAt + timedelta(seconds=100)
    assert stores.documents.read(P, claim.job.id)["dueAt"] == format_ts(renewed.lease.expiresAt)


# --- the sets -------------------------------------------------------------------------


def test_sweep_finds_an_idle_product_in_no_set_once_its_changes_were_seen(
    ctx: AppContext, clock: ManualClock
) -> None:
    idle(ctx.coordinator, "quiet")
    clock.advance(60)
    sweep = sweep_of(ctx)
    for timer in ("reaper", "metrics"):  # their first tick sees the submit and the cancel
        assert sweep.products(timer) == ["quiet"]
    assert sweep.products("healer") == []
    clock.advance(60)
    now = clock.now()
    assert sweep.due(now).products == []
    assert sweep.silent(now) == []
    assert {timer: sweep.products(timer) for timer in TIMERS} == {
        "reaper": [],
        "healer": [],
        "metrics": [],
    }


def test_sweep_finds_an_expired_lease_due_at_its_expiry_and_not_before(
    ctx: AppContext, clock: ManualClock
) -> None:
    idle(ctx.coordinator, "quiet")
    claim = claimed(ctx.coordinator, "busy")
    sweep = sweep_of(ctx)
    clock.advance(300)
    assert clock.now() == claim.lease.expiresAt  # expired after, as the reaper judges it
    assert sweep.due(clock.now()).products == []
    clock.advance(1)
    assert sweep.due(clock.now()).products == ["busy"]


def test_sweep_finds_a_product_with_a_job_under_lease_in_leased(ctx: AppContext) -> None:
    idle(ctx.coordinator, "quiet")
    claimed(ctx.coordinator, "busy")
    plan = sweep_of(ctx).plan("healer")
    assert (plan.products, plan.mark.cursors) == (["busy"], {"leased": ""})


def test_sweep_finds_a_product_with_a_job_waiting_in_waiting(
    ctx: AppContext, clock: ManualClock
) -> None:
    idle(ctx.coordinator, "quiet")
    ctx.coordinator.submit("queue", manifest(capabilities=("gpu",)), "operator:o")
    sweep = sweep_of(ctx)
    clock.advance(60)
    for timer in ("reaper", "metrics"):
        sweep.products(timer)  # the first tick: every change of the last hour
    clock.advance(3600)  # nothing changes; the job waits
    assert sweep.products("reaper") == ["queue"]
    assert sweep.products("metrics") == ["queue"]
    assert sweep.products("healer") == []


def test_sweep_changed_finds_events_since_the_previous_tick_and_nothing_once_the_mark_moved(
    ctx: AppContext, clock: ManualClock
) -> None:
    sweep = sweep_of(ctx)
    idle(ctx.coordinator, "early")
    clock.advance(60)
    assert sweep.products("reaper") == ["early"]  # the first tick looks back an hour
    clock.advance(60)
    idle(ctx.coordinator, "later")
    clock.advance(60)
    plan = sweep.plan("reaper")
    assert (plan.products, plan.mark.since, plan.mark.at) == (
        ["later"],
        format_ts(clock.now()),
        (),
    )
    sweep.advance(plan)
    clock.advance(60)
    again = sweep.plan("reaper")
    assert again.products == []
    sweep.advance(again)
    assert sweep.plan("reaper").products == []


def test_sweep_changed_finds_a_lagging_instance_s_event_within_the_slack(
    ctx: AppContext, stores: Stores, clock: ManualClock
) -> None:
    sweep = sweep_of(ctx)  # slack_seconds=5
    clock.advance(60)
    assert sweep.products("reaper") == []  # the mark: now
    for product, behind in (("within", 4), ("beyond", 6)):
        lagging = Coordinator(stores, clock=ManualClock(clock.now() - timedelta(seconds=behind)))
        idle(lagging, product)
    clock.advance(60)
    assert sweep.products("reaper") == ["within"]


def test_sweep_changed_of_each_timer_keeps_its_own_mark(
    ctx: AppContext, clock: ManualClock
) -> None:
    sweep = sweep_of(ctx)
    idle(ctx.coordinator, "quiet")
    clock.advance(60)
    assert sweep.products("reaper") == ["quiet"]
    clock.advance(60)
    assert sweep.products("metrics") == ["quiet"]  # the reaper's mark is not the metrics'


def test_sweep_silent_finds_a_factory_past_each_threshold_until_the_healer_judged_it(
    ctx: AppContext, clock: ManualClock
) -> None:
    config = ctx.health.config  # stale 90 s, down 600 s, pruned after 7 days
    sweep = sweep_of(ctx)
    heartbeat(ctx, P)
    heartbeat(ctx, "other")  # keeps beating
    steps = [
        (config.stale_seconds - 1, None),
        (config.stale_seconds, "stale"),
        (config.down_after_seconds, "down"),
        (config.prune_after_seconds, "pruned"),
    ]
    silent_for = 0
    for at, verdict in steps:
        clock.advance(at - silent_for)
        silent_for = at
        heartbeat(ctx, "other")
        if verdict is None:
            assert sweep.silent(clock.now()) == []
            continue
        assert sweep.silent(clock.now()) == [P], verdict
        report = ctx.health.heal(P)
        assert (
            (report.pruned == ["f1"]) if verdict == "pruned" else (report.marked == {"f1": verdict})
        )
        assert sweep.silent(clock.now()) == [], f"found again once {verdict}"


def test_sweep_silent_finds_a_revoked_factory_only_when_it_is_to_be_pruned(
    ctx: AppContext, stores: Stores, clock: ManualClock
) -> None:
    config = ctx.health.config
    sweep = sweep_of(ctx)
    heartbeat(ctx, P)
    stores.documents.patch(P, "factory-f1", [Set("/revoked", True)])
    for at in (config.stale_seconds, config.down_after_seconds, config.prune_after_seconds - 1):
        clock.advance(at - (clock.now() - T0).total_seconds())
        assert sweep.silent(clock.now()) == [], at
    clock.advance(1)
    assert sweep.silent(clock.now()) == [P]


def test_sweep_silent_finds_an_ephemeral_factory_to_prune_once_it_is_down(
    ctx: AppContext, clock: ManualClock
) -> None:
    """An ephemeral factory (enrolled with an ephemeral token, named by the coordinator) is
    pruned at ``down_after``: the sweep finds it then, as the healer judges it."""
    config = ctx.health.config
    sweep = sweep_of(ctx)
    issued = ctx.tokens.create_enrollment_token(P, "operator:o", max_uses=5, ephemeral=True)
    worker = ctx.tokens.enroll(issued.token, None, FactorySelf(capabilities=("python",)))
    heartbeat(ctx, P, worker.factory_id)
    heartbeat(ctx, P, "f2")  # an ordinary factory, silent as long
    clock.advance(config.stale_seconds)
    assert sweep.silent(clock.now()) == [P]
    assert ctx.health.heal(P).marked == {worker.factory_id: "stale", "f2": "stale"}
    clock.advance(config.down_after_seconds - config.stale_seconds - 1)
    assert sweep.silent(clock.now()) == []
    clock.advance(1)
    assert sweep.silent(clock.now()) == [P]
    report = ctx.health.heal(P)
    assert report.pruned == [worker.factory_id] and report.marked == {"f2": "down"}
    assert sweep.silent(clock.now()) == [], "found again once pruned"
    (left,) = [f for f in ctx.coordinator.factories(P) if f.id != "factory-f2"]
    assert left.ephemeral and left.deregistered


# --- paging ---------------------------------------------------------------------------

PAGED = SweepConfig(page=2, max_pages=3)


def test_sweep_a_product_with_many_due_jobs_does_not_keep_the_others_out(
    ctx: AppContext, stores: Stores, clock: ManualClock
) -> None:
    expired = Lease(holder="f1", epoch=1, expiresAt=T0)
    n = 0
    for product, jobs in (("many", 10), ("next", 1), ("last", 1)):
        for _ in range(jobs):  # many's expired first, and more than three pages of rows
            n += 1
            lease = expired.model_copy(update={"expiresAt": T0 + timedelta(seconds=n)})
            doc = job_doc(n, productId=product, stage=Stage.ASSIGNED, lease=lease, epoch=1)
            stores.documents.create(doc.to_doc())
    clock.advance(60)
    with stores.counters.measure() as cost:
        found = sweep_of(ctx, PAGED).due(clock.now())
    assert (found.products, found.truncated) == (["many", "next", "last"], False)
    # many+many; next+last (many left out); an empty page. Without leaving out the products
    # found, three pages would have held nothing but many's rows.
    assert cost == {"query": 3}


def test_sweep_round_robin_gives_every_waiting_product_its_turn(
    ctx: AppContext, clock: ManualClock
) -> None:
    products = [f"w{n}" for n in range(7)]  # one more than three pages of two
    for product in products:
        for _ in range(3):  # each product's rows fill more than a page
            ctx.coordinator.submit(product, manifest(capabilities=("gpu",)), "operator:o")
    sweep = sweep_of(ctx, PAGED)
    clock.advance(3600)
    sweep.products("reaper")  # the first tick's changes: every product; the cursor moves
    turns: list[list[str]] = []
    for _ in range(3):
        clock.advance(60)
        plan = sweep.plan("reaper")
        sweep.advance(plan)
        turns.append(plan.products)
    # A page per product (its rows fill one), three pages a tick; where one tick stops, the
    # next goes on, round to the first: every product has had its turn.
    assert turns == [["w3", "w4", "w5"], ["w6", "w0"], ["w1", "w2", "w3"]]
    assert set(turns[0]) | set(turns[1]) | set(turns[2]) == set(products)


def test_sweep_a_truncated_changed_set_keeps_the_mark_at_the_last_row_read(
    ctx: AppContext, clock: ManualClock
) -> None:
    products = [f"p{n}" for n in range(8)]
    for product in products:  # one every 10 s: p0 at T0 ... p7 at T0+70 s
        idle(ctx.coordinator, product)
        clock.advance(10)
    sweep = sweep_of(ctx, PAGED)
    plan = sweep.plan("reaper")
    assert plan.products == products[:6]  # three pages of two
    # p5's event, the last read, with the products passed (their events at it are done).
    assert plan.mark.since == format_ts(T0 + timedelta(seconds=50))
    assert plan.mark.at == tuple(products[:6])
    sweep.advance(plan)
    clock.advance(60)
    after = sweep.plan("reaper")
    assert after.products == ["p6", "p7"]  # exactly from there: no slack, p5 not again
    assert (after.mark.since, after.mark.at) == (format_ts(clock.now()), ())
    assert set(plan.products) | set(after.products) == set(products)


# --- what a tick leaves, the next one finds first (the module's promise) -----------------


def test_sweep_changed_moves_past_more_products_changed_at_once_than_a_tick_reads(
    ctx: AppContext, clock: ManualClock
) -> None:
    products = [f"p{n}" for n in range(7)]  # one more than three pages of two
    for product in products:
        idle(ctx.coordinator, product)
    sweep = sweep_of(ctx, PAGED)
    found: set[str] = set()
    for _ in range(3):
        clock.advance(60)
        found |= set(sweep.products("reaper"))
    assert found == set(products)  # p6 is never found: each tick reads p0..p5 again


def test_sweep_due_reaches_an_expired_lease_behind_more_waiting_products_than_a_tick_reads(
    ctx: AppContext, clock: ManualClock
) -> None:
    for n in range(6):  # queued and waiting (no factory runs gpu jobs): due from their submit
        ctx.coordinator.submit(f"wait-{n}", manifest(capabilities=("gpu",)), "operator:o")
    clock.advance(SweepConfig().first_lookback_seconds + 60)  # their changes long seen
    sweep = sweep_of(ctx, PAGED)
    claimed(ctx.coordinator, "busy")
    clock.advance(10)
    assert "busy" in sweep.products("reaper")  # changed: claimed since the last tick
    clock.advance(300)  # the lease has expired; nothing has changed since
    ticks = []
    for _ in range(3):
        ticks.append(sweep.products("reaper"))
        clock.advance(60)
    assert any("busy" in products for products in ticks), ticks


# --- jobs written before ``dueAt`` ------------------------------------------------------


def test_sweep_a_lease_written_before_due_at_is_found_and_its_pass_dates_it(
    ctx: AppContext, stores: Stores, clock: ManualClock
) -> None:
    """A leased job stored without ``dueAt`` (written before jobs kept one): the reaper's
    sweep finds its product, and the reaper's pass writes its ``dueAt``, once; then the
    lease's expiry is found as any other's."""
    claim = claimed(ctx.coordinator, "old")
    doc = stores.documents.read("old", claim.job.id)
    stores.documents.replace({k: v for k, v in doc.items() if k != "dueAt"}, etag=doc["_etag"])
    sweep = sweep_of(ctx)
    clock.advance(60)
    sweep.products("reaper")  # the first tick: the claim is a change too
    clock.advance(60)
    assert sweep.products("reaper") == ["old"]  # undated: found though nothing is due
    ctx.coordinator.reap("old")
    assert stores.documents.read("old", claim.job.id)["dueAt"] == format_ts(claim.lease.expiresAt)
    clock.advance(60)
    assert sweep.products("reaper") == []
    clock.advance(300 - 180 + 1)  # the lease's 300 s are over
    assert sweep.products("reaper") == ["old"]
    assert ctx.coordinator.reap("old").requeued == [claim.job.id]


def test_sweep_round_robins_begin_a_circle_at_most_once_a_round_and_changes_still_count(
    ctx: AppContext, stores: Stores, clock: ManualClock
) -> None:
    """A backlog waiting for capacity costs its product a pass once a round, not every tick;
    an idle timer's mark is not written for a round that found nothing."""
    ctx.coordinator.submit("queue", manifest(capabilities=("gpu",)), "operator:o")
    busy = claimed(ctx.coordinator, "busy").job.id
    sweep = sweep_of(ctx)
    clock.advance(60)
    for timer in TIMERS:
        sweep.products(timer)  # the first ticks: every change of the last hour; rounds begin
    ticks: dict[str, list[list[str]]] = {"reaper": [], "healer": []}
    for _ in range(8):  # two minutes of 15 s ticks, nothing changing
        clock.advance(15)
        for timer, found in ticks.items():
            found.append(sweep.products(timer))
    # Each circle began 60 s after the previous one: on the 4th and the 8th tick.
    assert ticks["reaper"] == [[], [], [], ["queue"], [], [], [], ["queue"]]
    assert ticks["healer"] == [[], [], [], ["busy"], [], [], [], ["busy"]]
    # Between rounds a change is still passed on the next tick.
    ctx.coordinator.submit("queue", manifest(capabilities=("gpu",)), "operator:o")
    clock.advance(15)
    assert sweep.products("reaper") == ["queue"]
    # With nothing waiting, the healer's idle tick writes no mark.
    ctx.coordinator.operator("busy", busy, Action.CANCEL, "operator:o")
    clock.advance(60)
    sweep.products("healer")
    with stores.counters.measure() as cost:
        for _ in range(3):
            clock.advance(60)
            assert sweep.products("healer") == []
    assert "write" not in cost, cost
