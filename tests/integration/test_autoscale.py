"""``fleet-factory autoscale`` on the real local stack: from zero factories to zero, every job
shipped once, by ephemeral factories it started and that left on their own.

The autoscaler is a real ``python -m factory_cli autoscale`` subprocess; its children are
real ``fleet-factory enroll`` + ``run --exit-when-idle`` processes with the demo engine. The
demand it polls is kept by the host's reaper timer: the session stack runs it on the default
``REAPER_SCHEDULE`` (``*/15 * * * * *``, ``fleet.settings.DEFAULT_SCHEDULES``), so demand shows
up to 15 s after the submissions, and turns to zero up to 15 s after the last ship: most of
this test's ~40 s. Nothing sleeps a fixed time: every wait polls.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, RunningStack
from tests.support.factories import Fleet, wait_for

pytestmark = pytest.mark.integration

JOBS = 6
MAX = 2


@pytest.fixture
def fleet(running_stack: RunningStack, tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(running_stack, f"auto{uuid.uuid4().hex[:10]}", tmp_path)
    try:
        yield fleet
    finally:
        fleet.stop_all()


def routable(fleet: Fleet) -> int:
    return int(fleet.get("/fleet/demand")["routable"])


def enrolled(fleet: Fleet) -> list[dict[str, Any]]:
    """The product's factories still enrolled (not deregistered)."""
    return [f for f in fleet.get("/fleet/factories")["factories"] if not f.get("deregistered")]


def test_autoscale_from_zero_to_zero_ships_every_job_once(fleet: Fleet, tmp_path: Path) -> None:
    assert fleet.get("/fleet/factories")["factories"] == []
    jobs = [fleet.submit(title=f"job {n}", body=f"Write note {n}.\nAnd more.") for n in range(JOBS)]
    # The reaper's next pass (at most 15 s away) puts them in the demand.
    wait_for("the demand to show the jobs", lambda: routable(fleet) == JOBS, timeout=40)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FLEET_")},
        "FLEET_API": fleet.stack.api,
        "FLEET_CONFIG_DIR": str(tmp_path / "scaler"),
        "FLEET_ALLOW_ROOT_ENGINE": "1",  # the children's: the tests run as root in CI
        "FLEET_POLL_SECONDS": "0.5",  # the children's gate poll
        "FLEET_DEMO_STEPS": "2",
        "FLEET_DEMO_STEP_SECONDS": "0.3",
        "PYTHONUNBUFFERED": "1",
    }
    command = [
        sys.executable, "-m", "factory_cli", "autoscale",
        "--max", str(MAX), "--engine", "demo",
        "--operator-token", fleet.stack.operator_token, "--product", fleet.product,
        "--idle", "2", "--interval", "1", "--until-idle", "--json",
        "--children-dir", str(tmp_path / "children"),
    ]  # fmt: skip
    stdout, stderr = tmp_path / "autoscale.json", tmp_path / "autoscale.log"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=err)
    most = 0
    try:
        deadline = time.monotonic() + 90
        while proc.poll() is None:  # at most MAX enrolled at once, polled all along
            most = max(most, len(enrolled(fleet)))
            assert time.monotonic() < deadline, stderr.read_text()
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.terminate()  # it stops its children (SIGTERM, then waits for them)
            proc.wait(timeout=90)
    log = stderr.read_text()
    assert proc.returncode == 0, log
    assert "Traceback" not in log
    summary = json.loads(stdout.read_text())
    # Every job shipped, exactly once, by the children.
    children = {c["name"] for c in summary["children"]}
    for job_id in jobs:
        job = fleet.job(job_id)
        assert job["stage"] == "shipped", job
        assert job["result"]["factory"] in children
        kinds = [e["type"] for e in fleet.events(job_id)]
        assert kinds.count("assign") == 1 and kinds.count("complete") == 1, (job_id, kinds)
    assert summary["jobsShipped"] == JOBS
    # At most MAX at once; two started (the lagging demand did not start more), both gone.
    assert 1 <= most <= MAX and summary["maxRunning"] == MAX
    assert summary["started"] == MAX == len(children), log
    assert all(c["exitCode"] == 0 for c in summary["children"]), log
    listed = fleet.get("/fleet/factories")["factories"]
    assert {f["id"] for f in listed} == children
    assert all(f["deregistered"] is True and f["live"] is False for f in listed), listed
    # The figures: printed, present and positive.
    assert summary["exit"] == "idle" and summary["exitCode"] == 0
    assert summary["timeToFirstClaimSeconds"] > 0 and summary["factorySeconds"] > 0
    assert summary["factorySeconds"] == pytest.approx(
        sum(c["seconds"] for c in summary["children"]), abs=0.2
    )
    assert log.count(" start auto-") == MAX and log.count(" exit  auto-") == MAX
    assert "idle: no demand and no child for 2 s, exiting" in log
