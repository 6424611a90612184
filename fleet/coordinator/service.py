"""The coordinator: every job state change goes through here, as one conditional write.

Each change reads what it needs, computes the next job document with the pure functions of
``fleet.domain.jobs`` (which append the transition's event to the same document), and writes
it with ``If-Match`` on the etag it read. A lost race re-reads and re-checks (a holder's
write after the reaper moved the job finds itself fenced); nothing is written twice.

``Coordinator`` is the front the handlers, timers and tests hold. It builds its parts once,
each given only the stores and parts it uses (``Part``: documents, clock, config, plus its
own fields), and each of its methods is one part's:

- ``writer``   the one write path (``update``: read, change, conditional write, re-decide on
               a lost race), lost-reply recovery (``landed``), spilling long histories, and
               ``after_write``: settle an ended lease's quotas, wake claimers, unblock
               dependents;
- ``claim``    the claim (hot path) and a retried claim's replay;
- ``lease``    the holder's renew, report (decided by ``fleet.domain.report``) and release,
               the limits that end an attempt, and the operator's moves;
- ``submit``   submit (idempotency, dependencies), children (DAGs), profiles;
- ``reaper``   expired leases, gone holders, quota reconciliation, preemption, take-back;
- ``product``  settings, the fleet of factories, the product registry, the queue-state gate;
- ``feed``     lists and pages of jobs, a job's events and runs, agent events, the
               product's event feed, explain;
- ``review``, ``artifacts``, ``metrics``: given the writer (or the parts) and the ports they
               need; ``budgets`` and ``channels`` hold the shared quotas.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any, Concatenate, Generic, ParamSpec, Self, TypeVar, overload

from fleet.coordinator.artifacts import Artifacts
from fleet.coordinator.attempt_quota import AttemptQuota, limits_of
from fleet.coordinator.audit import FleetLog
from fleet.coordinator.budgets import Budgets
from fleet.coordinator.channels import ChannelLimits
from fleet.coordinator.claim import Cadence, ClaimResult, Claims
from fleet.coordinator.clock import Clock, SystemClock
from fleet.coordinator.config import CoordinatorConfig
from fleet.coordinator.demand import Demand
from fleet.coordinator.feed import AgentEvent, Feed
from fleet.coordinator.lease import Leases
from fleet.coordinator.metrics import Metrics
from fleet.coordinator.product import (
    KEEP,
    QUEUE_STATE_ID,
    SETTINGS_ID,
    SYSTEM_PARTITION,
    Gate,
    Keep,
    Products,
    ProductSettings,
)
from fleet.coordinator.reaper import Reaper, ReapReport
from fleet.coordinator.review import Reviews
from fleet.coordinator.routing import Routing
from fleet.coordinator.submit import Submissions
from fleet.coordinator.writer import JobNotFound, Writer
from fleet.store.ports import Stores

# Names the rest of the code imports from here.
__all__ = [
    "KEEP",
    "QUEUE_STATE_ID",
    "SETTINGS_ID",
    "SYSTEM_PARTITION",
    "AgentEvent",
    "Cadence",
    "ClaimResult",
    "Coordinator",
    "CoordinatorConfig",
    "JobNotFound",
    "Keep",
    "ProductSettings",
    "ReapReport",
]

P = ParamSpec("P")
R = TypeVar("R")


class _Via(Generic[P, R]):
    """A coordinator method that is one of its parts': ``claim = _Via("_claims",
    Claims.claim)`` answers ``coordinator.claim`` with ``coordinator._claims.claim`` (its
    signature and docstring). An instance may still replace it, as a test does."""

    def __init__(self, part: str, method: Callable[Concatenate[Any, P], R]) -> None:
        self.part = part
        self.name = method.__name__
        self.__doc__ = method.__doc__

    @overload
    def __get__(self, obj: None, owner: type[Any]) -> Self: ...

    @overload
    def __get__(self, obj: object, owner: type[Any]) -> Callable[P, R]: ...

    def __get__(self, obj: object | None, owner: type[Any]) -> Self | Callable[P, R]:
        if obj is None:
            return self
        method: Callable[P, R] = getattr(getattr(obj, self.part), self.name)
        return method


class Coordinator:
    def __init__(
        self,
        stores: Stores,
        clock: Clock | None = None,
        config: CoordinatorConfig | None = None,
        entropy: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self.stores = stores
        self.docs = docs = stores.documents
        self.clock = clock = clock or SystemClock()
        self.config = config = config or CoordinatorConfig()
        self.fleet_log = fleet_log = FleetLog(
            docs, clock, config.event_ttl_seconds, config.write_retries
        )
        self.budgets = Budgets(docs, clock, config.settings_ttl_seconds, fleet_log)
        self.channels = ChannelLimits(stores.tables, clock, fleet_log)
        self._gate = gate = Gate(docs, clock, config)
        self._products = products = Products(docs, clock, config, fleet_log)
        self._writer = writer = Writer(docs, clock, config, self.budgets, self.channels, gate)
        self.reviews = Reviews(docs, writer, gate)
        attempt_quota = AttemptQuota(docs, limits_of(config.quotas), config.event_ttl_seconds)
        self.artifacts = Artifacts(
            writer, docs, stores.blobs, clock, config.artifacts_container, attempt_quota
        )
        quotas = (self.budgets, self.channels)
        self._routing = routing = Routing(docs, clock, config)
        self._claims = Claims(
            docs, clock, config, writer, products, *quotas, entropy, gate.queued, routing=routing
        )
        self._leases = Leases(writer, self.budgets, self.reviews)
        self._submissions = Submissions(docs, clock, config, writer, products, gate, entropy)
        self._reaper = Reaper(docs, clock, config, writer, products, *quotas, gate)
        self._feed = Feed(
            docs, clock, config, writer, products, *quotas, attempt_quota, routing=routing
        )
        self._metrics = Metrics(docs, clock, config, products, self.budgets, routing=routing)
        self._demand = Demand(docs, clock, config, products, self.budgets)

    # --- reading ---------------------------------------------------------------------
    get_job = _Via("_writer", Writer.get_job)
    list_jobs = _Via("_feed", Feed.list_jobs)
    jobs_page = _Via("_feed", Feed.jobs_page)
    job_events = _Via("_feed", Feed.job_events)
    job_runs = _Via("_feed", Feed.job_runs)
    product_events = _Via("_feed", Feed.product_events)
    product_events_before = _Via("_feed", Feed.product_events_before)
    record_agent_events = _Via("_feed", Feed.record_agent_events)
    agent_events = _Via("_feed", Feed.agent_events)
    explain = _Via("_feed", Feed.explain)

    # --- the queue-state gate --------------------------------------------------------
    queue_state = _Via("_gate", Gate.state)

    @property
    def bump_gate(self) -> Callable[[str], None]:
        """``Gate.bump``: tell gated factories that work may have become claimable."""
        return self._gate.bump

    @bump_gate.setter
    def bump_gate(self, bump: Callable[[str], None]) -> None:
        # Every part bumps through the one gate: a replacement (the simulation's lossy
        # bump) is seen by all of them.
        self._gate.bump = bump  # type: ignore[method-assign, assignment]

    # --- submit, DAGs, profiles ------------------------------------------------------
    submit = _Via("_submissions", Submissions.submit)
    add_children = _Via("_submissions", Submissions.add_children)
    dag = _Via("_submissions", Submissions.dag)
    put_profile = _Via("_submissions", Submissions.put_profile)
    get_profile = _Via("_submissions", Submissions.get_profile)
    list_profiles = _Via("_submissions", Submissions.list_profiles)

    # --- the product: registry, factories, settings ----------------------------------
    products = _Via("_products", Products.products)
    register = _Via("_products", Products.register)
    register_factory = _Via("_products", Products.register_factory)
    factories = _Via("_products", Products.factories)
    factory_views = _Via("_products", Products.factory_views)
    standing = _Via("_products", Products.standing)
    settings = _Via("_products", Products.settings)
    weights = _Via("_products", Products.weights)
    product_settings = _Via("_products", Products.product_settings)
    put_product_settings = _Via("_products", Products.put_product_settings)

    # --- the claim, the lease holder's writes, the operator's ------------------------
    claim = _Via("_claims", Claims.claim)
    cadence = _Via("_claims", Claims.cadence)
    renew = _Via("_leases", Leases.renew)
    report = _Via("_leases", Leases.report)
    release = _Via("_leases", Leases.release)
    operator = _Via("_leases", Leases.operator)
    reprioritize = _Via("_leases", Leases.reprioritize)

    # --- the reaper ------------------------------------------------------------------
    reap = _Via("_reaper", Reaper.reap)
    preempt = _Via("_reaper", Reaper.preempt)
    take_back = _Via("_reaper", Reaper.take_back)
    take_back_from = _Via("_reaper", Reaper.take_back_from)

    # --- metrics ---------------------------------------------------------------------
    compute_metrics = _Via("_metrics", Metrics.compute)
    record_pass_failure = _Via("_metrics", Metrics.record_pass_failure)
    refresh_demand = _Via("_demand", Demand.refresh)
    demand = _Via("_demand", Demand.read)
    metrics = _Via("_metrics", Metrics.read)

    # --- learned routing -------------------------------------------------------------
    refresh_routing = _Via("_routing", Routing.refresh)
    routing = _Via("_routing", Routing.read)
    learned = _Via("_routing", Routing.learned)
