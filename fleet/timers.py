"""Timer triggers: the reaper, the self-healer and the metrics writer. Schedules come from app
settings."""

from __future__ import annotations

import logging

import azure.functions as func

from fleet.context import get_context
from fleet.coordinator.fleet_health import fleet_health
from fleet.errors import FleetError

log = logging.getLogger(__name__)

bp = func.Blueprint()  # type: ignore[no-untyped-call]


@bp.timer_trigger(schedule="%REAPER_SCHEDULE%", arg_name="timer", run_on_startup=False)
def reaper_timer(timer: func.TimerRequest) -> None:
    """Requeue expired leases (fencing their holders), dead-letter exhausted jobs, unblock
    jobs whose dependencies are done, reconcile quotas, preempt, and echo tracker jobs'
    stage changes — for every product."""
    if timer.past_due:
        log.info("reaper is running late")
    context = get_context()
    coord = context.coordinator
    for product in coord.products():
        try:
            # Echo tracker jobs' stage changes (off every transition's path, by design).
            context.tracker.echo(product)
        except FleetError as exc:
            log.warning("tracker echo for %s: %s", product, exc.message)
        # One product's trouble (throttling, a lost response) must not starve the others.
        try:
            report = coord.reap(product)
        except FleetError as exc:
            log.warning("reaper pass over %s failed: %s %s", product, exc.code, exc.message)
            continue
        moved = (report.requeued, report.dead_lettered, report.unblocked, report.deps_failed)
        if any(moved) or report.deferred:
            log.info(
                "reaper %s: requeued=%d dead_lettered=%d unblocked=%d deps_failed=%d deferred=%d",
                product,
                *(len(ids) for ids in moved),
                len(report.deferred),
            )


@bp.timer_trigger(schedule="%HEALER_SCHEDULE%", arg_name="timer", run_on_startup=False)
def healer_timer(timer: func.TimerRequest) -> None:
    """Mark silent factories stale then down, flag stalled jobs, release jobs assigned but
    never started, prune long-gone factories — for every product (``FleetHealth.heal``)."""
    if timer.past_due:
        log.info("healer is running late")
    coord = get_context().coordinator
    health = fleet_health(coord)
    for product in coord.products():
        # One product's trouble (throttling, a bad document) must not starve the others.
        try:
            health.heal(product)
        except FleetError as exc:
            log.warning("healer pass over %s failed: %s %s", product, exc.code, exc.message)


@bp.timer_trigger(schedule="%METRICS_SCHEDULE%", arg_name="timer", run_on_startup=False)
def metrics_timer(timer: func.TimerRequest) -> None:
    """Metrics (utilization, queue depth, starvation, stale factories, stalled and unroutable
    jobs, spend), then alerts raised or cleared, then the alert webhook — for every product
    (``fleet.coordinator.metrics.Monitor.run``)."""
    if timer.past_due:
        log.info("metrics timer is running late")
    context = get_context()
    for product in context.coordinator.products():
        # One product's trouble (throttling, a bad document) must not starve the others.
        try:
            context.monitor.run(product)
        except FleetError as exc:
            log.warning("metrics pass over %s failed: %s %s", product, exc.code, exc.message)
