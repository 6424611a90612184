"""The factory's run loop: heartbeat, the gate, claims, the held jobs, commands, drain.

One loop, ticking: each tick does what is due and never blocks on an engine (engines are
subprocesses that ``JobRun`` polls), so the factory's seats run concurrently while one
thread supervises them deterministically. Time comes from an injected ``Clock``; the loop
sleeps only through ``Clock.wait``, which a signal cuts short. Tests drive ``tick`` with a
fake clock and never sleep.

Rules:

- A heartbeat first (it registers the factory and fetches pending commands), then one every
  ``cadence.heartbeatSeconds`` (the shortest the coordinator dictated for the factory or a
  held job), carrying each held job's progress and the ids of the commands acted upon.
- With a free seat, and not paused, draining or stopping: poll the gate every
  ``pollSeconds`` (jittered) and claim when ``Gate`` says so; within ``pollSeconds`` of a
  claim that found a job, claim again without polling (the claim just saw the queue). Each
  claim carries a fresh ``requestId``; when its reply may have been lost (a transport
  error, a 5xx) the next try, after the backoff and without a gate poll, re-sends that id
  with ``retry``, so a job the lost reply carried is handed over again instead of stranded.
- The coordinator unreachable (5xx, 429, timeouts, refused connections): each kind of call
  backs off on its own (``backoff_delay``); engines keep running while their leases allow;
  the loop never crashes (an unexpected error is logged and the next tick goes on).
- The factory's token refused (401), or a heartbeat answered ``revoked`` or
  ``deregistered``: every engine is stopped and the loop exits with ``EXIT_REFUSED``; the
  coordinator requeues what it held.
- ``request_stop`` (SIGINT/SIGTERM): claim nothing more, let the held jobs finish within the
  grace period, then ask their engines to stop (they may checkpoint) and release the leases
  with the checkpoint; deregister if configured; exit 0. A second ``request_stop`` aborts:
  engines killed, leases released at once, exit 130.
- ``review`` (``--review``): when a claim found nothing (or the gate skipped it), list the
  jobs in review — one ``GET`` when the gate version moved since the last listing, after a
  review ended, or every ``maxSkipSeconds`` — and review one that this factory may review
  (not its own attempt, not voted on this round) with the engine (``ReviewRun``), then vote.
  One review at a time; it takes no seat (claims come first) and stops, without a vote,
  on a stop, a drain or a refused token. A job refused or reviewed is not tried again in
  that round.
- ``exit_when_idle`` (``--exit-when-idle SECONDS``, an ephemeral factory; not with
  ``once``): once ``IdleClock`` says the factory has held nothing and every poll and claim
  found nothing for that long, claim nothing more, deregister (``DEREGISTER_TRIES`` tries
  while the coordinator is unreachable; a reply that may be lost makes a later 401 mean it
  went through) and exit 0 — ``EXIT_NOT_DEREGISTERED`` when it could not, with
  ``deregister_error`` saying why. A signal or a drain meanwhile ends the run as usual.
"""

from __future__ import annotations

import logging
import os
import random
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from factory_cli import __version__
from factory_cli.api import (
    ApiError,
    FleetClient,
    Forbidden,
    Unauthorized,
    Unavailable,
    new_request_id,
    reply_may_be_lost,
)
from factory_cli.artifacts import ArtifactSink, NoArtifacts
from factory_cli.backoff import Backoff
from factory_cli.clock import Clock, iso
from factory_cli.engines import Spawner, spawn_shell
from factory_cli.gate import Gate, forced_interval
from factory_cli.idle import IdleClock
from factory_cli.jobrun import GIT_CHECKPOINT_SECONDS, Executor, JobRun, Outcome
from factory_cli.review import ReviewOutcome, ReviewRun, factory_kind, round_of, why_not
from factory_cli.state import write_state
from factory_cli.workdir import WorkPaths, job_dir
from factory_cli.workspace import Workspaces

log = logging.getLogger("factory_cli.run")

EXIT_OK = 0
EXIT_JOB_FAILED = 1  # --once: a job did not ship
EXIT_NOT_DEREGISTERED = 1  # --exit-when-idle: idle, but the coordinator was not told
EXIT_REFUSED = 3  # the coordinator refused the factory (token revoked, deregistered)
EXIT_ABORTED = 130
DEFAULT_HEARTBEAT_SECONDS = 30.0
MAX_SEEN_COMMANDS = 1000
MAX_REVIEW_SKIPS = 1000
REVIEW_PAGE = 100  # jobs in review looked at per listing (one GET)
DEREGISTER_TRIES = 3  # --exit-when-idle: the first try and two more, with the backoff


class FactoryRefused(Exception):
    """The coordinator no longer accepts this factory."""


@dataclass(frozen=True)
class RunConfig:
    factory_id: str
    capabilities: tuple[str, ...]
    template: str  # the engine command template
    work_root: Path
    engine_name: str = "custom"
    seats: int = 1
    cost: float = 0.5
    poll_seconds: float = 5.0
    grace_seconds: float = 30.0
    deregister_on_exit: bool = False
    exit_when_idle: float | None = None  # seconds idle before deregistering and exiting 0
    once: bool = False
    review: bool = False  # also review other factories' jobs when idle (not with once)
    tick_seconds: float = 0.5  # how often held jobs are looked at
    version: str = f"fleet-factory/{__version__}"
    python: str = sys.executable or "python3"
    git_checkpoint_seconds: float = GIT_CHECKPOINT_SECONDS  # commit + push a repo job's work

    @property
    def repo_cache(self) -> Path:
        """Where the cached clones live (job dirs never start with a dot: no clash)."""
        return self.work_root / ".repos"


class Runner:
    def __init__(
        self,
        client: FleetClient,
        config: RunConfig,
        *,
        clock: Clock,
        spawner: Spawner = spawn_shell,
        rand: Callable[[], float] = random.random,
        sink: ArtifactSink | None = None,
        executor: Executor | None = None,
        workspaces: Workspaces | None = None,
        state_path: Path | None = None,
        base_env: Mapping[str, str] | None = None,
        on_status: Callable[[str], None] | None = None,
    ) -> None:
        self.client = client
        self.config = config
        self.clock = clock
        self.spawner = spawner
        self.rand = rand
        self.sink = sink or NoArtifacts()
        self.executor = executor
        self.workspaces = workspaces or Workspaces(config.repo_cache)
        self.state_path = state_path
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.on_status = on_status
        self.capabilities = list(config.capabilities)
        self.runs: dict[str, JobRun] = {}
        self.gate = Gate()
        self.max_skip = 30.0
        self.paused = False
        self.draining = False  # the operator's drain: finish, take nothing new, leave
        self.stop_requested = False
        self.abort_requested = False
        self.stop_deadline: float | None = None
        self.exit_code: int | None = None
        self.heartbeat_every = DEFAULT_HEARTBEAT_SECONDS
        self.next_heartbeat_at = 0.0
        self.next_poll_at = 0.0
        self.heartbeat_backoff = Backoff(rand)
        self.poll_backoff = Backoff(rand)
        self.lost_claim: str | None = None  # the id of a claim whose reply may be lost
        self.acks: list[str] = []
        self.seen_commands: dict[str, None] = {}
        self.last_heartbeat: dict[str, Any] | None = None
        self.outcomes: Counter[str] = Counter()
        self.once_done = False
        self.started_wall = iso(clock.wall())
        self.started = clock.monotonic()
        self.last_state_write = -1e9
        self.last_error: str | None = None
        self.review: ReviewRun | None = None
        self.review_skip: dict[str, int] = {}  # job id -> the round not to try again
        self.review_listed_version: int | None = None
        self.review_forced_at = 0.0
        self.review_backoff = Backoff(rand)
        self.reviews: Counter[str] = Counter()
        seconds = None if config.once else config.exit_when_idle
        self.idle = IdleClock(seconds) if seconds is not None else None
        self.leaving_idle = False  # idle long enough: deregistering, then exit
        self.left_idle = False  # the run ended because it was idle (deregistered or not)
        self.deregister_backoff = Backoff(rand)
        self.deregister_tries = 0
        self.deregister_maybe_done = False  # a try's reply may be lost: it may have gone through
        self.deregister_error: str | None = None

    # --- control -----------------------------------------------------------------------

    def request_stop(self) -> None:
        """SIGINT/SIGTERM: the first drains, the second aborts."""
        if self.stop_requested:
            self.abort_requested = True
        self.stop_requested = True
        self.clock.wake()

    def run(self) -> int:
        """Tick until an exit condition; returns the exit code."""
        log.info(
            "factory %s: %d seat(s), engine %s, capabilities %s",
            self.config.factory_id,
            self.config.seats,
            self.config.engine_name,
            ", ".join(self.capabilities) or "none",
        )
        if self.config.review and not self.config.once:
            log.info("reviewer mode: when idle, reviews jobs in review (as %s)", self._kind())
        while self.exit_code is None:
            self.tick(self.clock.monotonic())
            if self.exit_code is None:
                self.clock.wait(self.sleep_for(self.clock.monotonic()))
        self._write_state(self.clock.monotonic(), force=True)
        return self.exit_code

    def tick(self, now: float) -> None:
        """One pass of everything due at ``now``. Never raises."""
        try:
            self._tick(now)
        except Unauthorized as exc:
            self._refused(f"the coordinator refused this factory's token ({exc})", now)
        except FactoryRefused as exc:
            self._refused(f"the coordinator refused this factory: {exc}", now)
        except Exception as exc:  # the loop must survive anything
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("unexpected error in the run loop (carrying on)")
        try:
            self._write_state(now)
        except OSError as exc:
            log.warning("cannot write the state file: %s", exc)
        if self.on_status is not None:
            self.on_status(self.status_line(now))

    def _tick(self, now: float) -> None:
        if self.abort_requested:
            self._abort(now)
            return
        if self.stop_requested and self.stop_deadline is None:
            self.stop_deadline = now + self.config.grace_seconds
            log.info(
                "stopping: claiming nothing more; %d job(s) get %.0fs to finish",
                len(self.runs),
                self.config.grace_seconds,
            )
        self._heartbeat(now)
        for run in list(self.runs.values()):
            try:
                run.tick(now)
            except (Unauthorized, FactoryRefused):
                raise
            except Exception as exc:
                self.last_error = f"job {run.id}: {type(exc).__name__}: {exc}"
                log.exception("job %s: unexpected error (carrying on)", run.id)
        self._collect_finished()
        self._tick_review(now)
        if self.stop_deadline is not None and now >= self.stop_deadline:
            for run in self.runs.values():
                run.release("factory shutting down", now)
        if self._may_claim():
            self._poll_and_claim(now)
        if self._idle_expired(now):
            self.leaving_idle = True
            log.info("idle for %g s: deregistering and exiting", self._idle_seconds())
        if self.leaving_idle and not self.stop_requested:
            self._deregister_idle(now)
        elif self._should_leave():
            self._leave()

    def sleep_for(self, now: float) -> float:
        """How long the loop may sleep: short while jobs run (engines are polled), else
        until the next heartbeat or poll is due."""
        if self.runs or self.review is not None:
            return self.config.tick_seconds
        wake = max(self.next_heartbeat_at, self.heartbeat_backoff.not_before)
        if self._may_claim():
            wake = min(wake, max(self.next_poll_at, self.poll_backoff.not_before))
        if self.leaving_idle:
            wake = min(wake, self.deregister_backoff.not_before)
        elif self.idle is not None and (deadline := self.idle.deadline()) is not None:
            wake = min(wake, deadline)
        return min(max(0.05, wake - now), 60.0)

    # --- heartbeat and commands ---------------------------------------------------------

    def _heartbeat_due(self, now: float) -> bool:
        return now >= self.next_heartbeat_at

    def _beat_interval(self) -> float:
        every = min([self.heartbeat_every, *(r.heartbeat_every for r in self.runs.values())])
        return max(1.0, every) * (0.9 + 0.1 * self.rand())

    def _heartbeat(self, now: float) -> None:
        if not self._heartbeat_due(now) or not self.heartbeat_backoff.ready(now):
            return
        acks = self.acks[:100]
        beat: dict[str, Any] = {
            "capabilities": self.capabilities,
            "seats": self.config.seats,
            "load": len(self.runs),
            "cost": self.config.cost,
            "version": self.config.version,
            "jobs": [r.heartbeat_entry() for r in self.runs.values() if not r.done][:256],
            "ack": acks,
        }
        try:
            reply = self.client.heartbeat(beat)
        except Unavailable as exc:
            delay = self.heartbeat_backoff.failed(now, exc.retry_after, cap=self.heartbeat_every)
            self.last_error = exc.message
            log.warning("heartbeat failed (%s); retry in %.1fs", exc.message, delay)
            return
        except Forbidden as exc:
            if self._drop_disallowed(exc):
                self.next_heartbeat_at = now
                return
            raise
        except Unauthorized:
            raise
        except ApiError as exc:
            log.warning("heartbeat refused: %s", exc.message)
            self.next_heartbeat_at = now + self._beat_interval()
            return
        self.heartbeat_backoff.succeeded()
        self.acks = [a for a in self.acks if a not in acks]
        status = str(reply.get("status", "live"))
        self.last_heartbeat = {"at": iso(self.clock.wall()), "status": status}
        if status != "live":
            raise FactoryRefused(f"the coordinator says this factory is {status}")
        cadence = reply.get("cadence") or {}
        if cadence.get("heartbeatSeconds"):
            self.heartbeat_every = float(cadence["heartbeatSeconds"])
        for command in reply.get("commands") or []:
            if isinstance(command, dict):
                self._execute(command, now)
        self.next_heartbeat_at = now if self.acks else now + self._beat_interval()

    def _execute(self, command: Mapping[str, Any], now: float) -> None:
        """Act on an operator command once (they come back until acknowledged)."""
        command_id = str(command.get("id", ""))
        kind = str(command.get("kind", ""))
        if command_id and command_id not in self.acks:
            self.acks.append(command_id)
        if command_id in self.seen_commands:
            return
        self.seen_commands[command_id] = None
        if len(self.seen_commands) > MAX_SEEN_COMMANDS:
            del self.seen_commands[next(iter(self.seen_commands))]
        job_id = command.get("jobId")
        by = command.get("issuedBy") or "an operator"
        if kind == "drain":
            self.draining = True
            log.info("drain (by %s): finishing %d job(s), then leaving", by, len(self.runs))
        elif kind == "pause":
            self.paused = True
            self._not_idle()
            log.info("paused by %s: claiming nothing new", by)
        elif kind == "resume":
            self.paused = self.draining = False
            self.next_poll_at = now
            log.info("resumed by %s", by)
        elif kind == "restart-engine":
            targets = [r for r in self.runs.values() if job_id in (None, r.id)]
            for target in targets:
                target.restart_engine(now)
            log.info("restart-engine (by %s): %d engine(s)", by, len(targets))
        elif kind == "cancel-job":
            held = self.runs.get(str(job_id))
            if held is not None:
                held.cancel(now)
            else:
                log.info("cancel-job %s: not held here", job_id)
        else:
            log.warning("unknown command %r ignored (acknowledged)", kind)

    # --- the gate and the claim -----------------------------------------------------------

    def _may_claim(self) -> bool:
        return (
            not self.stop_requested
            and not self.draining
            and not self.paused
            and not (self.config.once and self.once_done)
            and not self.leaving_idle
            and len(self.runs) < self.config.seats
        )

    def _poll_interval(self) -> float:
        return self.config.poll_seconds * (0.8 + 0.4 * self.rand())

    def _poll_and_claim(self, now: float) -> None:
        if now < self.next_poll_at or not self.poll_backoff.ready(now):
            return
        version: int | None = None
        # A claim whose reply may have been lost is re-sent with its id (``retry``) before
        # anything else, gate or not: the coordinator may have given it a job already.
        retrying = self.lost_claim is not None
        request_id = self.lost_claim or new_request_id()
        self.lost_claim = None
        try:
            if (
                not self.config.once
                and not retrying
                and not self.gate.claim_directly(now, self.config.poll_seconds)
            ):
                state = self.client.queue_state()
                version = int(state.get("version", 0))
                self.max_skip = float(state.get("maxSkipSeconds", self.max_skip))
                if not self.gate.should_claim(version, now):
                    self.poll_backoff.succeeded()
                    self.next_poll_at = now + self._poll_interval()
                    self._found_nothing(now)
                    self._maybe_review(version, now)
                    return
            try:
                claim = self.client.claim(
                    capabilities=self.capabilities,
                    seats=self.config.seats,
                    load=len(self.runs),
                    cost=self.config.cost,
                    version=self.config.version,
                    request_id=request_id,
                    retry=retrying,
                    start=True,  # it starts each job it claims at once (JobRun.start)
                )
            except Unavailable as exc:
                if reply_may_be_lost(exc):
                    self.lost_claim = request_id
                raise
        except Unavailable as exc:
            self._not_idle()
            delay = self.poll_backoff.failed(now, exc.retry_after)
            self.last_error = exc.message
            log.warning("coordinator unreachable (%s); retry in %.1fs", exc.message, delay)
            return
        except Forbidden as exc:
            self._not_idle()
            if self._drop_disallowed(exc):
                return
            self.poll_backoff.failed(now)
            log.warning("claim refused: %s", exc.message)
            return
        except Unauthorized:
            raise
        except ApiError as exc:
            self._not_idle()
            delay = self.poll_backoff.failed(now)
            log.warning("claim refused: %s; retry in %.1fs", exc.message, delay)
            return
        self.poll_backoff.succeeded()
        self.gate.claimed(
            found=claim is not None, version=version, now=now, max_skip=self.max_skip, u=self.rand()
        )
        if claim is None:
            if self.config.once:
                self.once_done = True
                if not self.runs:
                    log.info("nothing to claim")
            self.next_poll_at = now + self._poll_interval()
            self._found_nothing(now)
            if version is not None:
                self._maybe_review(version, now)
            return
        self._start(claim, now)
        if self.config.once and len(self.runs) >= self.config.seats:
            self.once_done = True
        self.next_poll_at = now  # a seat may still be free: claim again on the next tick

    def _start(self, claim: Mapping[str, Any], now: float) -> None:
        job = claim["job"]
        epoch = int(claim["lease"]["epoch"])
        score = (claim.get("score") or {}).get("total")
        log.info(
            "claimed %s %r (epoch %d%s)",
            job["id"],
            job.get("title", ""),
            epoch,
            f", score {score}" if score is not None else "",
        )
        run = JobRun(
            claim=claim,
            paths=WorkPaths(job_dir(self.config.work_root, str(job["id"]))),
            client=self.client,
            clock=self.clock,
            spawner=self.spawner,
            template=self.config.template,
            python=self.config.python,
            factory_id=self.config.factory_id,
            base_env=self.base_env,
            rand=self.rand,
            sink=self.sink,
            now=now,
            engine_name=self.config.engine_name,
            workspaces=self.workspaces,
            executor=self.executor,
            git_checkpoint_seconds=self.config.git_checkpoint_seconds,
        )
        self.runs[run.id] = run
        self._not_idle()
        run.start(now)
        self.next_heartbeat_at = min(self.next_heartbeat_at, now + run.heartbeat_every)

    def _drop_disallowed(self, exc: Forbidden) -> bool:
        """The enrollment allowlist refuses some capabilities: stop advertising them."""
        refused = set(exc.disallowed) & set(self.capabilities)
        if not refused:
            return False
        self.capabilities = [c for c in self.capabilities if c not in refused]
        log.warning(
            "the coordinator refuses capabilities %s for this factory: no longer advertised",
            ", ".join(sorted(refused)),
        )
        return True

    # --- reviews ----------------------------------------------------------------------------

    def _maybe_review(self, version: int, now: float) -> None:
        """Nothing to claim at ``version``: list the jobs in review (when due) and start
        reviewing one this factory may review."""
        if not self.config.review or self.config.once or self.review is not None:
            return
        if version == self.review_listed_version and now < self.review_forced_at:
            return
        if not self.review_backoff.ready(now):
            return
        try:
            listed, _ = self.client.jobs_page("review", REVIEW_PAGE)
        except Unavailable as exc:
            delay = self.review_backoff.failed(now, exc.retry_after)
            log.warning("jobs in review not listed (%s); retry in %.1fs", exc.message, delay)
            return
        except Unauthorized:
            raise
        except ApiError as exc:
            delay = self.review_backoff.failed(now)
            log.warning("jobs in review not listed: %s; retry in %.1fs", exc.message, delay)
            return
        self.review_backoff.succeeded()
        self.review_listed_version = version
        self.review_forced_at = now + forced_interval(self.max_skip, self.rand())
        kind = self._kind()
        # The page is newest first: the job waiting longest is reviewed first.
        for listed_job in reversed(listed):
            job_id = str(listed_job.get("id", ""))
            if not job_id or self.review_skip.get(job_id) == round_of(listed_job):
                continue
            if why_not(listed_job, self.config.factory_id, kind) is None:
                self._start_review(job_id, round_of(listed_job), kind, now)
                return

    def _kind(self) -> str:
        return factory_kind(self.capabilities)

    def _start_review(self, job_id: str, listed_round: int, kind: str, now: float) -> None:
        try:
            job = self.client.get_job(job_id)  # the listing leaves the body out
        except Unavailable as exc:
            delay = self.review_backoff.failed(now, exc.retry_after)
            log.warning(
                "job %s not read for review (%s); retry in %.1fs", job_id, exc.message, delay
            )
            self.review_listed_version = None  # list again once the backoff allows
            return
        except Unauthorized:
            raise
        except ApiError as exc:
            log.info("job %s not reviewed: %s", job_id, exc.message)
            self._skip_review(job_id, listed_round)
            return
        reason = why_not(job, self.config.factory_id, kind)
        if reason is not None:
            log.info("job %s not reviewed: %s", job_id, reason)
            self._skip_review(job_id, round_of(job))
            return
        self.review = ReviewRun(
            job=job,
            client=self.client,
            spawner=self.spawner,
            template=self.config.template,
            python=self.config.python,
            factory_id=self.config.factory_id,
            work_root=self.config.work_root,
            base_env=self.base_env,
            rand=self.rand,
            now=now,
        )
        self._not_idle()
        self.review.start(now)

    def _tick_review(self, now: float) -> None:
        review = self.review
        if review is None:
            return
        if self.stop_requested or self.draining:
            review.stop("the factory is stopping" if self.stop_requested else "draining")
        else:
            try:
                review.tick(now)
            except (Unauthorized, FactoryRefused):
                raise
            except Exception as exc:
                self.last_error = f"review {review.id}: {type(exc).__name__}: {exc}"
                log.exception("review of %s: unexpected error (no vote)", review.id)
                review.stop("unexpected error")
        self._collect_review()

    def _collect_review(self) -> None:
        review = self.review
        if review is None or not review.done:
            return
        self.review = None
        outcome = review.outcome or ReviewOutcome.STOPPED
        self.reviews[outcome.value] += 1
        self._skip_review(review.id, review.round)
        self.review_listed_version = None  # more may wait: list again on the next empty poll

    def _skip_review(self, job_id: str, round_: int) -> None:
        self.review_skip.pop(job_id, None)
        self.review_skip[job_id] = round_
        while len(self.review_skip) > MAX_REVIEW_SKIPS:
            del self.review_skip[next(iter(self.review_skip))]

    # --- endings ----------------------------------------------------------------------------

    def _collect_finished(self) -> None:
        for job_id in [j for j, r in self.runs.items() if r.done]:
            run = self.runs.pop(job_id)
            outcome = run.outcome or Outcome.ABANDONED
            self.outcomes[outcome.value] += 1
            self.next_poll_at = min(self.next_poll_at, self.clock.monotonic())

    def _should_leave(self) -> bool:
        if self.runs or self.review is not None:
            return False
        if self.stop_requested or self.draining:
            return True
        return self.config.once and self.once_done

    def _leave(self) -> None:
        if self.config.deregister_on_exit:
            try:
                self.client.deregister(self.config.factory_id)
                log.info("deregistered %s", self.config.factory_id)
            except ApiError as exc:
                log.warning("deregistration failed: %s", exc.message)
        bad = {Outcome.FAILED, Outcome.RETRY, Outcome.FENCED, Outcome.LOST}
        failed = any(self.outcomes[o.value] for o in bad)
        self.exit_code = EXIT_JOB_FAILED if self.config.once and failed else EXIT_OK
        log.info("factory %s stopped", self.config.factory_id)

    # --- --exit-when-idle ----------------------------------------------------------------------

    def _found_nothing(self, now: float) -> None:
        if self.idle is not None and not self.runs and self.review is None:
            self.idle.found_nothing(now)

    def _not_idle(self) -> None:
        if self.idle is not None:
            self.idle.reset()

    def _idle_seconds(self) -> float:
        return self.idle.seconds if self.idle is not None else 0.0

    def _idle_expired(self, now: float) -> bool:
        return (
            self.idle is not None
            and not self.leaving_idle
            and not (self.stop_requested or self.draining or self.paused)
            and not self.runs
            and self.review is None
            and self.idle.expired(now)
        )

    def _deregister_idle(self, now: float) -> None:
        """Leave the fleet: it holds nothing, so there is nothing to finish or release."""
        if not self.deregister_backoff.ready(now):
            return
        self.deregister_tries += 1
        try:
            self.client.deregister(self.config.factory_id)
        except Unavailable as exc:
            self.deregister_maybe_done |= reply_may_be_lost(exc)
            if self.deregister_tries >= DEREGISTER_TRIES:
                self._left_idle(f"{exc.message} (tried {self.deregister_tries} times)")
                return
            delay = self.deregister_backoff.failed(now, exc.retry_after)
            self.last_error = exc.message
            log.warning("deregistration failed (%s); retry in %.1fs", exc.message, delay)
            return
        except Unauthorized:
            # Deregistering revokes the token: after a try whose reply was lost, a 401 says
            # that try went through. Otherwise the factory was refused already (exit 3).
            if not self.deregister_maybe_done:
                raise
        except ApiError as exc:
            self._left_idle(exc.message)
            return
        log.info("deregistered %s", self.config.factory_id)
        self._left_idle(None)

    def _left_idle(self, error: str | None) -> None:
        self.left_idle = True
        self.deregister_error = error
        if error is not None:
            self.last_error = f"not deregistered: {error}"
        self.exit_code = EXIT_OK if error is None else EXIT_NOT_DEREGISTERED
        log.info("factory %s stopped", self.config.factory_id)

    def _refused(self, reason: str, now: float) -> None:
        log.error(
            "%s: stopping every engine and exiting; the coordinator requeues the held jobs",
            reason,
        )
        for run in self.runs.values():
            run.abandon()
        self._collect_finished()
        if self.review is not None:
            self.review.stop("the coordinator refused this factory")
            self._collect_review()
        self.exit_code = EXIT_REFUSED

    def _abort(self, now: float) -> None:
        """The second interrupt: kill the engines, release the leases once, leave."""
        log.warning("aborting: engines killed, leases released")
        for run in self.runs.values():
            run.abandon()
            try:
                self.client.release(
                    run.id, run.epoch, checkpoint=run.release_checkpoint(), reason="factory aborted"
                )
            except ApiError as exc:
                log.warning("job %s: release failed (%s)", run.id, exc.message)
        self._collect_finished()
        if self.review is not None:
            self.review.stop("aborted")
            self._collect_review()
        self.exit_code = EXIT_ABORTED

    # --- what `status` shows ------------------------------------------------------------------

    def mode(self) -> str:
        if self.exit_code is not None:
            return "stopped"
        if self.stop_requested:
            return "stopping"
        if self.leaving_idle:
            return "leaving"
        if self.draining:
            return "draining"
        if self.paused:
            return "paused"
        return "running"

    def snapshot(self, now: float) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "factoryId": self.config.factory_id,
            "api": self.client.api,
            "version": self.config.version,
            "engine": self.config.engine_name,
            "capabilities": self.capabilities,
            "seats": self.config.seats,
            "status": self.mode(),
            "exitCode": self.exit_code,
            "startedAt": self.started_wall,
            "updatedAt": iso(self.clock.wall()),
            "uptimeSeconds": round(now - self.started, 1),
            "jobs": [r.view(now) for r in self.runs.values()],
            "lastHeartbeat": self.last_heartbeat,
            "gate": self.gate.as_dict(),
            "outcomes": dict(self.outcomes),
            "review": self.review.view(now) if self.review is not None else None,
            "reviews": dict(self.reviews),
            "idle": self.idle.view(now) if self.idle is not None else None,
            "lastError": self.last_error,
            "workRoot": str(self.config.work_root),
        }

    def _write_state(self, now: float, *, force: bool = False) -> None:
        if self.state_path is None or (not force and now - self.last_state_write < 1.0):
            return
        self.last_state_write = now
        write_state(self.state_path, self.snapshot(now))

    def status_line(self, now: float) -> str:
        jobs = ", ".join(
            f"{r.id[-8:]} {r.stage} {int(now - r.started_at)}s" for r in self.runs.values()
        )
        gate = self.gate
        review = self.review
        return (
            f"{self.mode()} · {len(self.runs)}/{self.config.seats} seats · "
            f"gate v{gate.version} {gate.hits} skipped/{gate.misses} claimed"
            + (f" · {jobs}" if jobs else "")
            + (
                f" · reviewing {review.id[-8:]} {int(now - review.started_at)}s"
                if review is not None
                else ""
            )
        )
