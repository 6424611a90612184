"""The demo `make up` runs (devtools/demo.py), on the local stack: its jobs flow to
shipped through two enrolled factories, the one nobody can run says so, the release waits
for its dependencies, and the job that needs a review is approved by the factory that did
not build it."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from devtools import demo
from tests.conftest import RunningStack
from tests.support.factories import wait_for

pytestmark = pytest.mark.integration


def _jobs(stack: RunningStack) -> dict[str, dict[str, Any]]:
    listed = requests.get(
        f"{stack.api}/fleet/jobs", headers=stack.operator(demo.PRODUCT), timeout=30
    )
    listed.raise_for_status()
    return {job["title"]: job for job in listed.json()["jobs"]}


def test_demo_jobs_flow_to_shipped_with_a_review_on_the_way(running_stack: RunningStack) -> None:
    said: list[str] = []
    run = demo.run_demo(running_stack.api, running_stack.operator_token, say=said.append)
    runnable = [j["title"] for j in demo.SAMPLE_JOBS if "gpu" not in j["capabilities"]]
    try:

        def all_shipped() -> dict[str, dict[str, Any]] | None:
            jobs = _jobs(running_stack)
            done = all(jobs[t]["stage"] == "shipped" for t in [*runnable, "Release 1.4"])
            return jobs if done else None

        jobs = wait_for("the demo's jobs to ship", all_shipped, timeout=120)
    finally:
        run.stop()
    gpu = jobs["Train the ranking model"]
    assert gpu["stage"] == "queued" and gpu["unroutable"] is True
    reviewed = jobs["Fix flaky test_upload"]["reviewState"]
    (vote,) = reviewed["votes"]
    assert vote["verdict"] == "approve" and vote["reviewer"] != f"factory:{reviewed['author']}"
    assert reviewed["outcome"] == "approved"
    assert any("waiting for a review" in line for line in said)
    assert any("approved 'Fix flaky test_upload' -> shipped" in line for line in said)
