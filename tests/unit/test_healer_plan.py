"""What one healer pass decides (``fleet.domain.healer``), from one table: the factories, their
last heartbeats and the leased jobs as read, ``now``, and the verdicts out — which factories
are marked stale or down, which jobs are flagged stalled or cleared, which never-started jobs
are taken back, which factories are pruned. No store, no clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest

from fleet.domain import jobs as J
from fleet.domain.fleet_state import (
    MAX_OUTPUT_LINE_CHARS,
    HeartbeatRecord,
    JobProgress,
    TrackedJob,
    progress_fingerprint,
    track,
)
from fleet.domain.healer import (
    HEALER,
    HealPlan,
    HealthConfig,
    StallChange,
    assigned_at,
    plan_heal,
    stall_applies,
    stall_record,
    status_after,
)
from fleet.domain.models import Factory, Job
from fleet.domain.stages import Action, Stage
from tests.support.builders import T0
from tests.support.builders import job as queued

# The defaults, the stale threshold the coordinator's: stale 90 s, down 600 s, stalled after
# 900 s, never started after 300 s, pruned after 7 days.
CONFIG = HealthConfig().resolved(90)
NOW = T0 + timedelta(days=30)
WEEK = 7 * 24 * 3600


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def factory(name: str = "f1", seen: float = 10, **kw: Any) -> Factory:
    """A factory document, last seen (registered) ``seen`` seconds ago."""
    return Factory(id=f"factory-{name}", productId="p", lastSeen=ago(seen), **kw)


def progress(job_id: str = "j1", epoch: int = 1, still: float = 10) -> TrackedJob:
    """A job's progress as its heartbeat keeps it, unchanged for ``still`` seconds."""
    return TrackedJob(
        job_id=job_id,
        lease_epoch=epoch,
        tokens=100,
        cost_usd=0.01,
        last_activity_at=None,
        last_output_line="thinking",
        fingerprint=progress_fingerprint(epoch, 100, 0.01, None, "thinking"),
        changed_at=ago(still),
    )


def beat(name: str = "f1", at: float | None = 10, *jobs: TrackedJob) -> HeartbeatRecord:
    """The last heartbeat of ``name``, ``at`` seconds ago (None: it never beat)."""
    return HeartbeatRecord(
        factory=name,
        at=ago(at) if at is not None else None,
        load=len(jobs),
        seats=2,
        capabilities=("python",),
        version=None,
        cost=None,
        status="live",
        profile=None,
        jobs={t.job_id: t for t in jobs},
        etag="e",
    )


def held(holder: str = "f1", assigned: float = 3600, started: bool = True, **kw: Any) -> Job:
    """Job ``j1`` leased to ``holder`` (epoch 1) ``assigned`` seconds ago, started (building)
    or not (assigned)."""
    job = J.assign(queued(id="j1", leaseSeconds=7200), holder, now=ago(assigned))
    if started:
        job = J.holder_report(job, Action.START, holder, now=ago(assigned))
    return job.evolve(**kw) if kw else job


def verdicts(plan: HealPlan) -> list[str]:
    """The plan in one line per verdict."""
    return [
        *(f"{c.factory} {c.old}->{c.new}" for c in plan.statuses),
        *(f"{'stall' if s.stalled else 'unstall'} {s.job_id}" for s in plan.stalls),
        *(f"release {r.job_id}" for r in plan.releases),
        *(f"prune {f}" for f in plan.prune),
    ]


@dataclass(frozen=True)
class Row:
    name: str
    expected: list[str]  # the verdicts (``verdicts``), in the plan's order
    factories: list[Factory] = field(default_factory=list)
    beats: list[HeartbeatRecord] = field(default_factory=list)
    jobs: list[Job] = field(default_factory=list)


LIVE = [factory()]
BEATING = [beat("f1", 10, progress(still=10))]
STUCK = [beat("f1", 10, progress(still=900))]


def spilled(job: Job) -> Job:
    """The job with its ``assign`` event gone from the document (spilled to the feed)."""
    return job.evolve(events=tuple(e for e in job.events if e.type != Action.ASSIGN.value))


NO_ASSIGN_EVENT = spilled(held(started=False, assigned=400))

TABLE = [
    # --- factories: silence, verdicts only ever downwards, pruning -----------------------
    Row("heard from within the stale threshold: live", [], [factory(seen=89)]),
    Row("silent for stale_after: stale", ["f1 live->stale"], [factory(seen=90)]),
    Row("silent for down_after: down at once", ["f1 live->down"], [factory(seen=600)]),
    Row(
        "stale, silent for down_after: down",
        ["f1 stale->down"],
        [factory("f1", 600, status="stale")],
    ),
    Row("stale, still short of down_after: unchanged", [], [factory("f1", 300, status="stale")]),
    Row(
        "down, heard from since: its heartbeat flips it back, not the healer",
        [],
        [factory("f1", 10, status="down")],
    ),
    Row(
        "down, silent less than down_after: never upwards", [], [factory("f1", 100, status="down")]
    ),
    Row(
        "the later of registration and heartbeat counts", [], [factory(seen=1000)], [beat("f1", 10)]
    ),
    Row("an old heartbeat, a fresh registration: live", [], [factory(seen=10)], [beat("f1", 1000)]),
    Row("silent for prune_after: pruned, not marked", ["prune f1"], [factory(seen=WEEK)]),
    Row("revoked: never marked", [], [factory("f1", 700, revoked=True)]),
    Row(
        "revoked, silent for prune_after: pruned", ["prune f1"], [factory("f1", WEEK, revoked=True)]
    ),
    Row("deregistered: left alone, even long gone", [], [factory("f1", WEEK, deregistered=True)]),
    Row(
        "a heartbeat with no factory document, long gone: pruned",
        ["prune ghost"],
        [],
        [beat("ghost", WEEK)],
    ),
    Row("a heartbeat with no factory document: never marked", [], [], [beat("ghost", 700)]),
    Row(
        "a heartbeat entity that never beat, no document: nothing to judge",
        [],
        [],
        [beat("ghost", None)],
    ),
    Row(
        "several factories: marked and pruned in id order",
        ["a live->stale", "c live->down", "prune b"],
        [factory("c", 700), factory("b", WEEK), factory("a", 100), factory("d", 10)],
    ),
    # --- stalled: holder heartbeating, progress not moving -------------------------------
    Row(
        "progress moved within stall_after: nothing",
        [],
        LIVE,
        [beat("f1", 10, progress(still=899))],
        [held()],
    ),
    Row("progress still for stall_after: stalled", ["stall j1"], LIVE, STUCK, [held()]),
    Row("flagged, still stuck: not again", [], LIVE, STUCK, [held(stalled=True)]),
    Row("flagged, progress moved: cleared", ["unstall j1"], LIVE, BEATING, [held(stalled=True)]),
    Row(
        "progress reported at another epoch: no judgement",
        [],
        LIVE,
        [beat("f1", 10, progress(epoch=2, still=900))],
        [held()],
    ),
    Row(
        "the holder reports nothing of the job: no judgement", [], LIVE, [beat("f1", 10)], [held()]
    ),
    Row(
        "another factory's report of the job counts for nothing",
        [],
        [factory("f1"), factory("f2")],
        [beat("f1", 10), beat("f2", 10, progress(still=900))],
        [held()],
    ),
    Row(
        "holder silent: its lease expires into the reaper, no stall judged",
        ["f1 live->stale"],
        [factory(seen=100)],
        [beat("f1", 100, progress(still=1000))],
        [held()],
    ),
    Row(
        "holder registered since but its heartbeat is old: no judgement on progress",
        [],
        [factory(seen=10)],
        [beat("f1", 100, progress(still=1000))],
        [held()],
    ),
    Row("holder registered, never beat: no judgement on progress", [], LIVE, [], [held()]),
    Row(
        "holder revoked: the reaper takes its jobs back",
        [],
        [factory(revoked=True)],
        STUCK,
        [held()],
    ),
    Row("holder deregistered: likewise", [], [factory(deregistered=True)], STUCK, [held()]),
    Row("holder unknown: nothing", [], [], [], [held()]),
    Row("holder known only by its heartbeat: judged by it", ["stall j1"], [], STUCK, [held()]),
    # --- never started: assigned, holder alive -------------------------------------------
    Row(
        "assigned never_started ago, never started: taken back",
        ["release j1"],
        LIVE,
        BEATING,
        [held(started=False, assigned=300)],
    ),
    Row(
        "assigned less than never_started ago: nothing yet",
        [],
        LIVE,
        BEATING,
        [held(started=False, assigned=299)],
    ),
    Row(
        "assigned, holder silent: left to the reaper",
        ["f1 live->stale"],
        [factory(seen=100)],
        [beat("f1", 100)],
        [held(started=False, assigned=400)],
    ),
    Row(
        "assigned, holder known only by its heartbeat: taken back",
        ["release j1"],
        [],
        BEATING,
        [held(started=False, assigned=300)],
    ),
    # The assign event spilled: granted at the latest the lease could have been (its expiry
    # less its length), which is 400 s ago here.
    Row(
        "assigned, its assign event spilled: judged from the lease",
        ["release j1"],
        LIVE,
        BEATING,
        [NO_ASSIGN_EVENT],
    ),
    Row(
        "started jobs are never taken back, however old",
        [],
        LIVE,
        BEATING,
        [held(assigned=WEEK // 2)],
    ),
    Row("a job not leased is not judged", [], LIVE, STUCK, [queued(id="j1")]),
]


@pytest.mark.parametrize("row", TABLE, ids=[row.name for row in TABLE])
def test_healer_plan_decides_the_verdicts(row: Row) -> None:
    plan = plan_heal(NOW, CONFIG, row.factories, {b.factory: b for b in row.beats}, row.jobs)
    assert verdicts(plan) == row.expected


def test_healer_plan_carries_what_the_writes_need() -> None:
    stuck = progress(still=1000)
    plan = plan_heal(NOW, CONFIG, LIVE, {"f1": beat("f1", 10, stuck)}, [held()])
    (stall,) = plan.stalls
    assert (stall.job_id, stall.epoch, stall.holder, stall.stalled) == ("j1", 1, "f1", True)
    assert (stall.idle_seconds, stall.progress) == (1000, stuck)
    plan = plan_heal(NOW, CONFIG, [factory(seen=700)], {}, [])
    (change,) = plan.statuses
    assert (change.old, change.new, change.silent_seconds) == ("live", "down", 700)
    plan = plan_heal(NOW, CONFIG, LIVE, {}, [held(started=False, assigned=301)])
    (release,) = plan.releases
    assert (release.job_id, release.epoch, release.holder, release.waited_seconds) == (
        "j1",
        1,
        "f1",
        301,
    )


# --- the parts of the plan --------------------------------------------------------------


@pytest.mark.parametrize(
    ("silent", "expected"),
    [(0, "live"), (89.9, "live"), (90, "stale"), (599, "stale"), (600, "down"), (WEEK, "down")],
)
def test_healer_plan_status_after_silence(silent: float, expected: str) -> None:
    assert status_after(silent, CONFIG) == expected


@pytest.mark.parametrize(
    ("name", "job", "expected"),
    [
        ("its assign event", held(assigned=250), ago(250)),
        ("no assign event: the lease's expiry less its length", NO_ASSIGN_EVENT, ago(400)),
        ("not leased", queued(id="j1"), None),
    ],
)
def test_healer_plan_assigned_at(name: str, job: Job, expected: datetime | None) -> None:
    assert assigned_at(job) == expected


@pytest.mark.parametrize(
    ("name", "config", "error"),
    [
        ("the defaults", HealthConfig(), None),
        ("stale given", HealthConfig(stale_after_seconds=30), None),
        (
            "down equal to prune",
            HealthConfig(down_after_seconds=700, prune_after_seconds=700),
            None,
        ),
        ("stale not under down", HealthConfig(stale_after_seconds=600), "thresholds must grow"),
        ("down over prune", HealthConfig(prune_after_seconds=500), "thresholds must grow"),
        ("zero", HealthConfig(stall_after_seconds=0), "stall_after_seconds must be a positive"),
        ("negative", HealthConfig(scan_limit=-1), "scan_limit must be a positive"),
    ],
)
def test_healer_plan_config_resolved(name: str, config: HealthConfig, error: str | None) -> None:
    if error is None:
        resolved = config.resolved(90)
        assert resolved.stale_seconds == (config.stale_after_seconds or 90)
        assert resolved.heartbeat_seconds == resolved.stale_seconds // 3
    else:
        with pytest.raises(ValueError, match=error):
            config.resolved(90)


def _stall(stalled: bool = True, holder: str = "f1", epoch: int = 1) -> StallChange:
    return StallChange("j1", epoch, holder, stalled, 930.5, progress(still=930.5))


@pytest.mark.parametrize(
    ("name", "job", "change", "applies"),
    [
        ("as planned", held(), _stall(), True),
        ("clearing a flag that is set", held(stalled=True), _stall(stalled=False), True),
        ("already flagged", held(stalled=True), _stall(), False),
        ("already cleared", held(), _stall(stalled=False), False),
        ("another holder since", held("f2"), _stall(), False),
        ("another epoch since", held(), _stall(epoch=2), False),
        ("no longer leased", queued(id="j1"), _stall(), False),
    ],
)
def test_healer_plan_a_stall_applies_only_to_the_job_as_planned(
    name: str, job: Job, change: StallChange, applies: bool
) -> None:
    assert stall_applies(job, change) is applies


def test_healer_plan_stall_record_flags_with_an_alert_then_clears() -> None:
    flagged = stall_record(held(), _stall(), NOW)
    event = flagged.events[-1]
    assert flagged.stalled and flagged.stage is Stage.BUILDING and flagged.epoch == 1
    assert (event.type, event.actor, event.at) == ("stalled", HEALER, NOW)
    assert event.reason == "no progress for 930s while f1 is heartbeating"
    assert event.data["alert"] == {
        "kind": "stalled",
        "severity": "warning",
        "message": event.reason,
    }
    assert event.data["idleSeconds"] == 930
    assert event.data["progress"]["lastOutputLine"] == "thinking"
    assert not {"jobId", "fingerprint", "leaseEpoch"} & set(event.data["progress"])
    cleared = stall_record(flagged, _stall(stalled=False), NOW)
    assert not cleared.stalled
    assert (cleared.events[-1].type, cleared.events[-1].reason) == (
        "stall_cleared",
        "progress moved again",
    )
    assert "alert" not in cleared.events[-1].data


# --- what a heartbeat keeps: the clock of a job's progress ------------------------------


def _reported(tokens: int = 100, epoch: int = 1, line: str = "thinking") -> JobProgress:
    return JobProgress("j1", epoch, tokens=tokens, cost_usd=0.01, last_output_line=line)


LONG = "x" * MAX_OUTPUT_LINE_CHARS


@pytest.mark.parametrize(
    ("name", "before", "now", "moved"),
    [
        ("the same progress: its clock kept", _reported(), _reported(), False),
        ("more tokens: moved", _reported(), _reported(tokens=101), True),
        ("another output line: moved", _reported(), _reported(line="done"), True),
        ("a new epoch: afresh", _reported(), _reported(epoch=2), True),
        # Lines are kept cut to 500 characters: a change past the cut is not progress.
        (
            "a change past the cut: not moved",
            _reported(line=LONG + "a"),
            _reported(line=LONG + "b"),
            False,
        ),
    ],
)
def test_healer_plan_track_keeps_when_progress_last_moved(
    name: str, before: JobProgress, now: JobProgress, moved: bool
) -> None:
    earlier = track({}, [before], T0)
    later = track(earlier, [now], NOW)
    assert later["j1"].changed_at == (NOW if moved else T0)
