"""The tracker bridge on the twin: idempotent ingest, GitHub signatures, the echo."""

from __future__ import annotations

import json

import pytest

from fleet.coordinator import Coordinator
from fleet.coordinator.clock import ManualClock
from fleet.coordinator.tracker import Tracker, TrackerConfig, sign, verify_github_signature
from fleet.domain.scheduler import FactoryView
from fleet.domain.stages import Action, Stage
from fleet.errors import Unauthorized

P = "prod"


class FlakyEndpoint:
    """Answers 500 the first ``failures`` times, then 200; records what it got."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.received: list[dict[str, object]] = []
        self.signatures: list[str] = []

    def __call__(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        if self.failures > 0:
            self.failures -= 1
            return 500
        self.received.append(json.loads(body))
        self.signatures.append(headers["X-Fleet-Signature-256"])
        return 200


def test_tracker_ingest_twice_is_one_job(coord: Coordinator) -> None:
    tracker = Tracker(coord, TrackerConfig())
    item = {"source": "jira", "id": "FLEET-7", "title": "Fix login", "body": "It breaks."}
    job, created = tracker.ingest(P, item, "operator:o")
    again, created_again = tracker.ingest(P, item, "operator:o")
    assert created and not created_again and again.id == job.id
    assert job.tracker == {"source": "jira", "id": "FLEET-7", "url": None}
    assert [j.id for j in coord.list_jobs(P)] == [job.id]


def test_tracker_github_signature_is_checked() -> None:
    body = b'{"action":"opened"}'
    verify_github_signature("s3cret", body, sign("s3cret", body))
    for header in (None, "sha256=00", sign("other", body)):
        with pytest.raises(Unauthorized):
            verify_github_signature("s3cret", body, header)
    with pytest.raises(Unauthorized):
        verify_github_signature(None, body, sign("s3cret", body))


def test_tracker_github_issue_becomes_a_job_with_label_capabilities(coord: Coordinator) -> None:
    tracker = Tracker(coord, TrackerConfig(webhook_secret="s"))
    payload = {
        "action": "opened",
        "repository": {"full_name": "acme/app"},
        "issue": {"number": 12, "title": "Crash", "body": "trace", "html_url": "https://x",
                  "labels": [{"name": "cap:python"}, {"name": "bug"}]},
    }  # fmt: skip
    job = tracker.ingest_github(P, "issues", payload)
    assert job is not None and job.capabilities == ("python",)
    assert tracker.ingest_github(P, "issues", payload) is not None
    assert len(coord.list_jobs(P)) == 1
    assert tracker.ingest_github(P, "push", payload) is None


def test_tracker_failing_echo_is_retried_with_backoff_and_never_blocks(
    coord: Coordinator, clock: ManualClock
) -> None:
    endpoint = FlakyEndpoint(failures=2)
    config = TrackerConfig(
        echo_url="https://hooks.example/fleet", echo_secret="k", settle_seconds=0
    )
    tracker = Tracker(coord, config, endpoint)
    job, _ = tracker.ingest(P, {"source": "gh", "id": "1", "title": "t"}, "operator:o")
    claim = coord.claim(P, FactoryView(id="f", capabilities=frozenset()))
    assert claim is not None
    clock.advance(1)
    assert tracker.echo(P) == 0  # the endpoint fails: nothing delivered...
    coord.report(P, job.id, "f", 1, stage=Stage.BUILDING)  # ...and the job moves on regardless
    assert tracker.status(P)["attempts"] == 1
    assert tracker.echo(P) == 0  # still backing off: not even tried
    clock.advance(2)
    assert tracker.echo(P) == 0  # tried again, failed again
    clock.advance(4)
    assert tracker.echo(P) == 3
    assert [e["to"] for e in endpoint.received] == ["queued", "assigned", "building"]
    body = json.dumps(endpoint.received[0], separators=(",", ":")).encode()
    assert endpoint.signatures[0] == sign("k", body)
    assert tracker.status(P)["attempts"] == 0
    assert tracker.echo(P) == 0  # nothing new


def test_tracker_echo_waits_until_events_have_settled(
    coord: Coordinator, clock: ManualClock
) -> None:
    # An event is stamped just before its write lands: one younger than the settle window
    # may still be landing behind the cursor, so it waits for a later pass.
    endpoint = FlakyEndpoint(failures=0)
    config = TrackerConfig(echo_url="https://hooks.example/fleet", echo_secret="k")
    tracker = Tracker(coord, config, endpoint)
    job, _ = tracker.ingest(P, {"source": "gh", "id": "1", "title": "t"}, "operator:o")
    assert tracker.echo(P) == 0 and endpoint.received == []
    clock.advance(TrackerConfig().settle_seconds - 1)
    coord.operator(P, job.id, Action.CANCEL, "o", "not needed")
    assert tracker.echo(P) == 0
    clock.advance(1)
    assert tracker.echo(P) == 1  # the submit has settled, the cancel not yet
    clock.advance(TrackerConfig().settle_seconds)
    assert tracker.echo(P) == 1
    assert [e["to"] for e in endpoint.received] == ["queued", "cancelled"]
