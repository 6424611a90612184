"""Artifacts on the twins: write URLs only for the current holder, pointers, delete."""

from __future__ import annotations

import pytest

from fleet.coordinator import Coordinator
from fleet.coordinator.artifacts import ArtifactNotFound
from fleet.coordinator.clock import ManualClock
from fleet.domain.manifest import Manifest
from fleet.domain.scheduler import FactoryView
from fleet.errors import Fenced, ValidationFailed
from fleet.store.ports import Stores

P = "prod"


def _claimed(coord: Coordinator, name: str = "f") -> tuple[str, int]:
    job, _ = coord.submit(P, Manifest(title="t", leaseSeconds=30), "operator:o")
    claim = coord.claim(P, FactoryView(id=name, capabilities=frozenset()))
    assert claim is not None
    return job.id, claim.lease.epoch


def test_artifacts_holder_gets_a_url_scoped_to_its_epoch(coord: Coordinator) -> None:
    job, epoch = _claimed(coord)
    issued = coord.artifacts.issue_upload(P, job, "f", epoch, "logs/run.txt", "text/plain")
    assert issued["blob"] == f"{P}/{job}/{epoch}/logs/run.txt"
    assert "sp=cw" in issued["url"]
    listed = coord.artifacts.list(P, job)
    assert [(a["name"], a["size"]) for a in listed] == [("logs/run.txt", None)]


def test_artifacts_zombie_is_denied_after_reassignment(
    coord: Coordinator, clock: ManualClock
) -> None:
    job, epoch = _claimed(coord, "zombie")
    clock.advance(31)
    coord.reap(P)
    assert coord.claim(P, FactoryView(id="fresh", capabilities=frozenset())) is not None
    with pytest.raises(Fenced):
        coord.artifacts.issue_upload(P, job, "zombie", epoch, "out.bin", None)
    assert coord.artifacts.list(P, job) == []


def test_artifacts_size_and_type_recorded_once_uploaded_then_deleted(
    coord: Coordinator, stores: Stores
) -> None:
    job, epoch = _claimed(coord)
    issued = coord.artifacts.issue_upload(P, job, "f", epoch, "out.json", "application/json")
    stores.blobs.upload("artifacts", issued["blob"], b'{"ok":1}', content_type="application/json")
    (artifact,) = coord.artifacts.list(P, job)
    assert (artifact["size"], artifact["contentType"]) == (8, "application/json")
    assert "sp=r" in coord.artifacts.download_url(P, job, artifact["id"])["url"]
    coord.artifacts.delete(P, job, artifact["id"])
    assert coord.artifacts.list(P, job) == []
    with pytest.raises(ArtifactNotFound):
        coord.artifacts.download_url(P, job, artifact["id"])


@pytest.mark.parametrize("name", ["../escape", "/abs", "a//b", "", "x" * 201, "sp ace"])
def test_artifacts_bad_names_are_refused(coord: Coordinator, name: str) -> None:
    job, epoch = _claimed(coord)
    with pytest.raises(ValidationFailed) as caught:
        coord.artifacts.issue_upload(P, job, "f", epoch, name, None)
    assert caught.value.problems[0].path == "name"
