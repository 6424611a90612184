"""Artifacts on the twins: write URLs only for the current holder, pointers, delete."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from factory_cli import artifacts as sink
from fleet.coordinator import Coordinator
from fleet.coordinator.artifacts import ArtifactNotFound, allowed_content_type
from fleet.coordinator.clock import ManualClock
from fleet.domain.manifest import Manifest
from fleet.domain.scheduler import FactoryView
from fleet.errors import Fenced, ValidationFailed
from fleet.store.ports import Stores
from fleet.store.queries import DOCS_OF_TYPE

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
    listed, more = coord.artifacts.list(P, job)
    assert [(a["name"], a["size"]) for a in listed] == [("logs/run.txt", None)] and not more


def test_artifacts_zombie_is_denied_after_reassignment(
    coord: Coordinator, clock: ManualClock
) -> None:
    job, epoch = _claimed(coord, "zombie")
    clock.advance(31)
    coord.reap(P)
    assert coord.claim(P, FactoryView(id="fresh", capabilities=frozenset())) is not None
    with pytest.raises(Fenced):
        coord.artifacts.issue_upload(P, job, "zombie", epoch, "out.bin", None)
    assert coord.artifacts.list(P, job) == ([], False)


def test_artifacts_size_and_type_recorded_once_uploaded_then_deleted(
    coord: Coordinator, stores: Stores
) -> None:
    job, epoch = _claimed(coord)
    issued = coord.artifacts.issue_upload(P, job, "f", epoch, "out.json", "application/json")
    stores.blobs.upload("artifacts", issued["blob"], b'{"ok":1}', content_type="application/json")
    (artifact,), _ = coord.artifacts.list(P, job)
    assert (artifact["size"], artifact["contentType"]) == (8, "application/json")
    assert "sp=r" in coord.artifacts.download_url(P, job, artifact["id"])["url"]
    coord.artifacts.delete(P, job, artifact["id"])
    assert coord.artifacts.list(P, job) == ([], False)
    with pytest.raises(ArtifactNotFound):
        coord.artifacts.download_url(P, job, artifact["id"])


@pytest.mark.parametrize("name", ["../escape", "/abs", "a//b", "", "x" * 201, "sp ace"])
def test_artifacts_bad_names_are_refused(coord: Coordinator, name: str) -> None:
    job, epoch = _claimed(coord)
    with pytest.raises(ValidationFailed) as caught:
        coord.artifacts.issue_upload(P, job, "f", epoch, name, None)
    assert caught.value.problems[0].path == "name"


# --- least exposure: content types, downloads, a bounded list ----------------------------


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("text/plain", "text/plain"),
        ("Text/Plain; Charset=UTF-8", "text/plain; charset=utf-8"),
        ("application/x-ndjson", "application/x-ndjson"),
        ("application/gzip", "application/gzip"),
        ("image/png", "image/png"),
        (None, None),
    ],
)
def test_artifacts_allowed_content_types_are_kept(
    coord: Coordinator, given: str | None, kept: str | None
) -> None:
    job, epoch = _claimed(coord)
    issued = coord.artifacts.issue_upload(P, job, "f", epoch, "out", given)
    headers = {"x-ms-blob-content-type": kept} if kept else {}
    assert issued["headers"] == {"x-ms-blob-type": "BlockBlob", **headers}
    (artifact,), _ = coord.artifacts.list(P, job)
    assert artifact["contentType"] == kept


@pytest.mark.parametrize(
    "given",
    [
        "text/html",
        "TEXT/HTML",
        "application/xhtml+xml",
        "image/svg+xml",
        "application/javascript",
        "text/javascript",
        "text/xml",
        "text/plain; charset=utf-8; x=1",
        "text/plain;,text/html",
        "",
    ],
)
def test_artifacts_other_content_types_are_refused_and_nothing_is_created(
    coord: Coordinator, stores: Stores, given: str
) -> None:
    job, epoch = _claimed(coord)
    with pytest.raises(ValidationFailed) as refused:
        coord.artifacts.issue_upload(P, job, "f", epoch, "page", given)
    (problem,) = refused.value.problems
    assert (problem.path, problem.code) == ("contentType", "content_type_not_allowed")
    assert coord.artifacts.list(P, job) == ([], False)
    assert stores.documents.query(DOCS_OF_TYPE, P, {"type": "attempt_quota"}) == []


def test_artifacts_an_upload_of_another_type_is_served_as_bytes(
    coord: Coordinator, stores: Stores
) -> None:
    job, epoch = _claimed(coord)
    issued = coord.artifacts.issue_upload(P, job, "f", epoch, "x/notes.md", "text/markdown")
    stores.blobs.upload("artifacts", issued["blob"], b"<svg/>", content_type="image/svg+xml")
    (artifact,), _ = coord.artifacts.list(P, job)
    assert artifact["contentType"] == "application/octet-stream"  # what it set is not allowed
    url = coord.artifacts.download_url(P, job, artifact["id"])["url"]
    query = parse_qs(urlsplit(url).query)
    assert query["rscd"] == ['attachment; filename="notes.md"']
    assert query["rsct"] == ["application/octet-stream"]


def test_artifacts_are_listed_by_one_bounded_query_on_the_job(
    coord: Coordinator, stores: Stores
) -> None:
    job, epoch = _claimed(coord)
    other, other_epoch = _claimed(coord, "g")
    for n in range(5):
        coord.artifacts.issue_upload(P, job, "f", epoch, f"a{n}", None)
    coord.artifacts.issue_upload(P, other, "g", other_epoch, "theirs", None)
    stores.blobs.upload("artifacts", f"{P}/{job}/{epoch}/a0", b"0")
    with stores.counters.measure() as calls:
        listed, more = coord.artifacts.list(P, job, limit=3)
    assert (len(listed), more) == (3, True)
    # The job's read, one query, then one blob read per pointer not yet finalized (and a
    # replace for the one uploaded).
    assert calls["query"] == 1 and calls["read"] == 1
    listed, more = coord.artifacts.list(P, job)
    assert [a["name"] for a in listed] == [f"a{n}" for n in range(5)] and not more


def test_artifacts_list_keeps_the_newest_attempts_when_bounded(
    coord: Coordinator, clock: ManualClock
) -> None:
    job, first = _claimed(coord, "old")
    coord.artifacts.issue_upload(P, job, "old", first, "first.log", None)
    clock.advance(31)
    coord.reap(P)
    claim = coord.claim(P, FactoryView(id="new", capabilities=frozenset()))
    assert claim is not None
    coord.artifacts.issue_upload(P, job, "new", claim.lease.epoch, "second.log", None)
    listed, more = coord.artifacts.list(P, job, limit=1)
    assert [a["name"] for a in listed] == ["second.log"] and more


def test_artifacts_the_factory_sends_only_allowed_content_types() -> None:
    sent = {*sink.CONTENT_TYPES.values(), sink.DEFAULT_CONTENT_TYPE}
    assert {allowed_content_type(t) for t in sent} == sent
