"""Claims in flight on one instance take different candidates (``Contention``)."""

from __future__ import annotations

from fleet.coordinator.claim import Contention
from fleet.domain.models import Job
from tests.support.builders import job


def ranked(n: int) -> list[tuple[Job, None]]:
    return [(job(i).evolve(etag=f'"e{i}"'), None) for i in range(1, n + 1)]


def ids(items: list[tuple[Job, None]]) -> list[str]:
    return [j.id for j, _ in items]


def test_contention_claims_in_flight_each_take_a_candidate_of_their_own() -> None:
    t = [0.0]
    contention = Contention(hold_seconds=10, clock=lambda: t[0])
    ranking = ranked(4)
    firsts = [next(iter(contention.turns("p", ranking)))[0].id for _ in range(4)]
    assert firsts == ids(ranking)  # each claim read the same list, each takes the next free one
    # a fifth finds every one held: it tries none (the claims holding them are taking them)
    fifth = contention.turns("p", ranking)
    assert list(fifth) == [] and fifth.held_left
    # another product's claims are not held back by these
    assert next(iter(contention.turns("q", ranking)))[0].id == ids(ranking)[0]


def test_contention_a_loser_moves_on_to_what_no_one_here_holds() -> None:
    t = [0.0]
    contention = Contention(hold_seconds=10, clock=lambda: t[0])
    ranking = ranked(5)
    winner = iter(contention.turns("p", ranking))
    assert next(winner)[0].id == ids(ranking)[0]
    loser = contention.turns("p", ranking)
    turns = iter(loser)
    assert next(turns)[0].id == ids(ranking)[1]
    third = iter(contention.turns("p", ranking))
    assert next(third)[0].id == ids(ranking)[2]
    # the loser's first try was lost (to another instance): its next turn skips what the
    # third is trying, and it never tries what the others hold
    assert [j.id for j, _ in turns] == ids(ranking)[3:]
    assert loser.held_left  # it stopped at the held ones, untried
    late = contention.turns("p", ranking)
    assert list(late) == [] and late.held_left


def test_contention_lets_go_of_what_did_not_fit_and_forgets_after_the_hold() -> None:
    t = [0.0]
    contention = Contention(hold_seconds=10, clock=lambda: t[0])
    ranking = ranked(3)
    assert next(iter(contention.turns("p", ranking)))[0].id == ids(ranking)[0]
    contention.let_go("p", ranking[0][0])  # over budget for that claim: free for the next
    assert next(iter(contention.turns("p", ranking)))[0].id == ids(ranking)[0]
    assert next(iter(contention.turns("p", ranking)))[0].id == ids(ranking)[1]
    t[0] = 10.5  # the hold is over: a list read now no longer holds those jobs
    assert next(iter(contention.turns("p", ranking)))[0].id == ids(ranking)[0]


def test_contention_reads_more_candidates_the_more_claims_are_in_flight() -> None:
    contention = Contention()
    assert contention.candidates(16, 1) == 32
    assert contention.candidates(16, 8) == 32
    assert contention.candidates(16, 32) == 48
    assert contention.candidates(16, 500) == 64
    with (
        contention.claiming("p") as first,
        contention.claiming("p") as second,
        contention.claiming("q") as other,
    ):
        assert (first, second, other) == (1, 2, 1)
    with contention.claiming("p") as again:
        assert again == 1  # the others ended


def test_contention_a_job_queued_again_is_a_new_candidate_at_once() -> None:
    """Held by the etag it was read with: once won and queued again (released, retried),
    the job read anew is free, however soon."""
    contention = Contention(hold_seconds=10, clock=lambda: 0.0)
    ranking = ranked(1)
    assert next(iter(contention.turns("p", ranking)))[0].id == ids(ranking)[0]
    stale = contention.turns("p", ranking)
    assert list(stale) == [] and stale.held_left
    requeued = [(ranking[0][0].evolve(etag='"after-requeue"'), None)]
    assert [j.id for j, _ in contention.turns("p", requeued)] == ids(ranking)
