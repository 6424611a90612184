"""Heartbeats, commands, deregistration and the self-healer, on the in-memory twin with an
injected clock (no test sleeps: time moves when the test says so)."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import pytest

from fleet.context import AppContext, context_for, once
from fleet.coordinator import Coordinator
from fleet.coordinator.clock import ManualClock
from fleet.coordinator.commands import COMMANDS, commands_partition
from fleet.coordinator.fleet_health import FleetHealth, fleet_health
from fleet.coordinator.heartbeats import (
    HEARTBEATS,
    JOBS_PART_CHARS,
    MAX_JOBS_JSON_CHARS,
    encode_jobs,
)
from fleet.coordinator.identity import Principal
from fleet.domain.fleet_state import (
    MAX_JOBS_PER_BEAT,
    MAX_OUTPUT_LINE_CHARS,
    Beat,
    FactoryDeregistered,
    FactoryNotFound,
    HeartbeatRecord,
    JobProgress,
    NotHeld,
    TrackedJob,
    track,
)
from fleet.domain.healer import HealthConfig, plan_heal
from fleet.domain.jobs import agrees
from fleet.domain.models import Factory, Job
from fleet.domain.stages import Stage
from fleet.errors import Fenced, NotFound, SettingsError, StoreUnavailable, ValidationFailed
from fleet.settings import HealerSettings, Settings
from fleet.store.memory import MemoryTableStore, memory_stores
from fleet.store.ports import Stores
from tests.support.builders import factory_view as view
from tests.support.builders import manifest
from tests.support.handlers import call, functions, tick, with_principals
from tests.unit.conftest import counting_entropy

P = "prod"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
COSMOS_KINDS = ("read", "query", "write", "patch")


@pytest.fixture
def health(coord: Coordinator) -> FleetHealth:
    return FleetHealth(coord, HealthConfig(), entropy=counting_entropy())


def beat(*jobs: JobProgress, caps: tuple[str, ...] = ("python",), **kw: Any) -> Beat:
    return Beat(capabilities=caps, seats=kw.pop("seats", 2), jobs=jobs, **kw)


def progress(job: Job, tokens: int = 100, line: str = "thinking") -> JobProgress:
    return JobProgress(
        job_id=job.id, lease_epoch=job.epoch, tokens=tokens, cost_usd=0.01, last_output_line=line
    )


def started(coord: Coordinator, name: str, **fields: Any) -> Job:
    """A job claimed by ``name`` and reported building (so it counts as started)."""
    coord.submit(P, manifest(capabilities=("python",), **fields), "operator:o")
    claim = coord.claim(P, view(name))
    assert claim is not None
    return coord.report(P, claim.job.id, name, claim.lease.epoch, stage=Stage.BUILDING)


def factory_doc(stores: Stores, name: str) -> Factory:
    return Factory.from_doc(stores.documents.read(P, f"factory-{name}"))


def cosmos_calls(cost: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in cost.items() if k in COSMOS_KINDS}


# --- heartbeats -----------------------------------------------------------------------


def test_fleet_health_first_heartbeat_registers_the_factory(
    health: FleetHealth, stores: Stores
) -> None:
    reply = health.heartbeat(P, "f1", beat(seats=4, version="1.2"))
    assert reply.as_dict() == {
        "status": "live",
        "cadence": {"heartbeatSeconds": 30},
        "commands": [],
    }
    doc = factory_doc(stores, "f1")
    assert (doc.capabilities, doc.seats, doc.version, doc.status) == (("python",), 4, "1.2", "live")


def test_fleet_health_a_normal_heartbeat_writes_no_cosmos(
    coord: Coordinator, health: FleetHealth, stores: Stores, clock: ManualClock
) -> None:
    job = started(coord, "f1")
    health.heartbeat(P, "f1", beat(progress(job)))
    for n in range(3):
        clock.advance(30)
        with stores.counters.measure() as cost:
            reply = health.heartbeat(P, "f1", beat(progress(job, tokens=200 + n), load=1))
        assert reply.status == "live"
        # One table read (the previous beat), one merge, one query for commands: no Cosmos.
        assert cost == {"table_read": 1, "table_write": 1, "table_query": 1}
    record = health.last_heartbeat(P, "f1")
    assert record["load"] == 1 and record["jobs"][0]["tokens"] == 202


def test_fleet_health_profile_changes_reach_the_factory_document_load_does_not(
    health: FleetHealth, stores: Stores
) -> None:
    health.heartbeat(P, "f1", beat(load=0))
    with stores.counters.measure() as cost:
        health.heartbeat(P, "f1", beat(load=2))
    assert cosmos_calls(cost) == {}
    assert factory_doc(stores, "f1").load == 0
    with stores.counters.measure() as cost:
        health.heartbeat(P, "f1", beat(caps=("python", "gpu"), version="2.0"))
    assert cosmos_calls(cost) == {"read": 2, "write": 1}  # a read here, register's read+write
    doc = factory_doc(stores, "f1")
    assert doc.capabilities == ("gpu", "python") and doc.version == "2.0"


def test_fleet_health_heartbeat_keeps_the_registered_cost_when_it_says_none(
    coord: Coordinator, health: FleetHealth, stores: Stores
) -> None:
    coord.register_factory(P, view("f1", cost=0.1), "1.0")
    health.heartbeat(P, "f1", beat(seats=1))
    assert factory_doc(stores, "f1").cost == 0.1


def test_fleet_health_heartbeat_after_stale_flips_the_factory_back_live_once(
    health: FleetHealth, stores: Stores, clock: ManualClock
) -> None:
    health.heartbeat(P, "f1", beat())
    clock.advance(120)
    assert health.heal(P).marked == {"f1": "stale"}
    assert factory_doc(stores, "f1").status == "stale"
    with stores.counters.measure() as cost:
        assert health.heartbeat(P, "f1", beat()).status == "live"
    assert cost["write"] == 1  # Coordinator.register_factory: the rare Cosmos write
    assert factory_doc(stores, "f1").status == "live"
    with stores.counters.measure() as cost:
        health.heartbeat(P, "f1", beat())
    assert cosmos_calls(cost) == {}


def test_fleet_health_heartbeat_stores_bounded_progress(
    coord: Coordinator, health: FleetHealth, stores: Stores
) -> None:
    long_line = "é" * 10_000  # escaped in JSON: six characters each
    jobs = tuple(
        JobProgress(job_id=f"j{n:026d}", lease_epoch=1, tokens=n, last_output_line=long_line)
        for n in range(MAX_JOBS_PER_BEAT + 6)
    )
    health.heartbeat(P, "f1", beat(*jobs))
    entity = stores.tables.get(HEARTBEATS, P, "f1")
    parts = [entity["jobs"]] + [entity[f"jobs{n}"] for n in range(1, entity["jobsParts"])]
    assert all(len(part) <= JOBS_PART_CHARS for part in parts)
    assert len("".join(parts)) <= MAX_JOBS_JSON_CHARS
    stored = json.loads("".join(parts))
    assert len(stored) == MAX_JOBS_PER_BEAT
    assert all(len(r["lastOutputLine"]) <= MAX_OUTPUT_LINE_CHARS for r in stored)
    # A later, shorter beat is merged over the long one: the leftover parts are ignored.
    (first,) = jobs[:1]
    health.heartbeat(P, "f1", beat(first))
    assert [j["jobId"] for j in health.last_heartbeat(P, "f1")["jobs"]] == [first.job_id]


@pytest.mark.parametrize(
    ("change", "moved"),
    [
        ({}, False),
        ({"tokens": 101}, True),
        ({"cost_usd": 0.02}, True),
        ({"last_output_line": "still thinking"}, True),
        ({"last_activity_at": T0 + timedelta(seconds=5)}, True),
        ({"lease_epoch": 2}, True),  # a new lease starts the clock afresh
        ({"last_output_line": "thinking" + "x" * 600}, True),
    ],
)
def test_fleet_health_track_keeps_the_time_progress_last_moved(
    change: dict[str, Any], moved: bool
) -> None:
    first = JobProgress(
        job_id="j1", lease_epoch=1, tokens=100, cost_usd=0.01, last_output_line="thinking"
    )
    before = track({}, [first], T0)
    later = T0 + timedelta(seconds=60)
    after = track(before, [replace(first, **change)], later)
    assert after["j1"].changed_at == (later if moved else T0)


def test_fleet_health_track_drops_jobs_no_longer_reported() -> None:
    before = track({}, [JobProgress(job_id="j1", lease_epoch=1)], T0)
    assert track(before, [], T0) == {}


def test_fleet_health_encode_jobs_shortens_lines_to_fit_the_budget() -> None:
    tracked = track(
        {},
        [JobProgress(job_id=f"j{n}", lease_epoch=1, last_output_line="x" * 500) for n in range(10)],
        T0,
    )
    text = encode_jobs(tracked, budget=3000)
    assert len(text) <= 3000
    assert {r["fingerprint"] for r in json.loads(text)} == {t.fingerprint for t in tracked.values()}


# --- commands -------------------------------------------------------------------------


def test_fleet_health_commands_are_delivered_until_acked(health: FleetHealth) -> None:
    health.heartbeat(P, "f1", beat())
    pause, _ = health.command(P, "f1", "pause", by="alice", reason="maintenance")
    restart, _ = health.command(P, "f1", "restart-engine", by="bob")
    first = health.heartbeat(P, "f1", beat())
    assert [c.kind for c in first.commands] == ["pause", "restart-engine"]
    delivered = first.as_dict()["commands"][0]
    assert delivered == {
        "id": pause.id,
        "kind": "pause",
        "jobId": None,
        "issuedAt": "2026-01-01T00:00:00.000000Z",
        "issuedBy": "operator:alice",
        "reason": "maintenance",
    }
    assert [c.id for c in health.heartbeat(P, "f1", beat()).commands] == [pause.id, restart.id]
    assert [c.id for c in health.heartbeat(P, "f1", beat(ack=(pause.id,))).commands] == [restart.id]
    assert health.heartbeat(P, "f1", beat(ack=(restart.id, restart.id))).commands == ()
    assert health.last_heartbeat(P, "f1")["pendingCommands"] == []


@pytest.mark.parametrize(
    ("commands", "paused", "draining", "reason"),
    [
        (("pause",), True, False, "factory is paused"),
        (("drain",), False, True, "factory is paused"),
        (("pause", "resume"), False, False, None),
        (("drain", "pause", "resume"), False, False, None),
    ],
)
def test_fleet_health_pause_and_drain_show_in_explain(
    coord: Coordinator,
    health: FleetHealth,
    stores: Stores,
    commands: tuple[str, ...],
    paused: bool,
    draining: bool,
    reason: str | None,
) -> None:
    health.heartbeat(P, "f1", beat())
    job, _ = coord.submit(P, manifest(capabilities=("python",)), "operator:o")
    for kind in commands:
        health.command(P, "f1", kind, by="alice")
    doc = factory_doc(stores, "f1")
    assert (doc.paused, doc.draining) == (paused, draining)
    (verdict,) = coord.explain(P, job.id)["factories"]
    assert verdict["eligible"] is (reason is None)
    if reason:
        assert reason in verdict["reasons"]
    # A heartbeat (or re-registration) does not undo what the operator decided.
    health.heartbeat(P, "f1", beat(caps=("python", "docker")))
    assert (factory_doc(stores, "f1").paused, factory_doc(stores, "f1").draining) == (
        paused,
        draining,
    )


def test_fleet_health_cancel_job_cancels_and_fences_the_holder(
    coord: Coordinator, health: FleetHealth
) -> None:
    job = started(coord, "f1")
    health.heartbeat(P, "f1", beat(progress(job)))
    command, cancelled = health.command(
        P, "f1", "cancel-job", job_id=job.id, by="alice", reason="wrong branch"
    )
    assert cancelled is not None and cancelled.stage is Stage.CANCELLED
    assert cancelled.epoch == job.epoch + 1 and cancelled.events[-1].reason == "wrong branch"
    with pytest.raises(Fenced):
        coord.renew(P, job.id, "f1", job.epoch)
    (delivered,) = health.heartbeat(P, "f1", beat()).commands
    assert (delivered.id, delivered.kind, delivered.job_id) == (command.id, "cancel-job", job.id)


@pytest.mark.parametrize(
    ("kind", "job_id", "path"),
    [
        ("cancel-job", None, "jobId"),
        ("pause", "j" + "0" * 26, "jobId"),
        ("reboot", None, "command"),
    ],
)
def test_fleet_health_bad_commands_name_the_field(
    health: FleetHealth, kind: str, job_id: str | None, path: str
) -> None:
    health.heartbeat(P, "f1", beat())
    with pytest.raises(ValidationFailed) as caught:
        health.command(P, "f1", kind, job_id=job_id, by="alice")
    assert [p.path for p in caught.value.problems] == [path]


def test_fleet_health_cancel_job_refuses_a_job_the_factory_does_not_hold(
    coord: Coordinator, health: FleetHealth, stores: Stores
) -> None:
    job = started(coord, "f1")
    health.heartbeat(P, "f2", beat())
    with pytest.raises(NotHeld):
        health.command(P, "f2", "cancel-job", job_id=job.id, by="alice")
    assert coord.get_job(P, job.id).stage is Stage.BUILDING
    assert stores.tables.list_partition(COMMANDS, commands_partition(P, "f2")) == []


def test_fleet_health_commands_for_unknown_or_departed_factories_are_refused(
    health: FleetHealth,
) -> None:
    with pytest.raises(FactoryNotFound):
        health.command(P, "ghost", "pause", by="alice")
    health.heartbeat(P, "f1", beat())
    health.deregister(P, "f1", "operator:alice")
    with pytest.raises(FactoryDeregistered):
        health.command(P, "f1", "pause", by="alice")


# --- deregister and prune -------------------------------------------------------------


def test_fleet_health_deregister_takes_its_jobs_back_at_once(
    coord: Coordinator, health: FleetHealth, stores: Stores
) -> None:
    job = started(coord, "f1")
    health.heartbeat(P, "f1", beat(progress(job)))
    health.command(P, "f1", "restart-engine", by="alice")
    health.deregister(P, "f1", "operator:alice")
    assert factory_doc(stores, "f1").deregistered is True
    with pytest.raises(NotFound):
        stores.tables.get(HEARTBEATS, P, "f1")
    assert stores.tables.list_partition(COMMANDS, commands_partition(P, "f1")) == []
    requeued = coord.get_job(P, job.id)  # taken back by the deregistration itself
    assert requeued.stage is Stage.QUEUED and requeued.failedBy == ("f1",)
    assert (requeued.events[-1].type, requeued.events[-1].actor) == ("take_back", "operator:alice")
    health.deregister(P, "f1", "operator:alice")  # idempotent
    assert coord.reap(P).requeued == []  # nothing left for the reaper
    with pytest.raises(Fenced):
        coord.renew(P, job.id, "f1", job.epoch)
    with pytest.raises(FactoryNotFound):
        health.deregister(P, "never-was", "operator:alice")


def test_fleet_health_a_departed_factorys_heartbeats_change_nothing(
    health: FleetHealth, stores: Stores
) -> None:
    health.heartbeat(P, "f1", beat())
    health.deregister(P, "f1", "operator:alice")
    with stores.counters.measure() as cost:
        reply = health.heartbeat(P, "f1", beat())
    assert reply.status == "deregistered" and reply.commands == ()
    assert cosmos_calls(cost) == {"read": 1}
    assert "table_write" not in cost
    assert factory_doc(stores, "f1").deregistered is True


def test_fleet_health_prunes_factories_silent_past_the_window(
    coord: Coordinator, health: FleetHealth, stores: Stores, clock: ManualClock
) -> None:
    health.heartbeat(P, "gone", beat())
    health.command(P, "gone", "pause", by="alice")
    coord.register_factory(P, view("quiet"), "1.0")
    clock.advance(7 * 24 * 3600 - 60)
    health.heartbeat(P, "alive", beat())
    coord.register_factory(P, view("quiet"), "1.0")  # registered again: not silent
    clock.advance(60)
    report = health.heal(P)
    assert report.pruned == ["gone"]
    assert factory_doc(stores, "gone").deregistered is True
    assert stores.tables.list_partition(COMMANDS, commands_partition(P, "gone")) == []
    assert not factory_doc(stores, "alive").deregistered
    assert not factory_doc(stores, "quiet").deregistered
    assert health.heal(P).pruned == []


# --- the self-healer: silent factories --------------------------------------------------


@pytest.mark.parametrize(
    ("silent", "status"),
    [(0, "live"), (89, "live"), (90, "stale"), (599, "stale"), (600, "down"), (86_400, "down")],
)
def test_fleet_health_silence_marks_stale_then_down(
    health: FleetHealth, stores: Stores, clock: ManualClock, silent: int, status: str
) -> None:
    health.heartbeat(P, "f1", beat())
    clock.advance(silent)
    report = health.heal(P)
    assert report.marked == ({} if status == "live" else {"f1": status})
    assert factory_doc(stores, "f1").status == status
    assert stores.tables.get(HEARTBEATS, P, "f1")["status"] == status


def test_fleet_health_writes_only_on_change(
    health: FleetHealth, stores: Stores, clock: ManualClock
) -> None:
    health.heartbeat(P, "f1", beat())
    clock.advance(100)
    assert health.heal(P).marked == {"f1": "stale"}
    clock.advance(100)
    with stores.counters.measure() as cost:
        report = health.heal(P)
    assert not report.changed
    assert cost == {"query": 2, "table_query": 1}
    clock.advance(500)
    assert health.heal(P).marked == {"f1": "down"}


def test_fleet_health_a_registered_factory_that_never_beats_is_judged_by_last_seen(
    coord: Coordinator, health: FleetHealth, stores: Stores, clock: ManualClock
) -> None:
    coord.register_factory(P, view("old-client"), "0.9")
    clock.advance(95)
    assert health.heal(P).marked == {"old-client": "stale"}
    coord.register_factory(P, view("old-client"), "0.9")
    assert factory_doc(stores, "old-client").status == "live"


def test_fleet_health_silent_factory_job_returns_only_after_its_lease_expires(
    coord: Coordinator, health: FleetHealth, clock: ManualClock
) -> None:
    health.heartbeat(P, "quiet", beat())
    job = started(coord, "quiet", leaseSeconds=300)
    health.heartbeat(P, "quiet", beat(progress(job)))
    clock.advance(100)
    assert health.heal(P).marked == {"quiet": "stale"}
    # Stale is a verdict, not a recovery: the job stays with its holder until the lease ends.
    assert coord.reap(P).requeued == []
    assert coord.get_job(P, job.id).stage is Stage.BUILDING
    clock.advance(199)
    assert health.heal(P).released == [] and coord.reap(P).requeued == []
    clock.advance(2)
    assert coord.reap(P).requeued == [job.id]
    requeued = coord.get_job(P, job.id)
    assert requeued.stage is Stage.QUEUED and requeued.failedBy == ("quiet",)
    assert requeued.events[-1].actor == "reaper"
    clock.advance(300)
    assert health.heal(P).marked == {"quiet": "down"}
    # The next attempt prefers a clean worker: the silent one is penalised in explain.
    health.heartbeat(P, "quiet", beat())
    health.heartbeat(P, "clean", beat())
    verdicts = {v["factory"]: v for v in coord.explain(P, job.id)["factories"]}
    assert verdicts["quiet"]["score"]["health"] < verdicts["clean"]["score"]["health"]
    assert coord.explain(P, job.id)["factories"][0]["factory"] == "clean"


# --- the self-healer: stalled and never-started jobs -------------------------------------


def test_fleet_health_stalled_job_is_flagged_once_and_cleared_when_progress_moves(
    coord: Coordinator,
    health: FleetHealth,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    job = started(coord, "busy", leaseSeconds=120)
    stuck = progress(job, tokens=500, line="Waiting for input...")
    for _ in range(30):  # 15 minutes of heartbeats and renewals, the progress never moving
        health.heartbeat(P, "busy", beat(stuck))
        coord.renew(P, job.id, "busy", job.epoch)
        assert health.heal(P).stalled == []
        clock.advance(30)
    with caplog.at_level(logging.WARNING, logger="fleet.coordinator.healer"):
        health.heartbeat(P, "busy", beat(stuck))
        report = health.heal(P)
    assert report.stalled == [job.id]
    flagged = coord.get_job(P, job.id)
    assert flagged.stalled and flagged.stage is Stage.BUILDING and flagged.epoch == job.epoch
    event = flagged.events[-1]
    assert (event.type, event.actor) == ("stalled", "healer")
    assert event.data["alert"]["severity"] == "warning"
    assert event.data["progress"]["lastOutputLine"] == "Waiting for input..."
    assert event.data["idleSeconds"] >= 900
    assert any("stalled" in r.message and r.levelno == logging.WARNING for r in caplog.records)
    # Once per stall: later passes add nothing while it stays stuck.
    for _ in range(3):
        clock.advance(30)
        health.heartbeat(P, "busy", beat(stuck))
        coord.renew(P, job.id, "busy", job.epoch)
        assert not health.heal(P).changed
    assert coord.get_job(P, job.id).seq == flagged.seq
    health.heartbeat(P, "busy", beat(progress(job, tokens=501, line="Resumed")))
    assert health.heal(P).unstalled == [job.id]
    cleared = coord.get_job(P, job.id)
    assert not cleared.stalled and cleared.events[-1].type == "stall_cleared"
    assert agrees(cleared, coord.job_events(P, job.id))


def test_fleet_health_no_stall_judgement_without_a_fresh_heartbeat(
    coord: Coordinator, health: FleetHealth, clock: ManualClock
) -> None:
    job = started(coord, "f1", leaseSeconds=3600)
    health.heartbeat(P, "f1", beat(progress(job)))
    clock.advance(1000)  # silent (down by now): its progress is not judged
    report = health.heal(P)
    assert report.marked == {"f1": "down"} and report.stalled == []
    assert report.released == [job.id]  # down: taken back, not flagged
    assert not coord.get_job(P, job.id).stalled


# --- the self-healer heals: restart, then take back and avoid; a down holder's jobs --------


def _stall(
    coord: Coordinator, health: FleetHealth, clock: ManualClock, job: Job, seconds: int
) -> None:
    """``seconds`` of heartbeats and renewals from the job's holder, its progress still."""
    holder = job.lease.holder if job.lease else ""
    stuck = progress(job, tokens=500, line="Waiting for input...")
    for _ in range(seconds // 30):
        health.heartbeat(P, holder, beat(stuck))
        health.heartbeat(P, "clean", beat())
        coord.renew(P, job.id, holder, job.epoch)
        clock.advance(30)
    health.heartbeat(P, holder, beat(stuck))
    health.heartbeat(P, "clean", beat())


def test_fleet_health_stalled_engine_restarted_then_taken_back_and_avoided(
    coord: Coordinator, health: FleetHealth, clock: ManualClock
) -> None:
    health.heartbeat(P, "clean", beat())
    job = started(coord, "stuck", leaseSeconds=120)
    job = coord.report(P, job.id, "stuck", job.epoch, checkpoint={"branch": "fleet/x"})
    _stall(coord, health, clock, job, 900)

    # First verdict: flagged, and the job's engine restarted on its holder (once).
    report = health.heal(P)
    assert (report.stalled, report.restarted, report.released) == ([job.id], [job.id], [])
    (restart,) = health.pending_commands(P, "stuck")
    assert (restart.kind, restart.job_id, restart.issued_by) == ("restart-engine", job.id, "healer")
    assert "its engine is restarted" in (restart.reason or "")
    flagged = coord.get_job(P, job.id)
    assert flagged.stalled and flagged.events[-1].data["restart"] is True
    assert health.pending_commands(P, "clean") == []

    # Still stuck, less than a period after the flag: nothing more, however many passes.
    other = FleetHealth(coord, HealthConfig(), entropy=counting_entropy())
    for _ in range(29):
        clock.advance(30)
        health.heartbeat(P, "stuck", beat(progress(job, tokens=500, line="Waiting for input...")))
        health.heartbeat(P, "clean", beat())
        coord.renew(P, job.id, "stuck", job.epoch)
        assert not health.heal(P).changed and not other.heal(P).changed
    assert len(health.pending_commands(P, "stuck")) == 1
    assert coord.get_job(P, job.id).seq == flagged.seq

    # A period after the flag, still stuck: taken back, the factory avoided.
    clock.advance(30)
    health.heartbeat(P, "stuck", beat(progress(job, tokens=500, line="Waiting for input...")))
    health.heartbeat(P, "clean", beat())
    report = health.heal(P)
    assert report.released == [job.id] and report.avoided == {job.id: "stuck"}
    assert not other.heal(P).changed and not health.heal(P).changed  # nothing twice
    taken = coord.get_job(P, job.id)
    assert taken.stage is Stage.QUEUED and taken.epoch == job.epoch + 1 and not taken.stalled
    assert taken.checkpoint == {"branch": "fleet/x"} and taken.attempts == 1
    assert taken.failedBy == ("stuck",)
    assert [(a.factory, a.reason, a.graceSeconds) for a in taken.avoid] == [
        ("stuck", "stalled on stuck", 1800)
    ]
    event = taken.events[-1]
    assert (event.type, event.actor) == ("take_back", "healer")
    assert (event.reason or "").startswith("stalled on stuck: still no progress 900s")
    assert event.data["avoid"]["factory"] == "stuck"
    (run,) = coord.job_runs(P, job.id)
    assert (run.outcome, run.factory) == ("taken_back", "stuck")
    assert agrees(taken, coord.job_events(P, job.id))
    with pytest.raises(Fenced):
        coord.renew(P, job.id, "stuck", job.epoch)

    # It goes to the clean factory, never back to the one it stalled on; explain says why.
    verdicts = {v["factory"]: v for v in coord.explain(P, job.id)["factories"]}
    assert verdicts["stuck"]["reasons"] == ["avoided: stalled on stuck"]
    assert not verdicts["stuck"]["eligible"] and verdicts["clean"]["eligible"]
    assert coord.claim(P, view("stuck")) is None
    claim = coord.claim(P, view("clean"))
    assert claim is not None and claim.job.id == job.id and claim.job.checkpoint == taken.checkpoint


def test_fleet_health_an_avoided_factory_gets_the_job_back_only_after_the_grace_alone(
    coord: Coordinator, health: FleetHealth, clock: ManualClock
) -> None:
    job = started(coord, "stuck", leaseSeconds=3600)
    _stall(coord, health, clock, job, 900)
    assert health.heal(P).restarted == [job.id]
    _stall(coord, health, clock, job, 900)
    assert health.heal(P).released == [job.id]
    # Nobody else can take it ("clean" stopped beating long ago: not live).
    clock.advance(1800 - 1)
    health.heal(P)
    assert coord.claim(P, view("stuck")) is None
    assert "avoided: stalled on stuck" in {
        r for v in coord.explain(P, job.id)["factories"] for r in v["reasons"]
    }
    clock.advance(1)
    claim = coord.claim(P, view("stuck"))
    assert claim is not None and claim.job.id == job.id


def test_fleet_health_a_racing_pass_queues_no_second_restart_nor_take_back(
    coord: Coordinator, health: FleetHealth, clock: ManualClock, stores: Stores
) -> None:
    """Two healer instances that planned from the same read: the second loses each write."""
    job = started(coord, "stuck", leaseSeconds=3600)
    _stall(coord, health, clock, job, 900)
    racer = FleetHealth(coord, HealthConfig(), entropy=counting_entropy())
    factories = coord.factories(P)
    beats = racer.heartbeats.records(P)
    (stall,) = plan_heal(clock.now(), health.config, factories, beats, [job]).stalls
    assert health.heal(P).restarted == [job.id]
    assert racer.healer._set_stalled(P, stall) is None  # lost: no restart to queue
    assert len(health.pending_commands(P, "stuck")) == 1
    _stall(coord, health, clock, job, 900)
    flagged = coord.get_job(P, job.id)
    factories, beats = coord.factories(P), racer.heartbeats.records(P)
    (release,) = plan_heal(clock.now(), health.config, factories, beats, [flagged]).releases
    assert release.kind == "stalled"
    assert health.heal(P).released == [job.id]
    assert racer.healer._take_back(P, release) is False
    taken = coord.get_job(P, job.id)
    assert taken.epoch == job.epoch + 1 and len(taken.avoid) == 1


def test_fleet_health_a_down_holders_jobs_are_taken_back_at_once(
    coord: Coordinator, health: FleetHealth, clock: ManualClock
) -> None:
    health.heartbeat(P, "gone", beat())
    job = started(coord, "gone", leaseSeconds=3600)
    health.heartbeat(P, "gone", beat(progress(job)))
    clock.advance(100)
    assert health.heal(P).marked == {"gone": "stale"}
    assert coord.get_job(P, job.id).stage is Stage.BUILDING  # stale: its lease still holds
    clock.advance(500)
    report = health.heal(P)
    assert report.marked == {"gone": "down"} and report.released == [job.id]
    assert report.avoided == {}
    assert not health.heal(P).changed  # nothing twice
    taken = coord.get_job(P, job.id)
    assert taken.stage is Stage.QUEUED and taken.epoch == job.epoch + 1
    assert taken.lease is None and taken.failedBy == ("gone",) and taken.avoid == ()
    assert (taken.events[-1].actor, taken.events[-1].reason) == (
        "healer",
        "holder gone is down (silent for 600s)",
    )
    with pytest.raises(Fenced):
        coord.renew(P, job.id, "gone", job.epoch)


def test_fleet_health_progress_of_someone_elses_job_counts_for_nothing(
    coord: Coordinator, health: FleetHealth, clock: ManualClock
) -> None:
    job = started(coord, "holder", leaseSeconds=3600)
    for n in range(35):
        health.heartbeat(P, "liar", beat(progress(job)))  # same progress, not its job
        health.heartbeat(P, "holder", beat(progress(job, tokens=n)))
        clock.advance(30)
    assert health.heal(P).stalled == []


def test_fleet_health_never_started_job_is_released_and_retried_on_a_clean_worker(
    coord: Coordinator, health: FleetHealth, clock: ManualClock
) -> None:
    job, _ = coord.submit(P, manifest(capabilities=("python",), leaseSeconds=120), "operator:o")
    health.heartbeat(P, "flaky", beat())
    health.heartbeat(P, "clean", beat())
    claim = coord.claim(P, view("flaky"))
    assert claim is not None
    for _ in range(9):  # alive and renewing, but never reports building
        clock.advance(30)
        health.heartbeat(P, "flaky", beat())
        health.heartbeat(P, "clean", beat())
        coord.renew(P, job.id, "flaky", claim.lease.epoch)
        assert health.heal(P).released == []
    clock.advance(30)
    health.heartbeat(P, "flaky", beat())
    assert health.heal(P).released == [job.id]
    released = coord.get_job(P, job.id)
    assert released.stage is Stage.QUEUED and released.failedBy == ("flaky",)
    assert released.events[-1].actor == "healer"
    assert (released.events[-1].reason or "").startswith("assigned but never started")
    with pytest.raises(Fenced):
        coord.renew(P, job.id, "flaky", claim.lease.epoch)
    verdicts = {v["factory"]: v for v in coord.explain(P, job.id)["factories"]}
    assert verdicts["flaky"]["score"]["health"] < verdicts["clean"]["score"]["health"]
    # Past the product's exclusion threshold the failing factory is not offered it at all.
    coord.put_product_settings(P, {"exclude_after_failures": 1})
    verdicts = {v["factory"]: v for v in coord.explain(P, job.id)["factories"]}
    assert not verdicts["flaky"]["eligible"]
    assert any("already failed this job" in r for r in verdicts["flaky"]["reasons"])
    assert coord.claim(P, view("flaky")) is None
    retry = coord.claim(P, view("clean"))
    assert retry is not None and retry.job.id == job.id


def test_fleet_health_a_silent_holders_never_started_job_is_left_to_the_reaper(
    coord: Coordinator, health: FleetHealth, clock: ManualClock
) -> None:
    coord.submit(P, manifest(capabilities=("python",), leaseSeconds=3600), "operator:o")
    health.heartbeat(P, "f1", beat())
    assert coord.claim(P, view("f1")) is not None
    clock.advance(400)
    report = health.heal(P)
    assert report.released == [] and report.marked == {"f1": "stale"}


# --- pure decisions -------------------------------------------------------------------


def _factory(name: str, **kw: Any) -> Factory:
    return Factory(id=f"factory-{name}", productId=P, lastSeen=kw.pop("lastSeen", T0), **kw)


def _record(name: str, at: datetime | None, **jobs: TrackedJob) -> HeartbeatRecord:
    return HeartbeatRecord(
        factory=name,
        at=at,
        load=0,
        seats=1,
        capabilities=(),
        version=None,
        cost=None,
        status="live",
        profile=None,
        jobs=jobs,
        etag="e",
    )


@pytest.mark.parametrize(
    ("factory", "silent", "expected"),
    [
        (_factory("a"), 100, ("stale",)),
        (_factory("a", status="down"), 100, ()),  # never upwards: beats do that
        (_factory("a", status="stale"), 100, ()),
        (_factory("a", revoked=True), 700, ()),
        (_factory("a", deregistered=True), 700, ()),
    ],
)
def test_fleet_health_plan_marks_only_downwards(
    factory: Factory, silent: int, expected: tuple[str, ...]
) -> None:
    config = HealthConfig().resolved(90)
    plan = plan_heal(T0 + timedelta(seconds=silent), config, [factory], {}, [])
    assert tuple(c.new for c in plan.statuses) == expected


def test_fleet_health_plan_prunes_an_orphan_heartbeat() -> None:
    config = HealthConfig().resolved(90)
    now = T0 + timedelta(seconds=config.prune_after_seconds)
    plan = plan_heal(now, config, [], {"ghost": _record("ghost", T0)}, [])
    assert plan.prune == ("ghost",)


# --- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, HealerSettings()),
        (
            {"HEALER_DOWN_AFTER_SECONDS": "300", "HEALER_STALL_AFTER_SECONDS": " 60 "},
            HealerSettings(down_after_seconds=300, stall_after_seconds=60),
        ),
        ({"HEALER_PRUNE_AFTER_SECONDS": ""}, HealerSettings()),
        ({"HEALER_AVOID_GRACE_SECONDS": "600"}, HealerSettings(avoid_grace_seconds=600)),
    ],
)
def test_fleet_health_config_from_env(env: dict[str, str], expected: HealerSettings) -> None:
    settings = Settings.from_env({"FLEET_STORE": "memory", **env})
    assert settings.healer == expected
    # HealthConfig's thresholds default to the settings' defaults, and come from them.
    assert HealthConfig() == HealthConfig(**vars(HealerSettings()))
    built = fleet_health(Coordinator(memory_stores()), settings.healer).config
    assert built.avoid_grace_seconds == expected.avoid_grace_seconds
    assert built.stall_after_seconds == expected.stall_after_seconds


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"HEALER_STALL_AFTER_SECONDS": "15m"}, "HEALER_STALL_AFTER_SECONDS"),
        ({"HEALER_NEVER_STARTED_SECONDS": "0"}, "HEALER_NEVER_STARTED_SECONDS"),
        ({"HEALER_PRUNE_AFTER_SECONDS": "60"}, "HEALER_PRUNE_AFTER_SECONDS"),
        ({"HEALER_AVOID_GRACE_SECONDS": "-5"}, "HEALER_AVOID_GRACE_SECONDS"),
    ],
)
def test_fleet_health_config_names_a_bad_setting(env: dict[str, str], setting: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"FLEET_STORE": "memory", **env})
    assert caught.value.name == setting


def test_fleet_health_thresholds_must_grow(coord: Coordinator) -> None:
    with pytest.raises(ValueError, match="must grow"):
        FleetHealth(coord, HealthConfig(stale_after_seconds=700))
    assert FleetHealth(coord).heartbeat_seconds == 30


# --- the handlers (identity stubbed: the seam is tested where it lives) ------------------


class Handler(NamedTuple):
    context: AppContext
    name: str


@pytest.fixture
def handlers(stores: Stores) -> dict[str, Handler]:
    """The app's handlers by name, over one context whose callers are: the factory the
    bearer token names (none: f1), or operator alice where an operator may call."""

    def pick(token: str | None, want: str) -> Principal:
        if want == "operator" or (want == "any" and token is None):
            return Principal(kind="operator", id="alice", product=P, role="admin")
        return Principal(kind="factory", id=token or "f1", product=P)

    ctx = with_principals(context_for(Settings.from_env({"FLEET_STORE": "memory"}), stores), pick)
    return {name: Handler(ctx, name) for name in functions(ctx)}


def _call(
    handler: Handler,
    method: str,
    body: Any = None,
    factory_id: str | None = None,
    factory: str | None = None,
) -> tuple[int, Any]:
    route = {"id": factory_id} if factory_id else {}
    status, reply, _ = call(
        handler.context, handler.name, method, "/api/fleet/factories", factory, body, **route
    )
    return status, reply


def test_fleet_health_http_heartbeat_command_view_and_delete(handlers: dict[str, Any]) -> None:
    status, body = _call(handlers["factory_heartbeat"], "POST", {"capabilities": ["python"]})
    assert status == 200 and body["status"] == "live" and body["cadence"]["heartbeatSeconds"] == 30
    status, body = _call(handlers["factory_command"], "POST", {"command": "drain"}, "f1")
    assert status == 202 and body["command"]["kind"] == "drain"
    assert body["command"]["issuedBy"] == "operator:alice"
    status, view_ = _call(handlers["factory_last_heartbeat"], "GET", factory_id="f1")
    assert status == 200 and view_["pendingCommands"][0]["kind"] == "drain"
    status, body = _call(
        handlers["factory_heartbeat"], "POST", {"ack": [view_["pendingCommands"][0]["id"]]}
    )
    assert status == 200 and body["commands"] == []
    status, body = _call(handlers["deregister_factory"], "DELETE", factory_id="f1", factory="f2")
    assert status == 403 and body["error"] == "forbidden"
    status, body = _call(handlers["deregister_factory"], "DELETE", factory_id="f1", factory="f1")
    assert status == 200 and body == {"factory": "f1", "deregistered": True}
    status, body = _call(handlers["factory_last_heartbeat"], "GET", factory_id="f1")
    assert status == 404 and body["error"] == "factory_not_found"


@pytest.mark.parametrize(
    ("name", "method", "body", "factory_id", "paths"),
    [
        (
            "factory_heartbeat",
            "POST",
            {"seats": 0, "jobs": [{"jobId": "nope", "leaseEpoch": 0}], "colour": "red"},
            None,
            {"seats", "jobs[0].jobId", "jobs[0].leaseEpoch", "colour"},
        ),
        ("factory_command", "POST", {"command": "reboot"}, "f1", {"command"}),
        ("factory_command", "POST", {"command": "cancel-job"}, "f1", {"jobId"}),
        ("factory_last_heartbeat", "GET", None, "bad name!", {"id"}),
    ],
)
def test_fleet_health_http_invalid_requests_are_400_with_field_paths(
    handlers: dict[str, Any],
    name: str,
    method: str,
    body: Any,
    factory_id: str | None,
    paths: set[str],
) -> None:
    _call(handlers["factory_heartbeat"], "POST", {})
    status, reply = _call(handlers[name], method, body, factory_id)
    assert status == 400, reply
    assert {p["path"] for p in reply["details"]["problems"]} == paths


def test_fleet_health_http_cancel_job_returns_the_cancelled_job(handlers: dict[str, Any]) -> None:
    app_coord = handlers["factory_command"].context.coordinator
    job = started(app_coord, "f1")
    _call(handlers["factory_heartbeat"], "POST", {"capabilities": ["python"]})
    status, body = _call(
        handlers["factory_command"], "POST", {"command": "cancel-job", "jobId": job.id}, "f1"
    )
    assert status == 202 and body["job"]["stage"] == "cancelled"
    assert body["command"]["jobId"] == job.id
    status, body = _call(
        handlers["factory_command"], "POST", {"command": "cancel-job", "jobId": job.id}, "f1"
    )
    assert status == 409 and body["error"] == "not_held"


# --- the timer ----------------------------------------------------------------------------


def test_fleet_health_timer_heals_every_product_despite_one_failing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each product's pass is its own message: a-first's fails (the store throttles it), is
    retried by the queue and then done; b-second's never waited for it."""
    stores = memory_stores()
    clock = ManualClock(T0)
    ctx = context_for(Settings.from_env({"FLEET_STORE": "memory"}), stores)
    ctx.coordinator = Coordinator(stores, clock=clock)
    ctx.health = health = fleet_health(ctx.coordinator, ctx.settings.healer)
    for product in ("a-first", "b-second"):
        health.heartbeat(product, "f1", beat())
    clock.advance(100)
    assert isinstance(stores.tables, MemoryTableStore)
    stores.tables.inject("table_query", StoreUnavailable("throttled"))  # a-first's pass
    with caplog.at_level(logging.INFO, logger="fleet.timers"):
        outcomes = tick(ctx, "healer_timer", past_due=True)
    assert outcomes == ["done", "done"]
    statuses = {
        p: Factory.from_doc(stores.documents.read(p, "factory-f1")).status
        for p in ("a-first", "b-second")
    }
    assert statuses == {"a-first": "stale", "b-second": "stale"}
    assert any("a-first" in r.message and "store_unavailable" in r.message for r in caplog.records)


def test_fleet_health_per_process_instance_names_a_bad_threshold(stores: Stores) -> None:
    env = {"FLEET_STORE": "memory", "HEALER_DOWN_AFTER_SECONDS": "60"}
    with pytest.raises(SettingsError) as caught:
        context_for(Settings.from_env(env), stores)
    assert caught.value.name == "HEALER_DOWN_AFTER_SECONDS"
    env["HEALER_DOWN_AFTER_SECONDS"] = "300"
    context = once(lambda: context_for(Settings.from_env(env), stores))  # as function_app's
    health = context().health
    assert health is context().health and health.config.down_after_seconds == 300


def test_fleet_health_a_product_without_a_fleet_costs_two_reads(
    coord: Coordinator, health: FleetHealth, stores: Stores
) -> None:
    coord.submit(P, manifest(), "operator:o")
    assert coord.claim(P, view("unregistered", ())) is not None
    with stores.counters.measure() as cost:
        assert not health.heal(P).changed
    assert cost == {"query": 1, "table_query": 1}


def test_fleet_health_a_take_back_settles_the_attempts_budget_reservation_at_once(
    coord: Coordinator, health: FleetHealth, clock: ManualClock
) -> None:
    coord.budgets.put(P, 10.0)
    health.heartbeat(P, "gone", beat())
    job = started(coord, "gone", leaseSeconds=3600, budget=2.0)
    budget = coord.budgets.get(P)
    assert budget is not None and len(budget.reservations) == 1
    clock.advance(600)
    assert health.heal(P).released == [job.id]
    budget = coord.budgets.get(P)
    assert budget is not None and budget.reservations == {}  # not left for the reconciler
