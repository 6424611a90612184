"""The self-healer's decisions, from what one pass read. Pure: ``now`` is a parameter.

``plan_heal`` takes the product's factories, their last heartbeats and the leased jobs, and
says what the pass should write (``fleet.coordinator.healer`` writes it):

- a factory silent for ``stale_after`` is marked ``stale``, for ``down_after`` ``down``; only
  ever downwards (a factory becomes ``live`` again by its own heartbeat). Its leases are left
  to expire into the reaper: the healer never takes a job from a silent factory (it may be cut
  off rather than dead; the lease is the contract, and the reaper fences it once expired);
- a job whose holder is heartbeating but whose reported progress (tokens, cost, last activity,
  last output line) has not changed for ``stall_after`` is flagged ``stalled``
  (``stall_record``: a ``stalled`` event carrying an alert); the flag is cleared, with a
  ``stall_cleared`` event, when the progress moves again. Alive-but-stuck is the failure
  nothing else detects; the healer reports it and leaves the decision to the operator;
- a job still ``assigned`` (never started) ``never_started`` seconds after its assignment
  while its holder is alive is taken back (a ``Release``);
- a factory silent for ``prune_after`` is deregistered.

Nothing here trusts a factory about another factory's jobs: progress only counts for a job
whose lease the reporting factory holds at the reported epoch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from typing import Any

from fleet.domain import jobs as J
from fleet.domain.fleet_state import FactoryStatus, HeartbeatRecord, TrackedJob, short_id
from fleet.domain.models import Factory, Job
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


@dataclass(frozen=True)
class Release:
    job_id: str
    epoch: int
    holder: str
    waited_seconds: float


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
        if silent >= config.prune_after_seconds:
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
        if seen is None or (now - seen).total_seconds() >= config.stale_seconds:
            continue  # silent: its lease expires into the reaper
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
        idle = (now - progress.changed_at).total_seconds()
        stuck = idle >= config.stall_after_seconds
        if stuck != job.stalled:
            stalls.append(StallChange(job.id, job.epoch, holder, stuck, idle, progress))
    return HealPlan(tuple(statuses), tuple(stalls), tuple(releases), tuple(prune))


def release_reason(release: Release) -> str:
    """Why a never-started job is taken back (its event's reason)."""
    return (
        f"assigned but never started: {release.holder} did not start it within "
        f"{int(release.waited_seconds)}s"
    )


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
    event carries a warning alert, the idle time and the progress last reported."""
    idle = int(change.idle_seconds)
    progress = {
        k: v
        for k, v in change.progress.as_dict().items()
        if k not in ("jobId", "fingerprint", "leaseEpoch")
    }
    if change.stalled:
        reason = f"no progress for {idle}s while {change.holder} is heartbeating"
        data: dict[str, Any] = {
            "alert": {"kind": "stalled", "severity": "warning", "message": reason},
            "idleSeconds": idle,
            "progress": progress,
        }
        return J.record(
            job, type="stalled", actor=HEALER, now=now, reason=reason, data=data, stalled=True
        )
    return J.record(
        job,
        type="stall_cleared",
        actor=HEALER,
        now=now,
        reason="progress moved again",
        data={"progress": progress},
        stalled=False,
    )
