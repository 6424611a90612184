"""DAG decomposition on the twin: children gate the parent; cycles are refused."""

from __future__ import annotations

import pytest

from fleet.coordinator import Coordinator
from fleet.domain.manifest import Manifest
from fleet.domain.models import Deps
from fleet.domain.scheduler import FactoryView
from fleet.domain.stages import Action, Stage
from fleet.errors import IllegalTransition, ValidationFailed

P = "prod"
ANY = FactoryView(id="w", capabilities=frozenset())


def _run_to(coord: Coordinator, job_id: str, stage: Stage) -> None:
    """Claim exactly this job (it is the only one queued) and finish it."""
    claim = coord.claim(P, ANY)
    assert claim is not None and claim.job.id == job_id, "expected this job to be next"
    coord.report(P, job_id, "w", claim.lease.epoch, stage=Stage.BUILDING)
    coord.report(P, job_id, "w", claim.lease.epoch, stage=stage)


def _child(title: str, **fields: object) -> Manifest:
    return Manifest(title=title, **fields)  # type: ignore[arg-type]


def test_dag_three_levels_run_bottom_up(coord: Coordinator) -> None:
    root, _ = coord.submit(P, Manifest(title="release"), "operator:o")
    parent, (mid,) = coord.add_children(P, root.id, [_child("feature")], "all", "operator:o")
    assert parent.stage is Stage.BLOCKED and parent.children == (mid.id,)
    mid_after, (leaf_a, leaf_b) = coord.add_children(
        P, mid.id, [_child("part a"), _child("part b")], "all", "operator:o"
    )
    assert mid_after.stage is Stage.BLOCKED
    tree = coord.dag(P, root.id)
    assert tree["deps"][0]["id"] == mid.id
    assert {n["id"] for n in tree["deps"][0]["deps"]} == {leaf_a.id, leaf_b.id}
    for _ in (leaf_a, leaf_b):
        assert coord.get_job(P, mid.id).stage is Stage.BLOCKED
        claim = coord.claim(P, ANY)
        assert claim is not None and claim.job.id in (leaf_a.id, leaf_b.id)
        coord.report(P, claim.job.id, "w", claim.lease.epoch, stage=Stage.BUILDING)
        coord.report(P, claim.job.id, "w", claim.lease.epoch, stage=Stage.SHIPPED)
    assert coord.get_job(P, mid.id).stage is Stage.QUEUED  # unblocked by the last ship
    _run_to(coord, mid.id, Stage.SHIPPED)
    assert coord.get_job(P, root.id).stage is Stage.QUEUED
    _run_to(coord, root.id, Stage.SHIPPED)
    assert coord.dag(P, root.id)["stage"] == "shipped"


def test_dag_children_are_idempotent(coord: Coordinator) -> None:
    root, _ = coord.submit(P, Manifest(title="r"), "operator:o")
    _, first = coord.add_children(P, root.id, [_child("a"), _child("b")], "all", "operator:o")
    parent, again = coord.add_children(P, root.id, [_child("a"), _child("b")], "all", "operator:o")
    assert [c.id for c in again] == [c.id for c in first]
    assert len(coord.list_jobs(P)) == 3 and parent.deps is not None
    assert parent.deps.jobs == tuple(c.id for c in first)


def test_dag_a_child_that_waits_for_its_parent_is_a_cycle(coord: Coordinator) -> None:
    root, _ = coord.submit(P, Manifest(title="r"), "operator:o")
    _, (mid,) = coord.add_children(P, root.id, [_child("mid")], "all", "operator:o")
    looping = _child("loop", deps=Deps(jobs=(root.id,)))
    with pytest.raises(ValidationFailed) as caught:
        coord.add_children(P, mid.id, [looping], "all", "operator:o")
    assert caught.value.problems[0].code == "cycle"
    assert caught.value.problems[0].path == "children[0].deps.jobs[0]"
    assert len(coord.list_jobs(P)) == 2  # nothing created


def test_dag_a_dead_lettered_child_fails_the_parent(coord: Coordinator) -> None:
    root, _ = coord.submit(P, Manifest(title="r"), "operator:o")
    _, (child,) = coord.add_children(P, root.id, [_child("c", maxAttempts=1)], "all", "o")
    claim = coord.claim(P, ANY)
    assert claim is not None
    coord.report(P, child.id, "w", claim.lease.epoch, stage=Stage.FAILED, retryable=True)
    assert coord.get_job(P, child.id).stage is Stage.DEAD_LETTER
    coord.reap(P)
    parent = coord.get_job(P, root.id)
    assert parent.stage is Stage.FAILED
    assert "without shipping" in (parent.events[-1].reason or "")


def test_dag_only_a_waiting_job_can_be_decomposed(coord: Coordinator) -> None:
    root, _ = coord.submit(P, Manifest(title="r"), "operator:o")
    coord.operator(P, root.id, Action.CANCEL, "o")
    with pytest.raises(IllegalTransition):
        coord.add_children(P, root.id, [_child("a")], "all", "operator:o")
