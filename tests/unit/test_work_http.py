"""Work structure over HTTP on the in-memory twin (artifacts, DAGs, the review quorum, the
tracker bridge): every reply is what the OpenAPI document says it is."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from typing import Any

import pytest

from fleet.context import AppContext
from fleet.coordinator import Coordinator
from fleet.coordinator.tokens import Tokens
from fleet.domain.models import ReviewSpec
from fleet.domain.scheduler import FactoryView
from fleet.domain.stages import Stage
from fleet.http.parsing import FactorySelf
from fleet.settings import Settings
from tests.support.builders import manifest
from tests.support.handlers import OPERATOR, call, documented

P = "prod"
SECRET = "webhook-secret"


def enroll(tokens: Tokens, name: str) -> str:
    issued = tokens.create_enrollment_token(P, "operator:test")
    return tokens.enroll(issued.token, name, FactorySelf(capabilities=("python",))).token


def held(coord: Coordinator, name: str, **fields: Any) -> tuple[str, int]:
    """A job of ``fields`` claimed by ``name`` and reported building: its id and epoch."""
    job, _ = coord.submit(P, manifest(**fields), "operator:o")
    claim = coord.claim(P, FactoryView(id=name, capabilities=frozenset({"python"})))
    assert claim is not None and claim.job.id == job.id
    coord.report(P, job.id, name, claim.lease.epoch, stage=Stage.BUILDING)
    return job.id, claim.lease.epoch


def test_artifacts_http_replies_are_documented(
    app_context: AppContext, coord: Coordinator, tokens: Tokens
) -> None:
    factory = enroll(tokens, "f1")
    job_id, epoch = held(coord, "f1")
    body = {"leaseEpoch": epoch, "name": "logs/build.log", "contentType": "text/plain"}
    status, issued, response = call(
        app_context, "issue_artifact_upload", "POST", token=factory, body=body, id=job_id
    )
    assert status == 201 and response.headers["Cache-Control"] == "no-store"
    documented(issued, "ArtifactUpload")
    app_context.stores.blobs.upload("artifacts", issued["blob"], b"ok\n", content_type="text/plain")
    for token in (OPERATOR, factory):
        status, listed, _ = call(app_context, "list_artifacts", token=token, product=P, id=job_id)
        assert status == 200 and [a["size"] for a in listed["artifacts"]] == [3]
        documented(listed, "ArtifactList")
    status, download, response = call(
        app_context,
        "download_artifact",
        token=OPERATOR,
        product=P,
        id=job_id,
        artifactId=issued["artifactId"],
    )
    assert status == 200 and response.headers["Cache-Control"] == "no-store"
    assert list(download)[:3] == ["url", "expiresAt", "id"]
    documented(download, "ArtifactDownload")
    status, gone, _ = call(
        app_context,
        "delete_artifact",
        "DELETE",
        token=OPERATOR,
        product=P,
        id=job_id,
        artifactId=issued["artifactId"],
    )
    assert (status, gone) == (204, None)


def test_dag_http_children_and_tree_are_documented(
    app_context: AppContext, coord: Coordinator
) -> None:
    root, _ = coord.submit(P, manifest(title="root"), "operator:o")
    children = [{"title": "a"}, {"manifest": "---\ntitle: b\n---\nbody\n"}]
    status, made, _ = call(
        app_context,
        "add_children",
        "POST",
        token=OPERATOR,
        product=P,
        body={"children": children, "unknown": "ignored"},
        id=root.id,
    )
    assert status == 201 and made["parent"]["stage"] == "blocked"
    assert [c["title"] for c in made["children"]] == ["a", "b"]
    documented(made, "Children")
    # A job waited for that is gone is a node of its own; a leaf has no deps.
    app_context.stores.documents.delete(P, made["children"][1]["id"])
    status, tree, _ = call(app_context, "job_dag", token=OPERATOR, product=P, id=root.id)
    assert status == 200
    documented(tree, "DagNode")
    assert (tree["stage"], tree["mode"], tree["holder"]) == ("blocked", "all", None)
    leaf, missing = tree["deps"]
    assert leaf["deps"] == [] and leaf["mode"] is None
    assert missing == {"id": made["children"][1]["id"], "missing": True}


def test_dag_http_children_problems_carry_the_childs_path(
    app_context: AppContext, coord: Coordinator
) -> None:
    root, _ = coord.submit(P, manifest(title="root"), "operator:o")
    body = {"mode": "some", "children": [{"title": "a"}, {"priority": 99}]}
    status, error, _ = call(
        app_context, "add_children", "POST", token=OPERATOR, product=P, body=body, id=root.id
    )
    assert status == 400
    paths = [p["path"] for p in error["details"]["problems"]]
    assert "mode" in paths and any(p.startswith("children[1].") for p in paths)


def test_review_http_request_and_vote_answer_the_job(
    app_context: AppContext, coord: Coordinator, tokens: Tokens
) -> None:
    author = enroll(tokens, "author")
    job_id, epoch = held(coord, "author", review=ReviewSpec(approvals=2))
    coord.report(P, job_id, "author", epoch, stage=Stage.SHIPPED, result={"ok": True})
    status, asked, _ = call(
        app_context, "request_review", "POST", token=author, id=job_id, body=None
    )
    assert status == 200 and asked["stage"] == "review"
    documented(asked, "JobView")
    vote = {"verdict": "approve", "comments": "fine"}
    status, voted, _ = call(
        app_context, "review_job", "POST", token=OPERATOR, product=P, body=vote, id=job_id
    )
    assert status == 200 and voted["stage"] == "review"
    documented(voted, "JobView")


def _github(context: AppContext, event: str, payload: dict[str, Any]) -> tuple[int, Any]:
    raw = json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
    headers = {"X-GitHub-Event": event, "X-Hub-Signature-256": signature}
    status, body, _ = call(
        context, "tracker_ingest", "POST", body=raw, params={"product": P}, headers=headers
    )
    return status, body


@pytest.fixture
def bridged(app_context: AppContext) -> AppContext:
    settings = Settings.from_env({"FLEET_STORE": "memory", "TRACKER_WEBHOOK_SECRET": SECRET})
    return dataclasses.replace(app_context, settings=settings)


def test_tracker_http_replies_are_documented(bridged: AppContext) -> None:
    item = {"source": "jira", "id": "F-1", "title": "Fix it"}
    replies = [
        call(bridged, "tracker_ingest", "POST", token=OPERATOR, product=P, body=item)
        for _ in range(2)
    ]
    assert [(r.status, r.body["created"]) for r in replies] == [(201, True), (200, False)]
    for r in replies:
        documented(r.body, "TrackerJob")
    issue = {
        "action": "opened",
        "repository": {"full_name": "acme/app"},
        "issue": {"number": 3, "title": "Bug", "body": "trace", "labels": []},
    }
    status, made = _github(bridged, "issues", issue)
    assert status == 200 and set(made) == {"job"}  # no `created` for GitHub's webhook
    documented(made, "TrackerJob")
    status, ignored = _github(bridged, "push", {"ref": "main"})
    assert (status, ignored) == (202, {"ignored": True, "event": "push"})
    documented(ignored, "TrackerIgnored")
    status, echo, _ = call(bridged, "tracker_echo_status", token=OPERATOR, product=P)
    assert status == 200 and echo == {
        "cursor": None,
        "attempts": None,
        "nextAttemptAt": None,
        "lastError": None,
        "configured": False,
    }
    documented(echo, "TrackerEcho")
