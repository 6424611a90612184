"""The coordinator on the in-memory twin, with an injected clock."""

from __future__ import annotations

from typing import Any

import pytest

from fleet.coordinator import Coordinator
from fleet.coordinator.clock import ManualClock
from fleet.coordinator.config import CoordinatorConfig
from fleet.coordinator.service import AgentEvent
from fleet.domain.jobs import EMBEDDED_EVENTS, agrees, replay
from fleet.domain.manifest import ProfileSpec
from fleet.domain.models import Deps
from fleet.domain.stages import Action, Stage
from fleet.errors import Fenced, IllegalTransition, ValidationFailed
from fleet.store.ports import Set, Stores
from tests.support.builders import factory_view as factory
from tests.support.builders import manifest
from tests.unit.conftest import counting_entropy

P = "prod"


def full_history(coord: Coordinator, job_id: str) -> list[Any]:
    return coord.job_events(P, job_id, after=0)


def test_coordinator_submit_creates_a_queued_job_with_its_event(coord: Coordinator) -> None:
    job, created = coord.submit(P, manifest(capabilities=("python",)), "operator:o")
    assert created and job.stage is Stage.QUEUED and job.seq == 1
    assert job.events[0].type == "submit" and job.events[0].toStage is Stage.QUEUED
    assert coord.queue_state(P)["version"] == 1
    assert job.id.startswith("j") and len(job.id) == 27


def test_coordinator_job_ids_sort_by_creation_time(coord: Coordinator, clock: ManualClock) -> None:
    ids = []
    for _ in range(5):
        ids.append(coord.submit(P, manifest(), "operator:o")[0].id)
        clock.advance(0.01)
    assert ids == sorted(ids)


def test_coordinator_same_idempotency_key_is_one_job(coord: Coordinator) -> None:
    first, created = coord.submit(P, manifest(idempotencyKey="k-1"), "operator:o")
    again, created_again = coord.submit(P, manifest(idempotencyKey="k-1"), "operator:o")
    assert created and not created_again and again.id == first.id
    assert [j.id for j in coord.list_jobs(P)] == [first.id]


def test_coordinator_claim_costs_one_query_and_one_write(
    coord: Coordinator, stores: Stores
) -> None:
    job, _ = coord.submit(P, manifest(capabilities=("python",)), "operator:o")
    # The product's settings, its learned routing, whether it has a budget, the factory's
    # standing: each read once per instance per TTL, not on every claim.
    warm(coord, "f1")
    with stores.counters.measure() as cost:
        result = coord.claim(P, factory())
    assert cost == {"query": 1, "write": 1}
    assert result is not None and result.job.id == job.id
    assert result.job.stage is Stage.ASSIGNED
    assert result.lease.holder == "f1" and result.lease.epoch == 1
    assert result.cadence.renew_seconds <= job.leaseSeconds // 3
    assign = result.job.events[-1]
    assert assign.type == "assign" and assign.data["score"]["total"] == result.breakdown["total"]


def test_coordinator_a_burst_of_submits_reads_the_fleet_once(
    coord: Coordinator, stores: Stores
) -> None:
    coord.register_factory(P, factory("f1", ("python",)), "1.0")
    coord.submit(P, manifest(capabilities=("python",)), "operator:o")  # fills the cache
    with stores.counters.measure() as first:
        coord.submit(P, manifest(capabilities=("python",)), "operator:o")
    with stores.counters.measure() as burst:
        for _ in range(10):
            coord.submit(P, manifest(capabilities=("python",)), "operator:o")
    assert burst == {k: 10 * n for k, n in first.items()}  # no query grows with the burst
    assert "query" not in first  # the fleet came from the cache


def test_coordinator_unroutable_at_submit_is_judged_on_a_fresh_fleet(coord: Coordinator) -> None:
    coord.register_factory(P, factory("f1", ("python",)), "1.0")
    coord.submit(P, manifest(capabilities=("python",)), "operator:o")  # the fleet is cached
    lone, _ = coord.submit(P, manifest(capabilities=("rust",)), "operator:o")
    assert lone.unroutable
    # A factory enrolled a moment ago, after the cache was filled, is seen at once.
    coord.register_factory(P, factory("f2", ("rust",)), "1.0")
    routed, _ = coord.submit(P, manifest(capabilities=("rust",)), "operator:o")
    assert not routed.unroutable


def test_coordinator_claim_filters_on_capabilities(coord: Coordinator) -> None:
    coord.submit(P, manifest(capabilities=("python", "gpu")), "operator:o")
    assert coord.claim(P, factory(caps=("python",))) is None
    assert coord.claim(P, factory(caps=("python", "gpu", "docker"))) is not None


def test_coordinator_claim_serves_priority_first(coord: Coordinator, clock: ManualClock) -> None:
    coord.submit(P, manifest(priority=1), "operator:o")
    clock.advance(1)
    high, _ = coord.submit(P, manifest(priority=9), "operator:o")
    result = coord.claim(P, factory(caps=()))
    assert result is not None and result.job.id == high.id


def test_coordinator_a_job_is_assigned_once(coord: Coordinator) -> None:
    coord.submit(P, manifest(), "operator:o")
    assert coord.claim(P, factory("a", ())) is not None
    assert coord.claim(P, factory("b", ())) is None


def test_coordinator_idle_gate_poll_is_one_point_read(coord: Coordinator, stores: Stores) -> None:
    with stores.counters.measure() as cost:
        assert coord.queue_state(P)["version"] == 0
    assert cost == {"read": 1}
    coord.submit(P, manifest(), "operator:o")
    with stores.counters.measure() as cost:
        assert coord.queue_state(P)["version"] == 1
    assert cost == {"read": 1}


def test_coordinator_renew_extends_the_lease_and_stale_epoch_is_fenced(
    coord: Coordinator, clock: ManualClock
) -> None:
    coord.submit(P, manifest(leaseSeconds=60), "operator:o")
    claim = coord.claim(P, factory(caps=()))
    assert claim is not None
    clock.advance(30)
    lease = coord.renew(P, claim.job.id, "f1", claim.lease.epoch).lease
    assert lease is not None
    assert (lease.expiresAt - clock.now()).total_seconds() == 60
    with pytest.raises(Fenced):
        coord.renew(P, claim.job.id, "f1", claim.lease.epoch - 1)
    with pytest.raises(Fenced):
        coord.renew(P, claim.job.id, "someone-else", claim.lease.epoch)


def test_coordinator_an_expired_lease_is_not_renewed_even_before_the_reaper(
    coord: Coordinator, clock: ManualClock
) -> None:
    job, _ = coord.submit(P, manifest(leaseSeconds=60, maxAttempts=3), "operator:o")
    claim = coord.claim(P, factory("late", ()))
    assert claim is not None
    coord.report(P, job.id, "late", 1, checkpoint={"branch": "wip/1"})
    clock.advance(61)  # past expiresAt; the reaper has not run
    before = coord.get_job(P, job.id)
    with pytest.raises(Fenced) as refused:
        coord.renew(P, job.id, "late", 1)
    assert refused.value.code == "fenced" and "expired" in refused.value.message
    assert coord.get_job(P, job.id) == before  # a fenced write changes nothing
    assert coord.reap(P).requeued == [job.id]  # the reaper takes it back
    taken = coord.get_job(P, job.id)
    assert taken.stage is Stage.QUEUED and taken.epoch == 2 and taken.lease is None
    assert taken.checkpoint == {"branch": "wip/1"} and taken.failedBy == ("late",)


def test_coordinator_reaper_requeues_expired_and_fences_the_zombie(
    coord: Coordinator, clock: ManualClock
) -> None:
    job, _ = coord.submit(P, manifest(leaseSeconds=60, maxAttempts=3), "operator:o")
    claim = coord.claim(P, factory("zombie", ()))
    assert claim is not None
    coord.report(P, job.id, "zombie", 1, checkpoint={"branch": "wip/1"})
    clock.advance(61)
    report = coord.reap(P)
    assert report.requeued == [job.id]
    requeued = coord.get_job(P, job.id)
    assert requeued.stage is Stage.QUEUED and requeued.epoch == 2 and requeued.lease is None
    assert requeued.checkpoint == {"branch": "wip/1"} and requeued.failedBy == ("zombie",)
    # The paused worker wakes up and writes with its old epoch: every write is fenced.
    before = coord.get_job(P, job.id)
    for write in (
        lambda: coord.renew(P, job.id, "zombie", 1),
        lambda: coord.report(P, job.id, "zombie", 1, stage=Stage.SHIPPED),
        lambda: coord.release(P, job.id, "zombie", 1),
    ):
        with pytest.raises(Fenced):
            write()
    assert coord.get_job(P, job.id).to_doc() == before.to_doc()
    # A clean worker gets it, with the checkpoint.
    again = coord.claim(P, factory("clean", ()))
    assert (
        again is not None and again.lease.epoch == 3 and again.job.checkpoint == {"branch": "wip/1"}
    )


def test_coordinator_dead_letters_after_max_attempts(
    coord: Coordinator, clock: ManualClock
) -> None:
    job, _ = coord.submit(P, manifest(leaseSeconds=30, maxAttempts=2), "operator:o")
    for n in range(2):
        assert coord.claim(P, factory(f"f{n}", ())) is not None
        clock.advance(31)
        coord.reap(P)
    final = coord.get_job(P, job.id)
    assert final.stage is Stage.DEAD_LETTER and final.attempts == 2
    assert agrees(final, full_history(coord, job.id))


def test_coordinator_holder_reports_through_to_shipped(coord: Coordinator) -> None:
    job, _ = coord.submit(P, manifest(), "operator:o")
    claim = coord.claim(P, factory(caps=()))
    assert claim is not None
    epoch = claim.lease.epoch
    coord.report(P, job.id, "f1", epoch, stage=Stage.BUILDING)
    coord.report(P, job.id, "f1", epoch, stage=Stage.TESTING, progress={"tokens": 10})
    done = coord.report(P, job.id, "f1", epoch, stage=Stage.SHIPPED, result={"exitCode": 0})
    assert done.stage is Stage.SHIPPED and done.lease is None and done.result == {"exitCode": 0}
    assert [e.type for e in done.events] == ["submit", "assign", "start", "test", "complete"]
    assert agrees(done, full_history(coord, job.id))


def test_coordinator_retryable_failure_requeues_and_counts(coord: Coordinator) -> None:
    job, _ = coord.submit(P, manifest(maxAttempts=3), "operator:o")
    claim = coord.claim(P, factory(caps=()))
    assert claim is not None
    failed = coord.report(P, job.id, "f1", 1, stage=Stage.FAILED, retryable=True, reason="tests")
    assert failed.stage is Stage.QUEUED and failed.attempts == 1 and failed.failedBy == ("f1",)
    hard = coord.claim(P, factory("f2", ()))
    assert hard is not None
    final = coord.report(P, job.id, "f2", hard.lease.epoch, stage=Stage.FAILED)
    assert final.stage is Stage.FAILED


def test_coordinator_release_requeues_without_counting_an_attempt(coord: Coordinator) -> None:
    job, _ = coord.submit(P, manifest(), "operator:o")
    claim = coord.claim(P, factory(caps=()))
    assert claim is not None
    released = coord.release(P, job.id, "f1", 1, checkpoint={"step": 3}, reason="drain")
    assert released.stage is Stage.QUEUED and released.attempts == 0
    assert released.checkpoint == {"step": 3}


def test_coordinator_illegal_transition_names_the_current_stage(coord: Coordinator) -> None:
    job, _ = coord.submit(P, manifest(), "operator:o")
    with pytest.raises(IllegalTransition) as caught:
        coord.operator(P, job.id, Action.SHIP, "o")
    assert caught.value.details["stage"] == "queued"
    assert coord.get_job(P, job.id).seq == 1


def test_coordinator_operator_cancel_fences_the_holder(coord: Coordinator) -> None:
    job, _ = coord.submit(P, manifest(), "operator:o")
    claim = coord.claim(P, factory(caps=()))
    assert claim is not None
    cancelled = coord.operator(P, job.id, Action.CANCEL, "o", reason="not needed")
    assert cancelled.stage is Stage.CANCELLED and cancelled.epoch == 2
    with pytest.raises(Fenced):
        coord.report(P, job.id, "f1", 1, stage=Stage.BUILDING)
    requeued = coord.operator(P, job.id, Action.REQUEUE, "o")
    assert requeued.stage is Stage.QUEUED
    assert agrees(requeued, full_history(coord, job.id))


def test_coordinator_reprioritize_reorders_the_queue(
    coord: Coordinator, clock: ManualClock
) -> None:
    coord.submit(P, manifest(priority=5), "operator:o")
    clock.advance(1)
    b, _ = coord.submit(P, manifest(priority=5), "operator:o")
    coord.reprioritize(P, b.id, 9, "o")
    claim = coord.claim(P, factory(caps=()))
    assert claim is not None and claim.job.id == b.id
    assert [e.type for e in coord.get_job(P, b.id).events][-2:] == ["reprioritize", "assign"]


@pytest.mark.parametrize(
    ("mode", "dep_outcomes", "expected"),
    [
        ("all", [Stage.SHIPPED, Stage.SHIPPED], Stage.QUEUED),
        ("all", [Stage.SHIPPED, None], Stage.BLOCKED),
        ("all", [Stage.SHIPPED, Stage.CANCELLED], Stage.FAILED),
        ("any", [Stage.SHIPPED, None], Stage.QUEUED),
        ("any", [Stage.CANCELLED, None], Stage.BLOCKED),
        ("any", [Stage.CANCELLED, Stage.CANCELLED], Stage.FAILED),
    ],
)
def test_coordinator_deps_gate_the_dependent(
    coord: Coordinator, mode: str, dep_outcomes: list[Stage | None], expected: Stage
) -> None:
    # Each dep needs its own capability, so exactly the intended factory can take it.
    deps = [
        coord.submit(P, manifest(title=f"dep {i}", capabilities=(f"dep{i}",)), "operator:o")[0]
        for i in range(2)
    ]
    child, _ = coord.submit(
        P, manifest(deps=Deps(mode=mode, jobs=tuple(d.id for d in deps))), "operator:o"
    )  # type: ignore[arg-type]
    assert child.stage is Stage.BLOCKED
    for i, (dep, outcome) in enumerate(zip(deps, dep_outcomes, strict=True)):
        if outcome is Stage.SHIPPED:
            claim = coord.claim(P, factory(f"w{i}", (f"dep{i}",)))
            assert claim is not None and claim.job.id == dep.id
            coord.report(P, dep.id, f"w{i}", claim.lease.epoch, stage=Stage.BUILDING)
            coord.report(P, dep.id, f"w{i}", claim.lease.epoch, stage=Stage.SHIPPED)
        elif outcome is Stage.CANCELLED:
            coord.operator(P, dep.id, Action.CANCEL, "o")
    coord.reap(P)
    assert coord.get_job(P, child.id).stage is expected


def test_coordinator_unknown_dep_is_rejected_at_submit(coord: Coordinator) -> None:
    with pytest.raises(ValidationFailed) as caught:
        coord.submit(P, manifest(deps=Deps(jobs=("j" + "0" * 26,))), "operator:o")
    assert caught.value.problems[0].path == "deps.jobs[0]"
    assert coord.list_jobs(P) == []


def test_coordinator_long_history_spills_and_replays(
    coord: Coordinator, clock: ManualClock
) -> None:
    job, _ = coord.submit(P, manifest(maxAttempts=20, leaseSeconds=30), "operator:o")
    for n in range(EMBEDDED_EVENTS):
        claim = coord.claim(P, factory(f"f{n}", ()))
        assert claim is not None
        coord.release(P, job.id, f"f{n}", claim.lease.epoch)
        clock.advance(1)
    stored = coord.get_job(P, job.id)
    assert stored.spilledThrough > 0 and len(stored.events) <= EMBEDDED_EVENTS
    history = full_history(coord, job.id)
    assert [e.seq for e in history] == list(range(1, stored.seq + 1))
    assert agrees(stored, history)
    assert replay(history).stage is Stage.QUEUED
    later = coord.job_events(P, job.id, after=stored.seq - 2)
    assert [e.seq for e in later] == [stored.seq - 1, stored.seq]


def test_coordinator_explain_says_why(coord: Coordinator) -> None:
    job, _ = coord.submit(P, manifest(capabilities=("python", "gpu")), "operator:o")
    assert job.unroutable  # nobody registered yet
    coord.register_factory(P, factory("cpu", ("python",)), "1.0")
    coord.register_factory(P, factory("gpu", ("python", "gpu")), "1.0")
    coord.register_factory(P, factory("full", ("python", "gpu"), load=1, seats=1), "1.0")
    out = coord.explain(P, job.id)
    verdicts = {v["factory"]: v for v in out["factories"]}
    assert verdicts["gpu"]["eligible"] and verdicts["gpu"]["score"]["total"] > 0
    assert verdicts["cpu"]["missingCapabilities"] == ["gpu"]
    assert "busy" in verdicts["full"]["reasons"][0]
    assert out["factories"][0]["factory"] == "gpu"
    assert out["unroutable"] is False


def test_coordinator_metrics_count_stages(coord: Coordinator, clock: ManualClock) -> None:
    coord.submit(P, manifest(capabilities=("nobody-has-this",)), "operator:o")
    coord.submit(P, manifest(), "operator:o")
    assert coord.claim(P, factory(caps=())) is not None
    clock.advance(10)
    metrics = coord.compute_metrics(P)
    assert metrics["queueDepth"]["queued"] == 1 and metrics["queueDepth"]["assigned"] == 1
    assert metrics["oldestQueuedSeconds"] == 10 and metrics["unroutable"] == 1
    assert coord.metrics(P)["queueDepth"] == metrics["queueDepth"]


def test_coordinator_product_events_follow_a_cursor(coord: Coordinator, clock: ManualClock) -> None:
    a, _ = coord.submit(P, manifest(), "operator:o")
    clock.advance(1)
    events, cursor = coord.product_events(P, None)
    assert [(e["jobId"], e["seq"]) for e in events] == [(a.id, 1)]
    clock.advance(1)
    b, _ = coord.submit(P, manifest(), "operator:o")
    assert coord.claim(P, factory(caps=())) is not None
    events, cursor2 = coord.product_events(P, cursor)
    assert {(e["jobId"], e["type"]) for e in events} == {(b.id, "submit"), (a.id, "assign")}
    assert coord.product_events(P, cursor2)[0] == []


def test_coordinator_profile_versions_are_snapshotted_into_jobs(coord: Coordinator) -> None:
    v1 = coord.put_profile(P, "dev", ProfileSpec(preamble="Be careful.", capabilities=("python",)))
    job, _ = coord.submit(P, manifest(persona="dev"), "operator:o")
    v2 = coord.put_profile(P, "dev", ProfileSpec(preamble="Be bold.", engine="claude"))
    assert (v1.version, v2.version) == (1, 2)
    stored = coord.get_job(P, job.id)
    assert stored.profile is not None and stored.profile.version == 1
    assert stored.profile.preamble == "Be careful." and stored.capabilities == ("python",)
    assert coord.get_profile(P, "dev").version == 2
    assert coord.get_profile(P, "dev", 1).preamble == "Be careful."
    assert [p.version for p in coord.list_profiles(P)] == [2]


def test_coordinator_unknown_persona_is_a_validation_error(coord: Coordinator) -> None:
    with pytest.raises(ValidationFailed) as caught:
        coord.submit(P, manifest(persona="ghost"), "operator:o")
    assert caught.value.problems[0].path == "persona"


def test_coordinator_product_weights_change_the_choice(
    coord: Coordinator, clock: ManualClock
) -> None:
    old, _ = coord.submit(P, manifest(priority=5), "operator:o")
    clock.advance(600)
    urgent, _ = coord.submit(P, manifest(priority=9), "operator:o")
    # By default priority wins; with priority weightless and a heavy starvation weight, age wins.
    assert coord.weights(P).priority == 1.0
    coord.put_product_settings(P, {"priority": 0.0, "starvation": 50.0})
    assert coord.product_settings(P)["weights"]["starvation"] == 50.0
    claim = coord.claim(P, factory(caps=()))
    assert claim is not None and claim.job.id == old.id
    assert claim.breakdown["priority"] == 0
    assert coord.get_job(P, urgent.id).stage is Stage.QUEUED


def test_coordinator_cached_weights_cost_no_read_on_the_claim_path(
    coord: Coordinator, stores: Stores
) -> None:
    coord.submit(P, manifest(), "operator:o")
    coord.submit(P, manifest(), "operator:o")
    assert coord.claim(P, factory("a", ())) is not None  # the first claim loads settings
    coord.standing(P, "b")
    with stores.counters.measure() as cost:
        assert coord.claim(P, factory("b", ())) is not None
    assert cost == {"write": 1}  # and the queue's head as the first claim read it


def test_coordinator_claims_share_one_read_of_the_queue_for_a_moment(
    coord: Coordinator, stores: Stores, clock: ManualClock
) -> None:
    """Claims within ``queued_list_seconds`` of a read of the queue take their candidates
    from it, no query; a submit here, or the time passing, makes the next claim read again."""
    jobs = [coord.submit(P, manifest(), "operator:o")[0] for _ in range(4)]
    warm(coord, "a", "b", "c", "d")
    with stores.counters.measure() as first:
        a = coord.claim(P, factory("a", ()))
    with stores.counters.measure() as second:
        b = coord.claim(P, factory("b", ()))
    assert first == {"query": 1, "write": 1} and second == {"write": 1}
    assert a is not None and b is not None and a.job.id != b.job.id
    late, _ = coord.submit(P, manifest(priority=9), "operator:o")  # this instance's: forgotten
    with stores.counters.measure() as third:
        c = coord.claim(P, factory("c", ()))
    assert third == {"query": 1, "write": 1} and c is not None and c.job.id == late.id
    clock.advance(CoordinatorConfig().queued_list_seconds)
    with stores.counters.measure() as fourth:
        d = coord.claim(P, factory("d", ()))
    assert fourth == {"query": 1, "write": 1} and d is not None
    assert {a.job.id, b.job.id, d.job.id} < {j.id for j in jobs}


def test_coordinator_a_stale_shared_list_never_claims_a_job_twice(
    coord: Coordinator, stores: Stores, clock: ManualClock
) -> None:
    """Another instance claimed and requeued what this instance's list still shows: the
    candidate is written with the etag it was read with, refused, and the claim reads the
    queue itself; the job is claimed once per epoch, by whoever won it."""
    job, _ = coord.submit(P, manifest(), "operator:o")
    spare, _ = coord.submit(P, manifest(), "operator:o")
    warm(coord, "a", "b")
    first = coord.claim(P, factory("a", ()))
    assert first is not None
    other = another_instance(stores, clock)
    warm(other, "x")
    taken = other.claim(P, factory("x", ()))  # the other instance takes what is left
    assert taken is not None and taken.job.id == ({job.id, spare.id} - {first.job.id}).pop()
    with stores.counters.measure() as cost:
        assert coord.claim(P, factory("b", ())) is None  # refused by etag, then read: nothing
    assert cost == {"write": 1, "query": 1}
    stored = coord.get_job(P, taken.job.id)
    assert stored.lease is not None and stored.lease.holder == "x" and stored.epoch == 1


def test_coordinator_reaper_takes_jobs_back_from_revoked_holders(
    coord: Coordinator, stores: Stores
) -> None:
    job, _ = coord.submit(P, manifest(), "operator:o")
    coord.register_factory(P, factory("bad", ()), "1.0")
    claim = coord.claim(P, factory("bad", ()))
    assert claim is not None
    stores.documents.patch(P, "factory-bad", [Set("/revoked", True)])
    report = coord.reap(P)
    assert report.requeued == [job.id]
    taken = coord.get_job(P, job.id)
    assert taken.stage is Stage.QUEUED and taken.epoch == 2 and taken.failedBy == ("bad",)
    assert "revoked" in (taken.events[-1].reason or "")
    with pytest.raises(Fenced):
        coord.renew(P, job.id, "bad", 1)
    # Re-registering does not undo what the operator decided.
    assert coord.register_factory(P, factory("bad", ()), "1.1").revoked is True


def test_coordinator_take_back_only_at_the_expected_epoch(coord: Coordinator) -> None:
    job, _ = coord.submit(P, manifest(), "operator:o")
    claim = coord.claim(P, factory("f", ()))
    assert claim is not None
    assert coord.take_back(P, job.id, claim.lease.epoch + 1, "stalled") is None
    taken = coord.take_back(P, job.id, claim.lease.epoch, "stalled: no progress for 10 min")
    assert taken is not None and taken.stage is Stage.QUEUED
    assert taken.events[-1].actor == "healer"
    assert coord.take_back(P, job.id, claim.lease.epoch, "again") is None


def test_coordinator_a_paused_factory_claims_nothing(coord: Coordinator, stores: Stores) -> None:
    coord.submit(P, manifest(), "operator:o")
    coord.register_factory(P, factory("p", ()), "1.0")
    stores.documents.patch(P, "factory-p", [Set("/paused", True)])
    assert coord.claim(P, factory("p", ())) is None
    assert coord.claim(P, factory("q", ())) is not None


def test_coordinator_agent_events_are_fenced_idempotent_and_never_move_the_job(
    coord: Coordinator, clock: ManualClock
) -> None:
    job, _ = coord.submit(P, manifest(leaseSeconds=60), "operator:o")
    claim = coord.claim(P, factory("f", ()))
    assert claim is not None
    batch = [AgentEvent(seq=n, type="tool", payload={"call": n}) for n in (1, 2)]
    before = coord.get_job(P, job.id)
    assert coord.record_agent_events(P, job.id, "f", 1, batch) == 2
    assert coord.record_agent_events(P, job.id, "f", 1, batch) == 0  # a retried batch
    after = coord.get_job(P, job.id)
    assert (after.stage, after.epoch, after.seq) == (before.stage, before.epoch, before.seq)
    events = coord.agent_events(P, job.id)
    assert [(e["seq"], e["payload"]) for e in events] == [(1, {"call": 1}), (2, {"call": 2})]
    assert coord.agent_events(P, job.id, after=events[0]["key"])[0]["seq"] == 2
    clock.advance(61)
    coord.reap(P)
    with pytest.raises(Fenced):
        coord.record_agent_events(P, job.id, "f", 1, [AgentEvent(seq=3, type="late", payload=1)])
    assert len(coord.agent_events(P, job.id)) == 2


# --- a claim retried after its reply was lost ------------------------------------------


def warm(coord: Coordinator, *names: str) -> None:
    """Load what the claim path caches (settings, learned routing, budget, standing): the
    counts that follow are the claim's own."""
    coord.weights(P)
    coord.learned(P)
    coord.budgets.applies(P)
    for name in names:
        coord.standing(P, name)


def assign_events(coord: Coordinator, job_id: str) -> list[Any]:
    return [e for e in full_history(coord, job_id) if e.type == "assign"]


def test_coordinator_claim_stores_its_request_id_in_the_lease_at_no_cost(
    coord: Coordinator, stores: Stores
) -> None:
    job, _ = coord.submit(P, manifest(), "operator:o")
    warm(coord, "f1")
    with stores.counters.measure() as cost:
        won = coord.claim(P, factory(caps=()), "req-0001")
    assert cost == {"query": 1, "write": 1}
    assert won is not None and won.job.id == job.id and not won.replayed
    assert won.lease.requestId == "req-0001"
    stored = coord.get_job(P, job.id).lease
    assert stored is not None and stored.requestId == "req-0001"
    renewed = coord.renew(P, job.id, "f1", won.lease.epoch).lease
    assert renewed is not None and renewed.requestId == "req-0001"


def test_coordinator_a_lost_claim_retried_with_its_request_id_returns_the_same_job(
    coord: Coordinator, stores: Stores, clock: ManualClock
) -> None:
    ids = {coord.submit(P, manifest(), "operator:o")[0].id for _ in range(2)}
    warm(coord, "f1")
    lost = coord.claim(P, factory(caps=()), "req-0001")  # its reply never reaches f1
    assert lost is not None
    (other,) = ids - {lost.job.id}
    clock.advance(5)
    with stores.counters.measure() as cost:
        again = coord.claim(P, factory(caps=()), "req-0001", retry=True)
    assert cost == {"query": 1}  # found: no write
    assert again is not None and again.replayed
    assert again.job.id == lost.job.id and again.job.epoch == lost.job.epoch == 1
    assert again.lease == lost.lease and again.cadence == lost.cadence
    assert again.breakdown == lost.breakdown and again.job.seq == lost.job.seq
    assert coord.get_job(P, other).stage is Stage.QUEUED  # no second job assigned
    assert len(assign_events(coord, lost.job.id)) == 1
    assert assign_events(coord, other) == []


def test_coordinator_a_retry_that_finds_nothing_is_a_normal_claim(
    coord: Coordinator, stores: Stores
) -> None:
    job, _ = coord.submit(P, manifest(), "operator:o")
    warm(coord, "f1")
    # The lost request never reached the coordinator: the retry claims for the first time.
    with stores.counters.measure() as cost:
        won = coord.claim(P, factory(caps=()), "req-0001", retry=True)
    assert cost == {"query": 2, "write": 1}
    assert won is not None and won.job.id == job.id and not won.replayed
    assert won.lease.requestId == "req-0001"


def test_coordinator_a_retry_after_the_job_was_taken_back_gets_a_fresh_claim(
    coord: Coordinator, clock: ManualClock
) -> None:
    job, _ = coord.submit(P, manifest(leaseSeconds=60), "operator:o")
    lost = coord.claim(P, factory(caps=()), "req-0001")
    assert lost is not None
    clock.advance(61)  # expired, not reaped yet: not current, so not handed back
    fresh = coord.claim(P, factory(caps=()), "req-0001", retry=True)
    assert fresh is None  # the only job is still assigned (expired) until the reaper runs
    assert coord.reap(P).requeued == [job.id]
    fresh = coord.claim(P, factory(caps=()), "req-0001", retry=True)
    assert fresh is not None and not fresh.replayed
    assert fresh.job.id == job.id and fresh.lease.epoch == 3  # assign 1, reap 2, assign 3
    assert len(assign_events(coord, job.id)) == 2


def test_coordinator_a_retry_after_the_job_went_to_another_factory_gets_another_job(
    coord: Coordinator, clock: ManualClock
) -> None:
    job, _ = coord.submit(P, manifest(leaseSeconds=60), "operator:o")
    assert coord.claim(P, factory("a", ()), "req-0001") is not None
    clock.advance(61)
    coord.reap(P)
    taken = coord.claim(P, factory("b", ()), "req-0002")
    assert taken is not None and taken.job.id == job.id
    other, _ = coord.submit(P, manifest(), "operator:o")
    again = coord.claim(P, factory("a", ()), "req-0001", retry=True)
    assert again is not None and again.job.id == other.id and not again.replayed
    held = coord.get_job(P, job.id)
    assert held.lease is not None and held.lease.holder == "b"


def test_coordinator_another_factorys_request_id_never_matches(coord: Coordinator) -> None:
    mine, _ = coord.submit(P, manifest(), "operator:o")
    won = coord.claim(P, factory("a", ()), "req-shared")
    assert won is not None and won.job.id == mine.id
    assert coord.claim(P, factory("b", ()), "req-shared", retry=True) is None
    theirs, _ = coord.submit(P, manifest(), "operator:o")
    other = coord.claim(P, factory("b", ()), "req-shared", retry=True)
    assert other is not None and other.job.id == theirs.id and not other.replayed
    held = coord.get_job(P, mine.id).lease
    assert held is not None and held.holder == "a"
    assert len(assign_events(coord, mine.id)) == 1


def test_coordinator_a_claim_without_retry_never_replays(coord: Coordinator) -> None:
    coord.submit(P, manifest(), "operator:o")
    assert coord.claim(P, factory(caps=()), "req-0001") is not None
    assert coord.claim(P, factory(caps=()), "req-0001") is None  # a normal claim: nothing left


def test_coordinator_a_paused_factory_still_gets_the_job_its_lost_claim_won(
    coord: Coordinator, stores: Stores, clock: ManualClock
) -> None:
    job, _ = coord.submit(P, manifest(), "operator:o")
    coord.submit(P, manifest(), "operator:o")
    coord.register_factory(P, factory("p", ()), "1.0")
    assert coord.claim(P, factory("p", ()), "req-0001") is not None
    stores.documents.patch(P, "factory-p", [Set("/paused", True)])
    clock.advance(coord.config.settings_ttl_seconds + 1)  # the cached standing expires
    again = coord.claim(P, factory("p", ()), "req-0001", retry=True)
    assert again is not None and again.job.id == job.id and again.replayed  # not new work
    assert coord.claim(P, factory("p", ()), "req-0002", retry=True) is None  # new work: no


def test_coordinator_event_feed_never_skips_a_job_changed_again_behind_its_cursor(
    coord: Coordinator, clock: ManualClock
) -> None:
    # X's submit is the oldest event, but X changed last: found by its latest time, it sits
    # past the first TOP of changed jobs. The feed widens its read rather than moving the
    # cursor past X's submit.
    x, _ = coord.submit(P, manifest(title="x"), "operator:o")
    others = []
    for n in range(4):
        clock.advance(1)
        others.append(coord.submit(P, manifest(title=f"o{n}"), "operator:o")[0].id)
    clock.advance(1)
    coord.operator(P, x.id, Action.CANCEL, "o", "not needed")
    seen: list[tuple[str, int]] = []
    cursor = None
    for _ in range(10):
        events, cursor = coord.product_events(P, cursor, limit=3, alerts=False)
        if not events:
            break
        seen.extend((e["jobId"], e["seq"]) for e in events)
    assert seen == [(x.id, 1), *((o, 1) for o in others), (x.id, 2)]


def test_coordinator_a_claim_with_start_assigns_and_starts_in_one_write(
    coord: Coordinator, stores: Stores, clock: ManualClock
) -> None:
    job, _ = coord.submit(P, manifest(), "operator:o")
    warm(coord, "f1")
    with stores.counters.measure() as cost:
        won = coord.claim(P, factory(caps=()), "req-0001", start=True)
    assert cost == {"query": 1, "write": 1}  # as a claim alone: the building report saved
    assert won is not None and won.job.stage is Stage.BUILDING
    stored = coord.get_job(P, job.id)
    assert stored.stage is Stage.BUILDING and stored.epoch == won.lease.epoch == 1
    assert [e.type for e in stored.events] == ["submit", "assign", "start"]
    assert stored.events[-1].actor == "factory:f1"
    # its reply lost, the retry answers with the same started job, and writes nothing
    clock.advance(5)
    with stores.counters.measure() as cost:
        again = coord.claim(P, factory(caps=()), "req-0001", retry=True, start=True)
    assert cost == {"query": 1}
    assert again is not None and again.replayed and again.job.id == job.id
    # the holder goes on as after a building report: straight to shipped
    shipped = coord.report(P, job.id, "f1", 1, stage=Stage.SHIPPED)
    assert shipped.stage is Stage.SHIPPED


def test_coordinator_a_ship_looks_for_dependents_only_when_some_job_waits(
    coord: Coordinator, stores: Stores
) -> None:
    """Shipping a job nothing waits for asks the store nothing more than the ship; a job
    named in another's ``deps`` is marked at that submit, and its ship unblocks at once."""
    lone, _ = coord.submit(P, manifest(), "operator:o")
    dep, _ = coord.submit(P, manifest(), "operator:o")
    waiting, _ = coord.submit(P, manifest(deps=Deps(jobs=(dep.id,))), "operator:o")
    assert waiting.stage is Stage.BLOCKED
    assert coord.get_job(P, dep.id).hasDependents and not coord.get_job(P, lone.id).hasDependents
    warm(coord, "f1")
    for _ in range(2):
        won = coord.claim(P, factory(caps=()), start=True)
        assert won is not None
        with stores.counters.measure() as cost:
            coord.report(P, won.job.id, "f1", won.lease.epoch, stage=Stage.SHIPPED)
        if won.job.id == lone.id:
            # no query for dependents, and no read: this instance wrote the claim
            assert cost == {"write": 1}
    assert coord.get_job(P, waiting.id).stage is Stage.QUEUED  # unblocked by the ship


def test_coordinator_a_dependent_whose_mark_came_late_is_unblocked_by_the_reaper(
    coord: Coordinator,
) -> None:
    dep, _ = coord.submit(P, manifest(), "operator:o")
    waiting, _ = coord.submit(P, manifest(deps=Deps(jobs=(dep.id,))), "operator:o")
    coord.docs.patch(P, dep.id, [Set("/hasDependents", False)])  # as if shipped before the mark
    won = coord.claim(P, factory(caps=()), start=True)
    assert won is not None and won.job.id == dep.id
    coord.report(P, dep.id, "f1", won.lease.epoch, stage=Stage.SHIPPED)
    assert coord.get_job(P, waiting.id).stage is Stage.BLOCKED  # the ship did not look
    assert coord.reap(P).unblocked == [waiting.id]  # the reaper's pass does


# --- a change decided on the copy this instance wrote last -------------------------------------


def another_instance(stores: Stores, clock: ManualClock) -> Coordinator:
    """A second coordinator instance over the same store (its own caches)."""
    return Coordinator(stores, clock=clock, config=CoordinatorConfig(), entropy=counting_entropy())


def test_coordinator_a_report_after_this_instance_wrote_the_job_costs_one_write(
    coord: Coordinator, stores: Stores
) -> None:
    job, _ = coord.submit(P, manifest(), "operator:o")
    warm(coord, "f1")
    won = coord.claim(P, factory(caps=()), start=True)
    assert won is not None
    with stores.counters.measure() as cost:
        coord.renew(P, job.id, "f1", 1)
        coord.report(P, job.id, "f1", 1, progress={"tokens": 10})
        shipped = coord.report(P, job.id, "f1", 1, stage=Stage.SHIPPED)
    assert cost == {"write": 3}
    assert shipped.stage is Stage.SHIPPED and shipped.etag == coord.get_job(P, job.id).etag
    assert agrees(shipped, full_history(coord, job.id))


def test_coordinator_a_stale_copy_never_answers_for_the_stored_job(
    coord: Coordinator, stores: Stores, clock: ManualClock
) -> None:
    """Another instance took the job back and gave it to the same factory again: this
    instance's copy (epoch 1) is stale both ways. The old attempt's report is still fenced,
    and the new attempt's is accepted, each decided on the stored job."""
    job, _ = coord.submit(P, manifest(), "operator:o")
    warm(coord, "f1")
    assert coord.claim(P, factory(caps=()), start=True) is not None
    other = another_instance(stores, clock)
    other.operator(P, job.id, Action.REQUEUE, "o", reason="moved by hand")
    warm(other, "f1")
    again = other.claim(P, factory(caps=()), start=True)
    assert again is not None and again.lease.epoch > 1
    with stores.counters.measure() as cost:  # the copy (epoch 1) fences it: read, decide again
        shipped = coord.report(P, job.id, "f1", again.lease.epoch, stage=Stage.SHIPPED)
    assert cost == {"read": 1, "write": 1}
    assert shipped.stage is Stage.SHIPPED and shipped.epoch == again.lease.epoch
    with pytest.raises(Fenced):
        coord.report(P, job.id, "f1", 1, stage=Stage.SHIPPED)  # the old attempt's, too late
    assert agrees(shipped, full_history(coord, job.id))


def test_coordinator_a_copy_overtaken_by_another_write_is_refused_then_read(
    coord: Coordinator, stores: Stores, clock: ManualClock
) -> None:
    """The copy agrees with the report (same epoch) but another instance wrote since: the
    write decided on it is refused by its etag, and the report lands on a fresh read with
    the other write kept."""
    job, _ = coord.submit(P, manifest(), "operator:o")
    warm(coord, "f1")
    assert coord.claim(P, factory(caps=()), start=True) is not None
    other = another_instance(stores, clock)
    other.report(P, job.id, "f1", 1, progress={"tokens": 42})
    with stores.counters.measure() as cost:
        shipped = coord.report(P, job.id, "f1", 1, stage=Stage.SHIPPED)
    assert cost == {"write": 2, "read": 1}  # refused on the copy's etag, then read and written
    assert shipped.stage is Stage.SHIPPED and shipped.progress.get("tokens") == 42
    assert agrees(shipped, full_history(coord, job.id))


def test_coordinator_a_written_job_is_the_stored_document_with_its_new_etag(
    coord: Coordinator, stores: Stores
) -> None:
    """The writer answers with the job it wrote (not parsed again from the store's reply):
    it must be what the store holds, field for field, etag included."""
    job, _ = coord.submit(P, manifest(deps=None), "operator:o")
    warm(coord, "f1")
    won = coord.claim(P, factory(caps=()), start=True)
    assert won is not None
    reported = coord.report(P, job.id, "f1", 1, progress={"tokens": 7, "costUsd": 0.01})
    shipped = coord.report(P, job.id, "f1", 1, stage=Stage.SHIPPED, result={"exitCode": 0})
    for answered in (won.job, reported, shipped):
        assert answered.etag is not None
    stored = stores.documents.read(P, job.id)
    assert shipped == coord.get_job(P, job.id)
    assert shipped.to_doc() == {k: v for k, v in stored.items() if not k.startswith("_")}
    assert shipped.etag == stored["_etag"]
