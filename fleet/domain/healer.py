"""The self-healer's decisions, from what one pass read. Pure: ``now`` is a parameter.

``plan_heal`` takes the product's factories, their last heartbeats and the leased jobs, and
says what the pass should write (``fleet.coordinator.healer`` writes it):

- a factory silent for ``stale_after`` is marked ``stale``, for ``down_after`` ``down``; only
  ever downwards (a factory becomes ``live`` again by its own heartbeat). A *stale* factory's
  leases are left to expire into the reaper (it may be cut off rather than dead: the lease is
  the contract). A factory *down* — silent for ``down_after``, so well past any renewal — has
  the jobs it still holds taken back at once (``Release`` of kind ``down``), fenced by their
  epoch, rather than at lease expiry (unless it still renews them: then its leases decide);
- a job whose holder is heartbeating but whose progress has not moved for ``stall_after`` is
  *stalled*. Progress is what the holder's heartbeat reports of it (tokens, cost, last
  activity — the engine's output, agent events parsed from it —, last output line; see
  ``fleet.domain.fleet_state.track``) and, once flagged, what reaches the job document too
  (its checkpoint — the WIP commit —, the attempt's reported figures: ``attempt_fingerprint``).
  The verdicts, one per pass at most:

  1. flagged (``stall_record``: ``stalled: true`` and a ``stalled`` event carrying an alert)
     *and* a ``restart-engine`` command for that job queued to its holder — unless this
     attempt's engine was already restarted for a stall (then only flagged);
  2. still flagged ``stall_after`` after the ``stalled`` event: taken back (``Release`` of
     kind ``stalled``: requeued at a new epoch, checkpoint kept, the attempt counted, its run
     closed ``taken_back``) and the factory avoided for the job (``Job.avoid``: see
     ``fleet.domain.scheduler.avoid_reason``);
  3. progress moved after the flag (the heartbeat's, or the job's own): the flag is cleared
     with a ``stall_cleared`` event, and the stall clock starts again from there;

- a job still ``assigned`` (never started) ``never_started`` seconds after its assignment
  while its holder is alive is taken back (a ``Release``);
- a factory silent for ``prune_after`` is deregistered; an *ephemeral* one (an autoscaled
  worker, enrolled with an ephemeral token: it never comes back under its name) as soon as
  it is silent for ``down_after`` (``HealthConfig.prune_seconds``), instead of being marked
  down. A pruned factory's jobs are the reaper's (it takes back whatever a deregistered
  holder holds), not a "down" take-back's.

Every verdict is derived from the job's own state (its flag, its events at its epoch) and
written conditionally on it, so a second pass, or a racing one, does nothing twice. Nothing
here trusts a factory about another factory's jobs: progress only counts for a job whose lease
the reporting factory holds at the reported epoch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from fleet.domain import jobs as J
from fleet.domain import runs as RU
from fleet.domain.fleet_state import FactoryStatus, HeartbeatRecord, TrackedJob, short_id
from fleet.domain.models import Avoid, Event, Factory, Job
from fleet.domain.stages import LEASED, Action, Stage
from fleet.settings import HealerSettings

HEALER = "healer"  # the actor of the healer's events and take-backs


@dataclass(frozen=True)
class HealthConfig:
    """The healer's thresholds, in seconds.

    ``stale_after_seconds`` None means the coordinator's (``CoordinatorConfig``, 90 s), which
    also sets the cadence factories are told to keep (a third of it), so one lost heartbeat
    never looks like a silent factory. The others are app settings, read with the rest
    (``fleet.settings.HealerSettings``: their defaults are these).
    """

    stale_after_seconds: int | None = None
    down_after_seconds: int = HealerSettings.down_after_seconds
    stall_after_seconds: int = HealerSettings.stall_after_seconds
    never_started_seconds: int = HealerSettings.never_started_seconds
    prune_after_seconds: int = HealerSettings.prune_after_seconds
    avoid_grace_seconds: int = HealerSettings.avoid_grace_seconds
    scan_limit: int = 500  # leased jobs one healer pass looks at, per product

    def resolved(self, default_stale_after: int) -> HealthConfig:
        """This config with the stale threshold filled in, its order checked."""
        config = replace(self, stale_after_seconds=self.stale_after_seconds or default_stale_after)
        for f in fields(config):
            value = getattr(config, f.name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{f.name} must be a positive number of seconds, not {value!r}")
        if not (config.stale_seconds < config.down_after_seconds <= config.prune_after_seconds):
            raise ValueError("thresholds must grow: stale_after < down_after <= prune_after")
        return config

    @property
    def stale_seconds(self) -> int:
        if self.stale_after_seconds is None:
            raise ValueError("stale_after_seconds is not resolved")
        return self.stale_after_seconds

    def prune_seconds(self, ephemeral: bool) -> int:
        """How long a factory may be silent before it is pruned: ``down_after`` for an
        ephemeral one, ``prune_after`` for any other."""
        return self.down_after_seconds if ephemeral else self.prune_after_seconds

    @property
    def heartbeat_seconds(self) -> int:
        """The cadence factories are told to keep: a third of the stale threshold."""
        return max(1, self.stale_seconds // 3)


# --- what a pass should do ---------------------------------------------------------------


@dataclass(frozen=True)
class StatusChange:
    factory: str
    old: FactoryStatus
    new: FactoryStatus
    silent_seconds: float


@dataclass(frozen=True)
class StallChange:
    job_id: str
    epoch: int
    holder: str
    stalled: bool  # True: flag it; False: clear the flag
    idle_seconds: float
    progress: TrackedJob
    restart: bool = False  # with the flag: restart the job's engine (once per attempt)
    why: str = "progress moved again"  # why a flag is cleared


ReleaseKind = Literal["never_started", "stalled", "down"]


@dataclass(frozen=True)
class Release:
    job_id: str
    epoch: int
    holder: str
    waited_seconds: float  # since assigned, since flagged stalled, or silent
    kind: ReleaseKind = "never_started"
    # What the verdict was judged on, re-checked on the job as read when it is written: the
    # lease as it was (a renewal since says the holder is alive: no "down" take-back), and
    # the job's last event (a report, a clear or a new flag since: no "stalled" take-back).
    lease_expires: datetime | None = None
    last_seq: int | None = None


@dataclass(frozen=True)
class HealPlan:
    statuses: tuple[StatusChange, ...] = ()
    stalls: tuple[StallChange, ...] = ()
    releases: tuple[Release, ...] = ()
    prune: tuple[str, ...] = ()


def last_contact(factory: Factory | None, beat: HeartbeatRecord | None) -> datetime | None:
    """When the factory last said anything: its last heartbeat or registration."""
    times = [t for t in (factory.lastSeen if factory else None, beat.at if beat else None) if t]
    return max(times) if times else None


def status_after(silent_seconds: float, config: HealthConfig) -> FactoryStatus:
    if silent_seconds >= config.down_after_seconds:
        return "down"
    if silent_seconds >= config.stale_seconds:
        return "stale"
    return "live"


def assigned_at(job: Job) -> datetime | None:
    """When the current lease was granted: its ``assign`` event (else the latest the lease
    could have been granted, which only delays a release, never hastens it)."""
    for event in reversed(job.events):
        if event.type == Action.ASSIGN.value and event.epoch == job.epoch:
            return event.at
    if job.lease is None:
        return None
    return job.lease.expiresAt - timedelta(seconds=job.leaseSeconds)


def last_event(job: Job, type: str) -> Event | None:
    """The newest embedded event of ``type`` in the current attempt (epoch)."""
    return next((e for e in reversed(job.events) if e.type == type and e.epoch == job.epoch), None)


def attempt_fingerprint(job: Job) -> str:
    """What the job document holds of its attempt's progress: the checkpoint (the WIP
    branch and commit), the progress last reported and the run's figures (tokens, cost,
    commit, diff, artifacts). Reported by the holder's writes, not its heartbeat: compared
    with the one recorded at the flag, a change clears a stall."""
    run = RU.run_at(job.runs, job.epoch)
    said = (
        run.model_dump(mode="json", include={"tokens", "costUsd", "commit", "diff", "artifacts"})
        if run is not None
        else None
    )
    raw = json.dumps([job.epoch, job.checkpoint, job.progress, said], sort_keys=True, default=str)
    return hashlib.blake2b(raw.encode(), digest_size=8).hexdigest()


def restarted(job: Job) -> bool:
    """Whether this attempt's engine was already restarted for a stall."""
    return any(
        e.type == "stalled" and e.epoch == job.epoch and e.data.get("restart") is True
        for e in job.events
    )


_RANK: dict[str, int] = {"live": 0, "stale": 1, "down": 2}


def plan_heal(
    now: datetime,
    config: HealthConfig,
    factories: Sequence[Factory],
    beats: Mapping[str, HeartbeatRecord],
    jobs: Sequence[Job],
) -> HealPlan:
    """What one healer pass should do, from what it read. ``config`` must be resolved."""
    by_id = {short_id(f): f for f in factories}
    statuses: list[StatusChange] = []
    prune: list[str] = []
    for factory_id in sorted(set(by_id) | set(beats)):
        factory, beat = by_id.get(factory_id), beats.get(factory_id)
        if factory is not None and factory.deregistered:
            continue
        seen = last_contact(factory, beat)
        if seen is None:
            continue
        silent = (now - seen).total_seconds()
        if silent >= config.prune_seconds(factory is not None and factory.ephemeral):
            prune.append(factory_id)
            continue
        if factory is None or factory.revoked:
            continue
        # Only ever downwards: a factory becomes live again by its own heartbeat.
        new = status_after(silent, config)
        if _RANK[new] > _RANK[factory.status]:
            statuses.append(StatusChange(factory_id, factory.status, new, silent))

    stalls: list[StallChange] = []
    releases: list[Release] = []
    for job in jobs:
        if job.stage not in LEASED or job.lease is None:
            continue
        holder = job.lease.holder
        factory, beat = by_id.get(holder), beats.get(holder)
        if factory is not None and (factory.revoked or factory.deregistered):
            continue  # the reaper takes these back
        seen = last_contact(factory, beat)
        if seen is None:
            continue
        silent = (now - seen).total_seconds()
        if silent >= config.stale_seconds:
            if (
                factory is not None
                and silent >= config.down_after_seconds
                and silent < config.prune_seconds(factory.ephemeral)  # pruned: the reaper's
                and not _renewed_since(job, seen, config)
            ):
                releases.append(
                    Release(job.id, job.epoch, holder, silent, "down", job.lease.expiresAt)
                )
            continue  # stale: its lease expires into the reaper
        if job.stage is Stage.ASSIGNED:
            granted = assigned_at(job)
            waited = (now - granted).total_seconds() if granted else 0.0
            if waited >= config.never_started_seconds:
                releases.append(Release(job.id, job.epoch, holder, waited))
            continue
        if beat is None or beat.at is None:
            continue
        if (now - beat.at).total_seconds() >= config.stale_seconds:
            continue  # no fresh heartbeat: no judgement on progress
        progress = beat.jobs.get(job.id)
        if progress is None or progress.lease_epoch != job.epoch:
            continue
        verdict = _judge_stall(now, config, job, holder, progress)
        if isinstance(verdict, StallChange):
            stalls.append(verdict)
        elif isinstance(verdict, Release):
            releases.append(verdict)
    releases_kept = _unless_all_silent(releases, by_id)
    return HealPlan(tuple(statuses), tuple(stalls), releases_kept, tuple(prune))


def _unless_all_silent(
    releases: list[Release], factories: Mapping[str, Factory]
) -> tuple[Release, ...]:
    """The releases, without the "down" ones when most of the fleet fell silent at once: that
    is the coordinator's (or its heartbeat table's) outage more likely than the machines',
    and the factories' leases, not the healer, decide (the reaper takes back what expires)."""
    down = {r.holder for r in releases if r.kind == "down"}
    fleet = [f for f in factories.values() if not (f.deregistered or f.revoked)]
    if len(down) >= 2 and 2 * len(down) > len(fleet):
        return tuple(r for r in releases if r.kind != "down")
    return tuple(releases)


def _renewed_since(job: Job, seen: datetime, config: HealthConfig) -> bool:
    """Whether the holder renewed the lease well after it went silent (a client that renews
    but does not heartbeat): alive by its renewals, so its lease, not the healer, decides."""
    if job.lease is None:
        return False
    renewed = job.lease.expiresAt - timedelta(seconds=job.leaseSeconds)
    return (renewed - seen).total_seconds() > config.stale_seconds


def _judge_stall(
    now: datetime, config: HealthConfig, job: Job, holder: str, progress: TrackedJob
) -> StallChange | Release | None:
    """One started job, its holder heartbeating: flag, clear, take back, or nothing."""
    if not job.stalled:
        # The stall clock starts at the last change of progress, or at the last clear (a
        # clear for the job's own progress leaves the heartbeat's as it was).
        cleared = last_event(job, "stall_cleared")
        since = max(progress.changed_at, cleared.at) if cleared else progress.changed_at
        idle = (now - since).total_seconds()
        if idle < config.stall_after_seconds:
            return None
        return StallChange(
            job.id,
            job.epoch,
            holder,
            True,
            idle,
            progress,
            restart=not restarted(job),
        )
    flag = last_event(job, "stalled")
    idle = (now - progress.changed_at).total_seconds()
    if flag is None:
        # The flag's event is gone from the document (spilled): the old rule clears it; the
        # last event stands for its time (no earlier: it only delays a take-back).
        if idle < config.stall_after_seconds:
            return StallChange(job.id, job.epoch, holder, False, idle, progress)
        flagged_at = job.lastEventAt
    else:
        flagged_at = flag.at
        if progress.changed_at > flagged_at:
            return StallChange(job.id, job.epoch, holder, False, idle, progress)
        if flag.data.get("attempt") not in (None, attempt_fingerprint(job)):
            return StallChange(
                job.id,
                job.epoch,
                holder,
                False,
                idle,
                progress,
                why="its checkpoint or reported progress moved",
            )
    flagged_for = (now - flagged_at).total_seconds()
    if flagged_for >= config.stall_after_seconds:
        last_seq = job.events[-1].seq if job.events else None
        return Release(job.id, job.epoch, holder, flagged_for, "stalled", last_seq=last_seq)
    return None


def release_reason(release: Release) -> str:
    """Why a job is taken back (its event's reason)."""
    waited = int(release.waited_seconds)
    if release.kind == "stalled":
        return (
            f"stalled on {release.holder}: still no progress {waited}s after it was flagged stalled"
        )
    if release.kind == "down":
        return f"holder {release.holder} is down (silent for {waited}s)"
    return f"assigned but never started: {release.holder} did not start it within {waited}s"


def avoid_entry(release: Release, now: datetime, config: HealthConfig) -> Avoid | None:
    """What a take-back records on the job about its holder: for a stall, the factory is
    avoided (``fleet.domain.scheduler.avoid_reason``); for the others, nothing."""
    if release.kind != "stalled":
        return None
    return Avoid(
        factory=release.holder,
        reason=f"stalled on {release.holder}",
        at=now,
        graceSeconds=config.avoid_grace_seconds,
    )


def release_applies(job: Job, release: Release) -> bool:
    """Whether a take-back still applies to the job as read now: the same holder at the same
    epoch, still leased; never started: still assigned; down: its lease not renewed since;
    stalled: still flagged and nothing happened to the job since (a report, a clear, a new
    flag: the next pass judges it afresh)."""
    lease = job.lease
    if job.stage not in LEASED or lease is None:
        return False
    if lease.holder != release.holder or job.epoch != release.epoch:
        return False
    if release.kind == "never_started":
        return job.stage is Stage.ASSIGNED  # it started since: not this verdict's
    if release.kind == "down":
        return release.lease_expires is None or lease.expiresAt == release.lease_expires
    last_seq = job.events[-1].seq if job.events else None
    return job.stalled and (release.last_seq is None or last_seq == release.last_seq)


def stall_applies(job: Job, change: StallChange) -> bool:
    """Whether the change still applies to the job as read now: same holder at the same
    epoch, still leased, flag not already set that way (else it moved on, or someone else
    already did this)."""
    lease = job.lease
    return not (
        job.stage not in LEASED
        or lease is None
        or lease.holder != change.holder
        or job.epoch != change.epoch
        or job.stalled == change.stalled
    )


def stall_record(job: Job, change: StallChange, now: datetime) -> Job:
    """The job with ``stalled`` set (or cleared) and the event that says so: a ``stalled``
    event carries a warning alert, the idle time, the progress last reported, whether the
    engine is restarted for it (``restart``: the write that sets the flag is the one that
    decides it, so a racing pass never restarts it twice) and the attempt's own progress
    (``attempt``: compared later, a change clears the flag)."""
    idle = int(change.idle_seconds)
    progress = {
        k: v
        for k, v in change.progress.as_dict().items()
        if k not in ("jobId", "fingerprint", "leaseEpoch")
    }
    if change.stalled:
        restart = change.restart and not restarted(job)
        reason = f"no progress for {idle}s while {change.holder} is heartbeating"
        if restart:
            reason += ": its engine is restarted"
        data: dict[str, Any] = {
            "alert": {"kind": "stalled", "severity": "warning", "message": reason},
            "idleSeconds": idle,
            "progress": progress,
            "restart": restart,
            "attempt": attempt_fingerprint(job),
        }
        return J.record(
            job, type="stalled", actor=HEALER, now=now, reason=reason, data=data, stalled=True
        )
    return J.record(
        job,
        type="stall_cleared",
        actor=HEALER,
        now=now,
        reason=change.why,
        data={"progress": progress},
        stalled=False,
    )
