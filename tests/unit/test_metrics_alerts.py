"""Metrics, alerts and the alert webhook, on the in-memory twin with an injected clock."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from fleet.context import context_for
from fleet.coordinator import Coordinator
from fleet.coordinator.clock import ManualClock
from fleet.coordinator.fleet_health import Beat, FleetHealth, HealthConfig, JobProgress
from fleet.coordinator.identity import Principal
from fleet.coordinator.metrics import Monitor, queued_since
from fleet.coordinator.review import Reviewer
from fleet.coordinator.tracker import Tracker, TrackerConfig
from fleet.coordinator.webhooks import Endpoint, backoff_seconds, sign
from fleet.domain import alerts as A
from fleet.domain.models import Job, ReviewSpec
from fleet.domain.stages import Action, Stage
from fleet.settings import Settings
from fleet.store.ports import Set, Stores
from tests.support.builders import factory_view as view
from tests.support.builders import manifest
from tests.support.handlers import call, tick, with_principals
from tests.support.receiver import webhook_receiver

P = "prod"
SECRET = "alert-secret"


def submit(coord: Coordinator, caps: tuple[str, ...] = ("python",), **fields: Any) -> Job:
    return coord.submit(P, manifest(capabilities=caps, **fields), "operator:o")[0]


class Endpoint500ThenOk:
    """A poster: answers 500 the first ``failures`` times (or raises), then 200."""

    def __init__(self, failures: int = 0, raises: bool = False) -> None:
        self.failures = failures
        self.raises = raises
        self.calls = 0
        self.received: list[tuple[bytes, dict[str, str]]] = []

    def __call__(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            if self.raises:
                raise ConnectionError("connection refused")
            return 500
        self.received.append((body, headers))
        return 200

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for body, _ in self.received]


def alert_events(events: list[dict[str, Any]], key: str) -> list[str]:
    return [e["kind"] for e in events if e.get("key") == key]


# --- metrics ----------------------------------------------------------------------------


def test_metrics_utilization_is_held_jobs_over_the_seats_of_live_factories(
    coord: Coordinator, stores: Stores
) -> None:
    coord.register_factory(P, view("a", seats=2), "1")
    coord.register_factory(P, view("b", seats=3), "1")
    coord.register_factory(P, view("gone", seats=8), "1")
    stores.documents.patch(P, "factory-gone", [Set("/status", "down")])
    for _ in range(3):
        submit(coord)
    assert coord.claim(P, view("a", seats=2)) is not None
    assert coord.claim(P, view("b", seats=3)) is not None
    metrics = coord.compute_metrics(P)
    assert metrics["utilization"] == {"held": 2, "seats": 5, "fraction": 0.4}
    assert metrics["factories"] == {"total": 3, "live": 2, "stale": [], "down": ["gone"]}
    assert metrics["queueDepth"]["queued"] == 1 and metrics["queueDepth"]["assigned"] == 2


def test_metrics_utilization_without_live_seats_is_null(coord: Coordinator) -> None:
    assert coord.compute_metrics(P)["utilization"] == {"held": 0, "seats": 0, "fraction": None}


def test_metrics_starvation_counts_routable_jobs_waiting_past_the_threshold(
    coord: Coordinator, clock: ManualClock
) -> None:
    coord.put_product_settings(P, alerts={"starvationSeconds": 600})
    coord.register_factory(P, view("py"), "1")
    old = submit(coord)
    unroutable = submit(coord, ("gpu",))
    clock.advance(601)
    young = submit(coord)
    metrics = coord.compute_metrics(P)
    starvation = metrics["starvation"]
    assert starvation["count"] == 1 and starvation["thresholdSeconds"] == 600
    assert starvation["jobs"] == [{"jobId": old.id, "waitingSeconds": 601.0}]
    assert metrics["unroutable"] == 1 and metrics["unroutableJobs"] == [unroutable.id]
    assert metrics["oldestQueuedSeconds"] == 601 and young.id not in str(starvation)
    # Claimed and released: it starts waiting again (starvation is time since queued).
    claim = coord.claim(P, view("py"))
    assert claim is not None and claim.job.id == old.id
    released = coord.release(P, old.id, "py", claim.lease.epoch)
    assert queued_since(released) == clock.now()
    assert coord.compute_metrics(P)["starvation"]["count"] == 0


def test_metrics_starvation_needs_a_live_factory_able_to_run_the_job(
    coord: Coordinator, clock: ManualClock, stores: Stores
) -> None:
    coord.register_factory(P, view("py"), "1")
    submit(coord)
    clock.advance(3600)
    assert coord.compute_metrics(P)["starvation"]["count"] == 1
    stores.documents.patch(P, "factory-py", [Set("/status", "stale")])
    metrics = coord.compute_metrics(P)
    # Known but not live: routable some day, not starving now (stale_factories says why).
    assert metrics["starvation"]["count"] == 0 and metrics["unroutable"] == 0
    assert metrics["factories"]["stale"] == ["py"]


def test_metrics_stale_and_down_factories_come_from_the_healer(
    coord: Coordinator, clock: ManualClock
) -> None:
    health = FleetHealth(coord, HealthConfig())
    health.heartbeat(P, "quiet", Beat(capabilities=("python",)))
    health.heartbeat(P, "dead", Beat(capabilities=("python",)))
    clock.advance(500)
    health.heartbeat(P, "quiet", Beat(capabilities=("python",)))
    clock.advance(200)  # quiet: silent 200 s (stale); dead: 700 s (down)
    health.heal(P)
    fleet = coord.compute_metrics(P)["factories"]
    assert (fleet["live"], fleet["stale"], fleet["down"]) == (0, ["quiet"], ["dead"])


def _stalled_job(coord: Coordinator, clock: ManualClock) -> tuple[FleetHealth, Job]:
    health = FleetHealth(coord, HealthConfig(stall_after_seconds=60))
    submit(coord)
    claim = coord.claim(P, view("busy"))
    assert claim is not None
    job = coord.report(P, claim.job.id, "busy", claim.lease.epoch, stage=Stage.BUILDING)
    stuck = JobProgress(job_id=job.id, lease_epoch=job.epoch, tokens=5)
    for _ in range(3):
        health.heartbeat(P, "busy", Beat(capabilities=("python",), jobs=(stuck,)))
        clock.advance(40)
    health.heartbeat(P, "busy", Beat(capabilities=("python",), jobs=(stuck,)))
    assert health.heal(P).stalled == [job.id]
    return health, job


def test_metrics_review_waits_count_from_the_rounds_opening(
    coord: Coordinator, clock: ManualClock
) -> None:
    assert coord.compute_metrics(P)["review"] == {
        "thresholdSeconds": 3600.0,
        "oldestSeconds": None,
        "overdue": 0,
        "waiting": [],
    }
    clock.advance(5000)  # long after submit: the wait starts when review does
    job = _in_review(coord)
    clock.advance(600)
    review = coord.compute_metrics(P)["review"]
    assert review["oldestSeconds"] == 600.0 and review["overdue"] == 0
    clock.advance(3000)
    review = coord.compute_metrics(P)["review"]
    assert review["overdue"] == 1
    assert review["waiting"] == [{"jobId": job.id, "waitingSeconds": 3600.0}]


def test_metrics_stalled_jobs_are_the_healers_flags(coord: Coordinator, clock: ManualClock) -> None:
    _, job = _stalled_job(coord, clock)
    assert coord.compute_metrics(P)["stalled"] == {"count": 1, "jobs": [job.id]}


def test_metrics_spend_versus_ceiling(coord: Coordinator) -> None:
    assert coord.compute_metrics(P)["spend"] is None  # no budget: nothing to compare
    coord.budgets.put(P, 10.0)
    submit(coord, budget=2.0)
    claim = coord.claim(P, view("py"))
    assert claim is not None
    coord.report(
        P, claim.job.id, "py", claim.lease.epoch, stage=Stage.BUILDING, progress={"costUsd": 1.5}
    )
    spend = coord.compute_metrics(P)["spend"]
    assert spend == {"spentUsd": 0.0, "reservedUsd": 2.0, "ceilingUsd": 10.0, "fraction": 0.2}
    coord.report(P, claim.job.id, "py", claim.lease.epoch, stage=Stage.SHIPPED)
    spend = coord.compute_metrics(P)["spend"]
    assert spend == {"spentUsd": 1.5, "reservedUsd": 0.0, "ceilingUsd": 10.0, "fraction": 0.15}


def test_metrics_pass_costs_the_same_bounded_queries_whatever_the_queue(
    stores: Stores, clock: ManualClock
) -> None:
    from fleet.coordinator.service import CoordinatorConfig

    coord = Coordinator(stores, clock=clock, config=CoordinatorConfig(metrics_scan=5))
    coord.register_factory(P, view("py"), "1")
    costs = []
    for jobs in (3, 30):
        while len(coord.list_jobs(P)) < jobs:
            submit(coord)
        coord.settings(P)  # warm the settings cache (30 s), as in a running instance
        with stores.counters.measure() as cost:
            metrics = coord.compute_metrics(P)
        costs.append(cost)
        assert metrics["scanned"] == min(jobs, 5) and metrics["truncated"] == (jobs >= 5)
    # A COUNT per stage, the factories, the oldest `scan` queued jobs, the stalled jobs, the
    # oldest jobs in review; the budget's, the pass failures' and learned routing's point
    # reads; one write. The same with 3 jobs or 30.
    assert costs[0] == costs[1] == {"query": len(Stage) + 4, "read": 3, "write": 1}
    with stores.counters.measure() as cost:
        coord.metrics(P)
    assert cost == {"read": 1}  # GET /api/fleet/metrics: one point read


# --- alerts: the pure rules ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("metrics", "rules", "keys"),
    [
        ({}, A.AlertRules(), []),
        ({"queueDepth": {"queued": 2}, "factories": {"live": 0}}, A.AlertRules(),
         ["no_live_factories"]),
        ({"queueDepth": {"queued": 2}, "factories": {"live": 0}},
         A.AlertRules(noLiveFactories=False), []),
        ({"starvation": {"count": 1, "jobs": [{"jobId": "j1", "waitingSeconds": 999}]}},
         A.AlertRules(), ["starvation"]),
        ({"factories": {"live": 1, "stale": ["a"], "down": []}}, A.AlertRules(),
         ["stale_factories"]),
        ({"factories": {"live": 1, "stale": ["a"], "down": []}},
         A.AlertRules(staleFactories=2), []),
        ({"stalled": {"count": 1, "jobs": ["j1"]}}, A.AlertRules(), ["stalled_jobs"]),
        ({"stalled": {"count": 1, "jobs": ["j1"]}}, A.AlertRules(stalledJobs=0), []),
        ({"unroutable": 3, "factories": {"total": 1}}, A.AlertRules(unroutableJobs=3),
         ["unroutable_jobs"]),
        ({"unroutable": 2, "factories": {"total": 1}}, A.AlertRules(unroutableJobs=3), []),
        ({"unroutable": 2, "factories": {"total": 0}}, A.AlertRules(), []),
        ({"spend": {"fraction": 0.95, "ceilingUsd": 10}}, A.AlertRules(), ["budget"]),
        ({"spend": {"fraction": 0.5, "ceilingUsd": 10}}, A.AlertRules(), []),
        ({"spend": {"fraction": None, "ceilingUsd": None}}, A.AlertRules(), []),
        ({"unroutable": 3, "stalled": {"count": 1}}, A.AlertRules(enabled=False), []),
        ({"review": {"overdue": 1, "waiting": [{"jobId": "j1", "waitingSeconds": 4000}]}},
         A.AlertRules(), ["review_waiting"]),
        ({"review": {"overdue": 1, "waiting": [{"jobId": "j1", "waitingSeconds": 4000}]}},
         A.AlertRules(reviewWaitingSeconds=0), []),
        ({"review": {"overdue": 0, "waiting": []}}, A.AlertRules(), []),
    ],
)  # fmt: skip
def test_alerts_rules_table(metrics: dict[str, Any], rules: A.AlertRules, keys: list[str]) -> None:
    assert [a.key for a in A.evaluate(metrics, rules)] == keys


def test_alerts_budget_is_critical_at_the_ceiling() -> None:
    (alert,) = A.evaluate({"spend": {"fraction": 1.0, "ceilingUsd": 5}}, A.AlertRules())
    assert alert.severity == "critical" and "100%" in alert.message


def test_alerts_rules_merge_only_known_well_typed_values() -> None:
    rules = A.AlertRules().merged(
        {"starvationSeconds": 60, "stalledJobs": "3", "enabled": 0, "nope": 1}
    )
    assert rules.starvationSeconds == 60.0 and rules.stalledJobs == 1 and rules.enabled


def test_alerts_apply_raises_and_clears_once_per_change() -> None:
    clock = ManualClock()
    starving = [A.Alert("starvation", "warning", "1 job", {"count": 1})]
    doc, events = A.apply({}, starving, clock.now())
    assert [(e["kind"], e["key"], e["seq"]) for e in events] == [("raised", "starvation", 1)]
    since = doc["active"]["starvation"]["since"]
    clock.advance(60)
    worse = [A.Alert("starvation", "warning", "2 jobs", {"count": 2})]
    doc, events = A.apply(doc, worse, clock.now())
    assert events == [] and doc["active"]["starvation"]["message"] == "2 jobs"
    assert doc["active"]["starvation"]["since"] == since  # still the same alert
    doc, events = A.apply(doc, [], clock.now())
    assert [(e["kind"], e["seq"]) for e in events] == [("cleared", 2)] and doc["active"] == {}
    doc, events = A.apply(doc, [], clock.now())
    assert events == [] and len(doc["history"]) == 2


# --- alerts: raised and cleared by the metrics timer's pass ------------------------------


def _make_starvation(coord: Coordinator, clock: ManualClock, stores: Stores) -> Callable[[], Any]:
    coord.register_factory(P, view("py"), "1")
    submit(coord)
    clock.advance(901)
    return lambda: coord.claim(P, view("py"))


def _make_stale(coord: Coordinator, clock: ManualClock, stores: Stores) -> Callable[[], Any]:
    health = FleetHealth(coord, HealthConfig())
    health.heartbeat(P, "f1", Beat(capabilities=("python",)))
    clock.advance(100)
    health.heal(P)
    return lambda: health.heartbeat(P, "f1", Beat(capabilities=("python",)))


def _make_stalled(coord: Coordinator, clock: ManualClock, stores: Stores) -> Callable[[], Any]:
    health, job = _stalled_job(coord, clock)
    moving = JobProgress(job_id=job.id, lease_epoch=job.epoch, tokens=6)

    def clear() -> None:
        health.heartbeat(P, "busy", Beat(capabilities=("python",), jobs=(moving,)))
        health.heal(P)

    return clear


def _make_unroutable(coord: Coordinator, clock: ManualClock, stores: Stores) -> Callable[[], Any]:
    coord.register_factory(P, view("py"), "1")
    job = submit(coord, ("gpu",))
    return lambda: coord.operator(P, job.id, Action.CANCEL, "o", "nobody can run it")


def _in_review(coord: Coordinator) -> Job:
    """A job whose holder reported it shipped: in review, one approval needed."""
    job = submit(coord, review=ReviewSpec(approvals=1))
    claim = coord.claim(P, view("py"))
    assert claim is not None and claim.job.id == job.id
    coord.report(P, job.id, "py", claim.lease.epoch, stage=Stage.BUILDING)
    moved = coord.report(P, job.id, "py", claim.lease.epoch, stage=Stage.SHIPPED)
    assert moved.stage is Stage.REVIEW
    return moved


def _make_review_waiting(
    coord: Coordinator, clock: ManualClock, stores: Stores
) -> Callable[[], Any]:
    job = _in_review(coord)
    clock.advance(3601)
    return lambda: coord.reviews.vote(P, job.id, Reviewer("operator", "alice"), "approve", "ok")


def _make_budget(coord: Coordinator, clock: ManualClock, stores: Stores) -> Callable[[], Any]:
    coord.budgets.put(P, 2.0)
    submit(coord, budget=1.9)
    assert coord.claim(P, view("py")) is not None  # reserves 1.9 of 2.0
    return lambda: coord.budgets.put(P, 100.0)


def _make_no_live(coord: Coordinator, clock: ManualClock, stores: Stores) -> Callable[[], Any]:
    submit(coord, ())
    return lambda: coord.register_factory(P, view("any", ()), "1")


@pytest.mark.parametrize(
    ("key", "make"),
    [
        ("starvation", _make_starvation),
        ("stale_factories", _make_stale),
        ("stalled_jobs", _make_stalled),
        ("unroutable_jobs", _make_unroutable),
        ("budget", _make_budget),
        ("no_live_factories", _make_no_live),
        ("review_waiting", _make_review_waiting),
    ],
)
def test_alerts_each_is_raised_once_and_cleared_once(
    coord: Coordinator,
    clock: ManualClock,
    stores: Stores,
    key: str,
    make: Callable[[Coordinator, ManualClock, Stores], Callable[[], Any]],
) -> None:
    monitor = Monitor(coord)
    clear = make(coord, clock, stores)
    events: list[dict[str, Any]] = []
    for _ in range(3):  # the condition persists over several passes: one raise
        events += monitor.run(P).events
        clock.advance(5)
    assert alert_events(events, key) == ["raised"]
    active = {a["key"]: a for a in monitor.alerts(P)["active"]}
    assert key in active and active[key]["message"]
    clear()
    for _ in range(3):  # and stays gone: one clear
        events += monitor.run(P).events
        clock.advance(5)
    assert alert_events(events, key) == ["raised", "cleared"]
    view_ = monitor.alerts(P)
    assert key not in {a["key"] for a in view_["active"]}
    assert [e["kind"] for e in view_["history"] if e["key"] == key] == ["cleared", "raised"]
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


def test_alerts_rules_come_from_the_product_settings(
    coord: Coordinator, clock: ManualClock
) -> None:
    monitor = Monitor(coord)
    submit(coord, ("gpu",))
    coord.register_factory(P, view("py"), "1")
    assert alert_events(monitor.run(P).events, "unroutable_jobs") == ["raised"]
    settings = coord.put_product_settings(P, alerts={"unroutableJobs": 2})
    assert settings["alerts"]["unroutableJobs"] == 2
    assert settings["alerts"]["starvationSeconds"] == 900  # the others keep their defaults
    assert alert_events(monitor.run(P).events, "unroutable_jobs") == ["cleared"]
    coord.put_product_settings(P, alerts={"unroutableJobs": 1, "enabled": False})
    assert monitor.run(P).events == [] and monitor.alerts(P)["active"] == []
    assert coord.product_settings(P)["alerts"]["enabled"] is False


def test_alerts_a_lost_race_with_another_instance_raises_nothing_twice(
    coord: Coordinator, monkeypatch: pytest.MonkeyPatch
) -> None:
    submit(coord, ("gpu",))
    coord.register_factory(P, view("py"), "1")
    mine, theirs = Monitor(coord), Monitor(coord)
    metrics = coord.compute_metrics(P)
    original = mine._alerts_doc
    raced = []

    def read_then_lose(product: str) -> dict[str, Any]:
        doc = original(product)
        if not raced:  # the other instance writes between our read and our write
            raced.append(theirs.evaluate(product, metrics))
        return doc

    monkeypatch.setattr(mine, "_alerts_doc", read_then_lose)
    assert mine.evaluate(P, metrics) == []  # re-applied to what the other one wrote
    assert alert_events(raced[0], "unroutable_jobs") == ["raised"]
    assert [a["key"] for a in mine.alerts(P)["active"]] == ["unroutable_jobs"]


def test_alerts_join_the_product_event_feed_but_not_the_tracker_echo(
    coord: Coordinator, clock: ManualClock
) -> None:
    job = submit(coord, ("gpu",))
    coord.register_factory(P, view("py"), "1")
    _, cursor = coord.product_events(P, None)
    clock.advance(1)
    Monitor(coord).run(P)
    events, cursor = coord.product_events(P, cursor)
    (alert,) = events
    assert alert["alert"] is True and alert["jobId"] is None
    assert (alert["type"], alert["key"], alert["severity"]) == (
        "alert_raised",
        "unroutable_jobs",
        "warning",
    )
    assert alert["details"]["jobs"] == [job.id]
    assert cursor is not None and cursor.split("|")[1] == "alert"
    assert coord.product_events(P, cursor) == ([], cursor)
    # Job events after it still come; the tracker's echo never sees alert events.
    clock.advance(1)
    coord.operator(P, job.id, Action.CANCEL, "o", "no gpu")
    (cancelled,) = coord.product_events(P, cursor)[0]
    assert cancelled["jobId"] == job.id and cancelled["toStage"] == "cancelled"
    echoed = Endpoint500ThenOk()
    tracker = Tracker(coord, TrackerConfig(echo_url="http://hooks.test/echo"), echoed)
    tracker.echo(P)
    assert echoed.calls == 0  # not a tracker job; and the alert was not offered at all


# --- the alert webhook ----------------------------------------------------------------------


def test_alert_webhook_posts_each_event_signed(coord: Coordinator, clock: ManualClock) -> None:
    endpoint = Endpoint500ThenOk()
    monitor = Monitor(coord, Endpoint("https://hooks.test/alerts", SECRET), endpoint)
    submit(coord, ())  # queued, and no factory at all
    report = monitor.run(P)
    assert report.delivered == 1 and [e["key"] for e in endpoint.events()] == ["no_live_factories"]
    body, headers = endpoint.received[0]
    assert headers["X-Fleet-Signature-256"] == sign(SECRET, body)
    assert headers["Content-Type"] == "application/json"
    sent = json.loads(body)
    assert (sent["product"], sent["kind"], sent["severity"]) == (P, "raised", "critical")
    assert monitor.run(P).delivered == 0  # nothing new: nothing sent again
    coord.register_factory(P, view("any", ()), "1")
    clock.advance(1)
    assert monitor.run(P).delivered == 1
    assert [(e["kind"], e["seq"]) for e in endpoint.events()] == [("raised", 1), ("cleared", 2)]
    assert monitor.alerts(P)["webhook"] == {
        "configured": True,
        "cursor": "2",
        "attempts": 0,
        "nextAttemptAt": None,
        "lastError": None,
    }


@pytest.mark.parametrize("raises", [False, True])
def test_alert_webhook_failing_is_retried_with_backoff_and_blocks_nothing(
    coord: Coordinator, clock: ManualClock, raises: bool
) -> None:
    endpoint = Endpoint500ThenOk(failures=2, raises=raises)
    monitor = Monitor(coord, Endpoint("https://hooks.test/alerts", SECRET), endpoint)
    submit(coord, ())
    report = monitor.run(P)  # the endpoint fails...
    assert report.delivered == 0 and endpoint.calls == 1
    # ...and the pass did everything else: metrics stored, the alert raised and in the feed.
    assert alert_events(report.events, "no_live_factories") == ["raised"]
    assert coord.metrics(P)["queueDepth"]["queued"] == 1
    status = monitor.alerts(P)["webhook"]
    assert status["attempts"] == 1 and status["cursor"] is None
    assert status["lastError"] == ("ConnectionError" if raises else "HTTP 500")
    clock.advance(backoff_seconds(1) - 1)
    assert monitor.run(P).delivered == 0 and endpoint.calls == 1  # backing off: not tried
    clock.advance(1)
    assert monitor.run(P).delivered == 0 and endpoint.calls == 2  # tried, failed again
    assert monitor.alerts(P)["webhook"]["attempts"] == 2
    clock.advance(backoff_seconds(2))
    assert monitor.run(P).delivered == 1 and endpoint.calls == 3
    assert [e["key"] for e in endpoint.events()] == ["no_live_factories"]
    assert monitor.alerts(P)["webhook"]["attempts"] == 0


def test_alert_webhook_off_without_a_url(coord: Coordinator) -> None:
    endpoint = Endpoint500ThenOk()
    monitor = Monitor(coord, Endpoint(None, SECRET), endpoint)
    submit(coord, ())
    assert monitor.run(P).delivered == 0 and endpoint.calls == 0
    assert monitor.alerts(P)["webhook"]["configured"] is False


def test_alert_webhook_over_real_http_with_the_default_poster(
    coord: Coordinator, clock: ManualClock
) -> None:
    with webhook_receiver(500) as receiver:
        monitor = Monitor(coord, Endpoint(receiver.url, SECRET))  # requests, for real
        submit(coord, ())
        assert monitor.run(P).delivered == 0 and receiver.refused == 1
        clock.advance(backoff_seconds(1))
        assert monitor.run(P).delivered == 1  # recovered
    ((body, signature),) = receiver.accepted
    assert signature == sign(SECRET, body) and json.loads(body)["key"] == "no_live_factories"


# --- the timer and the HTTP handlers ------------------------------------------------------


def test_alerts_timer_and_http_handlers(stores: Stores, clock: ManualClock) -> None:
    ctx = context_for(Settings.from_env({"FLEET_STORE": "memory"}), stores)
    ctx.coordinator = coord = Coordinator(stores, clock=clock)
    ctx.monitor = Monitor(coord)
    operator = Principal(kind="operator", id="alice", product=P, role="admin")
    ctx = with_principals(ctx, lambda token, want: operator)
    submit(coord, ("gpu",))
    submit(coord, ())  # no factory at all yet: only no_live_factories says so
    tick(ctx, "metrics_timer")

    def get(name: str, method: str = "GET", body: Any = None, **params: str) -> Any:
        status, reply, _ = call(ctx, name, method, f"/api/fleet/{name}", None, body, params=params)
        return status, reply

    status, metrics = get("metrics")
    assert status == 200 and metrics["unroutable"] == 2
    status, alerts = get("alerts", history="1")
    assert status == 200 and [a["key"] for a in alerts["active"]] == ["no_live_factories"]
    assert len(alerts["history"]) == 1 and alerts["webhook"]["configured"] is False
    status, settings = get("put_settings", "PUT", {"alerts": {"unroutableJobs": 5}})
    assert status == 200 and settings["alerts"]["unroutableJobs"] == 5
    status, error = get("put_settings", "PUT", {"alerts": {"budgetFraction": -1}})
    assert status == 400 and error["details"]["problems"][0]["path"].startswith("alerts")
