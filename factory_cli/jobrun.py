"""One held job, from the claim to its last report: the workspace, the engine, the verify
command, the lease, limits, checkpoints, progress, agent events, artifacts and the final report.

``JobRun.tick(now)`` does whatever is due and never blocks: the engine and the verify command
are subprocesses polled on each tick, and the slow steps that touch git or upload files (the
checkout, checkpoint commits and pushes, the wrap-up at the end) run as one background task
at a time on an executor whose result the tick collects. So a factory's seats run at once
while one loop supervises them, and the lease is renewed while a push or an upload runs.
Reports to the coordinator wait in an ordered outbox and are retried with backoff; agent
events are forwarded before the final report.

A job with ``repo`` gets a git checkout on ``fleet/{jobId}`` (``factory_cli.workspace``): what
the engine leaves uncommitted is committed and pushed at each checkpoint and at the end; the
checkpoint reported is ``{branch, commit}`` (plus the engine's own keys). At the end, before
the final report (after it the lease is gone): commit, push, the diff stat and
``.fleet/diff.patch`` against ``base``, the pull request (``pr: true``), and the artifacts
uploaded (``engine.log``, ``diff.patch``, ``verify.log``, the engine's declared outputs).

An engine with an adapter (``factory_cli.adapters``: Claude Code's ``stream-json``, ``codex
exec --json``, aider's cost lines) has its output parsed as it streams: its tool calls and
messages become agent events, its usage and cost the running progress.

Invariants:

- a ``409`` fenced answer (or ``timeout`` / ``budget_exceeded``: the coordinator ended the
  attempt) to anything about this job stops the engine at once (SIGKILL to its process
  group) and nothing more is reported for it: another attempt owns the job now. Git refusing
  a push (a newer attempt pushed the branch) means the same;
- the engine runs only while the lease allows: if renewing keeps failing until the lease
  (as measured here, from the last successful renew) has run out, the engine is stopped;
- the attempt's limits (``timeoutSeconds``, ``maxCostUsd``) stop the engine (SIGTERM, a
  grace period, SIGKILL of its process group) and end the attempt as ``timeout`` /
  ``budget_exceeded`` (retryable: the coordinator's ``maxAttempts`` decides);
- ``Unauthorized`` (the factory's token refused) is not handled here: it stops the factory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, TypeVar

from factory_cli.adapters import Adapter, LogTail, PricesError, adapter_for, probe_version
from factory_cli.api import ApiError, Fenced, FleetClient, NotFound, Unauthorized, Unavailable
from factory_cli.artifacts import ArtifactSink, collect
from factory_cli.backoff import Backoff
from factory_cli.clock import Clock, iso
from factory_cli.engines import EngineError, EngineProcess, Spawner, engine_env, render, usd_arg
from factory_cli.events import EventsReader
from factory_cli.workdir import WorkPaths, last_line, read_json, read_text, write_attempt_files
from factory_cli.workspace import Checkout, GitError, PushRefused, Workspaces

log = logging.getLogger("factory_cli.job")

T = TypeVar("T")

EXIT_RETRYABLE = 75  # EX_TEMPFAIL: the engine says "try again later, maybe elsewhere"
STOP_GRACE_SECONDS = 10.0  # after SIGTERM, how long an engine may take to checkpoint
EVENTS_EVERY_SECONDS = 2.0
MAX_CHECKPOINT_BYTES = 64 * 1024
# Each forwarded checkpoint is a write of the job document: an engine checkpointing in a
# tight loop is forwarded at most this often (the newest content wins).
CHECKPOINT_EVERY_SECONDS = 5.0
# Running tokens and cost go to the coordinator (so the budget and the UI see spend while the
# engine works) at most this often, and only when they moved: each is a job document write.
PROGRESS_EVERY_SECONDS = 30.0
# How often a job with a repository commits and pushes what the engine left, so that a
# crashed attempt loses at most this much work (a new engine checkpoint does it at once).
GIT_CHECKPOINT_SECONDS = 300.0


class Phase(StrEnum):
    PREPARING = "preparing"  # the repository is being checked out
    RUNNING = "running"  # the engine runs
    RESTARTING = "restarting"  # the engine was asked to stop; it starts again on exit
    VERIFYING = "verifying"  # the engine succeeded; the verify command runs
    STOPPING = "stopping"  # the engine was asked to stop (release, a limit)
    WRAPPING = "wrapping"  # commit, push, diff, pull request, artifacts
    FINISHING = "finishing"  # the final report waits in the outbox
    DONE = "done"


class Outcome(StrEnum):
    SHIPPED = "shipped"
    FAILED = "failed"
    RETRY = "retry"  # failed, retryable: requeued by the coordinator
    RELEASED = "released"
    FENCED = "fenced"
    CANCELLED = "cancelled"
    LOST = "lost"  # the lease ran out while the coordinator was unreachable
    ABANDONED = "abandoned"  # the factory stopped without reporting (revoked, aborted)


class Executor(Protocol):
    def submit(self, fn: Callable[[], T]) -> Future[T]: ...


class DaemonExecutor:
    """Each task on a daemon thread of its own: a factory that exits (a refused token, a
    second Ctrl-C) is never held up by a push or an upload still running."""

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        future: Future[T] = Future()

        def work() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the tick, which decides
                future.set_exception(exc)

        threading.Thread(target=work, name="fleet-job-task", daemon=True).start()
        return future


@dataclass
class Report:
    kind: str  # "patch" | "release"
    body: dict[str, Any]
    label: str
    final: bool = False
    outcome: Outcome | None = None  # for final reports: the job's outcome once accepted
    not_before: float = 0.0  # checkpoints: not sent more often than CHECKPOINT_EVERY_SECONDS


@dataclass
class Progress:
    tokens: int = 0
    cost_usd: float | None = None  # None: the engine never said (unknown, never reported as 0)
    last_line: str | None = None
    last_activity: str | None = None  # ISO time the progress or the log last changed
    outputs: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Limits:
    """The attempt's limits: the claim's ``limits`` (the coordinator resolves the product's
    default), else the manifest's fields."""

    timeout_seconds: float | None = None
    max_cost_usd: float | None = None

    @classmethod
    def of(cls, claim: Mapping[str, Any], job: Mapping[str, Any]) -> Limits:
        raw = claim.get("limits") if isinstance(claim.get("limits"), dict) else {}
        assert isinstance(raw, dict)
        timeout = raw.get("timeoutSeconds", job.get("timeoutSeconds"))
        cost = raw.get("maxCostUsd", job.get("maxCostUsd"))
        return cls(_positive(timeout), _positive(cost))


@dataclass(frozen=True)
class Ending:
    stage: str  # "shipped" | "failed" | "release"
    reason: str | None = None
    retryable: bool = False
    limit: str | None = None  # "timeout" | "budget_exceeded"


@dataclass
class Wrapped:
    """What the wrap-up left: the pushed branch, the diff, the pull request, the artifacts."""

    git: dict[str, str] | None = None
    diff: dict[str, int] | None = None
    pr_url: str | None = None
    pr_note: str | None = None
    git_error: str | None = None
    refused: str | None = None  # a push refused by its lease: a newer attempt owns the branch
    artifacts: list[str] = field(default_factory=list)
    artifact_errors: list[str] = field(default_factory=list)


def _positive(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return None
    return float(value)


def _number(value: Any, kind: type[int] | type[float]) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        return None
    return kind(value)


class JobRun:
    def __init__(
        self,
        *,
        claim: Mapping[str, Any],
        paths: WorkPaths,
        client: FleetClient,
        clock: Clock,
        spawner: Spawner,
        template: str,
        python: str,
        factory_id: str,
        base_env: Mapping[str, str],
        rand: Callable[[], float],
        sink: ArtifactSink,
        now: float,
        engine_name: str = "custom",
        adapters: bool = True,
        workspaces: Workspaces | None = None,
        executor: Executor | None = None,
        git_checkpoint_seconds: float = GIT_CHECKPOINT_SECONDS,
    ) -> None:
        self.job: dict[str, Any] = dict(claim["job"])
        self.id = str(self.job["id"])
        self.title = str(self.job.get("title", ""))
        self.epoch = int(claim["lease"]["epoch"])
        self.paths = paths
        self.client = client
        self.clock = clock
        self.spawner = spawner
        self.template = template
        self.python = python
        self.factory_id = factory_id
        self.base_env = dict(base_env)
        self.sink = sink
        self.engine_name = engine_name
        # The engine's output parser (``factory_cli.adapters``), chosen by the engine's name
        # once its command is rendered; None for engines speaking the file protocol.
        self.adapters = adapters
        self.adapter: Adapter | None = None
        self.workspaces = workspaces
        self.executor: Executor = executor or DaemonExecutor()
        self.limits = Limits.of(claim, self.job)
        self.repo = str(self.job["repo"]) if self.job.get("repo") else None
        self.lease_seconds = float(self.job.get("leaseSeconds") or 300)
        cadence = claim.get("cadence") or {}
        self.renew_every = float(cadence.get("renewSeconds") or max(1.0, self.lease_seconds / 3))
        self.heartbeat_every = float(cadence.get("heartbeatSeconds") or self.renew_every)
        self.lease_deadline = now + self.lease_seconds  # from when we learned of the lease
        self.next_renew_at = now + self.renew_every
        self.started_at = now
        self.started_wall = iso(clock.wall())
        self.phase = Phase.PREPARING
        self.outcome: Outcome | None = None
        self.stage = "assigned"
        self.process: EngineProcess | None = None
        self.verify: EngineProcess | None = None
        self.exit_code: int | None = None
        self.verify_code: int | None = None
        self.kill_at: float | None = None
        self.release_reason: str | None = None
        self.limit: tuple[str, str] | None = None  # (outcome, reason) once a limit stopped it
        self.restarts = 0
        self.outbox: deque[Report] = deque()
        self.events = EventsReader(paths.events)
        self.next_events_at = now + EVENTS_EVERY_SECONDS
        self.renew_backoff = Backoff(rand)
        self.report_backoff = Backoff(rand)
        self.events_backoff = Backoff(rand)
        self.progress = Progress()
        self._progress_raw: str | None = None
        self._engine_says_line = False
        self._checkpoint_sent_at = -1e9
        self._progress_sent: tuple[int, float | None] = (0, None)
        self._progress_sent_at = now
        self._log_size = -1
        self.engine_output = LogTail(paths.log)
        self._checkpoint_seen: str | None = None
        self.checkpoint: Any = self.job.get("checkpoint")
        self.checkout: Checkout | None = None
        self.git: dict[str, str] | None = None  # {branch, commit} last pushed
        self._git_wanted = False  # the engine wrote a checkpoint: commit and push it
        self._engine_checkpoint_new = False  # ... and report it once pushed
        self._cost_unknown_said = False
        self.next_git_at = now + git_checkpoint_seconds
        self.git_every = git_checkpoint_seconds
        self._task: Future[Any] | None = None
        self._then: Callable[[Any, BaseException | None, float], None] | None = None
        self._ending: Ending | None = None  # the attempt ended: wrap up once the task slot frees

    # --- what the factory asks of it ---------------------------------------------------

    def start(self, now: float) -> None:
        """Tell the coordinator the job is being built (unless the claim started it: it came
        back ``building``); check the repository out (in the background) when the job names
        one, then start the engine."""
        if self.job.get("stage") == "building":
            self.stage = "building"
        else:
            self._enqueue(Report("patch", {"stage": "building"}, "building"))
        if self.repo is None:
            self._launch(now)
            return
        if self.workspaces is None:
            self._fail_now(now, "this factory has no workspace for repositories", retryable=True)
            return
        workspaces, repo = self.workspaces, self.repo
        base = str(self.job["base"]) if self.job.get("base") else None
        checkpoint = self.checkpoint if isinstance(self.checkpoint, dict) else None

        def checkout() -> Checkout:
            return workspaces.checkout(
                job_id=self.id,
                repo=repo,
                base=base,
                checkpoint=checkpoint,
                epoch=self.epoch,
                factory_id=self.factory_id,
                workdir=self.paths.workdir,
            )

        self._background(checkout, self._checked_out, now)

    def _checked_out(
        self, checkout: Checkout | None, error: BaseException | None, now: float
    ) -> None:
        if isinstance(error, PushRefused):
            self._refused_by_git(str(error))
            return
        if error is not None or checkout is None:
            self._fail_now(now, f"checkout of {self.repo} failed: {_short(error)}", retryable=True)
            return
        self.checkout = checkout
        self.git = checkout.checkpoint()
        log.info("job %s: %s checked out on %s", self.id, self.repo, checkout.branch)
        if self.phase is not Phase.PREPARING:
            return  # asked to stop (a release, a limit) meanwhile: no engine; the wrap-up follows
        self._launch(now)

    def _launch(self, now: float) -> None:
        """Write this attempt's files into the work dir and start the engine."""
        try:
            write_attempt_files(self.paths, self.job, self.epoch)
            self.engine_output.offset = self.paths.log.stat().st_size  # this attempt's lines
            self._checkpoint_seen = _digest(read_text(self.paths.checkpoint))
        except OSError as exc:
            log.error("job %s: cannot prepare its work dir (%s): giving it back", self.id, exc)
            self._enqueue(
                Report(
                    "release",
                    {"reason": f"work dir: {exc}"[:1900]},
                    "release",
                    True,
                    Outcome.RELEASED,
                )
            )
            self.phase = Phase.FINISHING
            return
        try:
            self.process = self._spawn_engine()
        except EngineError as exc:
            log.error("job %s: %s", self.id, exc)
            self._finish(
                "failed",
                now,
                reason=f"engine did not start on {self.factory_id}: {exc}",
                retryable=True,
            )
            return
        self.phase = Phase.RUNNING
        log.info("job %s (epoch %d): engine started, pid %d", self.id, self.epoch, self.process.pid)

    def release(self, reason: str, now: float) -> None:
        """Give the job back: ask the engine to stop (it may checkpoint), then release the
        lease with the latest checkpoint (for a repository: committed and pushed first)."""
        if self.phase in (Phase.FINISHING, Phase.DONE, Phase.STOPPING, Phase.WRAPPING):
            return
        self.release_reason = reason
        self._stop_engine(now)

    def cancel(self, now: float) -> None:
        """The operator cancelled the job (the coordinator already fenced us): stop at once,
        report nothing."""
        self._stop_now(Outcome.CANCELLED)
        log.warning("job %s: cancelled by an operator; engine stopped", self.id)

    def restart_engine(self, now: float) -> None:
        """Stop the engine and start it again in the same work dir (it resumes from its own
        checkpoint file)."""
        if self.phase is not Phase.RUNNING or self.process is None:
            return
        self.process.terminate()
        self.kill_at = now + STOP_GRACE_SECONDS
        self.phase = Phase.RESTARTING

    def abandon(self) -> None:
        """The factory stops without a word to the coordinator (its token was refused, or a
        second interrupt): stop the engine at once."""
        if self.phase is not Phase.DONE:
            self._stop_now(Outcome.ABANDONED)

    @property
    def done(self) -> bool:
        return self.phase is Phase.DONE

    # --- the tick ----------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Everything due now. Raises ``Unauthorized`` (the factory's to handle)."""
        steps: tuple[Callable[[float], None], ...] = (
            self._poll_task,
            self._watch_processes,
            lambda _now: self._observe(),
            self._check_limits,
            self._git_checkpoint,
            self._report_progress,
            self._renew,
            self._send,
            self._check_lease,
        )
        for step in steps:
            if self.done:
                return
            step(now)

    def _check_lease(self, now: float) -> None:
        if now >= self.lease_deadline:
            self._stop_now(Outcome.LOST)
            log.error(
                "job %s: the lease ran out while the coordinator was unreachable; engine "
                "stopped (the coordinator will requeue it)",
                self.id,
            )

    def _check_limits(self, now: float) -> None:
        """Stop the engine when the attempt passed its time or cost limit."""
        if self.phase not in (Phase.PREPARING, Phase.RUNNING, Phase.RESTARTING, Phase.VERIFYING):
            return
        timeout, cap = self.limits.timeout_seconds, self.limits.max_cost_usd
        if timeout is not None and now - self.started_at >= timeout - wrap_margin(timeout):
            self.limit = ("timeout", f"the attempt passed its time limit ({timeout:g} s)")
        elif (
            cap is not None and self.progress.cost_usd is not None and self.progress.cost_usd > cap
        ):
            self.limit = (
                "budget_exceeded",
                f"the attempt's cost ${self.progress.cost_usd:.4f} passed its limit ${cap:g}",
            )
        else:
            unknown = self.progress.cost_usd is None and self.process is not None
            if cap is not None and unknown and not self._cost_unknown_said:
                self._cost_unknown_said = True
                log.warning(
                    "job %s: maxCostUsd $%g is not enforced here while %s's cost is unknown "
                    "(no price for its model: see FLEET_PRICES_FILE); the coordinator checks "
                    "what is reported",
                    self.id,
                    cap,
                    self.engine_name,
                )
            return
        log.warning("job %s: %s: stopping the engine", self.id, self.limit[1])
        self._stop_engine(now)

    def _stop_engine(self, now: float) -> None:
        for proc in (self.process, self.verify):
            if proc is not None and proc.poll() is None:
                proc.terminate()
        self.kill_at = now + STOP_GRACE_SECONDS
        self.phase = Phase.STOPPING

    def _watch_processes(self, now: float) -> None:
        if self.phase is Phase.STOPPING:
            live = [p for p in (self.process, self.verify) if p is not None and p.poll() is None]
            if live:
                if self.kill_at is not None and now >= self.kill_at:
                    for proc in live:
                        proc.kill()
                    self.kill_at = None
                return
            if self.limit is not None:
                if self.adapter is not None:
                    self.adapter.finish(None)
                outcome, reason = self.limit
                self._finish("failed", now, reason=reason, retryable=True, limit=outcome)
            else:
                self._end(Ending("release", self.release_reason or "released"), now)
            return
        if self.phase in (Phase.RUNNING, Phase.RESTARTING) and self.process is not None:
            code = self.process.poll()
            if code is None:
                if self.kill_at is not None and now >= self.kill_at:
                    self.process.kill()
                    self.kill_at = None
                return
            self.kill_at = None
            if self.phase is Phase.RUNNING:
                self._engine_exited(code, now)
                return
            self.restarts += 1
            try:
                self.process = self._spawn_engine()
            except EngineError as exc:
                self._finish("failed", now, reason=f"engine restart failed: {exc}", retryable=True)
                return
            self.phase = Phase.RUNNING
            log.info("job %s: engine restarted, pid %d", self.id, self.process.pid)
            return
        if self.phase is Phase.VERIFYING and self.verify is not None:
            code = self.verify.poll()
            if code is None:
                return
            self.verify_code = code
            if code == 0:
                self._finish("shipped", now)
            else:
                line = last_line(self.paths.verify_log)
                reason = f"verify failed (exit {code})" + (f": {line}" if line else "")
                self._finish("failed", now, reason=reason[:1900])

    def _engine_exited(self, code: int, now: float) -> None:
        self.exit_code = code
        log.info("job %s: engine exited with %d", self.id, code)
        self._observe()  # the engine's last words (its final result line, its cost)
        said = self.adapter.finish(code) if self.adapter is not None else None
        if said is not None and said.is_error and code == 0:
            code = 1  # it says it failed: believe it over its exit status
        verify = self.job.get("verify")
        if code == 0 and verify:
            self._enqueue(Report("patch", {"stage": "testing"}, "testing"))
            env = self._env()
            try:
                self.verify = self.spawner(
                    str(verify), cwd=self.paths.workdir, env=env, log=self.paths.verify_log
                )
            except EngineError as exc:
                self._finish("failed", now, reason=f"verify did not start: {exc}")
                return
            self.phase = Phase.VERIFYING
        elif code == 0:
            self._finish("shipped", now)
        elif code == EXIT_RETRYABLE:
            self._finish(
                "failed", now, reason=f"engine asked to retry (exit {code})", retryable=True
            )
        else:
            own = said.reason if said is not None and said.is_error and said.reason else None
            line = own or self.progress.last_line
            reason = f"{self.engine_name} exited with {code}" + (f": {line}" if line else "")
            limit = "budget_exceeded" if said is not None and said.budget_exceeded else None
            self._finish(
                "failed", now, reason=reason[:1900], retryable=limit is not None, limit=limit
            )

    def _finish(
        self,
        stage: str,
        now: float,
        *,
        reason: str | None = None,
        retryable: bool = False,
        limit: str | None = None,
    ) -> None:
        self._end(Ending(stage, reason, retryable, limit), now)

    def _end(self, ending: Ending, now: float) -> None:
        """The attempt is over: wrap up (commit, push, diff, pull request, artifacts) in the
        background, then queue the final report."""
        self._observe()
        self._ending = ending
        self.phase = Phase.WRAPPING
        if self._task is None:
            self._wrap_up(now)

    def _wrap_up(self, now: float) -> None:
        ending = self._ending
        assert ending is not None
        outputs = list(self.progress.outputs)
        self._background(lambda: self._wrap(ending, outputs), self._wrapped, now)

    def _wrap(self, ending: Ending, outputs: list[str]) -> Wrapped:
        """Runs in the background: touches git, the files and the network, not our state."""
        out = Wrapped()
        checkout = self.checkout
        if checkout is not None:
            try:
                checkout.commit_all(self._commit_message(ending.stage))
                checkout.push()
                out.git = checkout.checkpoint()
            except PushRefused as exc:
                out.refused = str(exc)
                return out
            except GitError as exc:
                out.git_error = str(exc)
            try:
                out.diff = checkout.diff_stat()
                checkout.write_patch(self.paths.diff_patch)
            except GitError as exc:
                log.warning("job %s: no diff against base: %s", self.id, exc)
            if ending.stage == "shipped" and out.git_error is None and self.job.get("pr"):
                try:
                    out.pr_url, out.pr_note = checkout.open_pr(
                        title=self.title or f"fleet job {self.id}", body=self._pr_body()
                    )
                except PushRefused as exc:  # stopped meanwhile: fenced or cancelled
                    out.refused = str(exc)
                    return out
        adapter = self.adapter
        if adapter is not None and adapter.version is None:
            # Codex names its version only when asked.
            adapter.version = probe_version(self.engine_name, engine_env(self.base_env, {}))
        files = collect(self.paths, outputs)
        out.artifacts, out.artifact_errors = self.sink.upload_all(self.id, self.epoch, files)
        return out

    def _wrapped(self, out: Wrapped | None, error: BaseException | None, now: float) -> None:
        ending = self._ending
        assert ending is not None
        if out is None:
            out = Wrapped(git_error=f"wrap-up failed: {_short(error)}")
        if out.refused is not None:
            self._refused_by_git(out.refused)
            return
        if out.git is not None:
            self.git = out.git
        stage, reason, retryable = ending.stage, ending.reason, ending.retryable
        if out.git_error is not None and self.checkout is not None and stage == "shipped":
            # Shipped work that is not on the remote is not shipped: the next attempt resumes
            # from the last pushed checkpoint.
            stage, retryable = "failed", True
            reason = f"the work could not be pushed: {out.git_error}"[:1900]
        checkpoint = self._merged_checkpoint()
        if stage == "release":
            body: dict[str, Any] = {"reason": reason or "released"}
            if checkpoint is not None:
                body["checkpoint"] = checkpoint
            self._enqueue(Report("release", body, "release", True, Outcome.RELEASED))
        else:
            body = self._final_body(stage, now, reason, retryable, ending.limit, out)
            if self.checkout is not None and checkpoint is not None:
                body["checkpoint"] = checkpoint  # the pushed end of the branch
            outcome = (
                Outcome.SHIPPED
                if stage == "shipped"
                else (Outcome.RETRY if retryable else Outcome.FAILED)
            )
            self._enqueue(Report("patch", body, stage, True, outcome))
        self.phase = Phase.FINISHING

    def _final_body(
        self,
        stage: str,
        now: float,
        reason: str | None,
        retryable: bool,
        limit: str | None,
        out: Wrapped,
    ) -> dict[str, Any]:
        said = self.adapter.result if self.adapter is not None else None
        result: dict[str, Any] = {
            "exitCode": self.exit_code,
            "tokens": self.progress.tokens,
            "costUsd": self.progress.cost_usd,
            "durationSeconds": round(now - self.started_at, 3),
            "lastOutputLine": self.progress.last_line,
            "factory": self.factory_id,
            "engine": self.engine_name,
        }
        if self.adapter is not None:
            result["usage"] = self.adapter.usage.as_dict()
            if self.adapter.version:
                result["engineVersion"] = self.adapter.version
        if said is not None and said.num_turns is not None:
            result["numTurns"] = said.num_turns
        if self.verify_code is not None:
            result["verifyExitCode"] = self.verify_code
        if self.restarts:
            result["engineRestarts"] = self.restarts
        if limit is not None:
            result["outcome"] = limit
        if self.git is not None:
            result["branch"] = self.git.get("branch")
            result["commit"] = self.git.get("commit")
        if out.diff is not None:
            result["diff"] = out.diff
        if out.pr_url is not None:
            result["prUrl"] = out.pr_url
        if out.pr_note is not None:
            result["prNote"] = out.pr_note
        result["artifacts"] = out.artifacts
        if out.artifact_errors:
            result["artifactErrors"] = out.artifact_errors
        body: dict[str, Any] = {
            "stage": stage,
            "result": result,
            "progress": self._progress_body(),
        }
        if reason:
            body["reason"] = reason
        if retryable:
            body["retryable"] = True
        return body

    def _fail_now(self, now: float, reason: str, *, retryable: bool) -> None:
        """The attempt failed before the engine ran: nothing to wrap up."""
        self._ending = Ending("failed", reason[:1900], retryable)
        self._wrapped(Wrapped(), None, now)

    # --- background tasks -----------------------------------------------------------------

    def _background(
        self,
        work: Callable[[], T],
        then: Callable[[T | None, BaseException | None, float], None],
        now: float,
    ) -> None:
        """Run ``work`` on the executor; ``then(result, error, now)`` runs on a later tick (at
        once when the executor ran it inline)."""
        self._task = self.executor.submit(work)
        self._then = then
        self._poll_task(now)

    def _poll_task(self, now: float) -> None:
        task, then = self._task, self._then
        if task is None or then is None or not task.done():
            return
        self._task = self._then = None
        error = task.exception()
        then(None if error is not None else task.result(), error, now)
        if self._task is None and self.phase is Phase.WRAPPING and not self.done:
            if self.outbox and self.outbox[-1].final:
                return
            self._wrap_up(now)  # the attempt ended while another task ran

    # --- git checkpoints (jobs with a repository) -----------------------------------------

    def _git_checkpoint(self, now: float) -> None:
        """Commit and push what the engine left, when it wrote a checkpoint or every
        ``git_every`` seconds; then report ``{branch, commit}`` as the checkpoint."""
        checkout = self.checkout
        if checkout is None or self._task is not None:
            return
        if self.phase not in (Phase.RUNNING, Phase.RESTARTING):
            return
        if not self._git_wanted and now < self.next_git_at:
            return
        self._git_wanted = False
        self.next_git_at = now + self.git_every
        message = self._commit_message("checkpoint")

        def work() -> dict[str, str] | None:
            committed = checkout.commit_all(message)
            pushed = None
            if committed is not None or checkout.head() != checkout.lease:
                checkout.push()
                pushed = checkout.checkpoint()
            return pushed

        self._background(work, self._git_checkpointed, now)

    def _git_checkpointed(
        self, pushed: dict[str, str] | None, error: BaseException | None, now: float
    ) -> None:
        if isinstance(error, PushRefused):
            self._refused_by_git(str(error))
            return
        if error is not None:
            log.warning(
                "job %s: checkpoint not pushed (next try later): %s", self.id, _short(error)
            )
            return
        if pushed is not None:
            self.git = pushed
        if pushed is not None or self._engine_checkpoint_new:
            self._engine_checkpoint_new = False
            self._queue_checkpoint(self._merged_checkpoint())

    def release_checkpoint(self) -> Any:
        """The checkpoint to give the job back with: the engine's, and the pushed branch."""
        return self._merged_checkpoint()

    def _merged_checkpoint(self) -> Any:
        """The checkpoint to report: the engine's own (if it wrote one) with ``{branch,
        commit}`` of the pushed work on top."""
        if self.git is None:
            return self.checkpoint
        if isinstance(self.checkpoint, dict):
            return {**self.checkpoint, **self.git}
        if self.checkpoint is None:
            return dict(self.git)
        return {"engine": self.checkpoint, **self.git}

    def _commit_message(self, what: str) -> str:
        return f"fleet: {what} of job {self.id} at epoch {self.epoch}\n\n{self.title}".strip()

    def _pr_body(self) -> str:
        body = str(self.job.get("body") or "").strip()
        return (body + "\n\n" if body else "") + f"Job `{self.id}` of agent-fleet."

    def _refused_by_git(self, why: str) -> None:
        """A push refused by its lease: a newer attempt (or someone else) pushed the branch.
        The engine is stopped at once and the job given back: if a newer attempt holds it, the
        release is fenced and nothing more is said; if not, it is queued again at once."""
        for proc in (self.process, self.verify):
            if proc is not None and proc.poll() is None:
                proc.kill()
        if self.checkout is not None:
            self.checkout.stop()
        self.outbox.clear()
        self.events.pending.clear()
        reason = f"git refused the push of fleet/{self.id} at epoch {self.epoch}: {why}"
        log.warning("job %s: %s; engine stopped, the job given back", self.id, reason)
        self._enqueue(Report("release", {"reason": reason[:1900]}, "release", True, Outcome.FENCED))
        self.phase = Phase.FINISHING

    # --- what the engine wrote --------------------------------------------------------

    def _observe(self) -> None:
        """Read the engine's output (through its adapter), the progress file, the log's last
        line and the checkpoint file; queue a checkpoint when the engine wrote a new one."""
        if self.phase is Phase.PREPARING:
            return
        changed = False
        raw = read_text(self.paths.progress)
        if raw != self._progress_raw:
            self._progress_raw = raw
            data = read_json(self.paths.progress)
            if isinstance(data, dict):
                changed = True
                tokens = _number(data.get("tokens"), int)
                cost = _number(data.get("costUsd"), float)
                if tokens is not None:
                    self.progress.tokens = tokens
                if cost is not None:
                    self.progress.cost_usd = cost
                line = data.get("lastOutputLine")
                self._engine_says_line = isinstance(line, str) and bool(line.strip())
                if isinstance(line, str) and line.strip():
                    self.progress.last_line = line.strip()[:2000]
                outputs = data.get("outputs")
                if isinstance(outputs, list):
                    self.progress.outputs = [str(o) for o in outputs]
        try:
            size = self.paths.log.stat().st_size
        except OSError:
            size = -1
        if size != self._log_size:
            self._log_size = size
            changed = True
            if self.adapter is not None:
                self._read_engine_output()
            elif not self._engine_says_line:
                self.progress.last_line = last_line(self.paths.log) or self.progress.last_line
        if changed:
            self.progress.last_activity = iso(self.clock.wall())
        self._observe_checkpoint()

    def _read_engine_output(self) -> None:
        """Feed the engine's new output lines to its adapter: agent events, usage, cost."""
        adapter = self.adapter
        assert adapter is not None
        for line in self.engine_output.read_lines():
            if line.strip():
                adapter.feed(line)
        for event in adapter.drain_events():
            self.events.push(str(event.get("type")), event.get("payload"))
        self.progress.tokens = adapter.usage.total
        self.progress.cost_usd = adapter.cost_usd
        if adapter.last_line:
            self.progress.last_line = adapter.last_line.strip()[:2000]

    def _observe_checkpoint(self) -> None:
        text = read_text(self.paths.checkpoint, MAX_CHECKPOINT_BYTES + 1)
        digest = _digest(text)
        if digest == self._checkpoint_seen or text is None or not text.strip():
            return
        if len(text.encode("utf-8")) > MAX_CHECKPOINT_BYTES:
            self._checkpoint_seen = digest
            log.warning(
                "job %s: checkpoint over %d bytes, not forwarded", self.id, MAX_CHECKPOINT_BYTES
            )
            return
        try:
            checkpoint = json.loads(text)
        except ValueError:
            return  # half-written: read again on the next tick
        self._checkpoint_seen = digest
        self.checkpoint = checkpoint
        # A new checkpoint is progress: the healer judges a stall by this time moving.
        self.progress.last_activity = iso(self.clock.wall())
        if self.checkout is not None:
            # Its files first: the checkpoint names the commit that holds them.
            self._git_wanted = self._engine_checkpoint_new = True
        elif self.phase in (Phase.RUNNING, Phase.RESTARTING, Phase.VERIFYING):
            self._queue_checkpoint(checkpoint)

    def _queue_checkpoint(self, checkpoint: Any) -> None:
        if self.phase not in (Phase.RUNNING, Phase.RESTARTING, Phase.VERIFYING):
            return
        body = {"checkpoint": checkpoint, "progress": self._progress_body()}
        last = self.outbox[-1] if self.outbox else None
        if last is not None and last.label in ("checkpoint", "progress"):
            last.body, last.label = body, "checkpoint"  # not sent yet: only the newest matters
        else:
            self._enqueue(
                Report(
                    "patch",
                    body,
                    "checkpoint",
                    not_before=self._checkpoint_sent_at + CHECKPOINT_EVERY_SECONDS,
                )
            )

    def _report_progress(self, now: float) -> None:
        """Running tokens and cost to the coordinator while they move (a write each: at most
        every ``PROGRESS_EVERY_SECONDS``)."""
        if self.phase not in (Phase.RUNNING, Phase.RESTARTING, Phase.VERIFYING):
            return
        figures = (self.progress.tokens, self.progress.cost_usd)
        if figures == self._progress_sent or now < self._progress_sent_at + PROGRESS_EVERY_SECONDS:
            return
        self._progress_sent, self._progress_sent_at = figures, now
        last = self.outbox[-1] if self.outbox else None
        if last is not None and last.label in ("checkpoint", "progress"):
            last.body["progress"] = self._progress_body()
        else:
            self._enqueue(Report("patch", {"progress": self._progress_body()}, "progress"))

    def _progress_body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"tokens": self.progress.tokens}
        if self.progress.cost_usd is not None:
            out["costUsd"] = self.progress.cost_usd
        if self.adapter is not None:
            out["usage"] = self.adapter.usage.as_dict()
        if self.progress.last_line:
            out["lastOutputLine"] = self.progress.last_line[:500]
        return out

    def heartbeat_entry(self) -> dict[str, Any]:
        """This job's line in the factory's heartbeat."""
        entry: dict[str, Any] = {
            "jobId": self.id,
            "leaseEpoch": self.epoch,
            "tokens": self.progress.tokens,
        }
        if self.progress.cost_usd is not None:
            entry["costUsd"] = self.progress.cost_usd
        if self.progress.last_activity:
            entry["lastActivityAt"] = self.progress.last_activity
        if self.progress.last_line:
            entry["lastOutputLine"] = self.progress.last_line[:2000]
        return entry

    # --- talking to the coordinator ----------------------------------------------------

    def _renew(self, now: float) -> None:
        if now < self.next_renew_at or not self.renew_backoff.ready(now):
            return
        timeout = self.limits.timeout_seconds
        if self.limit is not None and timeout is not None and now - self.started_at >= timeout:
            return  # past the deadline the coordinator refuses it: report what is left instead
        try:
            answer = self.client.renew(self.id, self.epoch)
        except Unavailable as exc:
            left = max(1.0, (self.lease_deadline - now) / 4)
            delay = self.renew_backoff.failed(now, exc.retry_after, cap=left)
            log.warning("job %s: renew failed (%s); retry in %.1fs", self.id, exc.message, delay)
            return
        except (Fenced, NotFound) as exc:
            self._fenced(exc)
            return
        except Unauthorized:
            raise
        except ApiError as exc:
            # The job left a leased stage without fencing us (it should not happen):
            # nothing to renew; the outbox will learn the rest.
            log.warning("job %s: renew refused: %s", self.id, exc.message)
            self.next_renew_at = now + self.renew_every
            return
        self.renew_backoff.succeeded()
        cadence = answer.get("cadence") or {}
        self.renew_every = float(cadence.get("renewSeconds") or self.renew_every)
        self.heartbeat_every = float(cadence.get("heartbeatSeconds") or self.heartbeat_every)
        self.lease_deadline = now + self.lease_seconds
        self.next_renew_at = now + self.renew_every

    def _send(self, now: float) -> None:
        """Forward agent events when due, then the outbox in order (the final report only
        once every event is forwarded)."""
        head = self.outbox[0] if self.outbox else None
        flush_all = head is not None and head.final
        if flush_all or now >= self.next_events_at or len(self.events.pending) >= 100:
            self.events.read()
            if not self._forward_events(now, everything=flush_all):
                return
            self.next_events_at = now + EVENTS_EVERY_SECONDS
        while self.outbox and self.report_backoff.ready(now) and self.phase is not Phase.DONE:
            report = self.outbox[0]
            if report.not_before > now and not self.outbox[-1].final:
                return  # a checkpoint waiting its turn (a final report takes it along now)
            if report.final:
                self.events.read()
                if self.events.pending and not self._forward_events(now, everything=True):
                    return
            try:
                self._deliver(report)
            except Unavailable as exc:
                delay = self.report_backoff.failed(now, exc.retry_after)
                log.warning(
                    "job %s: %s report failed (%s); retry in %.1fs",
                    self.id,
                    report.label,
                    exc.message,
                    delay,
                )
                return
            except (Fenced, NotFound) as exc:
                self._fenced(exc)
                return
            except Unauthorized:
                raise
            except ApiError as exc:  # refused for good (conflict, invalid): drop it
                self.report_backoff.succeeded()
                self.outbox.popleft()
                log.warning("job %s: %s report refused: %s", self.id, report.label, exc.message)
                if report.final:
                    self._done(
                        Outcome.FAILED
                        if report.outcome is not Outcome.RELEASED
                        else Outcome.RELEASED
                    )
                continue
            self.report_backoff.succeeded()
            self.outbox.popleft()
            if report.label in ("checkpoint", "progress"):
                self._checkpoint_sent_at = now
            if report.label in ("building", "testing"):
                self.stage = report.label
            if report.final:
                self.stage = report.label
                self._done(report.outcome or Outcome.FAILED)

    def _deliver(self, report: Report) -> None:
        if report.kind == "release":
            self.client.release(
                self.id,
                self.epoch,
                checkpoint=report.body.get("checkpoint"),
                reason=report.body.get("reason"),
            )
        else:
            self.client.report(self.id, self.epoch, **report.body)

    def _forward_events(self, now: float, *, everything: bool) -> bool:
        """Send pending events (one batch, or all of them); False if the coordinator could
        not take them now (or fenced us)."""
        while self.events.pending and self.events_backoff.ready(now):
            batch = self.events.batch()
            try:
                self.client.post_events(self.id, self.epoch, batch)
            except Unavailable as exc:
                self.events_backoff.failed(now, exc.retry_after)
                log.warning("job %s: events not forwarded yet (%s)", self.id, exc.message)
                return False
            except (Fenced, NotFound) as exc:
                self._fenced(exc)
                return False
            except Unauthorized:
                raise
            except ApiError as exc:  # refused for good: dropped, never blocks the reports
                log.warning("job %s: %d events refused: %s", self.id, len(batch), exc.message)
            self.events_backoff.succeeded()
            self.events.sent(len(batch))
            if not everything:
                break
        return not self.events.pending or not everything

    def _enqueue(self, report: Report) -> None:
        self.outbox.append(report)

    # --- endings -----------------------------------------------------------------------

    def _fenced(self, exc: ApiError) -> None:
        self._stop_now(Outcome.FENCED)
        log.warning(
            "job %s: fenced at epoch %d (%s): engine stopped, nothing more reported",
            self.id,
            self.epoch,
            exc.message,
        )

    def _stop_now(self, outcome: Outcome) -> None:
        for proc in (self.process, self.verify):
            if proc is not None and proc.poll() is None:
                proc.kill()
        if self.checkout is not None:
            self.checkout.stop()  # a push or a pull request still under way goes no further
        self.outbox.clear()
        self.events.pending.clear()
        self._done(outcome)

    def _done(self, outcome: Outcome) -> None:
        self.phase = Phase.DONE
        self.outcome = outcome
        if self.checkout is not None and self._task is None:
            self.checkout.close()  # no task of the attempt still uses its private git dir
        log.info("job %s (epoch %d): %s", self.id, self.epoch, outcome.value)

    # --- helpers -------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        job_vars = self.paths.engine_vars(self.id, self.epoch, self.factory_id)
        # So an engine can stop by itself if its factory dies (kill -9 leaves it orphaned).
        job_vars["FLEET_FACTORY_PID"] = str(os.getpid())
        return engine_env(self.base_env, job_vars)

    def _spawn_engine(self) -> EngineProcess:
        values = self.paths.placeholders(self.id, self.python)
        if self.limits.max_cost_usd is not None:
            values["max_cost_usd"] = usd_arg(self.limits.max_cost_usd)  # claude stops itself too
        command = render(self.template, values)
        if self.adapter is None and self.adapters:
            try:
                self.adapter = adapter_for(self.engine_name, command=command, env=self.base_env)
            except PricesError as exc:
                log.error("job %s: %s: costs unknown", self.id, exc)
                self.adapter = adapter_for(self.engine_name, command=command, prices={})
        return self.spawner(command, cwd=self.paths.workdir, env=self._env(), log=self.paths.log)

    def view(self, now: float) -> dict[str, Any]:
        """For the state file and ``status``."""
        return {
            "jobId": self.id,
            "title": self.title,
            "epoch": self.epoch,
            "stage": self.stage,
            "phase": self.phase.value,
            "startedAt": self.started_wall,
            "runningSeconds": round(now - self.started_at, 1),
            "leaseLeftSeconds": round(self.lease_deadline - now, 1),
            "tokens": self.progress.tokens,
            "costUsd": self.progress.cost_usd,
            "lastOutputLine": self.progress.last_line,
            "pid": self.process.pid if self.process is not None else None,
            "branch": self.git.get("branch") if self.git else None,
            "commit": self.git.get("commit") if self.git else None,
            "workdir": str(self.paths.workdir),
            "eventsForwarded": self.events.sent_count,
        }


def _digest(text: str | None) -> str | None:
    if text is None:
        return None
    return hashlib.sha256(text.encode("utf-8", errors="replace")).hexdigest()


def wrap_margin(timeout: float) -> float:
    """How long before its deadline the engine is stopped, so that its work is committed,
    pushed, uploaded and reported within the limit: a tenth of it, at most a minute."""
    return min(60.0, timeout / 10)


def _short(error: BaseException | None) -> str:
    if error is None:
        return "unknown error"
    text = str(error).strip() or type(error).__name__
    return text[:500]
