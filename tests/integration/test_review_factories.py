"""Reviewer factories on the real local stack: one real ``fleet-factory`` builds a job that
needs a review, another started with ``--review`` reviews it with the demo engine and
approves it, and the job ships."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RunningStack
from tests.support.factories import Fleet, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def fleet(running_stack: RunningStack, tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(running_stack, f"rv{uuid.uuid4().hex[:10]}", tmp_path)
    try:
        yield fleet
    finally:
        fleet.stop_all()


def test_review_factory_approves_another_factorys_work_and_the_job_ships(fleet: Fleet) -> None:
    builder, reviewer = fleet.factory("builder"), fleet.factory("reviewer")
    # Only the builder can claim the job (its capability), so the reviewer cannot author it.
    builder.start("--cap", "team:build")
    reviewer.start("--review")
    job_id = fleet.submit(
        title="reviewed work",
        body="Write a reviewed note.\nThen another line.",
        capabilities=["team:build"],
        review=1,
    )
    shipped = wait_for(
        "the job reviewed and shipped",
        lambda: (j := fleet.job(job_id))["stage"] == "shipped" and j,
        timeout=45,
    )
    state = shipped["reviewState"]
    assert state["author"] == "builder" and state["outcome"] == "approved"
    [vote] = state["votes"]
    assert vote["reviewer"] == "factory:reviewer" and vote["verdict"] == "approve"
    assert vote["kind"] == "demo"
    assert "fleet/" + job_id in vote["comments"] and vote["comments"].startswith("Approved")
    kinds = [e["type"] for e in fleet.events(job_id)]
    assert kinds.count("assign") == 1 and "submit_review" in kinds and "review_vote" in kinds
    assert shipped["result"]["factory"] == "builder"
    wait_for("the reviewer's state to count it", lambda: reviewer.state().get("reviews"))
    assert reviewer.state()["reviews"] == {"approved": 1}
    assert builder.stop() == 0 and reviewer.stop() == 0


def test_review_factory_rejection_sends_the_job_back_with_its_comments(fleet: Fleet) -> None:
    builder, reviewer = fleet.factory("builder"), fleet.factory("reviewer")
    builder.start("--cap", "team:build")
    reviewer.start("--review")
    job_id = fleet.submit(
        title="needs a second go",
        body="Write a note.\n[demo: reject-once]",
        capabilities=["team:build"],
        review=1,
    )
    shipped = wait_for(
        "the job rejected once, rebuilt, approved",
        lambda: (j := fleet.job(job_id))["stage"] == "shipped" and j,
        timeout=45,
    )
    state = shipped["reviewState"]
    assert state["round"] == 2 and state["outcome"] == "approved"
    [first] = state["history"]
    assert first["outcome"] == "rejected"
    assert [(v["reviewer"], v["verdict"]) for v in first["votes"]] == [
        ("factory:reviewer", "reject")
    ]
    assert first["votes"][0]["comments"].startswith("Changes requested")
    assert [(v["reviewer"], v["verdict"]) for v in state["votes"]] == [
        ("factory:reviewer", "approve")
    ]
    # The second attempt was given the rejection's comments.
    prompt = (builder.home / "work" / job_id / ".fleet" / "prompt.md").read_text()
    assert "Changes requested" in prompt
    kinds = [e["type"] for e in fleet.events(job_id)]
    assert kinds.count("assign") == 2 and kinds.count("review_reject") == 1
