"""What one healer pass decides (``fleet.domain.healer``), from one table: the factories, their
last heartbeats and the leased jobs as read, ``now``, and the verdicts out — which factories
are marked stale or down, which jobs are flagged stalled (and their engine restarted) or
cleared, which jobs are taken back (never started, stalled a period past the flag, holder
down), which factories are pruned. No store, no clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest

from fleet.domain import jobs as J
from fleet.domain import runs as RU
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
    Release,
    StallChange,
    assigned_at,
    attempt_fingerprint,
    avoid_entry,
    plan_heal,
    release_applies,
    release_reason,
    restarted,
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
        *(
            f"{'stall' if s.stalled else 'unstall'} {s.job_id}" + (" +restart" if s.restart else "")
            for s in plan.stalls
        ),
        *(
            f"release {r.job_id}"
            if r.kind == "never_started"
            else f"take back {r.job_id} ({r.kind})"
            for r in plan.releases
        ),
        *(f"prune {f}" for f in plan.prune),
    ]


def flagged(at: float, job: Job | None = None, restart: bool = True) -> Job:
    """The job (``held()`` by default) flagged stalled by the healer ``at`` seconds ago."""
    change = StallChange("j1", 1, "f1", True, 900, progress(still=900), restart=restart)
    return stall_record(job if job is not None else held(), change, ago(at))


def again(job: Job, at: float) -> Job:
    """The job taken back and claimed (and started) again by ``f1`` ``at`` seconds ago."""
    taken = J.expire(job, now=ago(at))
    return J.holder_report(J.assign(taken, "f1", now=ago(at)), Action.START, "f1", now=ago(at))


def cleared(job: Job, at: float) -> Job:
    """The job's stall flag cleared ``at`` seconds ago."""
    return stall_record(job, StallChange("j1", 1, "f1", False, 0, progress()), ago(at))


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
    Row(
        "progress still for stall_after: stalled, its engine restarted",
        ["stall j1 +restart"],
        LIVE,
        STUCK,
        [held()],
    ),
    Row(
        "flagged, still stuck, within a period of the flag: nothing more",
        [],
        LIVE,
        [beat("f1", 10, progress(still=1799))],
        [flagged(at=899)],
    ),
    Row(
        "flagged, still stuck a period after the flag: taken back",
        ["take back j1 (stalled)"],
        LIVE,
        [beat("f1", 10, progress(still=1800))],
        [flagged(at=900)],
    ),
    Row(
        "flagged, progress moved since the flag: cleared",
        ["unstall j1"],
        LIVE,
        [beat("f1", 10, progress(still=299))],
        [flagged(at=300)],
    ),
    Row(
        "flagged, its checkpoint moved since the flag: cleared",
        ["unstall j1"],
        LIVE,
        [beat("f1", 10, progress(still=5000))],
        [flagged(at=1000).evolve(checkpoint={"branch": "fleet/j1", "commit": "abc"})],
    ),
    Row(
        "flagged, the attempt's reported tokens moved since the flag: cleared",
        ["unstall j1"],
        LIVE,
        [beat("f1", 10, progress(still=5000))],
        [J.merge_report(flagged(at=1000), RU.HolderReport(progress={"usage": {"output": 7}}))],
    ),
    Row(
        "cleared a moment ago: the stall clock starts again at the clear",
        [],
        LIVE,
        [beat("f1", 10, progress(still=5000))],
        [cleared(flagged(at=3000), at=100)],
    ),
    Row(
        "stalled again in an attempt already restarted: flagged, no second restart",
        ["stall j1"],
        LIVE,
        [beat("f1", 10, progress(still=5000))],
        [cleared(flagged(at=3000), at=900)],
    ),
    Row(
        "a new attempt is restarted afresh",
        ["stall j1 +restart"],
        LIVE,
        [beat("f1", 10, progress(epoch=3, still=900))],
        [again(flagged(at=3000), at=2000)],
    ),
    # The flag's event spilled (gone from the document): cleared when the progress is within
    # stall_after again; else taken back a period after the last event, no earlier.
    Row(
        "flagged, its event spilled, progress moved: cleared",
        ["unstall j1"],
        LIVE,
        BEATING,
        [held(stalled=True)],
    ),
    Row(
        "flagged, its event spilled, still stuck: taken back from its last event",
        ["take back j1 (stalled)"],
        LIVE,
        STUCK,
        [held(stalled=True)],
    ),
    Row(
        "flagged, its event spilled, last event within a period: nothing yet",
        [],
        LIVE,
        STUCK,
        [held(stalled=True, lastEventAt=ago(899))],
    ),
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
        "holder stale: its lease expires into the reaper, no stall judged",
        ["f1 live->stale"],
        [factory(seen=100)],
        [beat("f1", 100, progress(still=1000))],
        [held()],
    ),
    Row(
        "holder stale, its job flagged: left to its lease too",
        [],
        [factory(seen=599, status="stale")],
        [beat("f1", 599, progress(still=5000))],
        [flagged(at=3000)],
    ),
    # --- a holder down: its jobs taken back at once --------------------------------------
    Row(
        "holder goes down: its job taken back at once",
        ["f1 live->down", "take back j1 (down)"],
        [factory(seen=600)],
        [beat("f1", 600, progress(still=600))],
        [held()],
    ),
    Row(
        "holder already down, still silent: taken back (a pass that failed to)",
        ["take back j1 (down)"],
        [factory(seen=5000, status="down")],
        [],
        [held(assigned=6000)],
    ),
    Row(
        "holder down, never started: taken back as down",
        ["f1 stale->down", "take back j1 (down)"],
        [factory(seen=600, status="stale")],
        [],
        [held(started=False, assigned=700)],
    ),
    Row(
        "holder down and stalled: taken back as down",
        ["take back j1 (down)"],
        [factory(seen=700, status="down")],
        [beat("f1", 700, progress(still=5000))],
        [flagged(at=3000)],
    ),
    Row(
        "holder down by its heartbeats but renewing the lease: left to its lease",
        ["f1 live->down"],
        [factory(seen=5000)],
        [],
        [held(assigned=6000).evolve(lease=held().lease.evolve(expiresAt=ago(60 - 7200)))],
    ),
    Row(
        "holder silent past prune_after: pruned; the reaper takes its jobs back",
        ["prune f1"],
        [factory(seen=WEEK)],
        [],
        [held()],
    ),
    Row(
        "holder known only by an old heartbeat: no document to mark, left to its lease",
        [],
        [],
        [beat("f1", 700)],
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
    Row(
        "holder known only by its heartbeat: judged by it",
        ["stall j1 +restart"],
        [],
        STUCK,
        [held()],
    ),
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


def test_healer_plan_stall_record_restarts_the_engine_once_per_attempt() -> None:
    first = flagged(at=0)
    event = first.events[-1]
    assert event.data["restart"] is True and restarted(first)
    assert event.reason == "no progress for 900s while f1 is heartbeating: its engine is restarted"
    assert event.data["attempt"] == attempt_fingerprint(held())
    # Cleared, then stalled again in the same attempt: flagged without a second restart,
    # whatever the plan asked (the job's own events decide, in the write itself).
    second = flagged(at=0, job=cleared(first, at=0))
    assert second.stalled and second.events[-1].data["restart"] is False
    assert second.events[-1].reason == "no progress for 900s while f1 is heartbeating"
    # A new attempt starts afresh.
    assert not restarted(again(second, at=0))


def _checkpointed(job: Job) -> Job:
    return job.evolve(checkpoint={"branch": "fleet/j1", "commit": "c0ffee"})


@pytest.mark.parametrize(
    ("name", "change", "moved"),
    [
        ("nothing", lambda j: j, False),
        (
            "a renewal (lease, updatedAt)",
            lambda j: j.evolve(lease=j.lease.evolve(expiresAt=NOW), updatedAt=NOW),
            False,
        ),
        ("an unrelated event", lambda j: J.record(j, type="note", actor="o", now=NOW), False),
        ("a checkpoint", _checkpointed, True),
        (
            "reported tokens",
            lambda j: J.merge_report(j, RU.HolderReport(progress={"usage": {"output": 5}})),
            True,
        ),
        (
            "a reported commit",
            lambda j: J.merge_report(j, RU.HolderReport(progress={"commit": "c0ffee"})),
            True,
        ),
        ("reported progress", lambda j: j.evolve(progress={"tokens": 5}), True),
    ],
)
def test_healer_plan_attempt_fingerprint_moves_with_the_attempts_own_progress(
    name: str, change: Any, moved: bool
) -> None:
    job = held()
    assert (attempt_fingerprint(change(job)) != attempt_fingerprint(job)) is moved


@pytest.mark.parametrize(
    ("release", "reason"),
    [
        (
            Release("j1", 1, "f1", 301.7),
            "assigned but never started: f1 did not start it within 301s",
        ),
        (
            Release("j1", 1, "f1", 905, "stalled"),
            "stalled on f1: still no progress 905s after it was flagged stalled",
        ),
        (Release("j1", 1, "f1", 612, "down"), "holder f1 is down (silent for 612s)"),
    ],
)
def test_healer_plan_release_reason_says_why(release: Release, reason: str) -> None:
    assert release_reason(release) == reason


def test_healer_plan_only_a_stall_take_back_avoids_the_factory() -> None:
    entry = avoid_entry(Release("j1", 1, "f1", 900, "stalled"), NOW, CONFIG)
    assert entry is not None
    assert (entry.factory, entry.reason, entry.at) == ("f1", "stalled on f1", NOW)
    assert entry.graceSeconds == CONFIG.avoid_grace_seconds == 1800
    assert avoid_entry(Release("j1", 1, "f1", 900, "down"), NOW, CONFIG) is None
    assert avoid_entry(Release("j1", 1, "f1", 900), NOW, CONFIG) is None


STALLED = Release("j1", 1, "f1", 900, "stalled")


@pytest.mark.parametrize(
    ("name", "job", "release", "applies"),
    [
        ("a stall, still flagged", flagged(at=900), STALLED, True),
        ("a stall cleared since", cleared(flagged(at=900), at=10), STALLED, False),
        ("a stall, another epoch since", again(flagged(at=900), at=10), STALLED, False),
        ("a stall, no longer leased", J.expire(flagged(at=900), now=NOW), STALLED, False),
        ("holder down, as planned", held(), Release("j1", 1, "f1", 700, "down"), True),
        ("holder down, another holder", held("f2"), Release("j1", 1, "f1", 700, "down"), False),
        ("never started, as planned", held(started=False), Release("j1", 1, "f1", 300), True),
    ],
)
def test_healer_plan_a_take_back_applies_only_to_the_job_as_planned(
    name: str, job: Job, release: Release, applies: bool
) -> None:
    assert release_applies(job, release) is applies


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


# --- a verdict is re-checked on the job as it is when written -----------------------------


def test_healer_plan_a_never_started_release_does_not_apply_once_started() -> None:
    job = held(assigned=400, started=False)
    (release,) = plan_heal(NOW, CONFIG, [factory()], {"f1": beat()}, [job]).releases
    assert release_applies(job, release)
    started = J.holder_report(job, Action.START, "f1", now=NOW)
    assert not release_applies(started, release)  # same epoch, same holder: it started


def test_healer_plan_a_down_release_does_not_apply_after_a_renewal() -> None:
    silent = 700  # down
    job = held(assigned=silent + 10)
    plan = plan_heal(
        NOW, CONFIG, [factory(seen=silent), factory("f2")], {"f1": beat(at=silent)}, [job]
    )
    (release,) = plan.releases
    assert release.kind == "down" and release_applies(job, release)
    assert job.lease is not None
    renewed = job.evolve(lease=job.lease.model_copy(update={"expiresAt": NOW + timedelta(hours=2)}))
    assert not release_applies(renewed, release)


def test_healer_plan_when_most_of_the_fleet_falls_silent_at_once_nothing_is_taken_back() -> None:
    """An outage of the coordinator's heartbeat table looks like every machine down: the
    leases decide then, not the healer."""
    silent = 700
    jobs = [
        held("f1", assigned=silent + 10).evolve(id="j1"),
        held("f2", assigned=silent + 10).evolve(id="j2"),
    ]
    fleet = [factory("f1", seen=silent), factory("f2", seen=silent), factory("f3")]
    beats = {"f1": beat("f1", at=silent), "f2": beat("f2", at=silent), "f3": beat("f3")}
    plan = plan_heal(NOW, CONFIG, fleet, beats, jobs)
    assert plan.releases == ()
    assert {c.factory: c.new for c in plan.statuses} == {"f1": "down", "f2": "down"}
    # one machine of three down: that one's jobs go back at once
    fleet[1] = factory("f2")
    beats["f2"] = beat("f2")
    (release,) = plan_heal(NOW, CONFIG, fleet, beats, jobs).releases
    assert (release.job_id, release.kind) == ("j1", "down")
