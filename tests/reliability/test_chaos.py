"""Chaos on the live local stack: a storm of jobs run by real ``fleet-factory`` processes
while the suite ``kill -9``s factories at seeded random moments (and starts them again),
pauses one past its lease (SIGSTOP, then SIGCONT once its job was reassigned, so it wakes up
as a zombie) and kills and restarts the Functions host mid-storm.

The host is a private one (``tests.support.hosts.PrivateHost``) over the session's emulators,
with the reaper's timer every 2 s (``REAPER_SCHEDULE``), so restarting it disturbs no other
test and expired leases come back without the test running the reaper itself. A sampler
thread reads ``GET /api/fleet/jobs`` throughout.

Afterwards: every job shipped exactly once (one terminal event, by one epoch); no (job,
epoch) ever seen held by two factories, and every sampled holder is the one the job's
history assigned; every write the zombie made with its stale epoch fenced (``409 fenced``,
logged by the factory); replaying each job's events reproduces its stored stage, epoch and
holder.

Replay a run with ``FLEET_CHAOS_SEED=N``; ``FLEET_CHAOS_JOBS`` sets the storm's size.
"""

from __future__ import annotations

import os
import random
import re
import signal
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from fleet.coordinator import Coordinator
from fleet.domain.jobs import agrees
from fleet.domain.models import Event
from fleet.store.ports import Stores
from tests.conftest import RunningStack
from tests.reliability.counts import count
from tests.support.factories import Factory, Fleet, wait_for
from tests.support.hosts import PrivateHost

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("FLEET_CHAOS_SEED", "20261123"))
JOBS = int(os.environ.get("FLEET_CHAOS_JOBS", "36"))
FACTORIES = 4
KILLS = 3
STORM_TIMEOUT = 150.0
TERMINAL = {"shipped", "failed", "dead_letter", "cancelled"}
FENCED_LINE = re.compile(r"job (\S+): fenced at epoch (\d+)")
SHIPPED_LINE = re.compile(r"job (\S+) \(epoch (\d+)\): shipped")


@pytest.fixture
def host(running_stack: RunningStack, tmp_path: Path) -> Iterator[PrivateHost]:
    host = PrivateHost(running_stack, tmp_path / "host.log", {"REAPER_SCHEDULE": "*/2 * * * * *"})
    host.start()
    try:
        yield host
    finally:
        host.stop()


@dataclass
class Sampler:
    """Reads the job list every 0.25 s; a failed read (the host restarting) is a miss."""

    fleet: Fleet
    samples: list[list[dict[str, Any]]] = field(default_factory=list)
    misses: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                response = requests.get(
                    f"{self.fleet.stack.api}/fleet/jobs",
                    headers=self.fleet.stack.operator(self.fleet.product),
                    timeout=10,
                )
                if response.status_code != 200:
                    raise requests.RequestException(response.text)
                self.samples.append(response.json()["jobs"])
            except requests.RequestException:
                self.misses += 1
            self._stop.wait(0.25)


@dataclass
class Zombie:
    factory: Factory
    job_id: str
    epoch: int
    woken: bool = False


class Chaos:
    """The seeded plan: when to pause a factory, kill factories and restart the host."""

    def __init__(self, fleet: Fleet, host: PrivateHost, rng: random.Random) -> None:
        self.fleet = fleet
        self.host = host
        self.rng = rng
        self.pause_at = rng.uniform(1.0, 3.0)
        self.kill_at = sorted(rng.uniform(2.0, 12.0) for _ in range(KILLS))
        self.host_restart_at = rng.uniform(4.0, 12.0)
        self.restarts: list[tuple[float, Factory]] = []
        self.zombie: Zombie | None = None
        self.kills = 0
        self.host_restarts = 0

    def _live(self) -> list[Factory]:
        paused = self.zombie.factory if self.zombie and not self.zombie.woken else None
        return [f for f in self.fleet.factories if f.running and f is not paused]

    def step(self, t: float) -> None:
        if self.zombie is None and t >= self.pause_at:
            self._pause()
        if self.kill_at and t >= self.kill_at[0]:
            self._kill(t)
        for when, factory in list(self.restarts):
            if t >= when:
                self.restarts.remove((when, factory))
                factory.start()
        if self.host_restarts == 0 and t >= self.host_restart_at:
            self.host.restart()
            self.host_restarts += 1
        if self.zombie is not None and not self.zombie.woken:
            self._maybe_wake(self.zombie)

    def _pause(self) -> None:
        holding = [(f, f.held()) for f in self._live()]
        holding = [(f, held) for f, held in holding if held]
        if not holding:
            return  # nobody holds a job at this instant: try again on the next tick
        factory, held = self.rng.choice(holding)
        assert factory.proc is not None
        factory.proc.send_signal(signal.SIGSTOP)
        job_id, epoch = str(held[0]["jobId"]), int(held[0]["epoch"])
        # Its state file may lag: once it is stopped (and can change nothing), the server
        # must still show it holding the job, or it was not paused mid-job: let it go on.
        try:
            job = self.fleet.job(job_id)
        except (requests.RequestException, AssertionError):
            job = {}
        if job.get("holder") == factory.name and job.get("epoch") == epoch:
            self.zombie = Zombie(factory, job_id, epoch)
        else:
            factory.proc.send_signal(signal.SIGCONT)

    def _kill(self, t: float) -> None:
        live = self._live()
        holding = [f for f in live if f.held()]
        if not holding and t < self.kill_at[0] + 5.0:
            return  # kill in the middle of a job when one runs soon: try the next tick
        if not live:
            return
        victim = self.rng.choice(holding or live)
        victim.kill()
        self.kill_at.pop(0)
        self.kills += 1
        self.restarts.append((t + self.rng.uniform(0.5, 3.0), victim))

    def _maybe_wake(self, zombie: Zombie) -> None:
        """Wake the paused factory once its job has been taken from it (the reaper bumped
        the epoch): everything it still believes is stale now."""
        try:
            job = self.fleet.job(zombie.job_id)
        except (requests.RequestException, AssertionError):
            return  # the host is restarting
        if job["epoch"] > zombie.epoch:
            assert zombie.factory.proc is not None
            zombie.factory.proc.send_signal(signal.SIGCONT)
            zombie.woken = True

    @property
    def finished(self) -> bool:
        return (
            not self.kill_at
            and not self.restarts
            and self.host_restarts == 1
            and self.zombie is not None
            and self.zombie.woken
        )


def _all_terminal(fleet: Fleet, jobs: set[str]) -> bool:
    try:
        listed = fleet.jobs()
    except (requests.RequestException, AssertionError):
        return False
    return {j["id"] for j in listed if j["stage"] in TERMINAL} >= jobs


def test_chaos_storm_every_job_ships_once_and_every_zombie_write_is_fenced(
    running_stack: RunningStack, host: PrivateHost, azure_backend: Stores, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    fleet = Fleet(host.running_stack(), f"chaos{uuid.uuid4().hex[:8]}", tmp_path)
    try:
        for n in range(FACTORIES):
            fleet.factory(f"f{n}", FLEET_DEMO_STEP_SECONDS="0.6")
        for factory in fleet.factories:
            factory.start()
        jobs = {
            fleet.submit(title=f"storm {n}", body=f"Storm job {n}.\nWrite it down.")
            for n in range(JOBS)
        }
        chaos = Chaos(fleet, host, rng)
        with Sampler(fleet) as sampler:
            started = time.monotonic()
            while not (chaos.finished and _all_terminal(fleet, jobs)):
                elapsed = time.monotonic() - started
                assert elapsed < STORM_TIMEOUT, (
                    f"storm unfinished after {elapsed:.0f}s: kills left {chaos.kill_at}, "
                    f"zombie {chaos.zombie}, host restarts {chaos.host_restarts}, stages "
                    f"{Counter(j['stage'] for j in fleet.jobs())}"
                )
                chaos.step(elapsed)
                time.sleep(0.2)
            zombie = chaos.zombie
            assert zombie is not None
            # The zombie's first write after waking (a renew, or its final report) is fenced.
            wait_for(
                "the zombie's stale write to be fenced",
                lambda: (
                    f"job {zombie.job_id}: fenced at epoch {zombie.epoch}"
                    in zombie.factory.output()
                ),
                timeout=30,
            )
    finally:
        fleet.stop_all()

    logs = "\n".join(f.output() for f in fleet.factories)
    fenced = FENCED_LINE.findall(logs)
    shipped_by = Counter(job for job, _epoch in SHIPPED_LINE.findall(logs))
    coordinator = Coordinator(azure_backend)
    assigned: dict[tuple[str, int], str] = {}
    for job_id in sorted(jobs):
        history = [Event.model_validate(e) for e in fleet.events(job_id)]
        stored = coordinator.get_job(fleet.product, job_id)
        # Every job terminal exactly once: shipped, by one epoch, and nothing after it.
        ends = [e for e in history if e.toStage.value in TERMINAL]
        assert stored.stage.value == "shipped", (job_id, stored.stage)
        assert [e.type for e in ends] == ["complete"] and history[-1] is ends[0], history
        assert shipped_by[job_id] <= 1, (job_id, shipped_by[job_id])
        # Replaying the audit trail gives the stored state.
        assert agrees(stored, history), job_id
        for event in history:
            if event.type == "assign":
                assert event.holder is not None
                key = (job_id, event.epoch)
                assert key not in assigned, f"{key} assigned twice"
                assigned[key] = event.holder
    # No job held by two factories at any sampled moment: each (job, epoch) seen held by
    # exactly the factory its history assigned it to, and each job listed once per sample.
    seen: dict[tuple[str, int], set[str]] = defaultdict(set)
    for sample in sampler.samples:
        ids = [j["id"] for j in sample]
        assert len(ids) == len(set(ids))
        for job in sample:
            if job["holder"] is not None:
                seen[(job["id"], job["epoch"])].add(job["holder"])
    assert sampler.samples and len(sampler.samples) > 20 * sampler.misses, sampler.misses
    for key, holders in seen.items():
        assert holders == {assigned[key]}, (key, holders, assigned.get(key))
    # The zombie's epoch never shipped: it was fenced, the job finished under a later one.
    zombie_history = fleet.events(zombie.job_id)
    complete = next(e for e in zombie_history if e["type"] == "complete")
    assert complete["epoch"] > zombie.epoch
    assert any(
        e["type"] in ("expire", "take_back") and e["epoch"] == zombie.epoch + 1
        for e in zombie_history
    )
    assert chaos.kills == KILLS and host.starts == 2
    expired = sum(1 for key in assigned if key[1] > 1)  # reassigned after the reaper took it back
    assert expired >= 1
    count("jobs", len(jobs))
    count("kills", chaos.kills)
    count("host restarts", chaos.host_restarts)
    count("pauses")
    count("zombie writes fenced", len(fenced))
    count("leases taken back", expired)
    print(
        f"chaos seed {SEED}: {len(jobs)} jobs, {chaos.kills} kills, 1 host restart, "
        f"{len(fenced)} stale writes fenced, {len(sampler.samples)} samples "
        f"({sampler.misses} missed while the host restarted), "
        f"{len(assigned)} assignments ({expired} after a lease expired)"
    )
