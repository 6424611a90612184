"""``fleet-factory autoscale``: local elasticity. The rule an autoscaler in the cloud follows,
on one machine: poll the product's demand, start ephemeral factories (child processes) for
the work no seat is free for, up to ``--max`` at once; they leave on their own when idle.

**The rule** (``decide``, a pure function). Every ``--interval`` seconds (default 5) the loop
reads ``GET /api/fleet/demand``. For each capability set the children can serve —
``set(required) <= offered``, as the coordinator matches a claim; ``offered`` is what a child
claims with: the machine's detected capabilities, the engine's, the ``--cap`` extras — the
jobs with no free seat are ``max(0, routable - free)``, with ``free = max(0, liveSeats -
running)`` (live factories' seats not in use). Their sum, less the seats of children the
reply does not show yet (see *lag*), is ``uncovered``; then::

    wanted = min(max, running children + ceil(uncovered / seats per child))

and the loop starts ``wanted - running children``. It never stops a child: a child is ``run
--exit-when-idle IDLE``, which deregisters and exits 0 once it has held nothing and found
nothing to claim for IDLE seconds. Exited children are reaped every half second (their exit
codes printed).

**Lag.** The demand document is kept by the reaper's pass: it is up to one reaper period
(``REAPER_SCHEDULE``, 15 s by default) behind. Read literally, the rule would count the same
routable jobs twice — once to start children, again on the next poll while the document does
not show them yet — and would start factories again, after the children left idle, for work
they already did. So two corrections, both keyed to the document's ``updatedAt`` (written only
when it changed) and never to a clock shared with the coordinator:

- *unseen children*: a child counts as seen once a document has changed after the first poll
  that followed its start (that document was computed after the child enrolled). Until then its
  seats count as free seats against ``uncovered``;
- *hold*: after a child exits, nothing starts until a document has changed after the first poll
  that followed the exit. A child leaves idle only when it found nothing to claim; a document
  older than that exit says nothing newer.

New work always changes the document (``queued`` moves), so a hold ends as soon as there is
something new to start for.

**Children.** Each is ``fleet-factory enroll`` then ``fleet-factory run --exit-when-idle IDLE
--deregister-on-exit``, with its own ``FLEET_CONFIG_DIR`` (``{children dir}/{name}``: config,
state, work dirs, and ``run.log``, its output) and the name ``auto-<8 hex>``. Its enrollment
token is either one multi-use token shared by every child (``--enrollment-token``) or minted
for it, single-use, with the operator token (``POST /api/fleet/enrollment-tokens``). Neither
the operator, the scaler nor the enrollment token is in a child's environment (nor, through
it, an engine's). Each runs in its own process group, so a Ctrl-C reaches only this loop.

**Stopping.** SIGINT/SIGTERM: start nothing more, forward SIGTERM to every child (it drains:
``run``'s ``--grace``), wait for them up to ``--stop-timeout`` seconds, SIGKILL the rest,
exit. A second signal forwards a second SIGTERM (children then abort at once).

**Until idle.** With ``--until-idle`` it exits 0 once the last demand read showed no routable
job the children could serve and no child has run for ``--idle`` seconds.

**What it reports.** One line per child started or exited, and at the end (``--json``: one
object on stdout): children started, the most running at once, jobs shipped (each child's
state file, ``outcomes.shipped``), factory-seconds (the sum of the children's lifetimes), and
the time from the first routable demand seen to the first claim of any child. A child's claims
are the ``jobs[].startedAt`` its state file shows (``fleet-factory status --json``) and, for a
job shorter than the state file's one-second write period, the time the job's manifest was
written in its work dir (``work/{job}/.fleet/manifest.json``, written as the job is claimed).
"""

from __future__ import annotations

import contextlib
import math
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from factory_cli.api import ApiError, FleetClient, Unauthorized
from factory_cli.clock import Clock, iso
from factory_cli.config import STATE_FILE
from factory_cli.state import read_state

TICK_SECONDS = 0.5  # how often exited children are reaped and their state files read
MINTED_TOKEN_SECONDS = 600  # a minted enrollment token is used at once; the least it may live
EXIT_OK = 0
EXIT_KILLED = 1  # stopped, but a child had to be killed after --stop-timeout
EXIT_REFUSED = 3  # the coordinator refused the demand poll's token

# Never handed to a child: the tokens this loop holds (an engine must not read them), and the
# settings that would point a child at another factory's config, state or work dirs, or
# override what the loop decides for every child (it passes those as flags).
CHILD_DROPPED_ENV = frozenset(
    {
        "FLEET_OPERATOR_TOKEN",
        "FLEET_SCALER_TOKEN",
        "FLEET_ENROLLMENT_TOKEN",
        "FLEET_TOKEN",
        "FLEET_FACTORY_ID",
        "FLEET_PRODUCT",
        "FLEET_CONFIG",
        "FLEET_CONFIG_DIR",
        "FLEET_STATE_FILE",
        "FLEET_WORK_DIR",
        "FLEET_ENGINE",
        "FLEET_ENGINE_CMD",
        "FLEET_SEATS",
        "FLEET_CAPS",
        "FLEET_EXIT_WHEN_IDLE",
        "FLEET_DEREGISTER_ON_EXIT",
    }
)


class LaunchError(Exception):
    """A child could not be started (its enrollment token, its enrollment, its process)."""


# --- the rule ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SetDemand:
    """One capability set of ``GET /fleet/demand``, the fields the rule reads."""

    capabilities: frozenset[str]
    routable: int
    running: int
    live_seats: int

    @property
    def free_seats(self) -> int:
        return max(0, self.live_seats - self.running)


def sets_of(reply: Mapping[str, Any]) -> list[SetDemand]:
    """The sets of a demand reply."""
    out = []
    for item in reply.get("sets") or ():
        if not isinstance(item, Mapping):
            continue
        out.append(
            SetDemand(
                capabilities=frozenset(str(c) for c in item.get("capabilities") or ()),
                routable=int(item.get("routable") or 0),
                running=int(item.get("running") or 0),
                live_seats=int(item.get("liveSeats") or 0),
            )
        )
    return out


@dataclass(frozen=True)
class Decision:
    routable: int  # routable jobs the children could serve
    uncovered: int  # of them, those no free seat (nor a child not seen yet) is there for
    wanted: int  # children wanted in all
    start: int  # children to start now


def decide(
    sets: Iterable[SetDemand],
    *,
    offered: frozenset[str],
    seats_per_child: int,
    max_children: int,
    running_children: int,
    unseen_children: int = 0,
    hold: bool = False,
) -> Decision:
    """How many children to start (the module docstring has the rule)."""
    servable = [s for s in sets if s.capabilities <= offered]
    routable = sum(s.routable for s in servable)
    without_seat = sum(max(0, s.routable - s.free_seats) for s in servable)
    uncovered = max(0, without_seat - unseen_children * seats_per_child)
    wanted = min(max_children, running_children + math.ceil(uncovered / seats_per_child))
    wanted = max(wanted, running_children)  # it never stops a child
    start = 0 if hold else wanted - running_children
    return Decision(routable=routable, uncovered=uncovered, wanted=wanted, start=start)


# --- the seams ---------------------------------------------------------------------------


class Child(Protocol):
    """A started child factory."""

    @property
    def name(self) -> str: ...

    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None:
        """Its exit code, None while it runs."""
        ...

    def terminate(self) -> None:
        """Ask it to stop (SIGTERM: it drains)."""
        ...

    def kill(self) -> None:
        """Stop it now, and wait for it."""
        ...

    def first_claim(self) -> datetime | None:
        """The earliest claim its files show (None: none yet)."""
        ...

    def shipped(self) -> int:
        """Jobs it shipped, as its state file says."""
        ...


class Launcher(Protocol):
    def start(self, name: str) -> Child:
        """Enroll a factory named ``name`` and start it; ``LaunchError`` when it cannot."""
        ...


DemandSource = Callable[[], Mapping[str, Any]]


# --- the loop ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AutoscaleConfig:
    max_children: int
    seats_per_child: int
    offered: frozenset[str]
    idle_seconds: float
    interval: float = 5.0
    until_idle: bool = False
    stop_timeout: float = 60.0


@dataclass
class Tracked:
    """A child, and what the loop knows of it."""

    child: Child
    started: float  # monotonic
    started_wall: datetime
    base_epoch: int | None = None  # the demand epoch at the first poll after its start
    first_claim: datetime | None = None
    exited: float | None = None
    code: int | None = None
    shipped: int = 0

    def lifetime(self, now: float) -> float:
        return (self.exited if self.exited is not None else now) - self.started

    def view(self, now: float) -> dict[str, Any]:
        return {
            "name": self.child.name,
            "pid": self.child.pid,
            "startedAt": iso(self.started_wall),
            "seconds": round(self.lifetime(now), 1),
            "exitCode": self.code,
            "firstClaimAt": iso(self.first_claim) if self.first_claim else None,
            "shipped": self.shipped,
        }


def child_name() -> str:
    return f"auto-{secrets.token_hex(4)}"


class Autoscaler:
    """The loop: ``run`` ticks until an exit condition; ``request_stop`` from a signal
    handler. Its seams — the demand poll, the launcher, the clock, where lines go — are
    passed in, so tests drive it with fakes and never sleep."""

    def __init__(
        self,
        config: AutoscaleConfig,
        *,
        demand: DemandSource,
        launcher: Launcher,
        clock: Clock,
        say: Callable[[str], None],
        names: Callable[[], str] = child_name,
    ) -> None:
        self.config = config
        self.demand = demand
        self.launcher = launcher
        self.clock = clock
        self.say = say
        self.names = names
        self.children: list[Tracked] = []
        self.exit_code: int | None = None
        self.reason: str | None = None  # why it ended: idle, signal, refused
        self.max_running = 0
        self.first_demand: datetime | None = None  # wall time of the first routable demand
        # The demand document's versions: ``epoch`` counts the changes of ``updatedAt`` seen.
        self.version: Any = None
        self.epoch = 0
        self.routable: int | None = None  # servable routable jobs, last reply (None: none)
        self.next_poll = 0.0
        self.exit_pending = False  # a child exited since the last poll
        self.hold_base: int | None = None  # start nothing until the epoch passes this
        self.quiet_since: float | None = None  # no demand and no child since
        self.stop_requested = 0  # signals received (or a refused token)
        self.stops_sent = 0  # SIGTERMs forwarded to the children: one per signal
        self.stop_deadline: float | None = None
        self.stop_code = EXIT_OK
        self.killed = False

    # --- control ---------------------------------------------------------------------

    def request_stop(self) -> None:
        """SIGINT/SIGTERM (a signal handler): stop starting, forward SIGTERM, wait, exit."""
        self.stop_requested += 1
        self.clock.wake()

    def refused(self) -> None:
        self.stop_code = EXIT_REFUSED
        self.reason = "refused"
        self.stop_requested = max(self.stop_requested, 1)

    def run(self) -> int:
        while self.exit_code is None:
            now = self.clock.monotonic()
            self.tick(now)
            if self.exit_code is None:
                self.clock.wait(self.sleep_for(self.clock.monotonic()))
        return self.exit_code

    @property
    def alive(self) -> list[Tracked]:
        return [t for t in self.children if t.exited is None]

    def tick(self, now: float) -> None:
        self._reap(now)
        self._sample()
        if self.stop_requested:
            self._stopping(now)
            return
        if now >= self.next_poll:
            self._poll(now)
        self._quiet(now)

    def sleep_for(self, now: float) -> float:
        due = [now + TICK_SECONDS]
        if not self.stop_requested:
            due.append(self.next_poll)
        if self.stop_deadline is not None:
            due.append(self.stop_deadline)
        if self.config.until_idle and self.quiet_since is not None:
            due.append(self.quiet_since + self.config.idle_seconds)
        return max(0.0, min(due) - now)

    # --- children ----------------------------------------------------------------------

    def _reap(self, now: float) -> None:
        for tracked in self.alive:
            code = tracked.child.poll()
            if code is None:
                continue
            tracked.exited, tracked.code = now, code
            tracked.shipped = tracked.child.shipped()
            self._claimed(tracked)
            self.exit_pending = True
            self.say(
                f"exit  {tracked.child.name} code {code} after {tracked.lifetime(now):.1f} s, "
                f"shipped {tracked.shipped} ({len(self.alive)}/{self.config.max_children} running)"
            )

    def _sample(self) -> None:
        for tracked in self.alive:
            if tracked.first_claim is None:
                self._claimed(tracked)

    def _claimed(self, tracked: Tracked) -> None:
        at = tracked.child.first_claim()
        if at is not None and (tracked.first_claim is None or at < tracked.first_claim):
            tracked.first_claim = at

    def _start(self, decision: Decision) -> None:
        for _ in range(decision.start):
            if self.stop_requested:
                return  # a signal while children were being started
            name = self.names()
            began, began_wall = self.clock.monotonic(), self.clock.wall()
            try:
                child = self.launcher.start(name)
            except LaunchError as exc:
                self.say(f"start {name} failed: {exc}")
                return  # the next poll tries again
            self.children.append(Tracked(child, began, began_wall))
            running = len(self.alive)
            self.max_running = max(self.max_running, running)
            self.say(
                f"start {name} pid {child.pid} ({running}/{self.config.max_children} running; "
                f"{decision.routable} routable, {decision.uncovered} without a seat)"
            )

    # --- demand ------------------------------------------------------------------------

    def _poll(self, now: float) -> None:
        self.next_poll = now + self.config.interval
        try:
            reply = self.demand()
        except Unauthorized as exc:
            self.say(f"the coordinator refused the demand poll's token: {exc.message}")
            self.refused()
            return
        except ApiError as exc:
            self.say(f"demand poll failed: {exc.message}")
            self.routable = None  # an unreachable coordinator is not an empty queue
            return
        version = reply.get("updatedAt")
        if version != self.version or self.epoch == 0:
            self.version = version
            self.epoch += 1
        for tracked in self.alive:
            if tracked.base_epoch is None:
                tracked.base_epoch = self.epoch
        if self.exit_pending:
            self.exit_pending = False
            self.hold_base = self.epoch
        if self.hold_base is not None and self.epoch > self.hold_base:
            self.hold_base = None
        alive = self.alive
        unseen = sum(1 for t in alive if t.base_epoch is None or self.epoch <= t.base_epoch)
        decision = decide(
            sets_of(reply),
            offered=self.config.offered,
            seats_per_child=self.config.seats_per_child,
            max_children=self.config.max_children,
            running_children=len(alive),
            unseen_children=unseen,
            hold=self.hold_base is not None,
        )
        self.routable = decision.routable
        if decision.routable and self.first_demand is None:
            self.first_demand = self.clock.wall()
            self.say(f"demand: {decision.routable} routable job(s) the children could serve")
        self._start(decision)

    def _quiet(self, now: float) -> None:
        if self.routable != 0 or self.alive:
            self.quiet_since = None
            return
        if self.quiet_since is None:
            self.quiet_since = now
        if self.config.until_idle and now - self.quiet_since >= self.config.idle_seconds:
            self.reason = "idle"
            self.say(f"idle: no demand and no child for {self.config.idle_seconds:g} s, exiting")
            self.exit_code = EXIT_OK

    # --- stopping ----------------------------------------------------------------------

    def _stopping(self, now: float) -> None:
        alive = self.alive
        if self.stop_deadline is None:
            self.reason = self.reason or "signal"
            self.stop_deadline = now + self.config.stop_timeout
            if alive:
                self.say(f"stopping: SIGTERM to {len(alive)} child(ren), starting none")
        while self.stops_sent < self.stop_requested:
            self.stops_sent += 1
            for tracked in alive:
                tracked.child.terminate()
        if alive and now >= self.stop_deadline:
            for tracked in alive:
                self.say(f"kill  {tracked.child.name}: still running after the stop timeout")
                tracked.child.kill()
            self.killed = True
            self._reap(now)
        if not self.alive:
            self.exit_code = EXIT_KILLED if self.killed and not self.stop_code else self.stop_code

    # --- the report ----------------------------------------------------------------------

    def first_claim(self) -> datetime | None:
        return min((t.first_claim for t in self.children if t.first_claim), default=None)

    def summary(self, now: float) -> dict[str, Any]:
        claim = self.first_claim()
        waited = None
        if claim is not None and self.first_demand is not None:
            waited = round((claim - self.first_demand).total_seconds(), 3)
        return {
            "exit": self.reason,
            "started": len(self.children),
            "maxRunning": self.max_running,
            "jobsShipped": sum(t.shipped for t in self.children),
            "factorySeconds": round(sum(t.lifetime(now) for t in self.children), 1),
            "firstDemandAt": iso(self.first_demand) if self.first_demand else None,
            "firstClaimAt": iso(claim) if claim else None,
            "timeToFirstClaimSeconds": waited,
            "children": [t.view(now) for t in self.children],
        }


def summary_lines(summary: Mapping[str, Any]) -> list[str]:
    waited = summary.get("timeToFirstClaimSeconds")
    return [
        f"children started {summary['started']} (at most {summary['maxRunning']} at once), "
        f"jobs shipped {summary['jobsShipped']}",
        f"factory-seconds {summary['factorySeconds']:.1f}",
        "time to first claim "
        + ("n/a (no child claimed)" if waited is None else f"{waited:.1f} s")
        + " (from the first routable demand seen)",
    ]


# --- the coordinator, as autoscale sees it -----------------------------------------------


def demand_reply(client: FleetClient) -> dict[str, Any]:
    """``GET /fleet/demand``: every capability set (an operator's or a scaler token)."""
    reply = client.request("GET", "/fleet/demand")
    if not isinstance(reply, dict):
        raise ApiError(f"GET /fleet/demand: expected a JSON object, got {type(reply).__name__}")
    return reply


class EnrollmentTokens(Protocol):
    def take(self) -> str:
        """An enrollment token for one child."""
        ...


@dataclass(frozen=True)
class SharedToken:
    """One multi-use enrollment token, for every child."""

    token: str

    def take(self) -> str:
        return self.token


@dataclass(frozen=True)
class MintedTokens:
    """A single-use enrollment token per child, made with an operator (admin) token."""

    client: FleetClient

    def take(self) -> str:
        try:
            reply = self.client.request(
                "POST",
                "/fleet/enrollment-tokens",
                json_body={"expiresInSeconds": MINTED_TOKEN_SECONDS},
            )
        except ApiError as exc:
            raise LaunchError(f"cannot make an enrollment token: {exc.message}") from exc
        token = reply.get("token") if isinstance(reply, dict) else None
        if not isinstance(token, str) or not token:
            raise LaunchError("the coordinator made no enrollment token")
        return token


# --- child processes ---------------------------------------------------------------------


def source_root() -> Path | None:
    """The directory to put on a child's ``PYTHONPATH`` so that ``python -m factory_cli``
    imports this very package: its parent when it runs from a source checkout, None when it
    is installed (site-packages is on every interpreter's path already)."""
    root = Path(__file__).resolve().parent.parent
    return None if root.name in ("site-packages", "dist-packages") else root


def child_env(
    base: Mapping[str, str], home: Path, api: str, pythonpath: Path | None = None
) -> dict[str, str]:
    env = {k: v for k, v in base.items() if k not in CHILD_DROPPED_ENV}
    env["FLEET_CONFIG_DIR"] = str(home)
    env["FLEET_API"] = api
    if pythonpath is not None:
        rest = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(pythonpath) + (os.pathsep + rest if rest else "")
    return env


def first_claim_in(home: Path) -> datetime | None:
    """The earliest claim a child's files show: the ``startedAt`` of each job its state file
    lists, and when each job's manifest was written in its work dir (read for its time only:
    the engine owns the work dir, so nothing in it is opened)."""
    stamps: list[datetime] = []
    state = read_state(home / STATE_FILE) or {}
    for job in state.get("jobs") or ():
        stamp = job.get("startedAt") if isinstance(job, dict) else None
        if isinstance(stamp, str):
            with contextlib.suppress(ValueError):
                stamps.append(datetime.fromisoformat(stamp.replace("Z", "+00:00")))
    work = home / "work"
    try:
        entries = list(work.iterdir())
    except OSError:
        entries = []
    for entry in entries:
        try:
            written = (entry / ".fleet" / "manifest.json").lstat().st_mtime
        except OSError:
            continue
        stamps.append(datetime.fromtimestamp(written, UTC))
    return min(stamps, default=None)


@dataclass
class ProcessChild:
    name: str
    home: Path
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self) -> int | None:
        return self.process.poll()

    def terminate(self) -> None:
        if self.process.poll() is not None:
            return
        if os.name == "nt":
            self.process.send_signal(signal.CTRL_BREAK_EVENT)  # type: ignore[attr-defined,unused-ignore]
        else:
            self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)

    def first_claim(self) -> datetime | None:
        return first_claim_in(self.home)

    def shipped(self) -> int:
        state = read_state(self.home / STATE_FILE) or {}
        outcomes = state.get("outcomes")
        value = outcomes.get("shipped") if isinstance(outcomes, dict) else None
        return value if isinstance(value, int) else 0


@dataclass(frozen=True)
class ChildSpec:
    """What every child is: where it enrolls, with which engine, seats and extras."""

    api: str
    engine: str
    seats: int
    caps: tuple[str, ...]
    idle_seconds: float
    root: Path  # each child's FLEET_CONFIG_DIR is a directory in it
    base_env: Mapping[str, str]
    python: str = sys.executable or "python3"
    pythonpath: Path | None = None  # see ``source_root``

    def command(self, *args: str) -> list[str]:
        return [self.python, "-m", "factory_cli", *args]

    def factory_flags(self) -> list[str]:
        flags = ["--engine", self.engine, "--seats", str(self.seats)]
        for cap in self.caps:
            flags += ["--cap", cap]
        return flags


ENROLL_TIMEOUT = 60.0


@dataclass
class ProcessLauncher:
    """Starts each child as ``fleet-factory enroll`` and then ``fleet-factory run
    --exit-when-idle``, in its own config dir and process group."""

    spec: ChildSpec
    tokens: EnrollmentTokens
    popen: Callable[..., subprocess.Popen[bytes]] = subprocess.Popen
    run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run

    def start(self, name: str) -> ProcessChild:
        spec = self.spec
        home = spec.root / name
        try:
            home.mkdir(parents=True, mode=0o700)
        except OSError as exc:
            raise LaunchError(f"cannot make {home}: {exc}") from exc
        env = child_env(spec.base_env, home, spec.api, spec.pythonpath)
        enroll_env = {**env, "FLEET_ENROLLMENT_TOKEN": self.tokens.take()}
        # Its own process group, as the run after it: a Ctrl-C meant for the loop must not
        # cut an enrollment short (a factory enrolled, and no process to run it).
        group: dict[str, Any] = (
            {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}  # type: ignore[attr-defined,unused-ignore]
            if os.name == "nt"
            else {"start_new_session": True}
        )
        try:
            done = self.run(
                spec.command("enroll", "--name", name, *spec.factory_flags()),
                env=enroll_env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=ENROLL_TIMEOUT,
                check=False,
                **group,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise LaunchError(f"enroll: {exc}") from exc
        log_path = home / "run.log"
        with contextlib.suppress(OSError):
            log_path.write_text(f"{done.stdout or ''}{done.stderr or ''}", encoding="utf-8")
        if done.returncode != 0:
            lines = (done.stderr or done.stdout or "").strip().splitlines()
            raise LaunchError(f"enroll exited {done.returncode}: {lines[-1] if lines else ''}")
        command = spec.command(
            "run",
            "--exit-when-idle",
            f"{spec.idle_seconds:g}",
            "--deregister-on-exit",
            *spec.factory_flags(),
        )
        try:
            with log_path.open("ab") as log:
                process = self.popen(
                    command,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    **group,
                )
        except OSError as exc:
            raise LaunchError(f"run: {exc}") from exc
        return ProcessChild(name, home, process)
