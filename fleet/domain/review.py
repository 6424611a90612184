"""The review quorum, pure: entering review, votes, the quorum, rejection rounds.

A job whose manifest asks for review (``review: {approvals, distinctKind, maxRounds}``) goes
to ``review`` when its holder reports it shipped (a holder may also report ``review`` for
any job: then one approval is needed). The lease ends there. Each entry into review opens a
round; in it, reviewers (operators, or factories other than the author) vote:

- ``approvals`` approvals from as many distinct reviewers ship the job (``approve_quorum``);
- one rejection ends the round: the job is queued again (``review_reject``) with every
  vote's comments in its checkpoint, so the next attempt sees them; a rejection in round
  ``maxRounds`` (or later: an operator's requeue grants one more round) fails the job
  (``review_exhausted``).

The author, the factory whose attempt is under review, never reviews it. A reviewer's
*kind* is what it is: ``human`` (or what an operator says) for operators; for a factory,
the kind fixed when it enrolled (``enrolled_kind``): the ``kind`` an operator set on its
enrollment token, else the kind of that token's capability allowlist, else the kind of the
capabilities it enrolled with. A capability set's kind is its ``kind:NAME`` capabilities if
any, else its ``engine:NAME`` ones, joined with ``+`` (``claude+codex``), else ``unknown``.
What a factory re-registers later never changes its kind, so ``distinctKind`` cannot be
bypassed by re-registering as another engine. With ``distinctKind`` a reviewer none of
whose kinds is one of the author's is needed (``unknown`` is a kind like any other, so two
unknowns are the same kind).

Every vote is an event (``review_vote``) written with the state in the same document; the
vote that reaches the quorum or rejects is followed, in that same write, by the transition.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal

from fleet.domain import jobs as J
from fleet.domain.models import (
    Factory,
    Job,
    ReviewRequest,
    ReviewRound,
    ReviewSpec,
    ReviewState,
    ReviewVote,
    queue_key,
)
from fleet.domain.stages import Action, Stage
from fleet.errors import AlreadyVoted, NotInReview, ReviewRefused

Verdict = Literal["approve", "reject"]

KIND_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,31}$"
HUMAN = "human"
UNKNOWN = "unknown"
MAX_COMMENTS_CHARS = 4000
MAX_NOTE_CHARS = 2000
MAX_REQUESTS_KEPT = 20  # per round: the latest requests are kept

_KIND = re.compile(KIND_PATTERN)


class SelfReview(ReviewRefused):
    """The author of an attempt cannot review it."""

    code = "self_review"


class SameKind(ReviewRefused):
    """The review needs a reviewer whose kind differs from the author's."""

    code = "same_kind"


class NotAuthor(ReviewRefused):
    """Only an operator or the author of the attempt may ask for reviewers."""

    code = "not_author"


# --- kinds ---------------------------------------------------------------------------


def factory_kind(capabilities: Iterable[str]) -> str:
    """A factory's kind, from what it advertises: ``kind:NAME`` capabilities if any (an
    explicit model family), else ``engine:NAME`` ones; ``unknown`` when it says neither."""
    caps = list(capabilities)
    for prefix in ("kind:", "engine:"):
        names = sorted({c.removeprefix(prefix) for c in caps if c.startswith(prefix)})
        names = [n for n in names if _KIND.match(n)]
        if names:
            return "+".join(names)
    return UNKNOWN


def enrolled_kind(
    kind: str | None, allowlist: Iterable[str] | None, capabilities: Iterable[str]
) -> str:
    """The kind fixed at a factory's enrollment: what the operator set on the enrollment
    token (``kind``), else what its allowlist allows (a factory allowed two engines is of
    both kinds), else what the factory enrolled with. ``unknown`` when none says one (the CLI
    enrolls before it knows its engine): then its first registration naming one fixes it,
    once (``Products.register_factory``)."""
    if kind is not None:
        return kind
    return factory_kind(allowlist if allowlist is not None else capabilities)


def reviewer_kind(factory: Factory) -> str:
    """A factory's review kind: the one fixed at its enrollment. A factory registered
    without enrolling (the coordinator's own tests and tools, or enrolled before kinds were
    fixed) has none: its registered capabilities say it."""
    if factory.reviewKind is not None:
        return factory.reviewKind
    return factory_kind(factory.capabilities)


def kinds_of(kind: str) -> frozenset[str]:
    return frozenset(kind.split("+"))


def valid_kind(kind: str) -> bool:
    return bool(_KIND.match(kind))


# --- entering review -----------------------------------------------------------------


def spec_of(job: Job) -> ReviewSpec:
    """The job's review rule; a job without one that its holder sent to review needs one
    approval."""
    return job.review or ReviewSpec()


def goes_to_review(job: Job, action: Action) -> bool:
    """Whether the holder's move takes the job into review: reporting ``review``, or
    reporting ``shipped`` when the manifest requires review."""
    return action is Action.SUBMIT_REVIEW or (action is Action.COMPLETE and job.review is not None)


def _closed(state: ReviewState) -> ReviewRound:
    return ReviewRound(
        round=state.round,
        # Still open: an operator took the job out of review (ship, reject, requeue, cancel).
        outcome="withdrawn" if state.outcome == "open" else state.outcome,
        author=state.author,
        authorKind=state.authorKind,
        votes=state.votes,
    )


def submit(
    job: Job,
    factory_id: str,
    author_kind: str,
    *,
    now: datetime,
    reason: str | None = None,
    **changes: Any,
) -> Job:
    """The holder's ``shipped`` (or ``review``) report, taking the job into review: the
    lease ends and a new round opens, naming the author."""
    spec = spec_of(job)
    previous = job.reviewState
    history = (*previous.history, _closed(previous)) if previous else ()
    round_ = previous.round + 1 if previous else 1
    state = ReviewState(
        round=round_,
        author=factory_id,
        authorKind=author_kind,
        openedAt=now,
        history=history,
    )
    why = (
        f"review required: {spec.approvals} approval(s)"
        + (" from another kind than " + author_kind if spec.distinctKind else "")
        + f", round {round_} of {spec.maxRounds}"
    )
    return J.holder_report(
        job,
        Action.SUBMIT_REVIEW,
        factory_id,
        now=now,
        reason=f"{reason}; {why}" if reason else why,
        data={"round": round_, "approvals": spec.approvals, "authorKind": author_kind},
        reviewState=state,
        **changes,
    )


def _state(job: Job, now: datetime) -> ReviewState:
    if job.stage is not Stage.REVIEW:
        raise NotInReview(job.id, job.stage)
    # A job that entered review before it kept a review state: round 1, author unknown.
    return job.reviewState or ReviewState(round=1, openedAt=now)


# --- requests and votes --------------------------------------------------------------


def request(
    job: Job,
    by: str,
    *,
    now: datetime,
    reviewers: tuple[str, ...] = (),
    note: str | None = None,
) -> Job:
    """Ask for reviewers (recorded: who asked, whom, why). An operator or the author."""
    state = _state(job, now)
    if by.startswith("factory:") and by != f"factory:{state.author}":
        raise NotAuthor(
            "only an operator or the author of the attempt may ask for reviewers",
            jobId=job.id,
            author=state.author,
        )
    asked = ReviewRequest(by=by, reviewers=reviewers, note=note, at=now)
    requests = (*state.requests, asked)[-MAX_REQUESTS_KEPT:]
    return J.record(
        job,
        type="review_request",
        actor=by,
        now=now,
        reason=note or "review requested",
        data={"round": state.round, "reviewers": list(reviewers)},
        reviewState=state.evolve(requests=requests),
    )


def review_note(state: ReviewState, spec: ReviewSpec) -> dict[str, Any]:
    """What the next attempt finds under ``review`` in its checkpoint."""
    return {
        "round": state.round,
        "maxRounds": spec.maxRounds,
        "outcome": "rejected",
        "comments": [
            {"reviewer": v.reviewer, "kind": v.kind, "verdict": v.verdict, "comments": v.comments}
            for v in state.votes
        ],
    }


def with_review(checkpoint: Any, note: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint the builder left, with the review's comments under ``review`` (a
    previous round's are replaced). A checkpoint that is not an object is kept under
    ``value``."""
    if checkpoint is None:
        return {"review": note}
    if isinstance(checkpoint, dict):
        return {**checkpoint, "review": note}
    return {"value": checkpoint, "review": note}


def vote(
    job: Job,
    reviewer: str,
    kind: str,
    verdict: Verdict,
    comments: str,
    *,
    now: datetime,
) -> Job:
    """Record one reviewer's vote, and move the job when it decides the round."""
    state = _state(job, now)
    spec = spec_of(job)
    if state.author is not None and reviewer == f"factory:{state.author}":
        raise SelfReview(
            f"{state.author} built this attempt: it cannot review it",
            jobId=job.id,
            reviewer=reviewer,
        )
    if any(v.reviewer == reviewer for v in state.votes):
        raise AlreadyVoted(
            f"{reviewer} has already voted in round {state.round}",
            jobId=job.id,
            reviewer=reviewer,
            round=state.round,
        )
    if spec.distinctKind and kinds_of(kind) & kinds_of(state.authorKind):
        raise SameKind(
            f"this review needs a reviewer of another kind than the author's ({state.authorKind});"
            f" {reviewer} is {kind}",
            jobId=job.id,
            kind=kind,
            authorKind=state.authorKind,
        )
    ballot = ReviewVote(reviewer=reviewer, kind=kind, verdict=verdict, comments=comments, at=now)
    state = state.evolve(votes=(*state.votes, ballot))
    approvals = [v.reviewer for v in state.votes if v.verdict == "approve"]
    voted = J.record(
        job,
        type="review_vote",
        actor=reviewer,
        now=now,
        reason=f"{verdict} ({len(approvals)} of {spec.approvals} approvals, round {state.round})",
        data={"round": state.round, "kind": kind, "verdict": verdict, "comments": comments},
        reviewState=state,
    )
    if verdict == "approve":
        if len(approvals) < spec.approvals:
            return voted
        return J.transition(
            voted,
            Action.APPROVE_QUORUM,
            actor=reviewer,
            now=now,
            reason=f"quorum reached in round {state.round}: approved by {', '.join(approvals)}",
            data={"round": state.round, "approvers": approvals},
            reviewState=state.evolve(outcome="approved"),
        )
    if state.round >= spec.maxRounds:
        return J.transition(
            voted,
            Action.REVIEW_EXHAUSTED,
            actor=reviewer,
            now=now,
            reason=(f"rejected by {reviewer} in round {state.round}, the last of {spec.maxRounds}"),
            data={"round": state.round},
            reviewState=state.evolve(outcome="exhausted"),
        )
    return J.transition(
        voted,
        Action.REVIEW_REJECT,
        actor=reviewer,
        now=now,
        reason=(
            f"rejected by {reviewer} in round {state.round} of {spec.maxRounds}: "
            "queued again, the comments are in the checkpoint"
        ),
        data={"round": state.round},
        reviewState=state.evolve(outcome="rejected"),
        checkpoint=with_review(job.checkpoint, review_note(state, spec)),
        # A new attempt with the full allowance: the last one did not fail, it was judged.
        attempts=0,
        queueKey=queue_key(job.priority, job.createdAt, job.id),
    )
