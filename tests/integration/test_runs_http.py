"""Run records and per-attempt limits over HTTP on the real local stack: the manifest's
repository and limits, the claim's ``limits``, the run a report fills, and the coordinator
refusing a renewal past the deadline and a cost over the cap."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
import requests

from tests.conftest import RunningStack, bearer

pytestmark = pytest.mark.integration


@pytest.fixture
def product() -> str:
    return f"r{uuid.uuid4().hex[:10]}"


def _call(method: str, url: str, headers: dict[str, str], body: Any = None) -> requests.Response:
    return requests.request(method, url, json=body, headers=headers, timeout=30)


def _runs(stack: RunningStack, product: str, job_id: str) -> list[dict[str, Any]]:
    reply = _call("GET", f"{stack.api}/fleet/jobs/{job_id}/runs", stack.operator(product))
    assert reply.status_code == 200, reply.text
    runs: list[dict[str, Any]] = reply.json()["runs"]
    return runs


def _spent(stack: RunningStack, product: str) -> float:
    budget = _call("GET", f"{stack.api}/fleet/budgets/{product}", stack.operator(product))
    return float(budget.json()["spentUsd"])


def test_http_runs_record_the_attempt_and_the_limits_are_enforced(
    running_stack: RunningStack, product: str
) -> None:
    api, op = running_stack.api, running_stack.operator(product)
    assert _call("PUT", f"{api}/fleet/budgets/{product}", op, {"ceilingUsd": 100}).ok
    factory = bearer(running_stack.enroll(product, "coder"))

    # A job on a repository, with both limits: the claim says them.
    repo = {"repo": "file:///srv/git/app.git", "base": "main", "pr": True}
    claimed = running_stack.submit_and_claim(
        product,
        factory,
        title="change the repo",
        capabilities=["python"],
        **repo,
        timeoutSeconds=600,
        maxCostUsd=5,
        budget=1,
    )
    job, epoch = claimed["job"], claimed["lease"]["epoch"]
    assert {k: job[k] for k in repo} == repo
    assert (job["timeoutSeconds"], job["maxCostUsd"]) == (600, 5)
    limits = claimed["limits"]
    assert limits["timeoutSeconds"] == 600 and limits["maxCostUsd"] == 5
    assert limits["deadlineAt"] is not None
    url = f"{api}/fleet/jobs/{job['id']}"
    progress = {"tokens": 120, "costUsd": 0.1, "usage": {"input": 100, "output": 20}}
    building = {"leaseEpoch": epoch, "stage": "building", "progress": progress}
    assert _call("PATCH", url, factory, building).status_code == 200
    result = {
        "exitCode": 0,
        "engine": "claude",
        "engineVersion": "2.1.3",
        "usage": {"input": 900, "output": 300, "cacheRead": 50, "cacheWrite": 10},
        "costUsd": 0.4,
        "diff": {"files": 2, "insertions": 30, "deletions": 4},
        "branch": f"fleet/{job['id']}",
        "commit": "0123456789abcdef0123456789abcdef01234567",
        "artifacts": ["engine.log", "diff.patch"],
    }
    shipped = {"leaseEpoch": epoch, "stage": "shipped", "result": result}
    assert _call("PATCH", url, factory, shipped).status_code == 200
    (run,) = _runs(running_stack, product, job["id"])
    assert run["outcome"] == "shipped" and run["factory"] == "coder" and run["epoch"] == epoch
    assert run["tokens"] == {"input": 900, "output": 300, "cacheRead": 50, "cacheWrite": 10}
    assert run["costUsd"] == 0.4 and run["engine"] == "claude"
    assert run["diff"] == {"files": 2, "insertions": 30, "deletions": 4}
    assert run["branch"] == f"fleet/{job['id']}" and run["commit"] == result["commit"]
    assert run["artifacts"] == ["engine.log", "diff.patch"] and run["endedAt"] is not None
    assert _spent(running_stack, product) == pytest.approx(0.4)

    # A cost over the cap: recorded at the cap, the attempt ended, 409 budget_exceeded; the
    # budget settles with the capped cost (a factory cannot make the product's spend).
    claimed = running_stack.submit_and_claim(
        product, factory, title="change the repo", capabilities=["python"], maxCostUsd=1, budget=1
    )
    job, epoch = claimed["job"], claimed["lease"]["epoch"]
    url = f"{api}/fleet/jobs/{job['id']}"
    over = {"leaseEpoch": epoch, "progress": {"costUsd": 1.5, "tokens": 10}}
    refused = _call("PATCH", url, factory, over)
    assert refused.status_code == 409 and refused.json()["error"] == "budget_exceeded"
    assert _spent(running_stack, product) == pytest.approx(1.4)
    (run,) = _runs(running_stack, product, job["id"])
    assert run["outcome"] == "budget_exceeded" and run["costUsd"] == 1.0
    again = _call("POST", f"{url}/lease/renew", factory, {"leaseEpoch": epoch})
    assert again.status_code == 409 and again.json()["error"] == "budget_exceeded"
    requeued = _call("GET", url, op).json()
    assert requeued["stage"] == "queued" and requeued["epoch"] == epoch + 1
    assert _call("POST", f"{url}/cancel", op).status_code == 200

    # The smallest timeout: renewals go through until the deadline, then 409 timeout.
    claimed = running_stack.submit_and_claim(
        product, factory, title="change the repo", capabilities=["python"], timeoutSeconds=10
    )
    job, epoch = claimed["job"], claimed["lease"]["epoch"]
    url = f"{api}/fleet/jobs/{job['id']}"
    assert claimed["limits"]["timeoutSeconds"] == 10
    renew = {"leaseEpoch": epoch}
    assert _call("POST", f"{url}/lease/renew", factory, renew).status_code == 200
    give_up = time.monotonic() + 40
    while True:
        reply = _call("POST", f"{url}/lease/renew", factory, renew)
        if reply.status_code != 200 or time.monotonic() > give_up:
            break
        time.sleep(0.5)  # polling for the deadline to pass
    assert reply.status_code == 409 and reply.json()["error"] == "timeout", reply.text
    ended = _call("GET", url, op).json()
    assert ended["stage"] == "queued" and ended["epoch"] == epoch + 1
    assert "deadline" in ended["events"][-1]["reason"]
    (run,) = _runs(running_stack, product, job["id"])
    assert run["outcome"] == "timeout" and run["endedAt"] is not None
    late = _call("PATCH", url, factory, {"leaseEpoch": epoch, "progress": {"tokens": 1}})
    assert late.status_code == 409 and late.json()["error"] == "timeout"

    # A credential in the repository URL is refused, field named.
    bad = {"title": "t", "body": "x", "repo": "https://user:tok@example.com/r.git"}
    refused = _call("POST", f"{api}/fleet/jobs", op, bad)
    assert refused.status_code == 400
    (problem,) = refused.json()["details"]["problems"]
    assert (problem["path"], problem["code"]) == ("repo", "invalid")
