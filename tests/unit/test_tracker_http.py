"""The tracker bridge over HTTP on the in-memory twin: GitHub bindings (PUT, GET, DELETE),
deliveries landing only in their repository's product, and every reply is what the OpenAPI
document says it is."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fleet.context import AppContext
from fleet.coordinator import Coordinator
from fleet.coordinator.identity import Principal, Want
from fleet.coordinator.tracker import sign
from fleet.store.memory import MemoryDocumentStore
from tests.support.handlers import OPERATOR, Reply, call, documented, with_principals

P = "alpha"
OTHER = "beta"
REPO = "acme/app"
SECRET = "s3cret-of-acme-app"


def bind(context: AppContext, product: str = P, **body: Any) -> Reply:
    return call(
        context,
        "put_github_binding",
        "PUT",
        "/api/fleet/tracker/github",
        OPERATOR,
        {"repository": REPO, "secret": SECRET, **body},
        product,
    )


def issue(number: int = 3, association: str = "OWNER") -> dict[str, Any]:
    return {
        "action": "opened",
        "repository": {"full_name": REPO},
        "issue": {
            "number": number,
            "title": "Bug",
            "body": "trace",
            "labels": [],
            "author_association": association,
        },
    }


def deliver(
    context: AppContext,
    payload: dict[str, Any],
    *,
    secret: str = SECRET,
    event: str = "issues",
    delivery: str = "72d3162e-cc78-11e3-81ab-4c9367dc0958",
    signature: str | None = None,
    product: str | None = None,
) -> Reply:
    raw = json.dumps(payload).encode()
    headers = {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": signature if signature is not None else sign(secret, raw),
    }
    params = {"product": product} if product else None
    return call(
        context, "tracker_ingest", "POST", "/api/fleet/tracker/ingest", body=raw,
        headers=headers, params=params,
    )  # fmt: skip


def documents(coord: Coordinator) -> list[dict[str, Any]]:
    assert isinstance(coord.docs, MemoryDocumentStore)
    return coord.docs.all_docs()


def test_tracker_http_replies_are_documented(app_context: AppContext) -> None:
    item = {"source": "jira", "id": "F-1", "title": "Fix it"}
    replies = [
        call(app_context, "tracker_ingest", "POST", token=OPERATOR, product=P, body=item)
        for _ in range(2)
    ]
    assert [(r.status, r.body["created"]) for r in replies] == [(201, True), (200, False)]
    for r in replies:
        documented(r.body, "TrackerJob")
    assert bind(app_context).status == 201
    status, made, _ = deliver(app_context, issue())
    assert status == 201 and made["created"] is True
    documented(made, "TrackerJob")
    status, ignored, _ = deliver(app_context, {"ref": "main", "repository": {"full_name": REPO}},
                                 event="push")  # fmt: skip
    assert status == 202
    assert ignored == {
        "ignored": True,
        "event": "push",
        "reason": "event",
        "message": "only issues events make jobs",
    }
    documented(ignored, "TrackerIgnored")
    status, echo, _ = call(app_context, "tracker_echo_status", token=OPERATOR, product=P)
    assert status == 200 and echo == {
        "cursor": None,
        "attempts": None,
        "nextAttemptAt": None,
        "lastError": None,
        "configured": False,
    }
    documented(echo, "TrackerEcho")


# --- bindings ------------------------------------------------------------------------


def test_tracker_http_binding_put_get_delete_never_shows_the_secret(
    app_context: AppContext, coord: Coordinator
) -> None:
    status, bound, _ = bind(app_context, label="fleet")
    assert status == 201, bound
    documented(bound, "GitHubBinding")
    assert bound["repository"] == REPO and bound["product"] == P and bound["label"] == "fleet"
    assert bound["allowedAssociations"] == ["OWNER", "MEMBER", "COLLABORATOR"]  # the default
    assert bound["secretSet"] is True and bound["secretSetBy"].startswith("operator:")
    status, changed, _ = call(
        app_context, "put_github_binding", "PUT", token=OPERATOR, product=P,
        body={"repository": "ACME/app", "allowedAssociations": ["OWNER", "NONE"]},
    )  # fmt: skip
    assert status == 200 and changed["allowedAssociations"] == ["OWNER", "NONE"]
    assert changed["secretSetAt"] == bound["secretSetAt"] and changed["label"] is None
    status, listed, _ = call(app_context, "list_github_bindings", token=OPERATOR, product=P)
    assert status == 200 and [b["repository"] for b in listed["bindings"]] == ["ACME/app"]
    documented(listed, "GitHubBindingList")
    for reply in (bound, changed, listed):
        assert SECRET not in json.dumps(reply) and "secret" not in json.dumps(reply).replace(
            "secretSet", ""
        )
    assert call(app_context, "list_github_bindings", token=OPERATOR, product=OTHER).body == {
        "bindings": []
    }

    # A delivery lands while bound; refused once unbound.
    assert deliver(app_context, issue(1)).status == 201
    status, body, _ = call(
        app_context, "delete_github_binding", "DELETE", token=OPERATOR, product=P,
        params={"repository": REPO},
    )  # fmt: skip
    assert (status, body) == (204, None)
    before = documents(coord)
    refused = deliver(app_context, issue(2), delivery="d-2")
    assert refused.status == 401 and refused.body["error"] == "unauthorized"
    assert documents(coord) == before
    again = call(
        app_context, "delete_github_binding", "DELETE", token=OPERATOR, product=P,
        params={"repository": REPO},
    )  # fmt: skip
    assert again.status == 404


def test_tracker_http_a_repository_bound_elsewhere_is_409(
    app_context: AppContext, coord: Coordinator
) -> None:
    assert bind(app_context).status == 201
    before = documents(coord)
    status, body, _ = bind(app_context, OTHER, secret="another-secret-value")
    assert status == 409 and body["error"] == "already_bound"
    assert P not in body["message"]  # which product holds it is not told
    documented(body, "Error")
    assert documents(coord) == before


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"repository": REPO}, "secret"),  # a new binding needs its secret
        ({"repository": REPO, "secret": "short"}, "secret"),
        ({"repository": REPO, "secret": "x" * 257}, "secret"),
        ({"repository": "acme", "secret": SECRET}, "repository"),
        ({"repository": "acme/app/x", "secret": SECRET}, "repository"),
        ({"repository": "acme/..", "secret": SECRET}, "repository"),
        ({"repository": REPO, "secret": "x" * 16 + "\x00"}, "secret"),
        ({"repository": REPO, "secret": "x" * 16 + "\ud800"}, "secret"),
        ({"repository": REPO, "secret": SECRET, "label": "a\nb"}, "label"),
        ({"secret": SECRET}, "repository"),
        ({"repository": REPO, "secret": SECRET, "allowedAssociations": []}, "allowedAssociations"),
        ({"repository": REPO, "secret": SECRET, "allowedAssociations": ["ADMIN"]},
         "allowedAssociations[0]"),
        ({"repository": REPO, "secret": SECRET, "label": ""}, "label"),
        ({"repository": REPO, "secret": SECRET, "label": "x" * 51}, "label"),
        ({"repository": REPO, "secret": SECRET, "product": OTHER}, "product"),
    ],
)  # fmt: skip
def test_tracker_http_binding_bad_input_is_400_without_echoing_the_secret(
    app_context: AppContext, coord: Coordinator, body: dict[str, Any], path: str
) -> None:
    before = documents(coord)
    status, error, _ = call(
        app_context, "put_github_binding", "PUT", token=OPERATOR, product=P, body=body
    )
    assert status == 400 and error["error"] == "validation_failed"
    assert [p["path"] for p in error["details"]["problems"]] == [path]
    text = json.dumps(error, ensure_ascii=False).replace("too_short", "")
    secret = body.get("secret")
    assert not isinstance(secret, str) or secret not in text  # never echoed
    assert documents(coord) == before


@pytest.mark.parametrize(
    "repository", ["", "acme", "acme/app/x", "é/app", "acme/.", "a/" + "b" * 140]
)
def test_tracker_http_unbinding_names_a_repository(
    app_context: AppContext, repository: str
) -> None:
    status, error, _ = call(
        app_context, "delete_github_binding", "DELETE", token=OPERATOR, product=P,
        params={"repository": repository},
    )  # fmt: skip
    assert status == 400 and error["details"]["problems"][0]["path"] == "repository"


def test_tracker_http_bindings_are_for_admins(app_context: AppContext) -> None:
    def as_role(role: str) -> AppContext:
        def pick(token: str | None, want: Want) -> Principal:
            return Principal(kind="operator", id="pat", product=P, role=role)  # type: ignore[arg-type]

        return with_principals(app_context, pick)

    viewer, operator = as_role("viewer"), as_role("operator")
    assert call(viewer, "list_github_bindings", token=OPERATOR, product=P).status == 200
    for context in (viewer, operator):
        status, body, _ = bind(context)
        assert status == 403 and body["error"] == "forbidden"
        status, _, _ = call(
            context, "delete_github_binding", "DELETE", token=OPERATOR, product=P,
            params={"repository": REPO},
        )  # fmt: skip
        assert status == 403


# --- deliveries ----------------------------------------------------------------------


def test_tracker_http_delivery_lands_only_in_the_bound_product(
    app_context: AppContext, coord: Coordinator
) -> None:
    assert bind(app_context).status == 201
    status, made, _ = deliver(app_context, issue(), product=OTHER)  # ?product= is ignored
    assert status == 201 and made["job"]["productId"] == P
    assert [j.id for j in coord.list_jobs(P)] == [made["job"]["id"]]
    assert coord.list_jobs(OTHER) == [] and OTHER not in coord.products()
    status, again, _ = deliver(app_context, issue(), product=OTHER)
    assert status == 202 and again["reason"] == "duplicate_delivery"
    documented(again, "TrackerIgnored")


@pytest.mark.parametrize(
    "signature",
    [
        "sha256=" + "é" * 64,
        "sha256=" + "ü" + "0" * 63,
        "sha1=" + "0" * 40,
        "sha256=" + "0" * 10,
        "sha256:" + "0" * 64,
    ],
)
def test_tracker_http_malformed_signature_is_400_not_500(
    app_context: AppContext, coord: Coordinator, signature: str
) -> None:
    assert bind(app_context).status == 201
    before = documents(coord)
    status, error, _ = deliver(app_context, issue(), signature=signature)
    assert status == 400, error
    assert error["details"]["problems"][0]["path"] == "X-Hub-Signature-256"
    documented(error, "Error")
    assert documents(coord) == before


@pytest.mark.parametrize(
    ("headers", "status", "field"),
    [
        ({"X-Hub-Signature-256": ""}, 401, None),
        ({"X-GitHub-Delivery": ""}, 400, "X-GitHub-Delivery"),
        ({"X-GitHub-Delivery": "../x"}, 400, "X-GitHub-Delivery"),
    ],
)
def test_tracker_http_delivery_headers_are_required(
    app_context: AppContext,
    coord: Coordinator,
    headers: dict[str, str],
    status: int,
    field: str | None,
) -> None:
    assert bind(app_context).status == 201
    raw = json.dumps(issue()).encode()
    sent = {
        "X-GitHub-Event": "issues",
        "X-GitHub-Delivery": "d-1",
        "X-Hub-Signature-256": sign(SECRET, raw),
        **headers,
    }
    before = documents(coord)
    reply = call(app_context, "tracker_ingest", "POST", body=raw, headers=sent)
    assert reply.status == status
    if field is not None:
        assert reply.body["details"]["problems"][0]["path"] == field
    assert documents(coord) == before


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2]", b'{"a": NaN}', b"\xff\xfe"],
    ids=["text", "array", "nan", "bytes"],
)
def test_tracker_http_delivery_body_must_be_a_json_object(
    app_context: AppContext, body: bytes
) -> None:
    assert bind(app_context).status == 201
    headers = {
        "X-GitHub-Event": "issues",
        "X-GitHub-Delivery": "d-1",
        "X-Hub-Signature-256": sign(SECRET, body),
    }
    reply = call(app_context, "tracker_ingest", "POST", body=body, headers=headers)
    assert reply.status == 400 and reply.body["error"] == "validation_failed"


def test_tracker_http_unbound_and_forged_deliveries_are_one_401(
    app_context: AppContext, coord: Coordinator
) -> None:
    before = documents(coord)
    unbound = deliver(app_context, issue(), product=P)
    assert bind(app_context).status == 201
    after_bind = documents(coord)
    forged = deliver(app_context, issue(), secret="a-guess-at-the-secret")
    assert unbound.status == forged.status == 401
    assert unbound.body == forged.body  # whether the repository is bound is not told
    assert unbound.response.headers.get("WWW-Authenticate")
    assert P not in json.dumps(unbound.body) and SECRET not in json.dumps(forged.body)
    assert before == [] and documents(coord) == after_bind


def test_tracker_http_strangers_issue_is_202_with_the_reason(
    app_context: AppContext, coord: Coordinator
) -> None:
    assert bind(app_context).status == 201
    status, body, _ = deliver(app_context, issue(association="NONE"))
    assert status == 202 and body["reason"] == "author_association"
    assert "NONE" in body["message"]
    documented(body, "TrackerIgnored")
    assert coord.list_jobs(P) == []
