"""The self-healer heals, on the local stack with two real ``fleet-factory`` processes.

The demo engine is told to hang without a word on the job's first attempt
(``demo: hang-silent-first``). Factory ``fa`` takes the job; ``fb`` joins. Healer passes (the
coordinator's own ``FleetHealth``, built from app settings with a short
``HEALER_STALL_AFTER_SECONDS``, over the stack's Cosmos emulator and Azurite, on the real
clock) are driven while the test polls: the job is flagged stalled and its engine restarted on
``fa`` (the factory's log says so); still stalled a period later it is taken back, moves to
``fb`` and ships there; ``fa`` never gets it back; ``explain`` says why; the job's events
show each step. Nothing sleeps a fixed time: everything is polled with a deadline.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.coordinator import Coordinator
from fleet.coordinator.fleet_health import FleetHealth, HealReport, fleet_health
from fleet.settings import Settings
from fleet.store.ports import Stores
from tests.conftest import RunningStack
from tests.support.factories import Fleet, wait_for

pytestmark = pytest.mark.integration

# Longer than the factories' heartbeat cadence (a third of the job's 30 s lease): the
# restart-engine command reaches the factory (on a heartbeat) before a stall period has
# passed since the flag, when the job is taken back.
STALL_SECONDS = 12


@pytest.fixture
def fleet(running_stack: RunningStack, tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(running_stack, f"heal{uuid.uuid4().hex[:10]}", tmp_path)
    try:
        yield fleet
    finally:
        fleet.stop_all()


@pytest.fixture
def healer(stack_env: dict[str, str], azure_backend: Stores) -> FleetHealth:
    """The coordinator's healer with short thresholds, from app settings."""
    settings = Settings.from_env(
        {
            **stack_env,
            "HEALER_STALL_AFTER_SECONDS": str(STALL_SECONDS),
            "HEALER_NEVER_STARTED_SECONDS": "600",
            "HEALER_AVOID_GRACE_SECONDS": "3600",
        }
    )
    return fleet_health(Coordinator(azure_backend), settings.healer)


class Passes:
    """Healer passes over one product, each report kept."""

    def __init__(self, healer: FleetHealth, product: str) -> None:
        self.healer = healer
        self.product = product
        self.reports: list[HealReport] = []

    def run(self) -> HealReport:
        report = self.healer.heal(self.product)
        self.reports.append(report)
        return report

    def did(self, what: str, job_id: str) -> bool:
        return any(job_id in getattr(r, what) for r in self.reports)


def test_healer_restarts_a_stalled_engine_then_moves_the_job_to_a_clean_factory(
    fleet: Fleet, healer: FleetHealth
) -> None:
    job_id = fleet.submit(
        title="hangs on its first attempt",
        body="Write the release notes.\ndemo: hang-silent-first\n",
    )
    fa, fb = fleet.factory("fa"), fleet.factory("fb")
    fa.start()
    wait_for("fa to start the job", lambda: fleet.job(job_id)["stage"] == "building", 90)
    assert fleet.job(job_id)["holder"] == "fa"
    fb.start()
    wait_for(
        "fb to register",
        lambda: any(f["id"] == "fb" for f in fleet.get("/fleet/factories")["factories"]),
        60,
    )
    passes = Passes(healer, fleet.product)

    # First verdict: flagged stalled, and its engine restarted on fa (and only there).
    def restarted() -> bool:
        passes.run()
        return passes.did("restarted", job_id) and "engine restarted" in fa.output()

    wait_for("the healer to restart the engine on fa", restarted, 90)
    assert f"job {job_id}: engine restarted" in fa.output()
    assert "restart-engine (by healer): 1 engine(s)" in fa.output()
    assert fleet.job(job_id)["stage"] == "building" and fleet.job(job_id)["stalled"]
    assert "restart-engine" not in fb.output()

    # Still stalled a period after the flag: taken back, and it ships on fb.
    def shipped() -> bool:
        passes.run()
        return fleet.job(job_id)["stage"] == "shipped"

    wait_for("the job to move to fb and ship", shipped, 120)
    assert passes.did("released", job_id)
    assert [r.avoided for r in passes.reports if r.avoided] == [{job_id: "fa"}]
    assert sum(r.restarted.count(job_id) for r in passes.reports) == 1

    # The job's events: stalled -> taken back -> assigned to fb -> shipped.
    history = fleet.events(job_id)
    steps = [
        (e["type"], e["actor"], e.get("holder"))
        for e in history
        if e["type"] in ("assign", "stalled", "take_back", "complete")
    ]
    assert steps == [
        ("assign", "factory:fa", "fa"),
        ("stalled", "healer", "fa"),
        ("take_back", "healer", None),
        ("assign", "factory:fb", "fb"),
        ("complete", "factory:fb", None),
    ], steps
    stalled = next(e for e in history if e["type"] == "stalled")
    assert stalled["data"]["restart"] is True and stalled["data"]["alert"]["kind"] == "stalled"
    taken = next(e for e in history if e["type"] == "take_back")
    assert taken["reason"].startswith("stalled on fa: still no progress")
    assert taken["data"]["avoid"]["factory"] == "fa"
    assert taken["data"]["avoid"]["reason"] == "stalled on fa"
    assert "stall_cleared" not in {e["type"] for e in history}

    # The attempts: fa's closed taken_back, fb's shipped; the first factory never got it back.
    runs = fleet.get(f"/fleet/jobs/{job_id}/runs")["runs"]
    assert [(r["factory"], r["outcome"]) for r in runs] == [("fa", "taken_back"), ("fb", "shipped")]
    job = fleet.job(job_id)
    assert job["failedBy"] == ["fa"] and [a["factory"] for a in job["avoid"]] == ["fa"]
    wait_for(  # its state file records the outcome once the coordinator accepted it
        "fb to record the ship",
        lambda: (fb.state().get("outcomes") or {}).get("shipped") == 1,
        30,
    )
    assert (fa.state().get("outcomes") or {}).get("shipped", 0) == 0

    # explain says why fa is not offered it.
    explained = fleet.get(f"/fleet/jobs/{job_id}/explain")
    verdicts = {v["factory"]: v for v in explained["factories"]}
    assert "avoided: stalled on fa" in verdicts["fa"]["reasons"]
    assert not verdicts["fa"]["eligible"]
    assert "avoided: stalled on fa" not in verdicts["fb"]["reasons"]

    # The product's event log shows each step too, the restart command among them.
    feed = _feed(fleet)
    mine = [e for e in feed if e.get("jobId") == job_id]
    kinds = [e["type"] for e in mine if e["type"] in ("stalled", "take_back", "assign", "complete")]
    assert kinds == ["assign", "stalled", "take_back", "assign", "complete"], kinds
    assert any(
        e["type"] == "command_queued"
        and job_id in json.dumps(e)
        and "restart-engine" in json.dumps(e)
        for e in feed
    )

    for factory in (fa, fb):
        assert factory.stop() == 0, factory.output()


def _feed(fleet: Fleet) -> list[dict[str, Any]]:
    """Every event of the product's log, oldest first."""
    events: list[dict[str, Any]] = []
    cursor = ""
    while True:
        page = fleet.get(f"/fleet/events?limit=500{f'&after={cursor}' if cursor else ''}")
        events += page["events"]
        if not page["events"] or page.get("cursor") in (None, cursor):
            return events
        cursor = page["cursor"]
