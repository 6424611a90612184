"""Timer triggers: the reaper, the self-healer and the metrics writer. Schedules come from app
settings.

Each timer's work is a function of the timer and the app's context; ``blueprint`` registers
them over the context provider the composition root (``function_app.py``) hands it, as the
HTTP operations are (``fleet.http.operation``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import azure.functions as func

from fleet.context import AppContext, ContextProvider
from fleet.errors import FleetError

log = logging.getLogger(__name__)

TimerWork = Callable[[func.TimerRequest, AppContext], None]


def blueprint(context: ContextProvider) -> func.Blueprint:
    """The three timers over ``context`` (resolved when a timer fires, not before)."""
    bp = func.Blueprint()  # type: ignore[no-untyped-call]
    bp.timer_trigger(schedule="%REAPER_SCHEDULE%", arg_name="timer", run_on_startup=False)(
        _timer(reaper_timer, context)
    )
    bp.timer_trigger(schedule="%HEALER_SCHEDULE%", arg_name="timer", run_on_startup=False)(
        _timer(healer_timer, context)
    )
    bp.timer_trigger(schedule="%METRICS_SCHEDULE%", arg_name="timer", run_on_startup=False)(
        _timer(metrics_timer, context)
    )
    return bp


def _timer(work: TimerWork, context: ContextProvider) -> Callable[[func.TimerRequest], None]:
    """The function the host calls: takes only ``timer`` (the binding's name), is named
    after ``work`` (which names the Function) and carries no ``__wrapped__`` (the worker
    checks a function's parameters against its bindings)."""

    def function(timer: func.TimerRequest) -> None:
        work(timer, context())

    function.__name__ = work.__name__
    function.__qualname__ = work.__qualname__
    function.__doc__ = work.__doc__
    function.__module__ = work.__module__
    return function


def reaper_timer(timer: func.TimerRequest, context: AppContext) -> None:
    """Requeue expired leases (fencing their holders), dead-letter exhausted jobs, unblock
    jobs whose dependencies are done, reconcile quotas, preempt, and echo tracker jobs'
    stage changes — for every product."""
    if timer.past_due:
        log.info("reaper is running late")
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


def healer_timer(timer: func.TimerRequest, context: AppContext) -> None:
    """Mark silent factories stale then down, flag stalled jobs, release jobs assigned but
    never started, prune long-gone factories — for every product (``FleetHealth.heal``)."""
    if timer.past_due:
        log.info("healer is running late")
    health = context.health
    for product in context.coordinator.products():
        # One product's trouble (throttling, a bad document) must not starve the others.
        try:
            health.heal(product)
        except FleetError as exc:
            log.warning("healer pass over %s failed: %s %s", product, exc.code, exc.message)


def metrics_timer(timer: func.TimerRequest, context: AppContext) -> None:
    """Metrics (utilization, queue depth, starvation, stale factories, stalled and unroutable
    jobs, spend), then alerts raised or cleared, then the alert webhook — for every product
    (``fleet.coordinator.metrics.Monitor.run``)."""
    if timer.past_due:
        log.info("metrics timer is running late")
    for product in context.coordinator.products():
        # One product's trouble (throttling, a bad document) must not starve the others.
        try:
            context.monitor.run(product)
        except FleetError as exc:
            log.warning("metrics pass over %s failed: %s %s", product, exc.code, exc.message)
