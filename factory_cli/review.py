"""Reviewer mode (``fleet-factory run --review``): an idle factory reviews other factories'
work and votes on it.

A review is one engine run on a review prompt (the job's title, body, what the author
reported, its checkpoint — e.g. the branch — and the comments of earlier rounds) in a work
directory of its own (``{work root}/_reviews/{job id}/``). The verdict:

- exit code 0 — approve; 75 (``EX_TEMPFAIL``) — abstain (no vote); killed by a signal — no
  vote; any other code — reject;
- the comments: what the engine wrote to ``FLEET_REVIEW_VERDICT_FILE``
  (``.fleet/review-verdict.md``), else the tail of its output.

The vote is ``POST /fleet/jobs/{id}/review``. Refusals (``403 self_review``, ``same_kind``,
``409 already_voted``, ``not_in_review``: someone decided first) are normal: the runner logs
them and does not try that job again in that round. ``ReviewRun`` never blocks: the engine is
a subprocess polled on each ``tick``, like a held job's.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

from factory_cli.api import ApiError, FleetClient, Unauthorized, Unavailable
from factory_cli.backoff import Backoff
from factory_cli.engines import EngineError, EngineProcess, Spawner, engine_env, render
from factory_cli.workdir import WorkPaths, control_dir, job_dir, read_text, remove_file, write_file

log = logging.getLogger("factory_cli.review")

REVIEWS_DIR = "_reviews"  # under the work root; job dirs never start with "_"
VERDICT_FILE = "review-verdict.md"
EXIT_ABSTAIN = 75  # EX_TEMPFAIL: the engine could not review; no vote
MAX_COMMENTS_CHARS = 4000  # what the coordinator keeps of a vote's comments
TAIL_LINES = 40
REVIEW_TIMEOUT_SECONDS = 3600.0  # an engine reviewing longer is stopped (no vote)
VOTE_GIVE_UP_SECONDS = 600.0  # a vote the coordinator cannot take for this long is dropped
_KIND = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class ReviewOutcome(StrEnum):
    APPROVED = "approved"
    REJECTED = "rejected"
    ABSTAINED = "abstained"  # exit 75, killed, timed out, did not start: no vote
    REFUSED = "refused"  # the coordinator refused the vote (403/409/404/400)
    STOPPED = "stopped"  # the factory stopped it (signal, drain, refused token)


def verdict_for(code: int) -> str | None:
    """The vote an engine's exit code casts: ``approve``, ``reject``, or None (no vote)."""
    if code == 0:
        return "approve"
    if code == EXIT_ABSTAIN or code < 0:
        return None
    return "reject"


# --- which jobs ------------------------------------------------------------------------


def factory_kind(capabilities: Iterable[str]) -> str:
    """This factory's reviewer kind as the coordinator computes it: its ``kind:NAME``
    capabilities, else its ``engine:NAME`` ones, joined with ``+``; else ``unknown``."""
    caps = list(capabilities)
    for prefix in ("kind:", "engine:"):
        names = sorted({c.removeprefix(prefix) for c in caps if c.startswith(prefix)})
        names = [n for n in names if _KIND.match(n)]
        if names:
            return "+".join(names)
    return "unknown"


def round_of(job: Mapping[str, Any]) -> int:
    state = job.get("reviewState")
    if isinstance(state, dict) and isinstance(state.get("round"), int):
        return int(state["round"])
    return 1


def why_not(job: Mapping[str, Any], factory_id: str, kind: str) -> str | None:
    """Why this factory may not review ``job`` now (None: it may)."""
    if job.get("stage") != "review":
        return f"in stage {job.get('stage')}"
    state = job.get("reviewState")
    state = state if isinstance(state, dict) else {}
    if state.get("outcome", "open") != "open":
        return f"round {state.get('round')} is {state.get('outcome')}"
    if state.get("author") == factory_id:
        return "its own attempt"
    me = f"factory:{factory_id}"
    votes = state.get("votes") or []
    if any(isinstance(v, dict) and v.get("reviewer") == me for v in votes):
        return "already voted this round"
    spec = job.get("review")
    if isinstance(spec, dict) and spec.get("distinctKind"):
        theirs = set(str(state.get("authorKind") or "unknown").split("+"))
        if theirs & set(kind.split("+")):
            return f"same kind as the author ({kind})"
    return None


# --- the prompt and the work dir ---------------------------------------------------------


def review_prompt(job: Mapping[str, Any], verdict_file: Path) -> str:
    """What the reviewing engine is asked: the job, the author's result and checkpoint,
    earlier comments, and how to answer."""
    state = job.get("reviewState")
    state = state if isinstance(state, dict) else {}
    spec = job.get("review")
    spec = spec if isinstance(spec, dict) else {}
    parts: list[str] = []
    profile = job.get("profile")
    if isinstance(profile, dict) and profile.get("preamble"):
        parts.append(str(profile["preamble"]).strip())
    parts.append(
        f"# Review: {job.get('title', 'untitled')}\n\n"
        f"You are reviewing the work another agent did on the job below (job {job.get('id')}, "
        f"review round {state.get('round', 1)} of {spec.get('maxRounds', '?')}, "
        f"author {state.get('author') or 'unknown'}). Do not redo the work: check it."
    )
    body = str(job.get("body") or "").strip()
    parts.append("## The job\n\n" + (body or "(no body)"))
    checkpoint = job.get("checkpoint")
    if isinstance(checkpoint, dict):
        checkpoint = {k: v for k, v in checkpoint.items() if k != "review"} or None
    if checkpoint is not None:
        parts.append(
            "## The author's checkpoint (where the work is, e.g. its branch)\n\n"
            + json.dumps(checkpoint, indent=2, sort_keys=True)
        )
    result = job.get("result")
    if result:
        parts.append(
            "## What the author reported\n\n" + json.dumps(result, indent=2, sort_keys=True)
        )
    earlier = _comments(state)
    if earlier:
        parts.append("## Earlier review comments\n\n" + earlier)
    if job.get("verify"):
        parts.append(f"The job's verify command: `{job['verify']}`")
    parts.append(
        "## Your answer\n\n"
        f"Write your review (markdown, short and specific) to `{verdict_file}` "
        "(also in $FLEET_REVIEW_VERDICT_FILE), then exit with code 0 to approve the work, "
        "or with code 1 to reject it (the job is then built again with your comments). "
        "Exit 75 if you cannot review it (no vote is cast)."
    )
    return "\n\n".join(parts) + "\n"


def _comments(state: Mapping[str, Any]) -> str:
    lines: list[str] = []
    rounds = [r for r in state.get("history") or [] if isinstance(r, dict)]
    current = {"round": state.get("round"), "outcome": "open", "votes": state.get("votes") or []}
    for entry in [*rounds, current]:
        for vote in entry.get("votes") or []:
            if not isinstance(vote, dict):
                continue
            text = str(vote.get("comments") or "").strip() or "(no comment)"
            label = "this round" if entry is current else f"round {entry.get('round')}"
            who = f"{vote.get('reviewer')} ({vote.get('kind')}, {vote.get('verdict')}, {label})"
            lines.append(f"- {who}: " + text.replace("\n", "\n  "))
    return "\n".join(lines)


def review_paths(work_root: Path, job_id: str) -> WorkPaths:
    return WorkPaths(job_dir(work_root / REVIEWS_DIR, job_id))


def verdict_path(paths: WorkPaths) -> Path:
    return paths.control / VERDICT_FILE


def prepare_review(work_root: Path, job: Mapping[str, Any]) -> WorkPaths:
    """The review's work dir with this round's files: the job (manifest), its body, the
    review prompt, the author's checkpoint; no verdict, an empty log."""
    paths = review_paths(work_root, str(job["id"]))
    control_dir(paths)
    write_file(paths.manifest, json.dumps(dict(job), indent=2, sort_keys=True))
    write_file(paths.body, str(job.get("body") or ""))
    write_file(paths.prompt, review_prompt(job, verdict_path(paths)))
    if job.get("checkpoint") is not None:
        write_file(paths.checkpoint, json.dumps(job["checkpoint"], sort_keys=True))
    else:
        remove_file(paths.checkpoint)
    for stale in (verdict_path(paths), paths.log, paths.progress, paths.events):
        remove_file(stale)
    return paths


def comments_of(paths: WorkPaths) -> str:
    """The verdict file, else the tail of the engine's output; at most 4000 characters."""
    text = (read_text(verdict_path(paths), 64 * 1024) or "").strip()
    if not text:
        raw = read_text(paths.log) or ""
        lines = [_ANSI.sub("", ln).rstrip() for ln in raw.splitlines()]
        text = "\n".join(ln for ln in lines[-TAIL_LINES:]).strip()
    if len(text) > MAX_COMMENTS_CHARS:
        text = "…" + text[-(MAX_COMMENTS_CHARS - 1) :]
    return text


# --- one review --------------------------------------------------------------------------


class ReviewRun:
    """One review: the engine, then the vote (retried while the coordinator is
    unreachable). ``done`` once there is an ``outcome``."""

    def __init__(
        self,
        *,
        job: Mapping[str, Any],
        client: FleetClient,
        spawner: Spawner,
        template: str,
        python: str,
        factory_id: str,
        work_root: Path,
        base_env: Mapping[str, str],
        rand: Callable[[], float],
        now: float,
    ) -> None:
        self.job = dict(job)
        self.id = str(job["id"])
        self.round = round_of(job)
        self.client = client
        self.spawner = spawner
        self.template = template
        self.python = python
        self.factory_id = factory_id
        self.work_root = work_root
        self.base_env = dict(base_env)
        self.started_at = now
        self.process: EngineProcess | None = None
        self.exit_code: int | None = None
        self.verdict: str | None = None
        self.comments = ""
        self.vote_since: float | None = None
        self.backoff = Backoff(rand)
        self.outcome: ReviewOutcome | None = None
        self.paths: WorkPaths | None = None

    @property
    def done(self) -> bool:
        return self.outcome is not None

    def start(self, now: float) -> None:
        try:
            self.paths = prepare_review(self.work_root, self.job)
            command = render(self.template, self.paths.placeholders(self.id, self.python))
            self.process = self.spawner(
                command, cwd=self.paths.workdir, env=self._env(), log=self.paths.log
            )
        except (OSError, EngineError) as exc:
            log.error("review of %s: the engine did not start (%s): no vote", self.id, exc)
            self.outcome = ReviewOutcome.ABSTAINED
            return
        log.info(
            "reviewing %s %r (round %d): engine started, pid %d",
            self.id,
            self.job.get("title", ""),
            self.round,
            self.process.pid,
        )

    def stop(self, why: str) -> None:
        """Stop the engine at once; no vote."""
        if self.done:
            return
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        self.outcome = ReviewOutcome.STOPPED
        log.info("review of %s stopped (%s): no vote", self.id, why)

    def tick(self, now: float) -> None:
        """Everything due now. Raises ``Unauthorized`` (the factory's to handle)."""
        if self.done:
            return
        if self.verdict is None and self.process is not None:
            code = self.process.poll()
            if code is None:
                if now - self.started_at >= REVIEW_TIMEOUT_SECONDS:
                    self.process.kill()
                    self.outcome = ReviewOutcome.ABSTAINED
                    log.warning("review of %s: timed out, engine stopped; no vote", self.id)
                return
            self._exited(code, now)
        if self.verdict is not None:
            self._vote(now)

    def _exited(self, code: int, now: float) -> None:
        self.exit_code = code
        self.verdict = verdict_for(code)
        assert self.paths is not None
        self.comments = comments_of(self.paths)
        if self.verdict is None:
            self.outcome = ReviewOutcome.ABSTAINED
            log.info("review of %s: engine exited with %d: no vote", self.id, code)
            return
        self.vote_since = now
        log.info("review of %s: engine exited with %d: %s", self.id, code, self.verdict)

    def _vote(self, now: float) -> None:
        if not self.backoff.ready(now):
            return
        assert self.verdict is not None
        try:
            answer = self.client.review(self.id, self.verdict, self.comments)
        except Unavailable as exc:
            if self.vote_since is not None and now - self.vote_since >= VOTE_GIVE_UP_SECONDS:
                self.outcome = ReviewOutcome.ABSTAINED
                log.warning("review of %s: vote not taken (%s): given up", self.id, exc.message)
                return
            delay = self.backoff.failed(now, exc.retry_after)
            log.warning(
                "review of %s: vote failed (%s); retry in %.1fs", self.id, exc.message, delay
            )
            return
        except Unauthorized:
            raise
        except ApiError as exc:  # self_review, same_kind, already_voted, not_in_review, ...
            self.outcome = ReviewOutcome.REFUSED
            log.info("review of %s: vote refused (%s): moving on", self.id, exc.code or exc.message)
            return
        self.outcome = (
            ReviewOutcome.APPROVED if self.verdict == "approve" else ReviewOutcome.REJECTED
        )
        log.info(
            "review of %s: voted %s (the job is now %s)",
            self.id,
            self.verdict,
            answer.get("stage", "?"),
        )

    def _env(self) -> dict[str, str]:
        assert self.paths is not None
        extra = {
            "FLEET_JOB_ID": self.id,
            "FLEET_FACTORY_ID": self.factory_id,
            "FLEET_WORKDIR": str(self.paths.workdir),
            "FLEET_MANIFEST_FILE": str(self.paths.manifest),
            "FLEET_PROMPT_FILE": str(self.paths.prompt),
            "FLEET_CHECKPOINT_FILE": str(self.paths.checkpoint),
            "FLEET_REVIEW_VERDICT_FILE": str(verdict_path(self.paths)),
            "FLEET_REVIEW_ROUND": str(self.round),
            "FLEET_FACTORY_PID": str(os.getpid()),
        }
        env = engine_env(self.base_env, extra)
        # A builder's per-attempt variables must not leak in from the factory's environment.
        for name in ("FLEET_LEASE_EPOCH", "FLEET_PROGRESS_FILE", "FLEET_EVENTS_FILE"):
            env.pop(name, None)
        return env

    def view(self, now: float) -> dict[str, Any]:
        return {
            "jobId": self.id,
            "round": self.round,
            "runningSeconds": round(now - self.started_at, 1),
            "verdict": self.verdict,
            "pid": self.process.pid if self.process is not None else None,
        }
