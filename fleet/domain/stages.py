"""The job stage machine: one transition table, nothing else decides what may follow what."""

from __future__ import annotations

from enum import StrEnum

from fleet.errors import IllegalTransition


class Stage(StrEnum):
    QUEUED = "queued"
    BLOCKED = "blocked"
    ASSIGNED = "assigned"
    BUILDING = "building"
    REVIEW = "review"
    TESTING = "testing"
    SHIPPED = "shipped"
    FAILED = "failed"
    DEAD_LETTER = "dead_letter"
    CANCELLED = "cancelled"


class Action(StrEnum):
    # by the system
    UNBLOCK = "unblock"  # blocked -> queued: deps satisfied
    DECOMPOSE = "decompose"  # queued -> blocked: split into child jobs it now waits for
    DEPS_FAILED = "deps_failed"  # blocked -> failed: deps can never be satisfied
    ASSIGN = "assign"  # queued -> assigned: a factory's claim won
    EXPIRE = "expire"  # leased -> queued: the reaper found the lease expired
    EXPIRE_FINAL = "expire_final"  # leased -> dead_letter: ... and attempts are exhausted
    # leased -> queued: taken back before its lease ran out (the healer: stalled, never
    # started, holder down; the reaper: holder revoked or gone), the holder fenced
    TAKE_BACK = "take_back"
    TAKE_BACK_FINAL = "take_back_final"  # leased -> dead_letter: ... and attempts are exhausted
    PREEMPT = "preempt"  # leased -> queued: evicted for a critical job (not a failure)
    # by the lease holder
    START = "start"  # assigned -> building
    SUBMIT_REVIEW = "submit_review"  # building/testing -> review (lease ends)
    TEST = "test"  # building -> testing
    COMPLETE = "complete"  # building/testing -> shipped
    FAIL = "fail"  # leased -> failed (non-retryable)
    RETRY = "retry"  # leased -> queued (retryable failure, attempt counted)
    RETRY_FINAL = "retry_final"  # leased -> dead_letter (retryable, attempts exhausted)
    RELEASE = "release"  # leased -> queued (given back, e.g. drain; not a failure)
    # by reviewers (fleet.domain.review)
    APPROVE_QUORUM = "approve_quorum"  # review -> shipped: the round has its approvals
    REVIEW_REJECT = "review_reject"  # review -> queued: rejected, the next attempt sees why
    REVIEW_EXHAUSTED = "review_exhausted"  # review -> failed: rejected in the last round
    # by an operator
    CANCEL = "cancel"
    REQUEUE = "requeue"
    SHIP = "ship"
    REJECT = "reject"


TERMINAL = frozenset({Stage.SHIPPED, Stage.FAILED, Stage.DEAD_LETTER, Stage.CANCELLED})
# Stages in which a factory holds the job's lease.
LEASED = frozenset({Stage.ASSIGNED, Stage.BUILDING, Stage.TESTING})
ACTIVE = frozenset(Stage) - TERMINAL

_L = tuple(sorted(LEASED))

TRANSITIONS: dict[tuple[Stage, Action], Stage] = {
    (Stage.BLOCKED, Action.UNBLOCK): Stage.QUEUED,
    (Stage.QUEUED, Action.DECOMPOSE): Stage.BLOCKED,
    (Stage.BLOCKED, Action.DEPS_FAILED): Stage.FAILED,
    (Stage.QUEUED, Action.ASSIGN): Stage.ASSIGNED,
    **{(s, Action.EXPIRE): Stage.QUEUED for s in _L},
    **{(s, Action.EXPIRE_FINAL): Stage.DEAD_LETTER for s in _L},
    **{(s, Action.TAKE_BACK): Stage.QUEUED for s in _L},
    **{(s, Action.TAKE_BACK_FINAL): Stage.DEAD_LETTER for s in _L},
    **{(s, Action.PREEMPT): Stage.QUEUED for s in _L},
    (Stage.ASSIGNED, Action.START): Stage.BUILDING,
    (Stage.BUILDING, Action.TEST): Stage.TESTING,
    (Stage.BUILDING, Action.SUBMIT_REVIEW): Stage.REVIEW,
    (Stage.TESTING, Action.SUBMIT_REVIEW): Stage.REVIEW,
    (Stage.BUILDING, Action.COMPLETE): Stage.SHIPPED,
    (Stage.REVIEW, Action.APPROVE_QUORUM): Stage.SHIPPED,
    (Stage.REVIEW, Action.REVIEW_REJECT): Stage.QUEUED,
    (Stage.REVIEW, Action.REVIEW_EXHAUSTED): Stage.FAILED,
    (Stage.TESTING, Action.COMPLETE): Stage.SHIPPED,
    **{(s, Action.FAIL): Stage.FAILED for s in _L},
    **{(s, Action.RETRY): Stage.QUEUED for s in _L},
    **{(s, Action.RETRY_FINAL): Stage.DEAD_LETTER for s in _L},
    **{(s, Action.RELEASE): Stage.QUEUED for s in _L},
    **{(s, Action.CANCEL): Stage.CANCELLED for s in ACTIVE},
    **{
        (s, Action.REQUEUE): Stage.QUEUED
        for s in (*_L, Stage.REVIEW, Stage.FAILED, Stage.DEAD_LETTER, Stage.CANCELLED)
    },
    (Stage.REVIEW, Action.SHIP): Stage.SHIPPED,
    (Stage.TESTING, Action.SHIP): Stage.SHIPPED,
    (Stage.BUILDING, Action.SHIP): Stage.SHIPPED,
    (Stage.REVIEW, Action.REJECT): Stage.FAILED,
    (Stage.TESTING, Action.REJECT): Stage.FAILED,
}

# The stage a factory may report in PATCH /jobs/{id}, mapped to the action it means.
REPORTABLE: dict[Stage, Action] = {
    Stage.BUILDING: Action.START,
    Stage.TESTING: Action.TEST,
    Stage.REVIEW: Action.SUBMIT_REVIEW,
    Stage.SHIPPED: Action.COMPLETE,
    Stage.FAILED: Action.FAIL,
}


def next_stage(stage: Stage, action: Action) -> Stage:
    try:
        return TRANSITIONS[(stage, action)]
    except KeyError:
        raise IllegalTransition(stage, action) from None


def allowed_actions(stage: Stage) -> list[Action]:
    return [action for (s, action) in TRANSITIONS if s == stage]
