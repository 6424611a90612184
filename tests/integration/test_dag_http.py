"""A 3-level DAG over HTTP on the local stack, run to completion by enrolled factories."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests

from tests.conftest import RunningStack, bearer

pytestmark = pytest.mark.integration


def _post(url: str, headers: dict[str, str], body: Any) -> requests.Response:
    return requests.post(url, json=body, headers=headers, timeout=30)


def test_http_three_level_dag_runs_to_completion(running_stack: RunningStack) -> None:
    api = running_stack.api
    product = f"d{uuid.uuid4().hex[:10]}"
    op = running_stack.operator(product)
    root = _post(f"{api}/fleet/jobs", op, {"title": "release", "body": "ship it"}).json()["job"]
    made = _post(
        f"{api}/fleet/jobs/{root['id']}/children",
        op,
        {"children": [{"title": "feature", "body": "build it"}]},
    )
    assert made.status_code == 201, made.text
    assert made.json()["parent"]["stage"] == "blocked"
    mid = made.json()["children"][0]
    leaves = _post(
        f"{api}/fleet/jobs/{mid['id']}/children",
        op,
        {
            "mode": "all",
            "children": [{"title": "part a"}, {"manifest": "---\ntitle: part b\n---\n"}],
        },
    ).json()["children"]
    cycle = _post(
        f"{api}/fleet/jobs/{leaves[0]['id']}/children",
        op,
        {"children": [{"title": "loop", "deps": [root["id"]]}]},
    )
    assert cycle.status_code == 400 and cycle.json()["details"]["problems"][0]["code"] == "cycle"
    factories = [bearer(running_stack.enroll(product, f"w{i}")) for i in range(2)]
    order: list[str] = []
    for _ in range(10):  # bounded: 4 jobs, each claimable once its deps shipped
        progressed = False
        for factory in factories:
            claim = _post(f"{api}/fleet/claim", factory, {"capabilities": ["python"]})
            if claim.status_code == 204:
                continue
            body = claim.json()
            job, epoch = body["job"]["id"], body["lease"]["epoch"]
            for stage in ("building", "shipped"):
                done = requests.patch(
                    f"{api}/fleet/jobs/{job}",
                    json={"leaseEpoch": epoch, "stage": stage},
                    headers=factory,
                    timeout=30,
                )
                assert done.status_code == 200, done.text
            order.append(body["job"]["title"])
            progressed = True
        if not progressed:
            break
    assert sorted(order[:2]) == ["part a", "part b"] and order[2:] == ["feature", "release"]
    tree = requests.get(f"{api}/fleet/jobs/{root['id']}/dag", headers=op, timeout=30).json()
    assert tree["stage"] == "shipped"
    assert tree["deps"][0]["stage"] == "shipped"
    assert {n["stage"] for n in tree["deps"][0]["deps"]} == {"shipped"}
