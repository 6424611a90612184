"""Artifacts: the engine's log and its declared outputs, kept beside the job.

The coordinator has no artifacts API yet (it is planned: blobs under
``{product}/{job}/{epoch}/{name}``, uploaded through short-lived SAS URLs). This module is
the seam the run loop already calls when an attempt ends: ``ArtifactSink.upload`` for each
file of ``collect``. The default sink, ``NoArtifacts``, uploads nothing; the files stay in
the work directory. An HTTP sink plugs in here once the API exists, without touching the
loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from factory_cli.workdir import WorkPaths, inside

MAX_DECLARED = 50


class ArtifactSink(Protocol):
    def upload(self, job_id: str, epoch: int, name: str, path: Path) -> None:
        """Keep ``path`` as the artifact ``name`` of the job's attempt at ``epoch``.
        Best effort: failures are the sink's to log, never the job's."""
        ...


class NoArtifacts:
    """Uploads nothing: the coordinator has no artifacts API yet."""

    def upload(self, job_id: str, epoch: int, name: str, path: Path) -> None:
        return None


def collect(paths: WorkPaths, declared: Sequence[str]) -> list[tuple[str, Path]]:
    """``(name, path)`` of the attempt's artifacts: the engine log, the verify log, and the
    files the engine declared in its progress file (``outputs``), inside the work dir only."""
    out: list[tuple[str, Path]] = []
    for name, path in (("engine.log", paths.log), ("verify.log", paths.verify_log)):
        if path.is_file():
            out.append((name, path))
    for relative in list(declared)[:MAX_DECLARED]:
        found = inside(paths.workdir, relative)
        if found is not None and found.is_file():
            out.append((relative.replace("\\", "/"), found))
    return out
