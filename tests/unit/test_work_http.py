"""Work structure over HTTP on the in-memory twin (artifacts, DAGs, the review quorum):
every reply is what the OpenAPI document says it is. (The tracker bridge's:
tests/unit/test_tracker_http.py.)"""

from __future__ import annotations

from typing import Any

from fleet.context import AppContext
from fleet.coordinator import Coordinator
from fleet.coordinator.tokens import Tokens
from fleet.domain.models import ReviewSpec
from fleet.domain.scheduler import FactoryView
from fleet.domain.stages import Stage
from fleet.http.parsing import FactorySelf
from tests.support.builders import manifest
from tests.support.handlers import OPERATOR, call, documented

P = "prod"


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


def test_dag_http_a_factory_reads_whole_only_the_jobs_it_may_read(
    app_context: AppContext, coord: Coordinator, tokens: Tokens
) -> None:
    reader = enroll(tokens, "f1")
    shipped, epoch = held(coord, "f2", title="shipped by f2")
    coord.report(P, shipped, "f2", epoch, stage=Stage.SHIPPED)
    mine, _ = held(coord, "f1", title="held by f1")
    theirs, _ = held(coord, "f2", title="held by f2")
    deps = {"mode": "any", "jobs": [shipped, mine, theirs]}
    root, epoch = held(coord, "f3", title="in review", deps=deps)
    coord.report(P, root, "f3", epoch, stage=Stage.REVIEW)
    status, tree, _ = call(app_context, "job_dag", token=reader, id=root)
    assert status == 200
    documented(tree, "DagNode")
    assert (tree["title"], tree["stage"]) == ("in review", "review")  # readable: in review
    assert tree["deps"] == [
        {"id": shipped, "stage": "shipped", "redacted": True, "deps": []},
        {
            "id": mine,
            "title": "held by f1",
            "stage": "building",
            "mode": None,
            "holder": "f1",
            "deps": [],
        },
        {"id": theirs, "stage": "building", "redacted": True, "deps": []},
    ]
    status, refused, _ = call(app_context, "job_dag", token=reader, id=theirs)
    assert (status, refused["error"]) == (403, "forbidden")  # its own DAG: not at all
