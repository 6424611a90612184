"""The review quorum over HTTP on the local stack: a quorum of 2, one rejection round trip
whose comments the next attempt's claim carries, factories and an operator as reviewers."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests

from fleet.coordinator import Coordinator
from fleet.domain.jobs import agrees
from fleet.store.ports import Stores
from tests.conftest import RunningStack, bearer

pytestmark = pytest.mark.integration


def _post(url: str, headers: dict[str, str], body: Any) -> requests.Response:
    return requests.post(url, json=body, headers=headers, timeout=30)


def _build(api: str, factory: dict[str, str], caps: list[str], checkpoint: Any) -> dict[str, Any]:
    """Claim, build, report shipped: returns the claim's body and the report's job."""
    claim = _post(f"{api}/fleet/claim", factory, {"capabilities": caps})
    assert claim.status_code == 200, claim.text
    body: dict[str, Any] = claim.json()
    job_id, epoch = body["job"]["id"], body["lease"]["epoch"]
    for stage, extra in (("building", {"checkpoint": checkpoint}), ("shipped", {})):
        report = requests.patch(
            f"{api}/fleet/jobs/{job_id}",
            json={"leaseEpoch": epoch, "stage": stage, **extra},
            headers=factory,
            timeout=30,
        )
        assert report.status_code == 200, report.text
    body["reported"] = report.json()
    return body


def test_http_review_quorum_of_two_with_one_rejection_round_trip(
    running_stack: RunningStack, azure_backend: Stores
) -> None:
    api = running_stack.api
    product = f"r{uuid.uuid4().hex[:10]}"
    op = running_stack.operator(product)
    manifest = "---\ntitle: parser\nreview:\n  approvals: 2\n  distinctKind: true\n---\nDo it.\n"
    submitted = requests.post(
        f"{api}/fleet/jobs",
        data=manifest.encode(),
        headers={**op, "Content-Type": "text/markdown"},
        timeout=30,
    )
    assert submitted.status_code == 201, submitted.text
    job_id = submitted.json()["job"]["id"]
    assert submitted.json()["job"]["review"] == {
        "approvals": 2,
        "distinctKind": True,
        "maxRounds": 3,
    }
    claude = ["python", "engine:claude"]
    author = bearer(running_stack.enroll(product, "author", claude))
    twin = bearer(running_stack.enroll(product, "twin", claude))
    codex = bearer(running_stack.enroll(product, "codex", ["python", "engine:codex"]))
    url = f"{api}/fleet/jobs/{job_id}/review"

    first = _build(api, author, claude, {"branch": "wip/parser"})
    assert first["reported"]["stage"] == "review" and first["reported"]["holder"] is None
    # A factory reviewer finds the work, and may read it.
    listed = requests.get(f"{api}/fleet/jobs?stage=review", headers=codex, timeout=30).json()
    assert [j["id"] for j in listed["jobs"]] == [job_id]
    assert requests.get(f"{api}/fleet/jobs/{job_id}", headers=codex, timeout=30).ok
    asked = _post(f"{url}/request", author, {"reviewers": ["codex"], "note": "ready"})
    assert asked.status_code == 200, asked.text
    assert _post(f"{url}/request", twin, {}).json()["error"] == "not_author"

    refused = {
        "self": _post(url, author, {"verdict": "approve"}),
        "kind": _post(url, twin, {"verdict": "approve"}),
        "bad": _post(url, op, {"verdict": "maybe"}),
    }
    assert (refused["self"].status_code, refused["self"].json()["error"]) == (403, "self_review")
    assert (refused["kind"].status_code, refused["kind"].json()["error"]) == (403, "same_kind")
    assert refused["bad"].status_code == 400
    assert refused["bad"].json()["details"]["problems"][0]["path"] == "verdict"

    voted = _post(url, codex, {"verdict": "approve", "comments": "parser ok"})
    assert voted.status_code == 200 and voted.json()["stage"] == "review", voted.text
    again = _post(url, codex, {"verdict": "approve"})
    assert (again.status_code, again.json()["error"]) == (409, "already_voted")
    rejected = _post(url, op, {"verdict": "reject", "comments": "no tests for errors"})
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["stage"] == "queued"
    assert _post(url, op, {"verdict": "approve"}).json()["error"] == "not_in_review"

    # The next attempt (here the same machine kind, another factory) sees the comments.
    second = _build(api, twin, claude, {"branch": "wip/parser", "tests": True})
    review = second["job"]["checkpoint"]["review"]
    assert second["job"]["checkpoint"]["branch"] == "wip/parser"
    assert [c["comments"] for c in review["comments"]] == ["parser ok", "no tests for errors"]
    assert second["lease"]["epoch"] == first["lease"]["epoch"] + 1
    assert second["reported"]["reviewState"]["round"] == 2
    # The first holder is a zombie: fenced.
    zombie = requests.patch(
        f"{api}/fleet/jobs/{job_id}",
        json={"leaseEpoch": first["lease"]["epoch"], "stage": "shipped"},
        headers=author,
        timeout=30,
    )
    assert (zombie.status_code, zombie.json()["error"]) == (409, "fenced")

    assert _post(url, codex, {"verdict": "approve", "comments": "tests there"}).ok
    shipped = _post(url, op, {"verdict": "approve", "kind": "human"})
    assert shipped.status_code == 200 and shipped.json()["stage"] == "shipped", shipped.text
    state = shipped.json()["reviewState"]
    assert state["outcome"] == "approved" and state["history"][0]["outcome"] == "rejected"

    events = requests.get(f"{api}/fleet/jobs/{job_id}/events", headers=op, timeout=30).json()
    types = [e["type"] for e in events["events"]]
    assert types.count("review_vote") == 4 and types.count("review_request") == 1
    moves = [t for t in types if t in ("submit_review", "review_reject", "approve_quorum")]
    assert moves == ["submit_review", "review_reject", "submit_review", "approve_quorum"]
    coord = Coordinator(azure_backend)
    final = coord.get_job(product, job_id)
    assert agrees(final, coord.job_events(product, job_id))
