"""One held job, from the claim to its last report: the engine, the verify command, the
lease, the checkpoint, progress, agent events and the final report.

``JobRun.tick(now)`` does whatever is due and never blocks on the engine: the engine and the
verify command are subprocesses polled on each tick, so a factory's seats run at once while
one loop supervises them. Reports to the coordinator wait in an ordered outbox and are
retried with backoff; agent events are forwarded before the final report.

Invariants:

- a ``409 fenced`` answer to anything about this job stops the engine at once (SIGKILL to its
  process group) and nothing more is reported for it: another attempt owns the job now;
- the engine runs only while the lease allows: if renewing keeps failing until the lease
  (as measured here, from the last successful renew) has run out, the engine is stopped;
- ``Unauthorized`` (the factory's token refused) is not handled here: it stops the factory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from factory_cli.api import ApiError, Fenced, FleetClient, NotFound, Unauthorized, Unavailable
from factory_cli.artifacts import ArtifactSink, collect
from factory_cli.backoff import Backoff
from factory_cli.clock import Clock, iso
from factory_cli.engines import EngineError, EngineProcess, Spawner, engine_env, render
from factory_cli.events import EventsReader
from factory_cli.workdir import WorkPaths, last_line, read_json, read_text

log = logging.getLogger("factory_cli.job")

EXIT_RETRYABLE = 75  # EX_TEMPFAIL: the engine says "try again later, maybe elsewhere"
STOP_GRACE_SECONDS = 10.0  # after SIGTERM, how long an engine may take to checkpoint
EVENTS_EVERY_SECONDS = 2.0
MAX_CHECKPOINT_BYTES = 64 * 1024
# Each forwarded checkpoint is a write of the job document: an engine checkpointing in a
# tight loop is forwarded at most this often (the newest content wins).
CHECKPOINT_EVERY_SECONDS = 5.0


class Phase(StrEnum):
    RUNNING = "running"  # the engine runs
    RESTARTING = "restarting"  # the engine was asked to stop; it starts again on exit
    VERIFYING = "verifying"  # the engine succeeded; the verify command runs
    STOPPING = "stopping"  # the engine was asked to stop; the lease is released on exit
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
    cost_usd: float = 0.0
    last_line: str | None = None
    last_activity: str | None = None  # ISO time the progress or the log last changed
    outputs: list[str] = field(default_factory=list)


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
        self.lease_seconds = float(self.job.get("leaseSeconds") or 300)
        cadence = claim.get("cadence") or {}
        self.renew_every = float(cadence.get("renewSeconds") or max(1.0, self.lease_seconds / 3))
        self.heartbeat_every = float(cadence.get("heartbeatSeconds") or self.renew_every)
        self.lease_deadline = now + self.lease_seconds  # from when we learned of the lease
        self.next_renew_at = now + self.renew_every
        self.started_at = now
        self.started_wall = iso(clock.wall())
        self.phase = Phase.RUNNING
        self.outcome: Outcome | None = None
        self.stage = "assigned"
        self.process: EngineProcess | None = None
        self.verify: EngineProcess | None = None
        self.exit_code: int | None = None
        self.verify_code: int | None = None
        self.kill_at: float | None = None
        self.release_reason: str | None = None
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
        self._log_size = -1
        initial = read_text(paths.checkpoint)
        self._checkpoint_seen = _digest(initial)
        self.checkpoint: Any = self.job.get("checkpoint")

    # --- what the factory asks of it ---------------------------------------------------

    def start(self, now: float) -> None:
        """Start the engine and tell the coordinator the job is being built."""
        self._enqueue(Report("patch", {"stage": "building"}, "building"))
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
        log.info("job %s (epoch %d): engine started, pid %d", self.id, self.epoch, self.process.pid)

    def release(self, reason: str, now: float) -> None:
        """Give the job back: ask the engine to stop (it may checkpoint), then release the
        lease with the latest checkpoint."""
        if self.phase in (Phase.FINISHING, Phase.DONE, Phase.STOPPING):
            return
        self.release_reason = reason
        for proc in (self.process, self.verify):
            if proc is not None and proc.poll() is None:
                proc.terminate()
        self.kill_at = now + STOP_GRACE_SECONDS
        self.phase = Phase.STOPPING

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
            self._watch_processes,
            lambda _now: self._observe(),
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

    def _watch_processes(self, now: float) -> None:
        if self.phase is Phase.STOPPING:
            live = [p for p in (self.process, self.verify) if p is not None and p.poll() is None]
            if live:
                if self.kill_at is not None and now >= self.kill_at:
                    for proc in live:
                        proc.kill()
                    self.kill_at = None
                return
            self._observe()
            body: dict[str, Any] = {"reason": self.release_reason or "released"}
            if self.checkpoint is not None:
                body["checkpoint"] = self.checkpoint
            self._enqueue(Report("release", body, "release", True, Outcome.RELEASED))
            self.phase = Phase.FINISHING
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
            line = self.progress.last_line
            reason = f"engine exited with {code}" + (f": {line}" if line else "")
            self._finish("failed", now, reason=reason[:1900])

    def _finish(
        self, stage: str, now: float, *, reason: str | None = None, retryable: bool = False
    ) -> None:
        self._observe()
        result: dict[str, Any] = {
            "exitCode": self.exit_code,
            "tokens": self.progress.tokens,
            "costUsd": self.progress.cost_usd,
            "durationSeconds": round(now - self.started_at, 3),
            "lastOutputLine": self.progress.last_line,
            "factory": self.factory_id,
        }
        if self.verify_code is not None:
            result["verifyExitCode"] = self.verify_code
        if self.restarts:
            result["engineRestarts"] = self.restarts
        body: dict[str, Any] = {
            "stage": stage,
            "result": result,
            "progress": self._progress_body(),
        }
        if reason:
            body["reason"] = reason
        if retryable:
            body["retryable"] = True
        outcome = (
            Outcome.SHIPPED
            if stage == "shipped"
            else (Outcome.RETRY if retryable else Outcome.FAILED)
        )
        self._enqueue(Report("patch", body, stage, True, outcome))
        self.phase = Phase.FINISHING

    # --- what the engine wrote --------------------------------------------------------

    def _observe(self) -> None:
        """Read the progress file, the log's last line and the checkpoint file; queue a
        checkpoint report when the engine wrote a new one."""
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
            if not self._engine_says_line:
                self.progress.last_line = last_line(self.paths.log) or self.progress.last_line
        if changed:
            self.progress.last_activity = iso(self.clock.wall())
        self._observe_checkpoint()

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
        if self.phase in (Phase.RUNNING, Phase.RESTARTING, Phase.VERIFYING):
            body = {"checkpoint": checkpoint, "progress": self._progress_body()}
            last = self.outbox[-1] if self.outbox else None
            if last is not None and last.label == "checkpoint":
                last.body = body  # not sent yet: only the newest matters
            else:
                self._enqueue(
                    Report(
                        "patch",
                        body,
                        "checkpoint",
                        not_before=self._checkpoint_sent_at + CHECKPOINT_EVERY_SECONDS,
                    )
                )

    def _progress_body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"tokens": self.progress.tokens, "costUsd": self.progress.cost_usd}
        if self.progress.last_line:
            out["lastOutputLine"] = self.progress.last_line[:500]
        return out

    def heartbeat_entry(self) -> dict[str, Any]:
        """This job's line in the factory's heartbeat."""
        entry: dict[str, Any] = {
            "jobId": self.id,
            "leaseEpoch": self.epoch,
            "tokens": self.progress.tokens,
            "costUsd": self.progress.cost_usd,
        }
        if self.progress.last_activity:
            entry["lastActivityAt"] = self.progress.last_activity
        if self.progress.last_line:
            entry["lastOutputLine"] = self.progress.last_line[:2000]
        return entry

    # --- talking to the coordinator ----------------------------------------------------

    def _renew(self, now: float) -> None:
        if now < self.next_renew_at or not self.renew_backoff.ready(now):
            return
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
            if report.label == "checkpoint":
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
        self.outbox.clear()
        self.events.pending.clear()
        self._done(outcome)

    def _done(self, outcome: Outcome) -> None:
        self.phase = Phase.DONE
        self.outcome = outcome
        if outcome in (Outcome.SHIPPED, Outcome.FAILED, Outcome.RETRY, Outcome.RELEASED):
            for name, path in collect(self.paths, self.progress.outputs):
                try:
                    self.sink.upload(self.id, self.epoch, name, path)
                except Exception as exc:  # the sink's failure is never the job's
                    log.warning("job %s: artifact %s not uploaded: %s", self.id, name, exc)
        log.info("job %s (epoch %d): %s", self.id, self.epoch, outcome.value)

    # --- helpers -------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        job_vars = self.paths.engine_vars(self.id, self.epoch, self.factory_id)
        # So an engine can stop by itself if its factory dies (kill -9 leaves it orphaned).
        job_vars["FLEET_FACTORY_PID"] = str(os.getpid())
        return engine_env(self.base_env, job_vars)

    def _spawn_engine(self) -> EngineProcess:
        command = render(self.template, self.paths.placeholders(self.id, self.python))
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
            "workdir": str(self.paths.workdir),
            "eventsForwarded": self.events.sent_count,
        }


def _digest(text: str | None) -> str | None:
    if text is None:
        return None
    return hashlib.sha256(text.encode("utf-8", errors="replace")).hexdigest()
