"""Artifacts over HTTP (``responses``): the URL issued, the PUT, retries, fencing, secrets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
import responses

from factory_cli.api import FleetClient
from factory_cli.artifacts import (
    ArtifactError,
    HttpArtifacts,
    NoArtifacts,
    collect,
    content_type,
    upload_all,
)
from factory_cli.workdir import WorkPaths

API = "http://fleet.test/api"
BLOB = "http://blob.test/artifacts/p/j1/3"
SAS = "sv=2024-01-01&se=2026-01-01T00%3A15%3A00Z&sp=cw&sr=b&sig=SECRETSIGNATURE"
ISSUE = f"{API}/fleet/jobs/j1/artifacts"


def issued(name: str) -> dict[str, object]:
    return {
        "artifactId": f"art-{name}",
        "url": f"{BLOB}/{name}?{SAS}",
        "method": "PUT",
        "headers": {"x-ms-blob-type": "BlockBlob", "x-ms-blob-content-type": content_type(name)},
        "expiresAt": "2026-01-01T00:15:00Z",
        "blob": f"p/j1/3/{name}",
    }


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def sink(sleeps: list[float]) -> HttpArtifacts:
    return HttpArtifacts(FleetClient(API, "flf_t"), sleep=sleeps.append, random_unit=lambda: 0.0)


def log_file(tmp_path: Path, text: str = "hello\n") -> Path:
    path = tmp_path / "engine.log"
    path.write_text(text)
    return path


def test_artifacts_url_issued_then_put_with_its_headers(
    rsps: responses.RequestsMock, sink: HttpArtifacts, tmp_path: Path
) -> None:
    rsps.post(ISSUE, status=201, json=issued("engine.log"))
    rsps.put(f"{BLOB}/engine.log", status=201)
    sink.upload("j1", 3, "engine.log", log_file(tmp_path))
    ask, put = (c.request for c in rsps.calls)
    assert json.loads(ask.body or b"") == {
        "leaseEpoch": 3,
        "name": "engine.log",
        "contentType": "text/plain",
    }
    assert ask.headers["Authorization"] == "Bearer flf_t"
    assert "sig=SECRETSIGNATURE" in (put.url or "")
    assert put.headers["x-ms-blob-type"] == "BlockBlob"
    assert put.headers["x-ms-blob-content-type"] == "text/plain"
    assert put.headers["Content-Length"] == "6"
    assert "Authorization" not in put.headers  # the factory token never goes to storage
    assert put.body == b"hello\n"  # responses reads the streamed file


def test_artifacts_transient_failures_retried_then_uploaded(
    rsps: responses.RequestsMock, sink: HttpArtifacts, sleeps: list[float], tmp_path: Path
) -> None:
    rsps.post(ISSUE, status=503, json={"error": "unavailable"})
    rsps.post(ISSUE, status=201, json=issued("diff.patch"))
    rsps.put(f"{BLOB}/diff.patch", status=500)
    rsps.post(ISSUE, status=201, json=issued("diff.patch"))
    rsps.put(f"{BLOB}/diff.patch", status=201)
    patch = tmp_path / "diff.patch"
    patch.write_text("--- a\n+++ b\n")
    assert sink.upload_all("j1", 3, [("diff.patch", patch)]) == (["diff.patch"], [])
    assert len(sleeps) == 2 and sleeps[0] < sleeps[1]  # backoff grows
    assert json.loads(rsps.calls[0].request.body or b"")["contentType"] == "text/x-diff"


def test_artifacts_connection_errors_exhausted_recorded_never_raised(
    rsps: responses.RequestsMock, sink: HttpArtifacts, sleeps: list[float], tmp_path: Path
) -> None:
    rsps.post(ISSUE, status=201, json=issued("engine.log"))
    rsps.put(f"{BLOB}/engine.log", body=requests.ConnectionError(f"cannot reach {BLOB}?{SAS}"))
    uploaded, errors = sink.upload_all("j1", 3, [("engine.log", log_file(tmp_path))])
    assert uploaded == []
    (error,) = errors
    assert error.startswith("engine.log: not uploaded after 3 attempts")
    assert "SECRET" not in error and "http" not in error and "sig=" not in error
    assert len(sleeps) == 2
    with pytest.raises(ArtifactError) as raised:
        sink.upload("j1", 3, "engine.log", log_file(tmp_path))
    assert raised.value.code == "unavailable" and "SECRET" not in str(raised.value)


def test_artifacts_fenced_not_retried_and_the_rest_not_tried(
    rsps: responses.RequestsMock, sink: HttpArtifacts, sleeps: list[float], tmp_path: Path
) -> None:
    rsps.post(ISSUE, status=409, json={"error": "fenced", "message": "stale epoch"})
    files = [("engine.log", log_file(tmp_path)), ("verify.log", log_file(tmp_path))]
    uploaded, errors = sink.upload_all("j1", 3, files)
    assert uploaded == [] and sleeps == [] and len(rsps.calls) == 1
    assert errors == ["engine.log: fenced (409)", "fenced: not tried: verify.log"]
    rsps.post(ISSUE, status=409, json={"error": "timeout"})
    with pytest.raises(ArtifactError) as raised:
        sink.upload("j1", 3, "engine.log", files[0][1])
    assert raised.value.code == "fenced"


def test_artifacts_sas_url_never_in_an_error(
    rsps: responses.RequestsMock, sink: HttpArtifacts, tmp_path: Path
) -> None:
    rsps.post(ISSUE, status=201, json=issued("engine.log"))
    rsps.put(
        f"{BLOB}/engine.log",
        status=403,
        body=f"<Error><Message>Signature did not match {SAS}</Message></Error>",
        headers={"x-ms-error-code": "AuthenticationFailed"},
    )
    _, errors = sink.upload_all("j1", 3, [("engine.log", log_file(tmp_path))])
    assert errors == ["engine.log: HTTP 403 AuthenticationFailed"]


def test_artifacts_over_the_size_cap_not_uploaded(
    rsps: responses.RequestsMock, sleeps: list[float], tmp_path: Path
) -> None:
    sink = HttpArtifacts(FleetClient(API, "t"), sleep=sleeps.append, max_bytes=4)
    uploaded, errors = sink.upload_all("j1", 3, [("engine.log", log_file(tmp_path))])
    assert uploaded == [] and len(rsps.calls) == 0
    assert errors == ["engine.log: not uploaded, 6 bytes is over the 4-byte cap"]


def test_artifacts_content_types_by_extension() -> None:
    assert [content_type(n) for n in ("a.log", "b.TXT", "c.md", "d.patch", "e.diff")] == [
        "text/plain",
        "text/plain",
        "text/plain",
        "text/x-diff",
        "text/x-diff",
    ]
    assert content_type("r.json") == "application/json"
    assert content_type("bin/tool") == content_type("x.tar.gz") == "application/octet-stream"


def test_artifacts_collect_includes_the_diff_and_declared_outputs(tmp_path: Path) -> None:
    paths = WorkPaths(tmp_path)
    paths.control.mkdir()
    paths.log.write_text("log")
    paths.diff_patch.write_text("diff")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.md").write_text("r")
    files = collect(paths, ["./out/report.md", "../escape", "out/report.md", "missing.txt"])
    assert files == [
        ("engine.log", paths.log),
        ("diff.patch", paths.diff_patch),
        ("out/report.md", (tmp_path / "out" / "report.md").resolve()),
    ]


def test_artifacts_no_artifacts_sink_and_any_sink_failure_is_recorded(tmp_path: Path) -> None:
    path = log_file(tmp_path)
    assert NoArtifacts().upload_all("j1", 1, [("engine.log", path)]) == ([], [])

    class Broken:
        def upload(self, job_id: str, epoch: int, name: str, path: Path) -> None:
            raise RuntimeError(f"boom {BLOB}?{SAS}")

    uploaded, errors = upload_all(Broken(), "j1", 1, [("engine.log", path)])  # type: ignore[arg-type]
    assert uploaded == [] and errors == ["engine.log: RuntimeError"]
