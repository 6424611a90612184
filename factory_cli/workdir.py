"""A job's work directory, and the files through which the engine talks to the factory.

``{work root}/{job id}/`` is the engine's current directory. It is kept across attempts on
this machine (a resumed attempt finds the previous one's files). The factory's files live
in ``.fleet/`` inside it:

- ``manifest.json`` — the job as claimed (id, title, body, capabilities, verify, profile,
  checkpoint, leaseSeconds, ...), plus ``leaseEpoch``;
- ``body.md`` — the body verbatim; ``prompt.md`` — what the engine is asked to do;
- ``checkpoint.json`` — the previous attempt's checkpoint, if any
  (``FLEET_CHECKPOINT_FILE``): the engine overwrites it with its own, the factory forwards
  each new content to the coordinator;
- ``review.md`` (``FLEET_REVIEW_FILE``) — when reviewers rejected the previous attempt,
  their comments (also under ``review`` in the checkpoint, and summed up in the prompt);
  absent otherwise;
- ``progress.json`` (``FLEET_PROGRESS_FILE``) — the engine writes
  ``{"tokens": N, "costUsd": X, "lastOutputLine": "...", "outputs": ["path", ...]}``;
- ``events.jsonl`` (``FLEET_EVENTS_FILE``) — the engine appends JSON lines
  ``{"type": "...", "payload": ...}``; forwarded to the job's audit trail in batches;
- ``engine.log`` — the engine's stdout and stderr; ``verify.log`` — the verify command's.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONTROL = ".fleet"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class WorkPaths:
    workdir: Path

    @property
    def control(self) -> Path:
        return self.workdir / CONTROL

    @property
    def manifest(self) -> Path:
        return self.control / "manifest.json"

    @property
    def body(self) -> Path:
        return self.control / "body.md"

    @property
    def prompt(self) -> Path:
        return self.control / "prompt.md"

    @property
    def checkpoint(self) -> Path:
        return self.control / "checkpoint.json"

    @property
    def review(self) -> Path:
        return self.control / "review.md"

    @property
    def progress(self) -> Path:
        return self.control / "progress.json"

    @property
    def events(self) -> Path:
        return self.control / "events.jsonl"

    @property
    def log(self) -> Path:
        return self.control / "engine.log"

    @property
    def verify_log(self) -> Path:
        return self.control / "verify.log"

    @property
    def diff_patch(self) -> Path:
        """The attempt's diff against its base, written by the factory (an artifact)."""
        return self.control / "diff.patch"

    def placeholders(self, job_id: str, python: str) -> dict[str, str]:
        """The values of the engine template's placeholders."""
        return {
            "prompt_file": str(self.prompt),
            "workdir": str(self.workdir),
            "job_id": job_id,
            "manifest_file": str(self.manifest),
            "checkpoint_file": str(self.checkpoint),
            "python": python,
        }

    def engine_vars(self, job_id: str, epoch: int, factory_id: str) -> dict[str, str]:
        """The environment variables the engine is given."""
        return {
            "FLEET_JOB_ID": job_id,
            "FLEET_LEASE_EPOCH": str(epoch),
            "FLEET_FACTORY_ID": factory_id,
            "FLEET_WORKDIR": str(self.workdir),
            "FLEET_MANIFEST_FILE": str(self.manifest),
            "FLEET_PROMPT_FILE": str(self.prompt),
            "FLEET_CHECKPOINT_FILE": str(self.checkpoint),
            "FLEET_REVIEW_FILE": str(self.review),
            "FLEET_PROGRESS_FILE": str(self.progress),
            "FLEET_EVENTS_FILE": str(self.events),
        }


def job_dir(root: Path, job_id: str) -> Path:
    return root / (_SAFE.sub("_", job_id).strip("._") or "job")


def review_comments(job: Mapping[str, Any]) -> str | None:
    """The reviewers' comments on the previous attempt (the coordinator puts them under
    ``review`` in the checkpoint when it queues a rejected job again), as markdown."""
    checkpoint = job.get("checkpoint")
    review = checkpoint.get("review") if isinstance(checkpoint, dict) else None
    if not isinstance(review, dict) or not isinstance(review.get("comments"), list):
        return None
    lines = [
        f"Reviewers rejected the previous attempt (review round {review.get('round')} "
        f"of {review.get('maxRounds')}). Address their comments:"
    ]
    for vote in review["comments"]:
        if isinstance(vote, dict):
            text = str(vote.get("comments") or "").strip() or "(no comment)"
            who = f"{vote.get('reviewer')} ({vote.get('kind')}, {vote.get('verdict')})"
            lines.append(f"- {who}: " + text.replace("\n", "\n  "))
    return "\n".join(lines) + "\n"


def build_prompt(job: Mapping[str, Any]) -> str:
    """The prompt: the profile's preamble, the title, the body, and what the factory
    expects back (written for any engine: people and agents read it the same way)."""
    parts: list[str] = []
    profile = job.get("profile")
    if isinstance(profile, dict) and profile.get("preamble"):
        parts.append(str(profile["preamble"]).strip())
    parts.append(f"# {job.get('title', 'untitled')}")
    body = str(job.get("body") or "").strip()
    if body:
        parts.append(body)
    notes = []
    if job.get("checkpoint") is not None:
        notes.append(
            "A previous attempt left this checkpoint (resume from it rather than starting "
            "over): " + json.dumps(job["checkpoint"], sort_keys=True)
        )
    comments = review_comments(job)
    if comments:
        parts.append(comments.strip())
    if job.get("verify"):
        notes.append(f"Your work is verified with: `{job['verify']}`")
    if notes:
        parts.append("---\n" + "\n".join(f"- {n}" for n in notes))
    return "\n\n".join(parts) + "\n"


def prepare(root: Path, job: Mapping[str, Any], epoch: int) -> WorkPaths:
    """Create (or reuse) the job's work directory and write this attempt's files."""
    paths = WorkPaths(job_dir(root, str(job["id"])))
    write_attempt_files(paths, job, epoch)
    return paths


def write_attempt_files(paths: WorkPaths, job: Mapping[str, Any], epoch: int) -> None:
    """Write this attempt's files into the work dir (created if absent; for a job with a
    repository, the checkout already is the work dir): the manifest, the body, the prompt,
    the previous checkpoint; empty the progress and events files and remove the previous
    attempt's diff (their contents belong to one attempt)."""
    paths.control.mkdir(parents=True, exist_ok=True)
    manifest = {**job, "leaseEpoch": epoch}
    paths.manifest.write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
    paths.body.write_text(str(job.get("body") or ""), encoding="utf-8")
    paths.prompt.write_text(build_prompt(job), encoding="utf-8")
    if job.get("checkpoint") is not None:
        paths.checkpoint.write_text(json.dumps(job["checkpoint"], sort_keys=True), encoding="utf-8")
    else:
        paths.checkpoint.unlink(missing_ok=True)
    comments = review_comments(job)
    if comments:
        paths.review.write_text(comments, encoding="utf-8")
    else:
        paths.review.unlink(missing_ok=True)
    paths.progress.unlink(missing_ok=True)
    paths.diff_patch.unlink(missing_ok=True)
    paths.events.write_bytes(b"")
    with paths.log.open("a", encoding="utf-8") as log:
        log.write(f"--- attempt at epoch {epoch} ---\n")


def read_text(path: Path, limit: int = 1024 * 1024) -> str | None:
    try:
        with path.open("rb") as handle:
            return handle.read(limit).decode("utf-8", errors="replace")
    except OSError:
        return None


def read_json(path: Path) -> Any:
    """The file's JSON, or None if it is absent, empty or half-written."""
    text = read_text(path)
    if not text or not text.strip():
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def last_line(path: Path, tail_bytes: int = 8192) -> str | None:
    """The last non-blank line of a log (ANSI colours stripped)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - tail_bytes))
            data = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    for line in reversed(data.splitlines()):
        clean = _ANSI.sub("", line).strip()
        if clean and not clean.startswith("--- attempt at epoch"):
            return clean[:2000]
    return None


def inside(workdir: Path, relative: str) -> Path | None:
    """``relative`` resolved inside ``workdir``, or None if it would leave it."""
    try:
        candidate = (workdir / relative).resolve()
        candidate.relative_to(workdir.resolve())
    except (OSError, ValueError):
        return None
    return candidate
