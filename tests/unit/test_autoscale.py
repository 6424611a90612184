"""``fleet-factory autoscale``: the rule as a pure function (a table), then the loop against a
simulated coordinator and fake child factories on a fake clock (nothing sleeps), then the
child processes' commands and environment with fake ``Popen``/``run``."""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import responses
from responses import matchers

from factory_cli.api import FleetClient, Unauthorized, Unavailable
from factory_cli.autoscale import (
    CHILD_DROPPED_ENV,
    EXIT_KILLED,
    EXIT_OK,
    EXIT_REFUSED,
    AutoscaleConfig,
    Autoscaler,
    ChildSpec,
    LaunchError,
    MintedTokens,
    ProcessLauncher,
    SetDemand,
    SharedToken,
    decide,
    first_claim_in,
    sets_of,
    summary_lines,
)
from factory_cli.cli import main
from factory_cli.testing import FakeClock

API = "http://coordinator.test/api"
LINUX = frozenset({"os:linux", "arch:x86_64", "engine:demo", "has:git"})
NEVER = float("inf")


def s(caps: tuple[str, ...] = (), routable: int = 0, running: int = 0, seats: int = 0) -> SetDemand:
    return SetDemand(frozenset(caps), routable=routable, running=running, live_seats=seats)


# --- the rule ---------------------------------------------------------------------------

# (what, sets, running children, unseen, seats per child, max, hold) -> (routable, uncovered, start)
RULE = [
    ("nothing asked", [], 0, 0, 1, 2, False, (0, 0, 0)),
    ("six jobs, no seat, max 2", [s(routable=6)], 0, 0, 1, 2, False, (6, 6, 2)),
    ("six jobs, no seat, max 10", [s(routable=6)], 0, 0, 1, 10, False, (6, 6, 6)),
    ("two seats a child: ceil", [s(routable=5)], 0, 0, 2, 10, False, (5, 5, 3)),
    ("free seats serve first", [s(routable=6, seats=4)], 0, 0, 1, 10, False, (6, 2, 2)),
    ("busy seats are not free", [s(routable=6, running=4, seats=4)], 0, 0, 1, 10, False, (6, 6, 6)),
    ("more running than seats", [s(routable=1, running=5, seats=2)], 0, 0, 1, 10, False, (1, 1, 1)),
    ("enough free seats", [s(routable=2, seats=3)], 0, 0, 1, 10, False, (2, 0, 0)),
    ("on top of running children", [s(routable=3)], 2, 0, 1, 4, False, (3, 3, 2)),
    ("at the max", [s(routable=3)], 2, 0, 1, 2, False, (3, 3, 0)),
    ("unseen children count as seats", [s(routable=6)], 2, 2, 1, 10, False, (6, 4, 4)),
    ("unseen children cover it all", [s(routable=2)], 2, 2, 1, 10, False, (2, 0, 0)),
    ("hold: start none", [s(routable=6)], 0, 0, 1, 2, True, (6, 6, 0)),
    ("a set it cannot serve", [s(("gpu",), routable=4)], 0, 0, 1, 10, False, (0, 0, 0)),
    ("a subset of what it offers", [s(("os:linux",), routable=2)], 0, 0, 1, 10, False, (2, 2, 2)),
    (
        "sets add up, each against its own seats",
        [s(routable=3, seats=1), s(("has:git",), routable=2), s(("gpu",), routable=9)],
        0,
        0,
        1,
        10,
        False,
        (5, 4, 4),
    ),
]


@pytest.mark.parametrize(
    ("sets", "running", "unseen", "seats", "most", "hold", "expected"),
    [pytest.param(*row[1:], id=row[0]) for row in RULE],
)
def test_autoscale_decide_follows_the_table(
    sets: list[SetDemand],
    running: int,
    unseen: int,
    seats: int,
    most: int,
    hold: bool,
    expected: tuple[int, int, int],
) -> None:
    decision = decide(
        sets,
        offered=LINUX,
        seats_per_child=seats,
        max_children=most,
        running_children=running,
        unseen_children=unseen,
        hold=hold,
    )
    assert (decision.routable, decision.uncovered, decision.start) == expected
    assert decision.wanted <= most or decision.wanted == running
    assert decision.start <= max(0, most - running)


def test_autoscale_sets_of_reads_the_demand_reply() -> None:
    reply = {
        "sets": [
            {"capabilities": [], "queued": 3, "routable": 2, "running": 1, "liveSeats": 4},
            {"capabilities": ["gpu", "os:linux"], "routable": 1},
            "not a set",
        ],
        "routable": 3,
    }
    assert sets_of(reply) == [s(routable=2, running=1, seats=4), s(("gpu", "os:linux"), 1)]
    assert sets_of({}) == []


# --- the loop, against a simulated coordinator -------------------------------------------


@dataclass
class FakeChild:
    """A child factory in the simulated world: it claims ``seats`` jobs at a time once it is
    up, each done ``job_seconds`` later; it leaves (exit 0) ``idle`` seconds after it last
    held anything; SIGTERM: it finishes nothing more and exits 0 (``stubborn``: ignores it)."""

    name: str
    pid: int
    started: float
    world: World
    code: int | None = None
    held: dict[str, float] = field(default_factory=dict)  # job -> when it is done
    claims: list[float] = field(default_factory=list)
    done: int = 0
    idle_since: float | None = None
    terms: int = 0
    killed: bool = False
    stubborn: bool = False

    def poll(self) -> int | None:
        return self.code

    def terminate(self) -> None:
        self.terms += 1
        if not self.stubborn and self.code is None:
            self.world.release(self)
            self.code = 0

    def kill(self) -> None:
        self.killed = True
        self.world.release(self)
        self.code = -9

    def first_claim(self) -> datetime | None:
        return self.world.wall(self.claims[0]) if self.claims else None

    def shipped(self) -> int:
        return self.done


class World:
    """The coordinator, simulated: a queue of jobs, children that claim and ship them, and the
    demand document recomputed only every ``reaper`` seconds (written only when it changed),
    so it lags what it says as the real one does."""

    def __init__(
        self,
        clock: WorldClock,
        *,
        jobs: int,
        reaper: float = 15.0,
        job_seconds: float = 3.0,
        startup: float = 1.0,
        idle: float = 2.0,
        seats: int = 1,
    ) -> None:
        self.clock = clock
        self.queue = [f"job-{n}" for n in range(jobs)]
        self.reaper = reaper
        self.job_seconds = job_seconds
        self.startup = startup
        self.idle = idle
        self.seats = seats
        self.children: list[FakeChild] = []
        self.shipped: Counter[str] = Counter()
        self.most_alive = 0
        self.doc: dict[str, Any] = {"sets": [], "updatedAt": None}
        self.next_pass = clock.t
        self.polls = 0
        self.failures: list[Exception] = []  # raised by the next polls, in order
        self.launch_failures = 0  # the next launches that fail

    def wall(self, t: float) -> datetime:
        return self.clock.wall() + timedelta(seconds=t - self.clock.t)

    def alive(self) -> list[FakeChild]:
        return [c for c in self.children if c.code is None]

    def release(self, child: FakeChild) -> None:
        self.queue[:0] = list(child.held)  # given back, not shipped
        child.held.clear()

    def step(self, t: float) -> None:
        for child in self.alive():
            for job in [j for j, at in child.held.items() if at <= t]:
                del child.held[job]
                self.shipped[job] += 1
                child.done += 1
            if t - child.started >= self.startup:
                while self.queue and len(child.held) < self.seats:
                    child.held[self.queue.pop(0)] = t + self.job_seconds
                    child.claims.append(t)
            if child.held:
                child.idle_since = None
            elif child.idle_since is None:
                child.idle_since = t
            elif t - child.idle_since >= self.idle:
                child.code = 0  # deregistered, exits 0
        self.most_alive = max(self.most_alive, len(self.alive()))
        if t >= self.next_pass:
            self.next_pass = t + self.reaper
            self.refresh(t)

    def refresh(self, t: float) -> None:
        running = sum(len(c.held) for c in self.alive())
        live = [c for c in self.alive() if c.started <= t]
        sets = []
        if self.queue or running:
            seats = self.seats * len(live)
            sets = [{"capabilities": [], "routable": len(self.queue), "running": running}]
            sets[0]["liveSeats"] = seats
        if sets != self.doc["sets"] or self.doc["updatedAt"] is None:
            self.doc = {"sets": sets, "updatedAt": f"t={t:.1f}"}

    def demand(self) -> Mapping[str, Any]:
        self.polls += 1
        if self.failures:
            raise self.failures.pop(0)
        return self.doc

    def start(self, name: str) -> FakeChild:
        if self.launch_failures:
            self.launch_failures -= 1
            raise LaunchError("enroll exited 3: the enrollment token is invalid")
        child = FakeChild(name, 5000 + len(self.children), self.clock.t, self)
        self.children.append(child)
        return child


class WorldClock(FakeClock):
    """A fake clock whose waits move the world on, a tenth of a second at a time."""

    def __init__(self) -> None:
        super().__init__()
        self.world: World | None = None

    def wait(self, seconds: float) -> None:
        self.waits.append(seconds)
        end = self.t + max(0.0, seconds)
        while self.t < end - 1e-9:
            self.t = min(end, round(self.t + 0.1, 6))
            if self.world is not None:
                self.world.step(self.t)


def names() -> Callable[[], str]:
    counter = iter(range(1, 1000))
    return lambda: f"auto-{next(counter):08x}"


@pytest.fixture
def clock() -> WorldClock:
    return WorldClock()


def scaler_for(
    world: World, *, most: int = 2, until_idle: bool = True, **config: Any
) -> tuple[Autoscaler, list[str]]:
    lines: list[str] = []
    settings: dict[str, Any] = {"interval": 5.0, "stop_timeout": 30.0, **config}
    scaler = Autoscaler(
        AutoscaleConfig(
            max_children=most,
            seats_per_child=world.seats,
            offered=LINUX,
            idle_seconds=world.idle,
            until_idle=until_idle,
            **settings,
        ),
        demand=world.demand,
        launcher=world,
        clock=world.clock,
        say=lines.append,
        names=names(),
    )
    world.clock.world = world
    return scaler, lines


def run_until(scaler: Autoscaler, clock: FakeClock, until_t: float) -> None:
    """What ``Autoscaler.run`` does, stopped at ``until_t`` if it has not exited."""
    while scaler.exit_code is None and clock.t < until_t:
        scaler.tick(clock.t)
        if scaler.exit_code is None:
            clock.wait(scaler.sleep_for(clock.t))


def test_autoscale_from_zero_to_zero_ships_every_job_once_within_max(clock: WorldClock) -> None:
    world = World(clock, jobs=6)
    world.refresh(clock.t)  # the reaper has seen the six jobs
    scaler, lines = scaler_for(world, most=2)
    code = scaler.run()
    assert code == EXIT_OK and scaler.reason == "idle"
    assert world.shipped == Counter({f"job-{n}": 1 for n in range(6)})
    assert world.most_alive == 2 and scaler.max_running == 2
    # The document lags by up to 15 s: read literally, the rule would have started children
    # again for work the first two had done. Two, both gone on their own.
    assert len(world.children) == 2
    assert [c.code for c in world.children] == [0, 0] and not any(c.terms for c in world.children)
    summary = scaler.summary(clock.t)
    assert summary["started"] == 2 and summary["jobsShipped"] == 6
    assert summary["maxRunning"] == 2 and summary["exit"] == "idle"
    lifetimes = [c["seconds"] for c in summary["children"]]
    assert summary["factorySeconds"] == pytest.approx(sum(lifetimes), abs=0.2)
    assert all(seconds > 9 for seconds in lifetimes)  # three jobs of 3 s each
    assert summary["timeToFirstClaimSeconds"] == pytest.approx(1.0, abs=0.2)  # the startup
    starts = [line for line in lines if line.startswith("start ")]
    exits = [line for line in lines if line.startswith("exit ")]
    assert len(starts) == 2 and len(exits) == 2
    assert "start auto-00000001 pid 5000 (1/2 running; 6 routable, 6 without a seat)" in lines
    assert all(" code 0 after " in line and "shipped 3" in line for line in exits)
    assert lines[-1] == "idle: no demand and no child for 2 s, exiting"
    assert summary_lines(summary)[1].startswith("factory-seconds ")


def test_autoscale_waits_for_a_document_newer_than_its_children(clock: WorldClock) -> None:
    # A document that never changes: the children it started are never in it, so each
    # counts as seats for the jobs the document says wait. Six jobs, max 10: six children,
    # however many polls see the same six.
    world = World(clock, jobs=0, startup=NEVER, idle=NEVER)  # they never claim nor leave
    world.doc = {"sets": [{"capabilities": [], "routable": 6}], "updatedAt": "A"}
    world.next_pass = NEVER
    scaler, _ = scaler_for(world, most=10, until_idle=False)
    run_until(scaler, clock, clock.t + 30)
    assert world.polls >= 6 and len(world.children) == 6


def test_autoscale_counts_children_seen_once_the_document_changed_after_them(
    clock: WorldClock,
) -> None:
    world = World(clock, jobs=0, startup=NEVER, idle=NEVER)
    world.next_pass = NEVER
    world.doc = {"sets": [{"capabilities": [], "routable": 4}], "updatedAt": "A"}
    scaler, _ = scaler_for(world, most=10, until_idle=False)
    scaler.tick(clock.t)
    assert len(world.children) == 4
    # A new version at the very next poll may predate their enrollment: they stay unseen.
    world.doc = {"sets": [{"capabilities": [], "routable": 5, "liveSeats": 0}], "updatedAt": "B"}
    run_until(scaler, clock, clock.t + 5)
    scaler.tick(clock.t)
    assert len(world.children) == 5  # the one job more
    # A version after that one was computed after they enrolled: they are in it (4 seats, and
    # the new child is not seen yet), so the rule reads it as it is.
    world.doc = {"sets": [{"capabilities": [], "routable": 9, "liveSeats": 4}], "updatedAt": "C"}
    clock.wait(5)
    scaler.tick(clock.t)
    # 9 routable, 4 free seats, 1 child unseen: 4 more
    assert len(world.children) == 9


def test_autoscale_holds_after_an_exit_until_a_newer_document(clock: WorldClock) -> None:
    world = World(clock, jobs=0, startup=NEVER, idle=NEVER)
    world.next_pass = NEVER
    world.doc = {"sets": [{"capabilities": [], "routable": 1}], "updatedAt": "A"}
    scaler, lines = scaler_for(world, most=3, until_idle=False)
    scaler.tick(clock.t)
    assert len(world.children) == 1
    world.children[0].code = 0  # it left (idle, as it found nothing)
    # B, new at the first poll after the exit, may have been computed before it; B again
    # says nothing newer either.
    for version in ("B", "B"):
        clock.wait(5)
        world.doc = {"sets": [{"capabilities": [], "routable": 1}], "updatedAt": version}
        scaler.tick(clock.t)
        assert len(world.children) == 1, version
    assert any(line.startswith("exit  auto-00000001 code 0") for line in lines)
    clock.wait(5)
    world.doc = {"sets": [{"capabilities": [], "routable": 1}], "updatedAt": "C"}
    scaler.tick(clock.t)
    assert len(world.children) == 2  # newer than the exit, and still a job waits


def test_autoscale_until_idle_with_no_demand_exits_after_idle_seconds(clock: WorldClock) -> None:
    world = World(clock, jobs=0)
    world.refresh(clock.t)
    scaler, lines = scaler_for(world, most=2)
    start = clock.t
    assert scaler.run() == EXIT_OK
    assert clock.t - start == pytest.approx(world.idle, abs=0.01)
    assert world.children == [] and lines == ["idle: no demand and no child for 2 s, exiting"]
    summary = scaler.summary(clock.t)
    assert summary["timeToFirstClaimSeconds"] is None and summary["factorySeconds"] == 0
    assert "n/a" in summary_lines(summary)[2]


def test_autoscale_a_failed_poll_starts_nothing_and_is_not_quiet(clock: WorldClock) -> None:
    world = World(clock, jobs=3)
    world.refresh(clock.t)
    world.failures = [Unavailable("GET /fleet/demand: HTTP 503"), Unavailable("timeout")]
    scaler, lines = scaler_for(world, most=2)
    run_until(scaler, clock, clock.t + 9)  # two polls, both failed: nothing known
    assert world.children == [] and scaler.exit_code is None and scaler.quiet_since is None
    assert lines == [
        "demand poll failed: GET /fleet/demand: HTTP 503",
        "demand poll failed: timeout",
    ]
    assert scaler.run() == EXIT_OK
    assert sum(world.shipped.values()) == 3 and set(world.shipped.values()) == {1}


def test_autoscale_a_failed_launch_is_said_and_tried_on_the_next_poll(clock: WorldClock) -> None:
    world = World(clock, jobs=2)
    world.refresh(clock.t)
    world.launch_failures = 1
    scaler, lines = scaler_for(world, most=2)
    scaler.tick(clock.t)
    assert world.children == []
    assert lines[-1] == (
        "start auto-00000001 failed: enroll exited 3: the enrollment token is invalid"
    )
    run_until(scaler, clock, clock.t + 5.01)
    assert len(world.children) == 2
    assert scaler.run() == EXIT_OK and sum(world.shipped.values()) == 2


def test_autoscale_refused_token_stops_the_children_and_exits_3(clock: WorldClock) -> None:
    world = World(clock, jobs=4, job_seconds=60)
    world.refresh(clock.t)
    scaler, lines = scaler_for(world, most=2)
    scaler.tick(clock.t)
    assert len(world.alive()) == 2
    world.failures = [Unauthorized("GET /fleet/demand: HTTP 401: revoked")]
    assert scaler.run() == EXIT_REFUSED
    assert [c.terms for c in world.children] == [1, 1] and world.alive() == []
    assert scaler.reason == "refused"
    assert (
        "the coordinator refused the demand poll's token: GET /fleet/demand: HTTP 401: revoked"
        in lines
    )


def test_autoscale_signal_forwards_sigterm_and_waits_for_the_children(clock: WorldClock) -> None:
    world = World(clock, jobs=4, job_seconds=60)
    world.refresh(clock.t)
    scaler, lines = scaler_for(world, most=2)
    run_until(scaler, clock, clock.t + 2)
    assert len(world.alive()) == 2
    polls = world.polls
    scaler.request_stop()
    assert scaler.run() == EXIT_OK
    assert [(c.terms, c.code) for c in world.children] == [(1, 0), (1, 0)]
    assert world.polls == polls  # nothing polled, nothing started after the signal
    assert scaler.reason == "signal"
    assert "stopping: SIGTERM to 2 child(ren), starting none" in lines


def test_autoscale_signal_kills_a_child_that_outlives_the_stop_timeout(clock: WorldClock) -> None:
    world = World(clock, jobs=4, job_seconds=600)
    world.refresh(clock.t)
    scaler, lines = scaler_for(world, most=2, stop_timeout=30.0)
    scaler.tick(clock.t)
    world.children[0].stubborn = True
    scaler.request_stop()
    scaler.tick(clock.t)
    assert world.children[0].code is None and world.children[1].code == 0
    scaler.request_stop()  # a second signal: a second SIGTERM (children abort)
    stopped_at = clock.t
    assert scaler.run() == EXIT_KILLED
    assert world.children[0].terms == 2 and world.children[0].killed
    assert clock.t - stopped_at == pytest.approx(30.0, abs=0.01)
    assert "kill  auto-00000001: still running after the stop timeout" in lines


# --- the children's processes --------------------------------------------------------------


@dataclass
class Spawned:
    runs: list[tuple[list[str], dict[str, Any]]] = field(default_factory=list)
    popens: list[tuple[list[str], dict[str, Any]]] = field(default_factory=list)
    enroll_code: int = 0

    def run(self, command: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        self.runs.append((command, kw))
        return subprocess.CompletedProcess(command, self.enroll_code, "enrolled\n", "oops\n")

    def popen(self, command: list[str], **kw: Any) -> Any:
        self.popens.append((command, kw))
        return type("P", (), {"pid": 77, "poll": lambda self: None})()


def spec(tmp_path: Path, **env: str) -> ChildSpec:
    base = {
        "PATH": "/usr/bin",
        "FLEET_OPERATOR_TOKEN": "flo_secret",
        "FLEET_SCALER_TOKEN": "fls_secret",
        "FLEET_ENROLLMENT_TOKEN": "fle_shared",
        "FLEET_TOKEN": "flf_mine",
        "FLEET_CONFIG_DIR": "/somewhere/else",
        "FLEET_ENGINE_CMD": "my-agent {prompt_file}",
        "FLEET_POLL_SECONDS": "0.5",
        **env,
    }
    return ChildSpec(
        api=API,
        engine="demo",
        seats=2,
        caps=("gpu",),
        idle_seconds=2.0,
        root=tmp_path / "children",
        base_env=base,
        python="/py",
        pythonpath=Path("/src"),
    )


def test_autoscale_launcher_enrolls_then_runs_each_child_in_its_own_dir(tmp_path: Path) -> None:
    spawned = Spawned()
    launcher = ProcessLauncher(
        spec(tmp_path), SharedToken("fle_many"), popen=spawned.popen, run=spawned.run
    )
    child = launcher.start("auto-0000abcd")
    home = tmp_path / "children" / "auto-0000abcd"
    assert child.home == home and child.pid == 77 and home.is_dir()
    assert oct(home.stat().st_mode & 0o777) == "0o700"
    [(enroll, enroll_kw)] = spawned.runs
    assert enroll == [
        "/py", "-m", "factory_cli", "enroll", "--name", "auto-0000abcd",
        "--engine", "demo", "--seats", "2", "--cap", "gpu",
    ]  # fmt: skip
    [(run, run_kw)] = spawned.popens
    assert run == [
        "/py", "-m", "factory_cli", "run", "--exit-when-idle", "2", "--deregister-on-exit",
        "--engine", "demo", "--seats", "2", "--cap", "gpu",
    ]  # fmt: skip
    for kw in (enroll_kw, run_kw):
        assert kw["env"]["FLEET_CONFIG_DIR"] == str(home)
        assert kw["env"]["FLEET_API"] == API
        assert kw["env"]["PYTHONPATH"] == "/src"
        assert kw["env"]["FLEET_POLL_SECONDS"] == "0.5"  # the rest is passed on
        assert kw.get("start_new_session") is True or os.name == "nt"
    # The enrollment token reaches the enrollment only; no other token reaches a child.
    assert enroll_kw["env"]["FLEET_ENROLLMENT_TOKEN"] == "fle_many"
    ours = {"FLEET_CONFIG_DIR", "FLEET_ENROLLMENT_TOKEN"}
    assert not (CHILD_DROPPED_ENV - ours) & (run_kw["env"].keys() | enroll_kw["env"].keys())
    assert "FLEET_ENROLLMENT_TOKEN" not in run_kw["env"]
    assert not any("secret" in v or "flf_" in v for v in run_kw["env"].values())
    assert (home / "run.log").read_text() == "enrolled\noops\n"  # the enrollment's output


def test_autoscale_launcher_says_why_an_enrollment_failed(tmp_path: Path) -> None:
    spawned = Spawned(enroll_code=3)
    launcher = ProcessLauncher(
        spec(tmp_path), SharedToken("fle_x"), popen=spawned.popen, run=spawned.run
    )
    with pytest.raises(LaunchError, match="enroll exited 3: oops"):
        launcher.start("auto-1")
    assert spawned.popens == []


def test_autoscale_minted_tokens_make_one_single_use_token_each(
    rsps: responses.RequestsMock,
) -> None:
    for token in ("fle_one", "fle_two"):
        rsps.post(
            f"{API}/fleet/enrollment-tokens",
            json={"token": token, "id": token},
            status=201,
            match=[
                matchers.header_matcher(
                    {"Authorization": "Bearer flo_op", "X-Fleet-Product": "demo"}
                ),
                matchers.json_params_matcher({"expiresInSeconds": 600}),
            ],
        )
    tokens = MintedTokens(FleetClient(API, "flo_op", product="demo"))
    assert [tokens.take(), tokens.take()] == ["fle_one", "fle_two"]


def test_autoscale_minted_tokens_refused_is_a_launch_error(rsps: responses.RequestsMock) -> None:
    rsps.post(f"{API}/fleet/enrollment-tokens", json={"error": "forbidden"}, status=403)
    with pytest.raises(LaunchError, match=r"cannot make an enrollment token: .*403"):
        MintedTokens(FleetClient(API, "flo_viewer", product="demo")).take()


def test_autoscale_first_claim_in_reads_the_state_file_and_the_manifests(tmp_path: Path) -> None:
    assert first_claim_in(tmp_path) is None
    (tmp_path / "state.json").write_text(
        json.dumps({"jobs": [{"jobId": "j2", "startedAt": "2026-01-01T00:00:10.000000Z"}]})
    )
    first = first_claim_in(tmp_path)
    assert first is not None and first.isoformat() == "2026-01-01T00:00:10+00:00"
    manifest = tmp_path / "work" / "j1" / ".fleet" / "manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("{}")
    earlier = datetime.fromisoformat("2026-01-01T00:00:04+00:00").timestamp()
    os.utime(manifest, (earlier, earlier))
    first = first_claim_in(tmp_path)
    assert first is not None and first.isoformat() == "2026-01-01T00:00:04+00:00"


# --- the command ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "a token to poll the demand is needed"),
        (["--scaler-token", "fls_x"], "the children need an enrollment token"),
    ],
)
def test_autoscale_command_without_tokens_is_a_usage_error(
    env: dict[str, str],
    args: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(["autoscale", "--api", API, "--max", "2", "--engine", "demo", *args], env=env)
    assert code == 2
    assert message in capsys.readouterr().err


def test_autoscale_command_needs_max(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["autoscale", "--api", API])
    assert exited.value.code == 2
    assert "--max" in capsys.readouterr().err
