"""One set of builders for the tests' jobs, manifests and factories (instead of a copy in
each module)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from fleet.domain.manifest import Manifest
from fleet.domain.models import Event, Job, queue_key
from fleet.domain.scheduler import FactoryView
from fleet.domain.stages import Stage

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def job(n: int = 1, **fields: Any) -> Job:
    """A queued job document (id from ``n``, created at ``T0``, its submit event), with
    ``fields`` on top."""
    job_id = f"j{n:026d}"
    base: dict[str, Any] = {
        "id": job_id,
        "productId": "p",
        "title": "t",
        "stage": Stage.QUEUED,
        "createdAt": T0,
        "updatedAt": T0,
        "lastEventAt": T0,
        "queueKey": queue_key(5, T0, job_id),
        "seq": 1,
        "events": (
            Event(
                seq=1,
                type="submit",
                at=T0,
                actor="o",
                epoch=0,
                fromStage=None,
                toStage=Stage.QUEUED,
            ),
        ),
    }
    base.update(fields)
    return Job(**base)


def manifest(**fields: Any) -> Manifest:
    """A manifest with a title and a body, ``fields`` on top."""
    return Manifest(**{"title": "do a thing", "body": "# Task\n", **fields})


def factory_view(name: str = "f1", caps: Iterable[str] = ("python",), **kw: Any) -> FactoryView:
    """A factory as the scheduler sees it (``python`` by default)."""
    return FactoryView(id=name, capabilities=frozenset(caps), **kw)
