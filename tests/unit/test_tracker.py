"""The tracker bridge on the twin: idempotent ingest, GitHub's webhook bound to its
product (bindings, signatures, filters, de-duplication), the echo."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fleet.coordinator import Coordinator
from fleet.coordinator.clock import ManualClock
from fleet.coordinator.github import DELIVERY_TTL_SECONDS, RepositoryBound
from fleet.coordinator.tracker import (
    Delivered,
    GitHubDelivery,
    Ignored,
    Tracker,
    TrackerConfig,
    sign,
)
from fleet.domain.scheduler import FactoryView
from fleet.domain.stages import Action, Stage
from fleet.errors import NotFound, StoreUnavailable, Unauthorized, ValidationFailed
from fleet.store.memory import MemoryDocumentStore

P = "prod"
OTHER = "other"
REPO = "acme/app"
SECRET = "s3cret-of-acme-app"
OPERATOR = "operator:o"


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


def issue(
    number: int = 12,
    *,
    association: str = "MEMBER",
    labels: tuple[str, ...] = (),
    action: str = "opened",
    repository: str = REPO,
) -> dict[str, Any]:
    return {
        "action": action,
        "repository": {"full_name": repository},
        "issue": {
            "number": number,
            "title": f"Bug {number}",
            "body": "trace",
            "html_url": f"https://github.com/{repository}/issues/{number}",
            "author_association": association,
            "labels": [{"name": name} for name in labels],
        },
    }


def delivery(
    payload: dict[str, Any],
    secret: str = SECRET,
    delivery_id: str = "d-1",
    event: str = "issues",
) -> GitHubDelivery:
    body = json.dumps(payload).encode()
    return GitHubDelivery.of(event, delivery_id, sign(secret, body), body, payload)


@pytest.fixture
def tracker(coord: Coordinator) -> Tracker:
    return Tracker(coord, TrackerConfig())


@pytest.fixture
def bound(tracker: Tracker) -> Tracker:
    """``REPO`` bound to ``P`` with ``SECRET`` and the default associations."""
    tracker.github.put(P, REPO, SECRET, ("OWNER", "MEMBER", "COLLABORATOR"), None, OPERATOR)
    return tracker


def documents(coord: Coordinator) -> list[dict[str, Any]]:
    docs = coord.docs
    assert isinstance(docs, MemoryDocumentStore)
    return docs.all_docs()


# --- the delivery's headers ------------------------------------------------------------


@pytest.mark.parametrize(
    ("signature", "status"),
    [
        (None, 401),
        ("", 401),
        ("sha256=" + "é" * 64, 400),  # non-ASCII
        ("sha256=" + "0" * 63 + "é", 400),
        ("sha1=" + "0" * 40, 400),  # the wrong prefix (GitHub's older header's)
        ("0" * 64, 400),  # no prefix
        ("sha256=" + "0" * 63, 400),  # the wrong length
        ("sha256=" + "0" * 65, 400),
        ("sha256=" + "g" * 64, 400),  # not hexadecimal
        ("sha256=" + "0" * 64 + "\x00", 400),
    ],
)
def test_tracker_github_malformed_signature_header_is_400_or_401(
    signature: str | None, status: int
) -> None:
    expected = Unauthorized if status == 401 else ValidationFailed
    with pytest.raises(expected) as refused:
        GitHubDelivery.of("issues", "d-1", signature, b"{}", {})
    if isinstance(refused.value, ValidationFailed):
        assert refused.value.problems[0].path == "X-Hub-Signature-256"


@pytest.mark.parametrize("delivery_id", [None, "", "a/b", "x" * 101, "d\u00e9", "a b"])
def test_tracker_github_delivery_id_must_look_like_githubs(delivery_id: str | None) -> None:
    with pytest.raises(ValidationFailed) as refused:
        GitHubDelivery.of("issues", delivery_id, sign(SECRET, b"{}"), b"{}", {})
    assert refused.value.problems[0].path == "X-GitHub-Delivery"


def test_tracker_github_signature_is_checked_in_constant_time_against_the_secret() -> None:
    body = b'{"action":"opened"}'
    signed = GitHubDelivery.of("issues", "d-1", sign(SECRET, body), body, {})
    assert signed.signed_with(SECRET)
    assert not signed.signed_with("another-secret-entirely")
    upper = GitHubDelivery.of(
        "issues", "d-1", sign(SECRET, body).upper().replace("SHA256", "sha256"), body, {}
    )
    assert upper.signed_with(SECRET)  # hex digits in either case
    tampered = GitHubDelivery.of("issues", "d-1", sign(SECRET, body), body + b" ", {})
    assert not tampered.signed_with(SECRET)


# --- bindings ------------------------------------------------------------------------


def test_tracker_binding_is_one_per_repository_and_never_shows_its_secret(
    tracker: Tracker, coord: Coordinator
) -> None:
    binding, created = tracker.github.put(P, REPO, SECRET, ("OWNER",), "fleet", OPERATOR)
    assert created and binding.productId == P and binding.label == "fleet"
    assert P in coord.products()  # the operator's binding registers the product
    view = binding.as_view()
    assert view["secretSet"] is True and view["secretSetBy"] == OPERATOR
    assert SECRET not in json.dumps(view) and SECRET not in repr(binding)
    assert SECRET not in binding.model_dump_json()
    # Stored, so deliveries can be verified: in the binding document only.
    holding = [d for d in documents(coord) if SECRET in json.dumps(d)]
    assert [(d["productId"], d["type"]) for d in holding] == [(P, "tracker_binding")]
    index = coord.docs.read("_system", "github-repo-acme:app")
    assert index["product"] == P and "secret" not in index

    # Another product cannot take it (any spelling): 409, nothing written.
    before = documents(coord)
    for spelling in (REPO, "ACME/App"):
        with pytest.raises(RepositoryBound):
            tracker.github.put(OTHER, spelling, "x" * 16, ("OWNER",), None, "operator:p")
    assert documents(coord) == before and OTHER not in coord.products()

    # Changed without its secret: the secret is kept.
    changed, created = tracker.github.put(P, REPO, None, ("NONE",), None, "operator:q")
    assert not created and changed.secret.get_secret_value() == SECRET
    assert changed.secretSetBy == OPERATOR and changed.updatedBy == "operator:q"
    assert changed.allowedAssociations == ("NONE",) and changed.label is None
    assert [b.repository for b in tracker.github.of_product(P)] == [REPO]
    assert tracker.github.of_product(OTHER) == []


def test_tracker_binding_needs_a_secret_and_a_repository_name(tracker: Tracker) -> None:
    with pytest.raises(ValidationFailed) as refused:
        tracker.github.put(P, REPO, None, ("OWNER",), None, OPERATOR)
    assert refused.value.problems[0].path == "secret"
    for name in ("acme", "acme/", "/app", "ac me/app", "acme/app/x", "-acme/app"):
        with pytest.raises(ValidationFailed):
            tracker.github.put(P, name, SECRET, ("OWNER",), None, OPERATOR)
    assert tracker.github.of_product(P) == []


def test_tracker_unbound_repository_may_be_bound_elsewhere(bound: Tracker) -> None:
    bound.github.delete(P, REPO)
    assert bound.github.route(REPO) is None
    with pytest.raises(NotFound):
        bound.github.delete(P, REPO)
    binding, created = bound.github.put(OTHER, REPO, "y" * 16, ("OWNER",), None, OPERATOR)
    assert created and bound.github.route("Acme/APP") == binding


def test_tracker_index_left_alone_is_repaired_by_the_same_call(
    bound: Tracker, coord: Coordinator
) -> None:
    # An unbind whose last write was lost leaves the index: it routes nothing, keeps others
    # out, and the unbind retried removes it.
    coord.docs.delete(P, "github-acme:app")
    assert bound.github.route(REPO) is None
    with pytest.raises(RepositoryBound):
        bound.github.put(OTHER, REPO, "y" * 16, ("OWNER",), None, OPERATOR)
    bound.github.delete(P, REPO)
    assert bound.github.put(OTHER, REPO, "y" * 16, ("OWNER",), None, OPERATOR)[1]


# --- deliveries ----------------------------------------------------------------------


def test_tracker_github_issue_lands_in_the_bound_product_with_label_capabilities(
    bound: Tracker, coord: Coordinator
) -> None:
    outcome = bound.receive_github(delivery(issue(12, labels=("cap:python", "bug"))))
    assert isinstance(outcome, Delivered) and outcome.created
    job = outcome.job
    assert job.productId == P and job.capabilities == ("python",)
    assert job.tracker == {
        "source": "github",
        "id": "acme/app#12",
        "url": "https://github.com/acme/app/issues/12",
    }
    # GitHub's redelivery has the same id: nothing new, and the reply says so.
    again = bound.receive_github(delivery(issue(12, labels=("cap:python", "bug"))))
    assert again == Ignored("issues", "duplicate_delivery", "delivery d-1 was received before")
    # Another delivery of the same issue (reopened) is the same job.
    reopened = bound.receive_github(delivery(issue(12, action="reopened"), delivery_id="d-2"))
    assert isinstance(reopened, Delivered) and not reopened.created
    assert reopened.job.id == job.id
    assert len(coord.list_jobs(P)) == 1
    record = coord.docs.read(P, "github-delivery-d-1")
    assert record["ttl"] == DELIVERY_TTL_SECONDS


def test_tracker_github_delivery_for_an_unbound_repository_creates_nothing(
    tracker: Tracker, coord: Coordinator
) -> None:
    before = documents(coord)
    with coord.docs.counters.measure() as cost, pytest.raises(Unauthorized) as refused:
        tracker.receive_github(delivery(issue(repository="acme/elsewhere")))
    assert "X-Hub-Signature-256" in refused.value.message
    assert cost == {"read": 1}  # the index, and nothing else
    assert documents(coord) == before and coord.products() == []


@pytest.mark.parametrize(
    "payload",
    [
        {"action": "opened"},
        {"repository": "acme/app"},
        {"repository": {"full_name": 7}},
        {"repository": {"full_name": "acme/app/../x"}},
    ],
)
def test_tracker_github_delivery_naming_no_repository_is_refused(
    bound: Tracker, coord: Coordinator, payload: dict[str, Any]
) -> None:
    before = documents(coord)
    with pytest.raises(Unauthorized):
        bound.receive_github(delivery(payload))
    assert documents(coord) == before


def test_tracker_github_delivery_signed_with_another_secret_creates_nothing(
    bound: Tracker, coord: Coordinator
) -> None:
    bound.github.put(OTHER, "acme/other", "the-other-products-secret", ("MEMBER",), None, OPERATOR)
    before = documents(coord)
    # Signed with the other repository's secret, naming this one: refused.
    for secret in ("the-other-products-secret", "a-guessed-secret-value"):
        with pytest.raises(Unauthorized):
            bound.receive_github(delivery(issue(), secret=secret))
    assert documents(coord) == before


@pytest.mark.parametrize(
    ("association", "made"),
    [
        ("OWNER", True),
        ("MEMBER", True),
        ("COLLABORATOR", True),
        ("CONTRIBUTOR", False),
        ("FIRST_TIME_CONTRIBUTOR", False),
        ("FIRST_TIMER", False),
        ("MANNEQUIN", False),
        ("NONE", False),
        (None, False),  # absent: nobody
    ],
)
def test_tracker_github_issue_only_from_allowed_authors(
    bound: Tracker, coord: Coordinator, association: str | None, made: bool
) -> None:
    payload = issue()
    if association is None:
        del payload["issue"]["author_association"]
    else:
        payload["issue"]["author_association"] = association
    before = documents(coord)
    outcome = bound.receive_github(delivery(payload))
    if made:
        assert isinstance(outcome, Delivered)
        return
    assert isinstance(outcome, Ignored) and outcome.reason == "author_association"
    assert "OWNER, MEMBER, COLLABORATOR" in outcome.message
    assert documents(coord) == before  # not even the delivery is recorded


def test_tracker_github_issue_needs_the_label_when_the_binding_has_one(
    tracker: Tracker, coord: Coordinator
) -> None:
    tracker.github.put(P, REPO, SECRET, ("NONE", "MEMBER"), "Fleet", OPERATOR)
    unlabeled = tracker.receive_github(delivery(issue(labels=("bug",))))
    assert isinstance(unlabeled, Ignored) and unlabeled.reason == "label"
    assert coord.list_jobs(P) == []
    # A stranger's issue (allowed here), labeled by a maintainer: now it is a job.
    labeled = issue(association="NONE", labels=("bug", "fleet"), action="labeled")
    outcome = tracker.receive_github(delivery(labeled, delivery_id="d-2"))
    assert isinstance(outcome, Delivered) and outcome.created


@pytest.mark.parametrize(
    ("event", "payload", "reason"),
    [
        ("push", {"ref": "main", "repository": {"full_name": REPO}}, "event"),
        ("ping", {"zen": "hi", "repository": {"full_name": REPO}}, "event"),
        ("issues", issue(action="closed"), "action"),
        ("issues", issue(action="edited"), "action"),
    ],
)
def test_tracker_github_other_events_and_actions_are_acknowledged(
    bound: Tracker, coord: Coordinator, event: str, payload: dict[str, Any], reason: str
) -> None:
    before = documents(coord)
    outcome = bound.receive_github(delivery(payload, event=event))
    assert isinstance(outcome, Ignored) and (outcome.event, outcome.reason) == (event, reason)
    assert documents(coord) == before


def test_tracker_github_delivery_whose_job_failed_may_be_redelivered(
    bound: Tracker, coord: Coordinator, monkeypatch: pytest.MonkeyPatch
) -> None:
    def throttled(*args: object, **kwargs: object) -> object:
        raise StoreUnavailable("throttled")

    with monkeypatch.context() as patched:
        patched.setattr(bound, "ingest", throttled)
        with pytest.raises(StoreUnavailable):
            bound.receive_github(delivery(issue()))
    with pytest.raises(NotFound):  # the delivery id was given back...
        coord.docs.read(P, "github-delivery-d-1")
    outcome = bound.receive_github(delivery(issue()))  # ...so GitHub's redelivery lands
    assert isinstance(outcome, Delivered) and outcome.created


def test_tracker_github_issue_without_a_number_is_400_and_not_recorded(
    bound: Tracker, coord: Coordinator
) -> None:
    payload = issue()
    del payload["issue"]["number"]
    before = documents(coord)
    with pytest.raises(ValidationFailed):
        bound.receive_github(delivery(payload))
    assert documents(coord) == before


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
