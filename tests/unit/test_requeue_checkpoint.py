"""An operator's requeue may carry a checkpoint: the next attempt resumes from it."""

from __future__ import annotations

from typing import Any

from fleet.context import AppContext
from fleet.coordinator import Coordinator
from fleet.coordinator.tokens import Tokens
from fleet.domain.manifest import Manifest
from fleet.domain.report import MAX_REPORT_BYTES
from fleet.http import actions, fleet_ops
from fleet.http.parsing import FactorySelf
from tests.support.handlers import OPERATOR, call

P = "prod"


def _claimed(context: AppContext, coord: Coordinator, tokens: Tokens) -> tuple[str, str]:
    issued = tokens.create_enrollment_token(P, "operator:test")
    token = tokens.enroll(issued.token, "f1", FactorySelf(capabilities=("python",))).token
    coord.submit(P, Manifest(title="a", body="x"), "operator:o")
    status, claimed, _ = call(
        context, fleet_ops.claim, "POST", "/api", token, {"capabilities": ["python"]}, None
    )
    assert status == 200, claimed
    return token, str(claimed["job"]["id"])


def _requeue(context: AppContext, job_id: str, body: Any) -> tuple[int, Any]:
    status, reply, _ = call(
        context, actions.requeue_job, "POST", "/api", OPERATOR, body, P, id=job_id
    )
    return status, reply


def test_requeue_with_a_checkpoint_replaces_it_and_records_it(
    app_context: AppContext, coord: Coordinator, tokens: Tokens
) -> None:
    token, job_id = _claimed(app_context, coord, tokens)
    checkpoint = {"branch": "fleet/x", "commit": "abc123"}
    status, reply = _requeue(
        app_context, job_id, {"reason": "start over", "checkpoint": checkpoint}
    )
    assert status == 200, reply
    job = coord.get_job(P, job_id)
    assert job.checkpoint == checkpoint and job.epoch == 2
    last = job.events[-1]
    assert last.type == "requeue" and last.reason == "start over"
    brief = last.data["checkpoint"]  # where it restarts from, not the checkpoint again
    assert (brief["branch"], brief["commit"]) == ("fleet/x", "abc123")
    assert brief["bytes"] > 0 and len(brief["sha256"]) == 16
    # the next attempt is handed the operator's checkpoint
    status, claimed, _ = call(
        app_context, fleet_ops.claim, "POST", "/api", token, {"capabilities": ["python"]}, None
    )
    assert status == 200 and claimed["job"]["checkpoint"] == checkpoint


def test_requeue_without_a_checkpoint_keeps_the_jobs(
    app_context: AppContext, coord: Coordinator, tokens: Tokens
) -> None:
    _, job_id = _claimed(app_context, coord, tokens)
    before = coord.get_job(P, job_id).checkpoint
    status, _ = _requeue(app_context, job_id, None)
    assert status == 200
    job = coord.get_job(P, job_id)
    assert job.checkpoint == before and "checkpoint" not in job.events[-1].data


def test_requeue_with_a_bad_checkpoint_is_refused_and_changes_nothing(
    app_context: AppContext, coord: Coordinator, tokens: Tokens
) -> None:
    _, job_id = _claimed(app_context, coord, tokens)
    before = coord.get_job(P, job_id)
    for body, field in (
        ({"checkpoint": "not an object"}, "checkpoint"),
        ({"checkpoint": {"blob": "x" * (MAX_REPORT_BYTES + 1)}}, "checkpoint"),
    ):
        status, reply = _requeue(app_context, job_id, body)
        assert status == 400, reply
        assert field in str(reply)
    after = coord.get_job(P, job_id)
    assert after.etag == before.etag
    # only a requeue carries one: the other actions refuse the field
    status, reply, _ = call(
        app_context,
        actions.cancel_job,
        "POST",
        "/api",
        OPERATOR,
        {"checkpoint": {"a": 1}},
        P,
        id=job_id,
    )
    assert status == 400 and "checkpoint" in str(reply)
