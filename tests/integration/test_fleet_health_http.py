"""Heartbeats, commands, deregistration and the self-healer on the real local stack.

Over HTTP: the factory endpoints served by the local host. For time (stale, down, stalled,
lease expiry) the healer and the coordinator run in-process over the same Cosmos emulator and
Azurite, with a manual clock started at the real time and advanced: no test sleeps. (The
stack's own timers run on real time meanwhile and find nothing to do in these products: their
clock is behind ours, and the healer only ever marks factories downwards.)
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import requests

from fleet.coordinator import Coordinator
from fleet.coordinator.clock import ManualClock
from fleet.coordinator.fleet_health import Beat, FleetHealth, JobProgress
from fleet.domain.manifest import Manifest
from fleet.domain.scheduler import FactoryView
from fleet.domain.stages import Stage
from fleet.store.ports import Stores
from tests.conftest import RunningStack, bearer

pytestmark = pytest.mark.integration


@pytest.fixture
def product() -> str:
    return f"p{uuid.uuid4().hex[:10]}"


class Fleet:
    """The one place that knows how callers prove who they are (adapt here, only here)."""

    def __init__(self, stack: RunningStack, product: str) -> None:
        self.stack = stack
        self.product = product
        self._tokens: dict[str, str] = {}

    def enroll(self, name: str) -> None:
        self._tokens[name] = self.stack.enroll(self.product, name, ("python",))

    def call(
        self, method: str, path: str, *, factory: str | None = None, body: Any = None
    ) -> requests.Response:
        headers = (
            bearer(self._tokens[factory])
            if factory is not None
            else self.stack.operator(self.product)
        )
        return requests.request(
            method, f"{self.stack.api}{path}", json=body, headers=headers, timeout=30
        )

    def ok(
        self,
        method: str,
        path: str,
        *,
        factory: str | None = None,
        body: Any = None,
        status: int = 200,
    ) -> Any:
        response = self.call(method, path, factory=factory, body=body)
        assert response.status_code == status, f"{method} {path}: {response.text}"
        return response.json() if response.content else None


@pytest.fixture
def fleet(running_stack: RunningStack, product: str) -> Fleet:
    return Fleet(running_stack, product)


def _started_job(fleet: Fleet, factory: str) -> dict[str, Any]:
    fleet.ok(
        "POST",
        "/fleet/jobs",
        body={"title": "job", "capabilities": ["python"], "body": "do it"},
        status=201,
    )
    claim = fleet.ok("POST", "/fleet/claim", factory=factory, body={"capabilities": ["python"]})
    epoch = claim["lease"]["epoch"]
    job_id = claim["job"]["id"]
    fleet.ok(
        "PATCH",
        f"/fleet/jobs/{job_id}",
        factory=factory,
        body={"leaseEpoch": epoch, "stage": "building"},
    )
    return {"id": job_id, "epoch": epoch}


def test_http_heartbeat_progress_and_the_command_channel(fleet: Fleet) -> None:
    fleet.enroll("f1")
    reply = fleet.ok("POST", "/fleet/factories/heartbeat", factory="f1", body={"seats": 2})
    assert reply["status"] == "live" and reply["commands"] == []
    assert reply["cadence"]["heartbeatSeconds"] == 30
    job = _started_job(fleet, "f1")
    progress = {
        "jobId": job["id"],
        "leaseEpoch": job["epoch"],
        "tokens": 1234,
        "costUsd": 0.42,
        "lastActivityAt": datetime.now(UTC).isoformat(),
        "lastOutputLine": "Running tests... " + "x" * 1500,
    }
    beat = {"capabilities": ["python"], "seats": 2, "load": 1, "jobs": [progress]}
    fleet.ok("POST", "/fleet/factories/heartbeat", factory="f1", body=beat)
    seen = fleet.ok("GET", "/fleet/factories/f1/heartbeat")
    assert seen["load"] == 1 and seen["status"] == "live"
    (held,) = seen["jobs"]
    assert (held["jobId"], held["tokens"], held["costUsd"]) == (job["id"], 1234, 0.42)
    assert held["lastOutputLine"].startswith("Running tests") and len(held["lastOutputLine"]) <= 500

    # pause: the factory document says so at once (explain, the list) and the factory is told.
    pause = fleet.ok("POST", "/fleet/factories/f1/commands", body={"command": "pause"}, status=202)[
        "command"
    ]
    listed = fleet.ok("GET", "/fleet/factories")["factories"]
    assert [f["paused"] for f in listed if f["id"] == "f1"] == [True]
    for _ in range(2):  # delivered on every heartbeat until acknowledged
        reply = fleet.ok("POST", "/fleet/factories/heartbeat", factory="f1", body=beat)
        assert [c["id"] for c in reply["commands"]] == [pause["id"]]
    reply = fleet.ok(
        "POST", "/fleet/factories/heartbeat", factory="f1", body={**beat, "ack": [pause["id"]]}
    )
    assert reply["commands"] == []

    # cancel-job: the job is cancelled (its holder fenced) and the factory told to stop it.
    bad = fleet.call("POST", "/fleet/factories/f1/commands", body={"command": "cancel-job"})
    assert bad.status_code == 400, bad.text
    assert [p["path"] for p in bad.json()["details"]["problems"]] == ["jobId"]
    cancel = fleet.ok(
        "POST",
        "/fleet/factories/f1/commands",
        body={"command": "cancel-job", "jobId": job["id"], "reason": "wrong repo"},
        status=202,
    )
    assert cancel["job"]["stage"] == "cancelled"
    fenced = fleet.call(
        "POST",
        f"/fleet/jobs/{job['id']}/lease/renew",
        factory="f1",
        body={"leaseEpoch": job["epoch"]},
    )
    assert fenced.status_code == 409 and fenced.json()["error"] == "fenced"
    reply = fleet.ok("POST", "/fleet/factories/heartbeat", factory="f1", body=beat)
    assert [(c["kind"], c["jobId"]) for c in reply["commands"]] == [("cancel-job", job["id"])]


def test_http_deregister_by_the_factory_or_an_operator(
    fleet: Fleet, azure_backend: Stores, product: str
) -> None:
    fleet.enroll("leaver")
    fleet.enroll("other")
    job = _started_job(fleet, "leaver")
    fleet.ok("POST", "/fleet/factories/heartbeat", factory="leaver", body={})
    refused = fleet.call("DELETE", "/fleet/factories/leaver", factory="other")
    assert refused.status_code == 403, refused.text
    gone = fleet.ok("DELETE", "/fleet/factories/leaver", factory="leaver")
    assert gone == {"factory": "leaver", "deregistered": True}
    assert fleet.ok("DELETE", "/fleet/factories/leaver") == gone  # idempotent (operator)
    assert fleet.call("GET", "/fleet/factories/leaver/heartbeat").status_code == 404
    # Its tokens went with it: it must enroll again to come back.
    again = fleet.call("POST", "/fleet/factories/heartbeat", factory="leaver", body={})
    assert again.status_code == 401, again.text
    # The reaper (the stack's timer, or this pass, whichever comes first) takes its job back.
    Coordinator(azure_backend).reap(product)
    after = fleet.ok("GET", f"/fleet/jobs/{job['id']}")
    assert after["stage"] == "queued" and after["failedBy"] == ["leaver"]
    assert after["epoch"] == job["epoch"] + 1
    missing = fleet.call("DELETE", "/fleet/factories/never-was")
    assert missing.status_code == 404 and missing.json()["error"] == "factory_not_found"


def test_healer_flags_the_stalled_and_leaves_the_silent_to_its_lease(
    azure_backend: Stores, product: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The Must-show: a stalled-but-heartbeating factory is flagged; a silent one is marked
    stale (then down) and its job returns to the queue only after the lease expires."""
    clock = ManualClock(datetime.now(UTC))
    coord = Coordinator(azure_backend, clock=clock)
    health = FleetHealth(coord)
    caps = frozenset({"python"})
    jobs: dict[str, Any] = {}
    for name in ("busy", "silent"):
        health.heartbeat(product, name, Beat(capabilities=("python",)))
        coord.submit(
            product,
            Manifest(title=f"job for {name}", capabilities=("python",), leaseSeconds=120),
            "operator:o",
        )
        claim = coord.claim(product, FactoryView(id=name, capabilities=caps))
        assert claim is not None
        jobs[name] = coord.report(
            product, claim.job.id, name, claim.lease.epoch, stage=Stage.BUILDING
        )
    busy, silent = jobs["busy"], jobs["silent"]
    stuck = JobProgress(
        job_id=busy.id, lease_epoch=busy.epoch, tokens=800, last_output_line="Waiting..."
    )
    last_words = JobProgress(job_id=silent.id, lease_epoch=silent.epoch, tokens=10)
    health.heartbeat(product, "busy", Beat(capabilities=("python",), jobs=(stuck,)))
    health.heartbeat(product, "silent", Beat(capabilities=("python",), jobs=(last_words,)))

    timeline: dict[str, int] = {}
    with caplog.at_level(logging.WARNING, logger="fleet.coordinator.healer"):
        for t in range(30, 961, 30):
            clock.advance(30)
            # busy keeps beating and renewing, but its progress never moves; silent is silent.
            health.heartbeat(product, "busy", Beat(capabilities=("python",), jobs=(stuck,)))
            coord.renew(product, busy.id, "busy", busy.epoch)
            report = health.heal(product)
            # The healer takes no job from a stale factory (its lease is the contract); by the
            # time it is down (600 s) the reaper has long requeued it, so nothing is left.
            assert report.released == []
            for factory, status in report.marked.items():
                assert factory == "silent"
                timeline.setdefault(status, t)
            if report.stalled:
                assert report.stalled == [busy.id] and "stalled" not in timeline
                timeline["stalled"] = t
            if coord.reap(product).requeued:
                assert "requeued" not in timeline
                timeline["requeued"] = t
            if t < 120:
                assert coord.get_job(product, silent.id).stage is Stage.BUILDING
    assert timeline == {"stale": 90, "requeued": 150, "down": 600, "stalled": 900}

    requeued = coord.get_job(product, silent.id)
    assert requeued.stage is Stage.QUEUED and requeued.failedBy == ("silent",)
    assert requeued.epoch == silent.epoch + 1 and requeued.events[-1].actor == "reaper"
    verdicts = {v["factory"]: v for v in coord.explain(product, silent.id)["factories"]}
    assert "factory is not live" in verdicts["silent"]["reasons"]
    assert verdicts["silent"]["score"]["health"] < verdicts["busy"]["score"]["health"]

    flagged = coord.get_job(product, busy.id)
    assert flagged.stalled and flagged.stage is Stage.BUILDING and flagged.epoch == busy.epoch
    # Its engine is restarted: one command for that job, to its holder only.
    (restart,) = health.pending_commands(product, "busy")
    assert (restart.kind, restart.job_id, restart.issued_by) == (
        "restart-engine",
        busy.id,
        "healer",
    )
    assert health.pending_commands(product, "silent") == []
    assert [e.type for e in coord.job_events(product, busy.id)].count("stalled") == 1
    assert flagged.events[-1].data["alert"]["kind"] == "stalled"
    assert any(r.levelno == logging.WARNING and busy.id in r.message for r in caplog.records)

    moving = JobProgress(job_id=busy.id, lease_epoch=busy.epoch, tokens=900, last_output_line="ok")
    health.heartbeat(product, "busy", Beat(capabilities=("python",), jobs=(moving,)))
    assert health.heal(product).unstalled == [busy.id]
    assert not coord.get_job(product, busy.id).stalled


def test_heartbeat_costs_no_cosmos_on_the_real_stack(azure_backend: Stores, product: str) -> None:
    health = FleetHealth(Coordinator(azure_backend))
    health.heartbeat(product, "f1", Beat(capabilities=("python",)))  # first beat: registers
    with azure_backend.counters.measure() as cost:
        reply = health.heartbeat(product, "f1", Beat(capabilities=("python",), load=1))
    assert reply.status == "live"
    # The Azure adapter reads a merged entity back, hence two table reads.
    assert cost == {"table_read": 2, "table_write": 1, "table_query": 1}
