"""``fleet-factory run --exit-when-idle`` on the real local stack: an ephemeral factory takes
the work waiting for it, then leaves the fleet on its own.

The factory is a real ``python -m factory_cli run`` subprocess enrolled through ``fleet-factory
enroll`` (``tests.support.factories``), with the demo engine standing in for an agent.
Nothing sleeps a fixed time: every wait polls for the state it needs.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import RunningStack
from tests.support.factories import Fleet, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def fleet(running_stack: RunningStack, tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(running_stack, f"idle{uuid.uuid4().hex[:10]}", tmp_path)
    try:
        yield fleet
    finally:
        fleet.stop_all()


def test_factory_exit_when_idle_ships_the_work_then_deregisters_and_exits_zero(
    fleet: Fleet,
) -> None:
    jobs = [fleet.submit(title=f"job {n}", body=f"Write note {n}.\nAnd more.") for n in range(2)]
    fa = fleet.factory("fa")
    fa.start("--exit-when-idle", "2")
    proc = fa.proc
    assert proc is not None
    wait_for("fa to exit on its own", lambda: proc.poll() is not None, timeout=120)
    output = fa.output()
    assert proc.returncode == 0, output
    assert "idle for 2 s: deregistered, exiting" in output
    assert "Traceback" not in output
    for job_id in jobs:
        job = fleet.job(job_id)
        assert job["stage"] == "shipped", job
        assert job["result"]["factory"] == "fa"
    state = fa.state()
    assert state["status"] == "stopped" and state["exitCode"] == 0
    assert state["outcomes"] == {"shipped": 2}
    listed = {f["id"]: f for f in fleet.get("/fleet/factories")["factories"]}
    assert listed["fa"]["deregistered"] is True and listed["fa"]["live"] is False
