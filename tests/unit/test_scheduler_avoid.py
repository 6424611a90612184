"""The scheduler's avoid rule (``fleet.domain.scheduler.avoid_reason``): a job taken back from
a factory it stalled on is not given back to that factory until it has waited its grace in
the queue (no other factory took it meanwhile); then it may return there.
``explain`` says "avoided: stalled on F". And the take-back that records it
(``fleet.domain.jobs.expire`` with ``avoid``). Pure: no store, no clock."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from fleet.domain import jobs as J
from fleet.domain.models import Avoid, Job
from fleet.domain.scheduler import (
    FactoryView,
    avoid_reason,
    avoided,
    explain,
    queued_since,
    rank,
)
from fleet.domain.stages import Action, Stage
from tests.support.builders import T0, factory_view
from tests.support.builders import job as queued

GRACE = 1800
TAKEN = T0 + timedelta(hours=1)  # when the healer took the job back from "a"


def at(seconds: float) -> datetime:
    """``seconds`` after the take-back."""
    return TAKEN + timedelta(seconds=seconds)


def taken_back(grace: int = GRACE, holder: str = "a") -> Job:
    """A job that stalled on ``holder`` and was taken back at ``TAKEN``, avoiding it."""
    job = J.assign(queued(leaseSeconds=3600), holder, now=T0)
    job = J.holder_report(job, Action.START, holder, now=T0, checkpoint={"branch": "fleet/x"})
    avoid = Avoid(factory=holder, reason=f"stalled on {holder}", at=TAKEN, graceSeconds=grace)
    return J.expire(job, now=TAKEN, reason=f"stalled on {holder}", actor="healer", avoid=avoid)


A = factory_view("a", caps=())
B = factory_view("b", caps=())


def test_scheduler_avoid_the_take_back_records_it_with_the_requeue() -> None:
    before = J.holder_report(
        J.assign(queued(leaseSeconds=3600), "a", now=T0), Action.START, "a", now=T0
    )
    before = before.evolve(checkpoint={"branch": "fleet/x", "commit": "c0ffee"})
    avoid = Avoid(factory="a", reason="stalled on a", at=TAKEN, graceSeconds=GRACE)
    job = J.expire(
        before, now=TAKEN, reason="stalled on a: ...", actor="healer", avoid=avoid, taken=True
    )
    assert job.stage is Stage.QUEUED and job.lease is None
    assert job.epoch == before.epoch + 1  # the holder fenced
    assert job.checkpoint == before.checkpoint  # the next attempt resumes from it
    assert job.attempts == before.attempts == 1  # the attempt counted
    assert job.failedBy == ("a",) and not job.stalled
    assert job.avoid == (avoid,)
    (run,) = job.runs
    assert (run.outcome, run.factory, run.endedAt) == ("taken_back", "a", TAKEN)
    event = job.events[-1]
    assert (event.type, event.actor, event.toStage) == ("take_back", "healer", Stage.QUEUED)
    assert event.data["avoid"] == {
        "factory": "a",
        "reason": "stalled on a",
        "at": "2026-01-01T01:00:00.000000Z",
        "graceSeconds": GRACE,
    }
    assert J.agrees(job, list(job.events))


def test_scheduler_avoid_entries_are_one_per_factory_and_bounded() -> None:
    entries: tuple[Avoid, ...] = ()
    for n in range(J.MAX_AVOIDS_KEPT + 5):
        entries = J.with_avoid(entries, Avoid(factory=f"f{n}", reason="r", at=T0, graceSeconds=1))
    assert len(entries) == J.MAX_AVOIDS_KEPT and entries[-1].factory == f"f{J.MAX_AVOIDS_KEPT + 4}"
    newer = Avoid(factory="f10", reason="again", at=TAKEN, graceSeconds=1)
    entries = J.with_avoid(entries, newer)
    assert [e for e in entries if e.factory == "f10"] == [newer] and entries[-1] == newer


def test_scheduler_avoid_queued_since_is_the_move_into_the_queue() -> None:
    job = taken_back()
    assert queued_since(job) == TAKEN
    later = J.reprioritize(job, 9, "o", now=at(60))  # stays queued: not a new wait
    assert queued_since(later) == TAKEN
    assert queued_since(queued()) == T0  # its submit
    no_history = job.evolve(events=(), updatedAt=at(5))
    assert queued_since(no_history) == at(5)  # the last change: never earlier


# (factory asked, seconds since the take-back, avoided?)
ROWS = [
    ("not avoided: never", B, 0, False),
    ("within the grace: avoided", A, GRACE - 1, True),
    ("past the grace: may return, whatever else the fleet holds", A, GRACE, False),
]


@pytest.mark.parametrize(("name", "factory", "waited", "avoids"), ROWS, ids=[r[0] for r in ROWS])
def test_scheduler_avoid_rule(name: str, factory: FactoryView, waited: float, avoids: bool) -> None:
    job = taken_back()
    why = avoid_reason(job, factory, at(waited))
    assert why == ("avoided: stalled on a" if avoids else None)
    assert bool(rank([job], factory, at(waited))) is not avoids


def test_scheduler_avoid_each_avoided_factory_by_its_own_entry() -> None:
    job = taken_back()
    both = job.evolve(
        avoid=(*job.avoid, Avoid(factory="b", reason="stalled on b", at=TAKEN, graceSeconds=GRACE))
    )
    assert avoid_reason(both, A, at(GRACE)) is None
    assert avoid_reason(both, B, at(GRACE - 1)) == "avoided: stalled on b"
    assert avoid_reason(both, A, at(GRACE - 1)) == "avoided: stalled on a"


def test_scheduler_avoid_the_claim_ranks_it_for_others_only() -> None:
    job, other = taken_back(), queued(n=2)
    assert [j.id for j, _ in rank([job, other], A, at(10))] == [other.id]
    assert {j.id for j, _ in rank([job, other], B, at(10))} == {job.id, other.id}
    assert {j.id for j, _ in rank([job, other], A, at(GRACE))} == {job.id, other.id}


def test_scheduler_avoid_explain_says_why() -> None:
    job = taken_back()
    verdicts = {v.factory: v for v in explain(job, [A, B], at(10))}
    assert not verdicts["a"].eligible
    assert verdicts["a"].reasons == ("avoided: stalled on a",)
    assert verdicts["a"].breakdown is not None  # still scored: the operator sees the terms
    assert verdicts["b"].eligible and verdicts["b"].reasons == ()
    assert [v.factory for v in explain(job, [A, B], at(10))] == ["b", "a"]
    # Alone, and past the grace: it may return there, and explain says it is eligible.
    (alone,) = explain(job, [A], at(GRACE))
    assert alone.eligible and alone.reasons == ()
    # With its own reasons, the avoid comes last.
    (paused,) = explain(job, [factory_view("a", caps=(), paused=True)], at(10))
    assert paused.reasons == ("factory is paused", "avoided: stalled on a")


def test_scheduler_avoid_lookup_is_the_newest_entry_for_the_factory() -> None:
    job = taken_back()
    assert avoided(job, "a") == job.avoid[0] and avoided(job, "b") is None
