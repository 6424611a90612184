"""Artifacts: the engine's log, the diff and the engine's declared outputs, uploaded.

When an attempt ends (BEFORE its final report: after it the lease is gone and the coordinator
would fence the upload) the run loop uploads the files of ``collect`` through an
``ArtifactSink``. ``HttpArtifacts`` uses the coordinator's artifacts API: for each file it
asks ``POST /fleet/jobs/{id}/artifacts`` for a short-lived, write-only SAS URL (issued only
to the lease holder at that epoch) and PUTs the file there. Transient failures are retried
with backoff; a fenced answer is not. ``upload_all`` never raises: it returns the names
uploaded and short error strings for the run record. A SAS URL is a secret: no error, log
line or reply carries one.

``NoArtifacts`` uploads nothing (tests, offline use); the files stay in the work directory.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from factory_cli.api import ApiError, Conflict, Fenced, Unavailable
from factory_cli.backoff import backoff_delay
from factory_cli.workdir import WorkPaths, inside

log = logging.getLogger(__name__)

MAX_DECLARED = 50
MAX_ARTIFACT_BYTES = 100 * 1024 * 1024  # 100 MiB per artifact
MAX_ERROR_CHARS = 200
ATTEMPTS = 3
BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 10.0
# 409 codes that all mean "this attempt is over" (contract: treated alike).
FENCE_CODES = frozenset({"fenced", "timeout", "budget_exceeded"})

CONTENT_TYPES: Mapping[str, str] = {
    ".log": "text/plain",
    ".txt": "text/plain",
    ".md": "text/plain",
    ".patch": "text/x-diff",
    ".diff": "text/x-diff",
    ".json": "application/json",
}
DEFAULT_CONTENT_TYPE = "application/octet-stream"


class ArtifactError(Exception):
    """One artifact was not uploaded. ``code``: ``too_large``, ``missing``, ``fenced``,
    ``rejected`` or ``unavailable``; ``name``: the artifact. The message is short and never
    holds a URL."""

    def __init__(self, name: str, code: str, message: str) -> None:
        self.name = name
        self.code = code
        self.message = scrub(message)
        super().__init__(self.message)


class ArtifactSink(Protocol):
    def upload(self, job_id: str, epoch: int, name: str, path: Path) -> None:
        """Keep ``path`` as the artifact ``name`` of the job's attempt at ``epoch``; raises
        ``ArtifactError`` when it could not."""
        ...

    def upload_all(
        self, job_id: str, epoch: int, files: Sequence[tuple[str, Path]]
    ) -> tuple[list[str], list[str]]:
        """Upload each file; never raises: ``(names uploaded, short error strings)``."""
        ...


class ArtifactClient(Protocol):
    """What ``HttpArtifacts`` needs of ``FleetClient``."""

    def artifact_upload_url(
        self, job_id: str, lease_epoch: int, name: str, content_type: str | None = None
    ) -> dict[str, Any]: ...

    def put_artifact(self, upload: Mapping[str, Any], path: Path) -> None: ...


class NoArtifacts:
    """Uploads nothing (tests, offline use): the files stay in the work directory."""

    def upload(self, job_id: str, epoch: int, name: str, path: Path) -> None:
        return None

    def upload_all(
        self, job_id: str, epoch: int, files: Sequence[tuple[str, Path]]
    ) -> tuple[list[str], list[str]]:
        return [], []


def content_type(name: str) -> str:
    """The content type an artifact is uploaded with, by its extension."""
    return CONTENT_TYPES.get(Path(name).suffix.lower(), DEFAULT_CONTENT_TYPE)


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")
_SAS = re.compile(r"(?i)\b(sig|se|sp|sv|sr|st|skoid|sktid|skt|ske|sks|skv)=[^&\s]+")


def scrub(text: str) -> str:
    """``text`` without URLs or SAS query parameters, single-line and bounded."""
    clean = _SAS.sub(r"\1=…", _URL.sub("<url>", text))
    clean = " ".join(clean.split())
    return clean[:MAX_ERROR_CHARS]


class HttpArtifacts:
    """Uploads through the coordinator's artifacts API (see the module docstring).

    ``attempts``: tries per artifact, each asking for a fresh URL (one may have expired) and
    PUTting the file; retried after ``Unavailable`` (5xx, 429, timeouts, connection errors)
    with capped exponential backoff through ``sleep``. A 409 (``fenced``, ``timeout``,
    ``budget_exceeded``) or any other refusal is final at once."""

    def __init__(
        self,
        client: ArtifactClient,
        *,
        sleep: Callable[[float], None] = time.sleep,
        attempts: int = ATTEMPTS,
        max_bytes: int = MAX_ARTIFACT_BYTES,
        random_unit: Callable[[], float] = random.random,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.client = client
        self.sleep = sleep
        self.attempts = attempts
        self.max_bytes = max_bytes
        self.random_unit = random_unit
        self._lock = threading.Lock()

    def upload(self, job_id: str, epoch: int, name: str, path: Path) -> None:
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise ArtifactError(name, "missing", f"{name}: cannot read ({exc.strerror})") from None
        if size > self.max_bytes:
            raise ArtifactError(
                name,
                "too_large",
                f"{name}: not uploaded, {size} bytes is over the {self.max_bytes}-byte cap",
            )
        kind = content_type(name)
        for attempt in range(1, self.attempts + 1):
            try:
                with self._lock:  # the client's session is not thread-safe; the PUT is
                    issued = self.client.artifact_upload_url(job_id, epoch, name, kind)
                self.client.put_artifact(issued, path)
                return
            except (Fenced, Conflict) as exc:
                code = "fenced" if isinstance(exc, Fenced) or exc.code in FENCE_CODES else None
                raise ArtifactError(
                    name, code or "rejected", f"{name}: {exc.code or 'conflict'} (409)"
                ) from None
            except Unavailable as exc:
                if attempt == self.attempts:
                    raise ArtifactError(
                        name,
                        "unavailable",
                        f"{name}: not uploaded after {attempt} attempts: {_short(exc)}",
                    ) from None
                delay = backoff_delay(
                    attempt,
                    self.random_unit(),
                    base=BACKOFF_BASE_SECONDS,
                    cap=BACKOFF_CAP_SECONDS,
                    retry_after=exc.retry_after,
                )
                log.info(
                    "artifact %s of job %s: %s; retrying in %.1fs",
                    name,
                    job_id,
                    _short(exc),
                    delay,
                )
                self.sleep(delay)
            except ApiError as exc:
                raise ArtifactError(name, "rejected", f"{name}: {_short(exc)}") from None
            except OSError as exc:
                raise ArtifactError(
                    name, "missing", f"{name}: cannot read ({exc.strerror})"
                ) from None

    def upload_all(
        self, job_id: str, epoch: int, files: Sequence[tuple[str, Path]]
    ) -> tuple[list[str], list[str]]:
        """Upload each file; never raises. ``(names uploaded, short error strings)``. Once
        fenced, the rest are not tried (the coordinator would refuse them all)."""
        return upload_all(self, job_id, epoch, files)


def upload_all(
    sink: ArtifactSink, job_id: str, epoch: int, files: Sequence[tuple[str, Path]]
) -> tuple[list[str], list[str]]:
    """``HttpArtifacts.upload_all`` for any sink: never raises."""
    uploaded: list[str] = []
    errors: list[str] = []
    for index, (name, path) in enumerate(files):
        try:
            sink.upload(job_id, epoch, name, path)
        except ArtifactError as exc:
            errors.append(exc.message)
            log.warning("job %s: artifact not uploaded: %s", job_id, exc.message)
            if exc.code == "fenced":
                skipped = [n for n, _ in files[index + 1 :]]
                if skipped:
                    errors.append(scrub(f"fenced: not tried: {', '.join(skipped)}"))
                break
        except Exception as exc:  # a sink's failure is never the job's
            errors.append(scrub(f"{name}: {type(exc).__name__}"))
            log.warning("job %s: artifact %s not uploaded: %s", job_id, name, type(exc).__name__)
        else:
            uploaded.append(name)
    return uploaded, errors


def _short(exc: ApiError) -> str:
    """An API error as a few words: the status and the code, never the message's URL."""
    if exc.status is not None:
        return f"HTTP {exc.status}" + (f" {exc.code}" if exc.code else "")
    # A transport failure: its message names the method, path and exception type only.
    return scrub(exc.message)


def collect(paths: WorkPaths, declared: Sequence[str]) -> list[tuple[str, Path]]:
    """``(name, path)`` of the attempt's artifacts: the engine log, the diff against the base
    (``.fleet/diff.patch``, written by the factory), the verify log, and the files the engine
    declared in its progress file (``outputs``), inside the work dir only, each name once."""
    out: list[tuple[str, Path]] = []
    seen: set[str] = set()
    for name, path in (
        ("engine.log", paths.log),
        ("diff.patch", paths.diff_patch),
        ("verify.log", paths.verify_log),
    ):
        if inside(paths.workdir, path.relative_to(paths.workdir).as_posix()) is not None:
            out.append((name, path))  # a regular file, not a link an engine left there
            seen.add(name)
    for relative in list(declared)[:MAX_DECLARED]:
        found = inside(paths.workdir, relative)
        name = _artifact_name(relative)
        if found is not None and name and name not in seen:
            out.append((name, found))
            seen.add(name)
    return out


def _artifact_name(relative: str) -> str:
    """A declared path as an artifact name: forward slashes, no ``./`` or empty parts."""
    parts = [p for p in relative.replace("\\", "/").split("/") if p not in ("", ".")]
    return "/".join(parts)
