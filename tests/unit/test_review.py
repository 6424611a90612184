"""The review quorum on the in-memory twin: rounds, votes, comments, fencing, replay."""

from __future__ import annotations

from typing import Any

import pytest

from fleet.context import AppContext
from fleet.coordinator import Coordinator
from fleet.coordinator.clock import ManualClock
from fleet.coordinator.review import Reviewer
from fleet.coordinator.tokens import Tokens
from fleet.domain import review as R
from fleet.domain.jobs import agrees
from fleet.domain.manifest import parse_json, parse_markdown, render_markdown
from fleet.domain.models import Factory, Job, ReviewSpec
from fleet.domain.scheduler import FactoryView
from fleet.domain.stages import Action, Stage
from fleet.errors import (
    AlreadyVoted,
    Fenced,
    FleetError,
    NotInReview,
    ReviewRefused,
    ValidationFailed,
)
from fleet.http import tokens as tokens_http
from fleet.http.parsing import FactorySelf
from fleet.http.responses import status_for
from fleet.store.ports import Set
from tests.support.builders import T0, manifest
from tests.support.handlers import OPERATOR, call, documented

P = "prod"
ALICE = Reviewer("operator", "alice")
BOB = Reviewer("operator", "bob")


def enroll(coord: Coordinator, name: str, *caps: str) -> FactoryView:
    view = FactoryView(id=name, capabilities=frozenset(("python", *caps)))
    coord.register_factory(P, view, "test")
    return view


def build(
    coord: Coordinator, job_id: str, view: FactoryView, *, checkpoint: Any = None
) -> tuple[Job, int]:
    """Claim the job with ``view`` and report it shipped; returns the job and the epoch."""
    result = coord.claim(P, view)
    assert result is not None and result.job.id == job_id
    epoch = result.lease.epoch
    coord.report(P, job_id, view.id, epoch, stage=Stage.BUILDING, checkpoint=checkpoint)
    job = coord.report(P, job_id, view.id, epoch, stage=Stage.SHIPPED, result={"ok": True})
    return job, epoch


def history_agrees(coord: Coordinator, job: Job) -> bool:
    return agrees(job, coord.job_events(P, job.id))


def code_of(exc: pytest.ExceptionInfo[FleetError]) -> tuple[int, str]:
    return status_for(exc.value), exc.value.code


# --- the must-show case ----------------------------------------------------------------


def test_review_quorum_of_two_with_one_rejection_round_trip_carrying_comments(
    coord: Coordinator, clock: ManualClock
) -> None:
    author = enroll(coord, "author", "engine:claude")
    second = enroll(coord, "second", "engine:claude")
    job, _ = coord.submit(P, manifest(review=ReviewSpec(approvals=2)), "operator:o")
    gate = coord.queue_state(P)["version"]

    # Round 1: shipped is not shipped yet; the lease ends, the gate wakes reviewers.
    job, epoch = build(coord, job.id, author, checkpoint={"branch": "wip/1"})
    assert job.stage is Stage.REVIEW and job.lease is None
    assert job.events[-1].type == "submit_review"
    assert "review required: 2 approval(s)" in (job.events[-1].reason or "")
    assert job.reviewState is not None and job.reviewState.round == 1
    assert (job.reviewState.author, job.reviewState.authorKind) == ("author", "claude")
    assert coord.queue_state(P)["version"] > gate

    clock.advance(5)
    job = coord.reviews.vote(P, job.id, ALICE, "approve", "looks fine")
    assert job.stage is Stage.REVIEW and job.events[-1].type == "review_vote"
    clock.advance(5)
    job = coord.reviews.vote(P, job.id, BOB, "reject", "tests are missing for the parser")
    assert job.stage is Stage.QUEUED and job.attempts == 0
    assert [e.type for e in job.events[-2:]] == ["review_vote", "review_reject"]
    # The builder's checkpoint is kept; the comments of every vote ride along.
    review = job.checkpoint["review"]
    assert job.checkpoint["branch"] == "wip/1"
    assert review["round"] == 1 and review["outcome"] == "rejected"
    assert [(c["reviewer"], c["verdict"], c["comments"]) for c in review["comments"]] == [
        ("operator:alice", "approve", "looks fine"),
        ("operator:bob", "reject", "tests are missing for the parser"),
    ]

    # Round 2: the next claimer sees the comments in its claim's checkpoint.
    claimed = coord.claim(P, second)
    assert claimed is not None and claimed.lease.epoch == epoch + 1
    assert claimed.job.checkpoint["review"]["comments"][1]["comments"] == (
        "tests are missing for the parser"
    )
    coord.report(P, job.id, "second", claimed.lease.epoch, stage=Stage.BUILDING)
    job = coord.report(P, job.id, "second", claimed.lease.epoch, stage=Stage.SHIPPED)
    assert job.stage is Stage.REVIEW and job.reviewState is not None
    assert job.reviewState.round == 2 and job.reviewState.votes == ()
    assert job.reviewState.author == "second"
    assert [r.outcome for r in job.reviewState.history] == ["rejected"]

    job = coord.reviews.vote(P, job.id, BOB, "approve", "tests added, thanks")
    assert job.stage is Stage.REVIEW
    # The first round's author may review the second round's attempt.
    job = coord.reviews.vote(P, job.id, Reviewer("factory", "author"), "approve", "lgtm")
    assert job.stage is Stage.SHIPPED and job.events[-1].type == "approve_quorum"
    assert job.reviewState is not None and job.reviewState.outcome == "approved"
    assert "factory:author" in (job.events[-1].reason or "")
    assert history_agrees(coord, job)


# --- who may vote ------------------------------------------------------------------------


def in_review(coord: Coordinator, spec: ReviewSpec, author: FactoryView) -> Job:
    job, _ = coord.submit(P, manifest(review=spec), "operator:o")
    job, _ = build(coord, job.id, author)
    assert job.stage is Stage.REVIEW
    return job


def test_review_author_cannot_review_its_own_attempt(coord: Coordinator) -> None:
    author = enroll(coord, "author", "engine:claude")
    job = in_review(coord, ReviewSpec(approvals=1), author)
    with pytest.raises(R.SelfReview) as refused:
        coord.reviews.vote(P, job.id, Reviewer("factory", "author"), "approve", "mine is great")
    assert code_of(refused) == (403, "self_review")
    after = coord.get_job(P, job.id)
    assert after.seq == job.seq and after.reviewState == job.reviewState  # nothing written


def test_review_distinct_kind_is_enforced(coord: Coordinator) -> None:
    author = enroll(coord, "author", "engine:claude")
    enroll(coord, "cousin", "engine:claude", "engine:codex")
    enroll(coord, "other", "engine:codex")
    enroll(coord, "family", "kind:gpt", "engine:claude")  # kind: wins over engine:
    job = in_review(coord, ReviewSpec(approvals=3, distinctKind=True), author)
    with pytest.raises(R.SameKind) as refused:
        coord.reviews.vote(P, job.id, Reviewer("factory", "cousin"), "approve", "")
    assert code_of(refused) == (403, "same_kind")
    with pytest.raises(R.SameKind):
        coord.reviews.vote(P, job.id, ALICE, "approve", "", kind="claude")
    with pytest.raises(ReviewRefused):  # a factory cannot claim a kind it does not have
        coord.reviews.vote(P, job.id, Reviewer("factory", "other"), "approve", "", kind="human")
    coord.reviews.vote(P, job.id, Reviewer("factory", "other"), "approve", "ok")
    coord.reviews.vote(P, job.id, Reviewer("factory", "family"), "approve", "ok")
    job = coord.reviews.vote(P, job.id, ALICE, "approve", "ok")  # human by default
    assert job.stage is Stage.SHIPPED and job.reviewState is not None
    assert [v.kind for v in job.reviewState.votes] == ["codex", "gpt", "human"]


def test_review_double_vote_is_refused_with_a_code(coord: Coordinator) -> None:
    job = in_review(coord, ReviewSpec(approvals=2), enroll(coord, "author"))
    coord.reviews.vote(P, job.id, ALICE, "approve", "")
    with pytest.raises(AlreadyVoted) as refused:
        coord.reviews.vote(P, job.id, ALICE, "approve", "", kind="claude")
    assert code_of(refused) == (409, "already_voted")
    assert refused.value.details["round"] == 1
    assert coord.get_job(P, job.id).stage is Stage.REVIEW


def test_review_vote_on_a_job_not_in_review_is_409(coord: Coordinator) -> None:
    job, _ = coord.submit(P, manifest(review=2), "operator:o")
    with pytest.raises(NotInReview) as refused:
        coord.reviews.vote(P, job.id, ALICE, "approve", "")
    assert code_of(refused) == (409, "not_in_review")
    with pytest.raises(NotInReview):
        coord.reviews.request(P, job.id, ALICE)


# --- rounds ------------------------------------------------------------------------------


def test_review_rounds_are_bounded_then_failed(coord: Coordinator) -> None:
    author = enroll(coord, "author")
    job, _ = coord.submit(P, manifest(review={"approvals": 1, "maxRounds": 2}), "operator:o")
    for round_ in (1, 2):
        job, _ = build(coord, job.id, author)
        assert job.reviewState is not None and job.reviewState.round == round_
        job = coord.reviews.vote(P, job.id, ALICE, "reject", f"not yet ({round_})")
    assert job.stage is Stage.FAILED and job.events[-1].type == "review_exhausted"
    assert "the last of 2" in (job.events[-1].reason or "")
    assert job.reviewState is not None and job.reviewState.outcome == "exhausted"
    assert [r.outcome for r in job.reviewState.history] == ["rejected"]
    assert history_agrees(coord, job)


def test_review_checkpoint_that_is_not_an_object_is_wrapped(coord: Coordinator) -> None:
    author = enroll(coord, "author")
    job, _ = coord.submit(P, manifest(review=1), "operator:o")
    job, _ = build(coord, job.id, author, checkpoint="sha:abc123")
    job = coord.reviews.vote(P, job.id, ALICE, "reject", "rename the flag")
    assert job.checkpoint["value"] == "sha:abc123"
    assert job.checkpoint["review"]["comments"][0]["comments"] == "rename the flag"
    assert R.with_review(None, {"round": 1}) == {"review": {"round": 1}}


def test_review_zombie_cannot_report_after_a_rejection_requeue(coord: Coordinator) -> None:
    author = enroll(coord, "author")
    job, _ = coord.submit(P, manifest(review=1), "operator:o")
    job, epoch = build(coord, job.id, author)
    with pytest.raises(Fenced):  # in review the lease is over already
        coord.report(P, job.id, "author", epoch, progress={"note": "still here"})
    coord.reviews.vote(P, job.id, ALICE, "reject", "again")
    with pytest.raises(Fenced):
        coord.report(P, job.id, "author", epoch, stage=Stage.SHIPPED)
    fresh = enroll(coord, "fresh")
    claimed = coord.claim(P, fresh)
    assert claimed is not None and claimed.lease.epoch == epoch + 1
    for write in (
        lambda: coord.renew(P, job.id, "author", epoch),
        lambda: coord.report(P, job.id, "author", epoch, stage=Stage.SHIPPED),
    ):
        with pytest.raises(Fenced):
            write()
    job = coord.get_job(P, job.id)
    assert job.stage is Stage.ASSIGNED and job.lease is not None and job.lease.holder == "fresh"
    assert history_agrees(coord, job)


def test_review_request_records_who_asked_and_bumps_the_gate(coord: Coordinator) -> None:
    job = in_review(coord, ReviewSpec(approvals=1), enroll(coord, "author"))
    gate = coord.queue_state(P)["version"]
    job = coord.reviews.request(
        P, job.id, Reviewer("factory", "author"), ("reviewer-1", "kind:gpt"), "please look"
    )
    assert coord.queue_state(P)["version"] == gate + 1
    assert job.events[-1].type == "review_request" and job.events[-1].reason == "please look"
    assert job.reviewState is not None
    (asked,) = job.reviewState.requests
    assert (asked.by, asked.reviewers) == ("factory:author", ("reviewer-1", "kind:gpt"))
    with pytest.raises(R.NotAuthor) as refused:
        coord.reviews.request(P, job.id, Reviewer("factory", "stranger"))
    assert code_of(refused) == (403, "not_author")
    job = coord.reviews.request(P, job.id, ALICE)
    assert job.stage is Stage.REVIEW and history_agrees(coord, job)


def test_review_holder_may_ask_for_review_without_a_manifest_rule(coord: Coordinator) -> None:
    author = enroll(coord, "author")
    job, _ = coord.submit(P, manifest(), "operator:o")
    claimed = coord.claim(P, author)
    assert claimed is not None
    coord.report(P, job.id, "author", 1, stage=Stage.BUILDING)
    job = coord.report(P, job.id, "author", 1, stage=Stage.REVIEW)
    assert job.stage is Stage.REVIEW and job.reviewState is not None
    job = coord.reviews.vote(P, job.id, ALICE, "approve", "")
    assert job.stage is Stage.SHIPPED


def test_review_job_without_a_rule_ships_on_shipped(coord: Coordinator) -> None:
    author = enroll(coord, "author")
    job, _ = coord.submit(P, manifest(), "operator:o")
    job, _ = build(coord, job.id, author)
    assert job.stage is Stage.SHIPPED and job.reviewState is None


def test_review_operator_override_closes_the_round_as_withdrawn(coord: Coordinator) -> None:
    author = enroll(coord, "author")
    job = in_review(coord, ReviewSpec(approvals=2), author)
    coord.reviews.vote(P, job.id, ALICE, "approve", "")
    coord.operator(P, job.id, Action.REQUEUE, "o", "rework requested in chat")
    job, _ = build(coord, job.id, author)
    assert job.reviewState is not None and job.reviewState.round == 2
    assert [r.outcome for r in job.reviewState.history] == ["withdrawn"]
    assert history_agrees(coord, job)


# --- kinds -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("caps", "kind"),
    [
        (("engine:claude",), "claude"),
        (("engine:codex", "engine:claude", "os:linux"), "claude+codex"),
        (("kind:gpt", "engine:claude"), "gpt"),
        (("python", "os:linux"), "unknown"),
        (("engine:a+b",), "unknown"),  # not a kind name: never joined ambiguously
    ],
)
def test_review_factory_kind_from_capabilities(caps: tuple[str, ...], kind: str) -> None:
    assert R.factory_kind(caps) == kind


@pytest.mark.parametrize(
    ("kind", "allowlist", "enrolled", "fixed"),
    [
        ("gpt", ("engine:claude",), ("engine:claude",), "gpt"),  # the operator's word wins
        (None, ("engine:claude", "engine:codex", "python"), ("engine:codex",), "claude+codex"),
        (None, ("python",), ("python",), "unknown"),  # its allowlist names no engine
        (None, None, ("engine:codex", "python"), "codex"),  # nothing fixed: what it enrolled as
        (None, None, (), "unknown"),
    ],
)
def test_review_kind_fixed_at_enrollment(
    kind: str | None, allowlist: tuple[str, ...] | None, enrolled: tuple[str, ...], fixed: str
) -> None:
    assert R.enrolled_kind(kind, allowlist, enrolled) == fixed


def test_review_kind_of_a_factory_is_its_enrolled_kind_whatever_it_registers() -> None:
    factory = Factory(
        id="factory-f1",
        productId=P,
        capabilities=("engine:codex",),
        lastSeen=T0,
        reviewKind="claude",
    )
    assert R.reviewer_kind(factory) == "claude"
    # Registered without enrolling (the coordinator's own tests and tools): its capabilities.
    assert R.reviewer_kind(factory.evolve(reviewKind=None)) == "codex"


# --- the kind a factory enrolled as ------------------------------------------------------


def enroll_as(tokens: Tokens, name: str, *caps: str, **token: Any) -> str:
    """Enroll ``name`` through an enrollment token (``token``: its allowlist, kind, ...);
    its factory token."""
    issued = tokens.create_enrollment_token(P, "operator:test", **token)
    return tokens.enroll(issued.token, name, FactorySelf(capabilities=caps, seats=1)).token


def re_register(coord: Coordinator, name: str, *caps: str) -> None:
    coord.register_factory(P, FactoryView(id=name, capabilities=frozenset(caps)), "2.0")


def test_review_kind_unknown_at_enrollment_is_fixed_by_the_first_registration_naming_one(
    coord: Coordinator, tokens: Tokens
) -> None:
    # `fleet-factory enroll` before `run --engine demo`: the enrollment says no kind.
    enroll_as(tokens, "late", "python")
    assert R.reviewer_kind(coord.factories(P)[0]) == R.UNKNOWN
    re_register(coord, "late", "python", "engine:demo")
    assert R.reviewer_kind(coord.factories(P)[0]) == "demo"
    re_register(coord, "late", "python", "engine:claude")  # once fixed, fixed
    assert R.reviewer_kind(coord.factories(P)[0]) == "demo"


def test_review_kind_re_registering_changes_neither_author_nor_reviewer_kind(
    coord: Coordinator, tokens: Tokens
) -> None:
    enroll_as(tokens, "author", "engine:claude")
    enroll_as(tokens, "twin", "engine:claude")
    enroll_as(tokens, "other", "engine:codex")
    job, _ = coord.submit(P, manifest(review=ReviewSpec(approvals=1, distinctKind=True)), "op")
    re_register(coord, "author", "engine:gpt")  # the author says another engine...
    author = FactoryView(id="author", capabilities=frozenset({"engine:gpt"}))
    job, _ = build(coord, job.id, author)
    assert job.reviewState is not None and job.reviewState.authorKind == "claude"  # ...in vain
    re_register(coord, "twin", "engine:codex")
    with pytest.raises(R.SameKind):
        coord.reviews.vote(P, job.id, Reviewer("factory", "twin"), "approve", "")
    with pytest.raises(ReviewRefused):  # nor may it name the kind it re-registered as
        coord.reviews.vote(P, job.id, Reviewer("factory", "twin"), "approve", "", kind="codex")
    job = coord.reviews.vote(P, job.id, Reviewer("factory", "other"), "approve", "ok")
    assert job.stage is Stage.SHIPPED


def test_review_kind_an_operator_fixes_it_on_the_enrollment_token(
    coord: Coordinator, tokens: Tokens
) -> None:
    enroll_as(tokens, "author", "engine:claude")
    # Claims to run codex, but the operator who enrolled it says it is claude.
    enroll_as(tokens, "vouched", "engine:codex", kind="claude")
    # An allowlist of two engines: it is of both kinds, whichever it advertises.
    enroll_as(tokens, "either", "engine:codex", capabilities=["engine:claude", "engine:codex"])
    job, _ = coord.submit(P, manifest(review=ReviewSpec(approvals=1, distinctKind=True)), "op")
    job, _ = build(coord, job.id, FactoryView(id="author", capabilities=frozenset()))
    for name in ("vouched", "either"):
        with pytest.raises(R.SameKind):
            coord.reviews.vote(P, job.id, Reviewer("factory", name), "approve", "")
    assert coord.reviews.factory_kind(P, "either") == "claude+codex"


def test_review_kind_a_re_enrollment_fixes_it_again(coord: Coordinator, tokens: Tokens) -> None:
    enroll_as(tokens, "f1", "engine:claude")
    assert coord.reviews.factory_kind(P, "f1") == "claude"
    coord.docs.patch(P, "factory-f1", [Set("/deregistered", True)])
    enroll_as(tokens, "f1", "engine:claude", kind="gpt")
    assert coord.reviews.factory_kind(P, "f1") == "gpt"


def test_review_kind_on_the_enrollment_token_over_http(app_context: AppContext) -> None:
    status, body, _ = call(
        app_context,
        tokens_http.create_enrollment_token,
        "POST",
        "/api/fleet/enrollment-tokens",
        OPERATOR,
        {"kind": "claude", "capabilities": ["engine:claude"]},
        product=P,
    )
    assert status == 201 and body["kind"] == "claude"
    documented(body, "IssuedEnrollmentToken")
    status, listed, _ = call(
        app_context,
        tokens_http.list_enrollment_tokens,
        "GET",
        "/api/fleet/enrollment-tokens",
        OPERATOR,
        product=P,
    )
    assert status == 200 and [t["kind"] for t in listed["tokens"]] == ["claude"]
    documented(listed, "EnrollmentTokenList")
    for bad in ("Claude", "claude+codex", "", "x" * 33):
        status, body, _ = call(
            app_context,
            tokens_http.create_enrollment_token,
            "POST",
            "/api/fleet/enrollment-tokens",
            OPERATOR,
            {"kind": bad},
            product=P,
        )
        assert status == 400, bad
        assert [p["path"] for p in body["details"]["problems"]] == ["kind"]


# --- the manifest ------------------------------------------------------------------------


def test_review_manifest_shorthand_mapping_and_roundtrip() -> None:
    short = parse_markdown("---\ntitle: t\nreview: 2\n---\nbody\n")
    assert short.review == ReviewSpec(approvals=2)
    full = parse_json(
        {"title": "t", "review": {"approvals": 3, "distinct_kind": True, "maxRounds": 5}}
    )
    assert full.review == ReviewSpec(approvals=3, distinctKind=True, maxRounds=5)
    for m in (short, full):
        assert parse_markdown(render_markdown(m)) == m
        assert parse_json(m.model_dump(mode="json")) == m


@pytest.mark.parametrize(
    ("review", "problems"),
    [
        (0, [("review.approvals", "greater_than_equal")]),
        (6, [("review.approvals", "less_than_equal")]),
        (True, [("review", "review_type")]),
        ("two", [("review", "review_type")]),
        (
            {"approvals": 2, "maxRounds": 11, "distinctKind": "yes"},
            [("review.distinctKind", "bool_type"), ("review.maxRounds", "less_than_equal")],
        ),
        ({"aprovals": 2}, [("review.aprovals", "unknown_field")]),
    ],
)
def test_review_manifest_problems_have_paths(review: Any, problems: list[tuple[str, str]]) -> None:
    with pytest.raises(ValidationFailed) as failed:
        parse_json({"title": "t", "review": review})
    assert [(p.path, p.code) for p in failed.value.problems] == problems
