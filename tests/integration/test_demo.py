"""The demo `make up` runs (devtools/demo.py), on the local stack: its jobs flow to
shipped through two enrolled factories, the one nobody can run says so, the release waits
for its dependencies, and the job that needs a review is approved by the factory that did
not build it."""

from __future__ import annotations

from pathlib import Path
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


def test_demo_elastic_gpu_job_is_shipped_by_a_factory_autoscaled_from_zero(
    running_stack: RunningStack, tmp_path: Path
) -> None:
    """``--elastic``: no enrolled factory offers gpu; the demo's autoscaler sees the gpu job in
    the product's demand, starts an ephemeral gpu factory (the real ``fleet-factory``
    processes), which ships it and leaves the fleet once idle: zero gpu factories again. (It
    runs after the test above, which finds the gpu job waiting: the demo's jobs are the same
    ones, by their idempotency keys.)"""
    log = tmp_path / "autoscale.log"
    run = demo.run_demo(running_stack.api, running_stack.operator_token, elastic=str(log))
    try:

        def gpu_shipped() -> dict[str, Any] | None:
            job = _jobs(running_stack)["Train the ranking model"]
            return job if job["stage"] == "shipped" else None

        job = wait_for("the gpu job to ship", gpu_shipped, timeout=150)

        def gpu_factories_gone() -> list[dict[str, Any]] | None:
            listed = requests.get(
                f"{running_stack.api}/fleet/factories",
                headers=running_stack.operator(demo.PRODUCT),
                timeout=30,
            ).json()["factories"]
            autoscaled = [f for f in listed if str(f["id"]).startswith("auto-")]
            live = [f for f in autoscaled if not f.get("deregistered")]
            return autoscaled if autoscaled and not live else None

        autoscaled = wait_for("the autoscaled factory to leave", gpu_factories_gone, timeout=90)
    finally:
        run.stop(timeout=60)
    whole = requests.get(
        f"{running_stack.api}/fleet/jobs/{job['id']}",
        headers=running_stack.operator(demo.PRODUCT),
        timeout=30,
    ).json()
    events = whole.get("events") or whole["job"]["events"]
    assert [e["type"] for e in events].count("assign") == 1  # shipped exactly once
    holder = next(e["holder"] for e in events if e["type"] == "assign")
    assert holder.startswith("auto-") and holder in {f["id"] for f in autoscaled}
    assert "started" in log.read_text()
