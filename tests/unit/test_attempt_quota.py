"""Per-attempt quotas on the twin: agent events (count and payload bytes) and artifacts,
taken all or none before anything is stored, given back for what a retry had stored,
fresh for each attempt; their cost in store calls; their settings; their documented 413."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from fleet.coordinator import Coordinator, CoordinatorConfig
from fleet.coordinator.attempt_quota import quota_id
from fleet.coordinator.clock import ManualClock
from fleet.coordinator.feed import payload_bytes
from fleet.coordinator.service import AgentEvent
from fleet.domain.manifest import Manifest
from fleet.domain.scheduler import FactoryView
from fleet.domain.stages import Action
from fleet.errors import Fenced, QuotaExceeded, SettingsError
from fleet.settings import AttemptQuotas, Settings
from fleet.store.ports import Stores
from fleet.store.queries import DOCS_OF_TYPE
from tests.support.handlers import DOCUMENT

P = "prod"


def coordinator(stores: Stores, clock: ManualClock, **quotas: int) -> Coordinator:
    config = CoordinatorConfig(quotas=AttemptQuotas(**quotas))
    return Coordinator(stores, clock=clock, config=config)


def held(coord: Coordinator, factory: str = "f") -> tuple[str, int]:
    job, _ = coord.submit(P, Manifest(title="t", body="b"), "operator:o")
    claim = coord.claim(P, FactoryView(id=factory, capabilities=frozenset()))
    assert claim is not None and claim.job.id == job.id
    return job.id, claim.lease.epoch


def events(first: int, n: int, payload: Any = None) -> list[AgentEvent]:
    return [AgentEvent(seq=s, type="note", payload=payload) for s in range(first, first + n)]


def stored(stores: Stores) -> list[int]:
    rows = stores.documents.query(DOCS_OF_TYPE, P, {"type": "agent_event"})
    return sorted(int(r["seq"]) for r in rows)


def used(stores: Stores, job_id: str, epoch: int) -> dict[str, int]:
    doc = stores.documents.read(P, quota_id(job_id, epoch))
    return {k: doc[k] for k in ("events", "eventBytes", "artifacts")}


# --- agent events ----------------------------------------------------------------------


def test_quota_events_the_one_past_the_limit_is_refused_and_nothing_is_stored(
    stores: Stores, clock: ManualClock
) -> None:
    coord = coordinator(stores, clock, agent_events=5)
    job, epoch = held(coord)
    assert coord.record_agent_events(P, job, "f", epoch, events(0, 3)) == 3
    with pytest.raises(QuotaExceeded) as refused:
        coord.record_agent_events(P, job, "f", epoch, events(3, 3))  # would be the 6th
    assert refused.value.details == {
        "jobId": job,
        "epoch": epoch,
        "quota": "events",
        "limit": 5,
        "used": 3,
    }
    assert stored(stores) == [0, 1, 2]  # the straddling batch is refused whole
    assert coord.record_agent_events(P, job, "f", epoch, events(3, 2)) == 2  # up to the 5th
    with pytest.raises(QuotaExceeded):
        coord.record_agent_events(P, job, "f", epoch, events(5, 1))
    assert stored(stores) == [0, 1, 2, 3, 4]
    assert used(stores, job, epoch)["events"] == 5


def test_quota_events_a_retried_batch_is_stored_once_and_counted_once(
    stores: Stores, clock: ManualClock
) -> None:
    coord = coordinator(stores, clock, agent_events=4)
    job, epoch = held(coord)
    batch = events(0, 2, {"k": "v"})
    assert coord.record_agent_events(P, job, "f", epoch, batch) == 2
    assert coord.record_agent_events(P, job, "f", epoch, batch) == 0  # a lost reply's retry
    assert used(stores, job, epoch) == {
        "events": 2,
        "eventBytes": 2 * payload_bytes({"k": "v"}),
        "artifacts": 0,
    }
    # A batch is taken whole before it is stored (1 again, 2): what was stored is given back.
    assert coord.record_agent_events(P, job, "f", epoch, events(1, 2)) == 1
    assert used(stores, job, epoch)["events"] == 3


def test_quota_events_payload_bytes_are_counted_too(stores: Stores, clock: ManualClock) -> None:
    payload = {"text": "x" * 1000}
    size = payload_bytes(payload)
    coord = coordinator(stores, clock, agent_event_bytes=3 * size + len("null"))
    job, epoch = held(coord)
    assert coord.record_agent_events(P, job, "f", epoch, events(0, 3, payload)) == 3
    with pytest.raises(QuotaExceeded) as refused:
        coord.record_agent_events(P, job, "f", epoch, events(3, 1, payload))
    assert (refused.value.details["quota"], refused.value.details["used"]) == (
        "eventBytes",
        3 * size,
    )
    assert coord.record_agent_events(P, job, "f", epoch, events(3, 1, None)) == 1  # it fits


def test_quota_events_a_batch_larger_than_the_quota_is_refused_on_the_attempts_first_batch(
    stores: Stores, clock: ManualClock
) -> None:
    coord = coordinator(stores, clock, agent_events=2)
    job, epoch = held(coord)
    with pytest.raises(QuotaExceeded):
        coord.record_agent_events(P, job, "f", epoch, events(0, 3))
    assert stored(stores) == []
    assert stores.documents.query(DOCS_OF_TYPE, P, {"type": "attempt_quota"}) == []


def test_quota_events_each_attempt_starts_afresh_and_a_zombie_takes_nothing(
    stores: Stores, clock: ManualClock
) -> None:
    coord = coordinator(stores, clock, agent_events=2)
    job, first = held(coord)
    coord.record_agent_events(P, job, "f", first, events(0, 2))
    coord.operator(P, job, Action.REQUEUE, "operator:o")
    claim = coord.claim(P, FactoryView(id="g", capabilities=frozenset()))
    assert claim is not None and claim.lease.epoch > first
    with pytest.raises(Fenced):  # the old attempt is fenced before any quota is taken
        coord.record_agent_events(P, job, "f", first, events(2, 1))
    assert coord.record_agent_events(P, job, "g", claim.lease.epoch, events(0, 2)) == 2
    assert used(stores, job, first)["events"] == 2


def test_quota_events_racing_batches_never_pass_the_quota(
    stores: Stores, clock: ManualClock
) -> None:
    coord = coordinator(stores, clock, agent_events=50)
    job, epoch = held(coord)
    outcomes: list[str] = []
    lock = threading.Lock()

    def send(first: int) -> None:
        try:
            coord.record_agent_events(P, job, "f", epoch, events(first, 10))
            outcome = "stored"
        except QuotaExceeded:
            outcome = "refused"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=send, args=(n * 10,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["refused"] * 3 + ["stored"] * 5
    assert len(stored(stores)) == 50 and used(stores, job, epoch)["events"] == 50


def test_quota_events_cost_one_patch_a_batch(
    stores: Stores, clock: ManualClock, coord: Coordinator
) -> None:
    """What the quota adds to a batch of n events (a fence read and n creates before it):
    one patch; on the attempt's first batch a 404 patch and a create; on a retried batch one
    more patch (the give-back); a refused batch: a patch and a read, nothing created."""
    job, epoch = held(coord)
    counters = stores.counters
    with counters.measure() as first:
        coord.record_agent_events(P, job, "f", epoch, events(0, 10))
    with counters.measure() as then:
        coord.record_agent_events(P, job, "f", epoch, events(10, 10))
    with counters.measure() as retried:
        coord.record_agent_events(P, job, "f", epoch, events(10, 10))
    assert first == {"read": 1, "patch": 1, "write": 11}
    assert then == {"read": 1, "patch": 1, "write": 10}
    assert retried == {"read": 1, "patch": 2, "write": 10}  # 10 refused creates
    small = coordinator(stores, clock, agent_events=20)
    with counters.measure() as refused, pytest.raises(QuotaExceeded):
        small.record_agent_events(P, job, "f", epoch, events(20, 1))
    assert refused == {"read": 2, "patch": 1}


# --- artifacts -------------------------------------------------------------------------


def test_quota_artifacts_a_new_name_past_the_quota_is_refused_an_old_one_is_not(
    stores: Stores, clock: ManualClock
) -> None:
    coord = coordinator(stores, clock, artifacts=2)
    job, epoch = held(coord)
    for name in ("a.log", "b.log"):
        coord.artifacts.issue_upload(P, job, "f", epoch, name, "text/plain")
    coord.artifacts.issue_upload(P, job, "f", epoch, "a.log", "text/plain")  # asked again
    with pytest.raises(QuotaExceeded) as refused:
        coord.artifacts.issue_upload(P, job, "f", epoch, "c.log", "text/plain")
    assert (refused.value.details["quota"], refused.value.details["limit"]) == ("artifacts", 2)
    listed, _ = coord.artifacts.list(P, job)
    assert [a["name"] for a in listed] == ["a.log", "b.log"]
    assert coord.artifacts.issue_upload(P, job, "f", epoch, "b.log", None)["url"]  # at quota
    assert used(stores, job, epoch)["artifacts"] == 2


def test_quota_artifacts_a_name_asked_again_is_given_back(
    stores: Stores, clock: ManualClock
) -> None:
    coord = coordinator(stores, clock, artifacts=3)
    job, epoch = held(coord)
    for _ in range(3):
        coord.artifacts.issue_upload(P, job, "f", epoch, "same.log", None)
    assert used(stores, job, epoch)["artifacts"] == 1


# --- settings and the document ---------------------------------------------------------


def test_quota_settings_defaults_and_overrides() -> None:
    assert Settings.from_env({"FLEET_STORE": "memory"}).quotas == AttemptQuotas(
        agent_events=5_000, agent_event_bytes=5 * 1024 * 1024, artifacts=100
    )
    env = {
        "FLEET_STORE": "memory",
        "FLEET_AGENT_EVENTS_PER_ATTEMPT": "10",
        "FLEET_AGENT_EVENT_BYTES_PER_ATTEMPT": "2048",
        "FLEET_ARTIFACTS_PER_ATTEMPT": "",
    }
    assert Settings.from_env(env).quotas == AttemptQuotas(
        agent_events=10, agent_event_bytes=2048, artifacts=100
    )


@pytest.mark.parametrize("value", ["0", "-1", "many"])
def test_quota_settings_refuse_what_is_not_a_positive_count(value: str) -> None:
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"FLEET_STORE": "memory", "FLEET_ARTIFACTS_PER_ATTEMPT": value})
    assert refused.value.name == "FLEET_ARTIFACTS_PER_ATTEMPT"


def test_quota_the_document_says_413_quota_exceeded_where_it_applies() -> None:
    paths = DOCUMENT["paths"]
    events = paths["/api/fleet/jobs/{id}/events"]["post"]["responses"]["413"]
    upload = paths["/api/fleet/jobs/{id}/artifacts"]["post"]["responses"]["413"]
    report = paths["/api/fleet/jobs/{id}"]["patch"]["responses"]["413"]
    quota = {"$ref": "#/components/responses/QuotaExceeded"}
    assert events == upload == quota
    assert report == {"$ref": "#/components/responses/TooLarge"}  # a body limit only
    described = DOCUMENT["components"]["responses"]["QuotaExceeded"]["description"]
    assert "quota_exceeded" in described and "too_large" in described
