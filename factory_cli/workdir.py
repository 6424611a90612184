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

import contextlib
import errno
import json
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

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
    control_dir(paths)
    manifest = {**job, "leaseEpoch": epoch}
    write_file(paths.manifest, json.dumps(manifest, indent=2, sort_keys=True))
    write_file(paths.body, str(job.get("body") or ""))
    write_file(paths.prompt, build_prompt(job))
    if job.get("checkpoint") is not None:
        write_file(paths.checkpoint, json.dumps(job["checkpoint"], sort_keys=True))
    else:
        remove_file(paths.checkpoint)
    comments = review_comments(job)
    if comments:
        write_file(paths.review, comments)
    else:
        remove_file(paths.review)
    remove_file(paths.progress)
    remove_file(paths.diff_patch)
    write_file(paths.events, "")
    with open_append(paths.log) as log:
        log.write(f"--- attempt at epoch {epoch} ---\n".encode())


# --- files in the engine's tree ---------------------------------------------------------------
# The engine (untrusted, possibly another OS user) owns the work dir, ``.fleet/`` included: it
# may swap any file there, or ``.fleet`` itself, for a symbolic link to something of the
# factory's (its config, its token) or a hard link, a FIFO, a device. The factory opens them
# only through these: no symbolic link below the work dir is followed, only regular files with
# a single link are read, and a write replaces whatever is there with a new file of its own.

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


def open_beneath(root: Path, relative: str, flags: int, mode: int = 0o644) -> int:
    """A descriptor of ``root/relative``, each component below ``root`` opened without
    following a symbolic link (``OSError`` if one is a link or ``relative`` leaves ``root``)."""
    parts = [p for p in relative.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise OSError(errno.EINVAL, f"not a path inside the work dir: {relative!r}")
    if os.name != "posix":
        return os.open(root.joinpath(*parts), flags, mode)
    fd = os.open(root, os.O_RDONLY | _DIRECTORY)
    try:
        for part in parts[:-1]:
            inner = os.open(part, os.O_RDONLY | _DIRECTORY | _NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = inner
        return os.open(parts[-1], flags | _NOFOLLOW, mode, dir_fd=fd)
    finally:
        os.close(fd)


def _open(path: Path, flags: int) -> int:
    """``path`` opened safely when it is one of the control files (``{workdir}/.fleet/x``)."""
    if path.parent.name == CONTROL:
        return open_beneath(path.parent.parent, f"{CONTROL}/{path.name}", flags)
    return os.open(path, flags | _NOFOLLOW, 0o644)


def _checked(fd: int) -> int:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
        os.close(fd)
        raise OSError(errno.EPERM, "not a regular file of its own")
    return fd


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for reading: a regular file reached without a symbolic link."""
    return os.fdopen(_checked(_open(path, os.O_RDONLY | _NONBLOCK)), "rb")


def control_dir(paths: WorkPaths) -> None:
    """Create ``.fleet`` (or replace whatever not-a-directory stands in its place)."""
    try:
        info = os.lstat(paths.control)
    except FileNotFoundError:
        paths.control.mkdir(parents=True)
        return
    if not stat.S_ISDIR(info.st_mode):
        os.unlink(paths.control)
        paths.control.mkdir()


def remove_file(path: Path) -> None:
    """Remove ``path`` (a link is removed, never followed)."""
    with contextlib.suppress(FileNotFoundError):
        if path.parent.name == CONTROL:
            fd = open_beneath(path.parent.parent, CONTROL, os.O_RDONLY | _DIRECTORY)
            try:
                os.unlink(path.name, dir_fd=fd)
            finally:
                os.close(fd)
        else:
            os.unlink(path)


def _create(path: Path, flags: int) -> BinaryIO:
    for _ in range(5):
        remove_file(path)
        try:
            fd = _open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | flags)
        except FileExistsError:
            continue  # the engine put something there again: remove it again
        return os.fdopen(fd, "wb")
    raise OSError(errno.EEXIST, f"{path.name} keeps being replaced")


def write_file(path: Path, text: str) -> None:
    """Write ``text`` to a new file at ``path`` in place of whatever is there."""
    with _create(path, 0) as handle:
        handle.write(text.encode("utf-8"))


def open_append(path: Path) -> BinaryIO:
    """``path`` for appending (a log): the same file when it is a regular file of its own, a
    new one otherwise."""
    try:
        return os.fdopen(_checked(_open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)), "ab")
    except OSError:
        return _create(path, os.O_APPEND)


def read_text(path: Path, limit: int = 1024 * 1024) -> str | None:
    try:
        with open_regular(path) as handle:
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
        with open_regular(path) as handle:
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
    """``relative`` inside ``workdir`` with no symbolic link on the way (an engine's link
    would lead the factory to a file of its own), or None if it would leave it or is not a
    regular file there."""
    parts = [p for p in relative.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    candidate = workdir.joinpath(*parts)
    try:
        for depth in range(1, len(parts) + 1):
            info = os.lstat(workdir.joinpath(*parts[:depth]))
            if stat.S_ISLNK(info.st_mode):
                return None
    except OSError:
        return None
    return candidate if stat.S_ISREG(info.st_mode) else None
