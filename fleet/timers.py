"""Timer triggers: the reaper, the self-healer and the metrics writer, and the queue triggers
that run their passes. Schedules come from app settings.

A tick does not walk the products. It asks the store which products it must pass
(``fleet.coordinator.sweep``: what is due, what changed since its last tick, what is under
lease, which factories went silent: a few bounded queries, whatever the number of products)
and hands each product's pass to one message on the ``fleet-passes`` queue. The
queue-triggered ``fleet_pass`` runs it, on as many instances as the host scales to, so one
slow or throttled product never delays another. The rule for doing it inline instead: a tick
with exactly one product to pass runs that pass itself (a message would only add the
queue's send, receive and delete, and its polling delay, with no other pass to keep from
waiting); should that pass fail, it goes to the queue like the others, to be retried there.

Every pass is idempotent (each of its writes is conditional on what it read, and a second
pass finds done what the first did), so a message delivered twice changes nothing. A message
that fails ``maxDequeueCount`` times (``host.json``) goes to ``fleet-passes-poison``, where
``fleet_pass_poisoned`` records it on the product and raises its ``pass_failed`` alert.

Each timer's work is a function of the timer and the app's context; ``blueprint`` registers
them over the context provider the composition root (``function_app.py``) hands it, as the
HTTP operations are (``fleet.http.operation``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import azure.functions as func

from fleet.context import AppContext, ContextProvider
from fleet.coordinator.identity import NAME
from fleet.coordinator.sweep import TIMERS, Sweep, Timer
from fleet.errors import FleetError

log = logging.getLogger(__name__)

TimerWork = Callable[[func.TimerRequest, AppContext], None]
QueueWork = Callable[[func.QueueMessage, AppContext], None]

# The queues' names by default (``FLEET_PASSES_QUEUE``, ``Settings.passes_queue``): the
# bindings name the setting, so the host resolves it as the code does.
PASSES_QUEUE = "fleet-passes"
POISON_QUEUE = f"{PASSES_QUEUE}-poison"
CONNECTION = "AzureWebJobsStorage"
MAX_MESSAGE_CHARS = 1024
F = TypeVar("F", bound=Callable[..., None])


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
    bp.queue_trigger(arg_name="msg", queue_name="%FLEET_PASSES_QUEUE%", connection=CONNECTION)(
        _queued(fleet_pass, context)
    )
    bp.queue_trigger(
        arg_name="msg", queue_name="%FLEET_PASSES_QUEUE%-poison", connection=CONNECTION
    )(_queued(fleet_pass_poisoned, context))
    return bp


def _timer(work: TimerWork, context: ContextProvider) -> Callable[[func.TimerRequest], None]:
    """The function the host calls: takes only ``timer`` (the binding's name), is named
    after ``work`` (which names the Function) and carries no ``__wrapped__`` (the worker
    checks a function's parameters against its bindings)."""

    def function(timer: func.TimerRequest) -> None:
        work(timer, context())

    return _named(function, work)


def _queued(work: QueueWork, context: ContextProvider) -> Callable[[func.QueueMessage], None]:
    """As ``_timer``, for a queue trigger whose binding is named ``msg``."""

    def function(msg: func.QueueMessage) -> None:
        work(msg, context())

    return _named(function, work)


def _named(function: F, work: Callable[..., None]) -> F:
    function.__name__ = work.__name__
    function.__qualname__ = work.__qualname__
    function.__doc__ = work.__doc__
    function.__module__ = work.__module__
    return function


def reaper_timer(timer: func.TimerRequest, context: AppContext) -> None:
    """Requeue expired leases (fencing their holders), dead-letter exhausted jobs, unblock
    jobs whose dependencies are done, reconcile quotas, preempt, and echo tracker jobs'
    stage changes: for every product with something due, waiting or changed (``reap_pass``)."""
    _tick("reaper", timer, context)


def healer_timer(timer: func.TimerRequest, context: AppContext) -> None:
    """Mark silent factories stale then down, flag stalled jobs, release jobs assigned but
    never started, prune long-gone factories: for every product with work under lease or a
    factory gone silent (``FleetHealth.heal``)."""
    _tick("healer", timer, context)


def metrics_timer(timer: func.TimerRequest, context: AppContext) -> None:
    """Metrics (utilization, queue depth, starvation, stale factories, stalled and unroutable
    jobs, spend), then alerts raised or cleared, then the alert webhook: for every product
    with something due, waiting, under lease or changed (``Monitor.run``)."""
    _tick("metrics", timer, context)


def reap_pass(context: AppContext, product: str) -> None:
    """The reaper's pass over one product: the tracker echo, ``Coordinator.reap``, then the
    product's demand (``fleet.coordinator.demand``: what it now asks of the fleet)."""
    try:
        # Echo tracker jobs' stage changes (off every transition's path, by design).
        context.tracker.echo(product)
    except FleetError as exc:
        log.warning("tracker echo for %s: %s", product, exc.message)
    report = context.coordinator.reap(product)
    context.coordinator.refresh_demand(product)
    moved = (report.requeued, report.dead_lettered, report.unblocked, report.deps_failed)
    if any(moved) or report.deferred:
        log.info(
            "reaper %s: requeued=%d dead_lettered=%d unblocked=%d deps_failed=%d deferred=%d",
            product,
            *(len(ids) for ids in moved),
            len(report.deferred),
        )


def metrics_pass(context: AppContext, product: str) -> None:
    """The metrics timer's pass over one product: what its runs taught learned routing
    (``fleet.coordinator.routing``), then metrics, alerts and the alert webhook."""
    context.coordinator.refresh_routing(product)
    context.monitor.run(product)


PASSES: dict[Timer, Callable[[AppContext, str], Any]] = {
    "reaper": reap_pass,
    "healer": lambda context, product: context.health.heal(product),
    "metrics": metrics_pass,
}


def sweep(context: AppContext) -> Sweep:
    """The sweep over the app's stores, clock and healer thresholds."""
    coord = context.coordinator
    return Sweep(coord.docs, coord.stores.tables, coord.clock, context.health.config)


def pass_message(timer: Timer, product: str, at: str) -> str:
    return json.dumps({"timer": timer, "product": product, "at": at}, separators=(",", ":"))


def _tick(timer: Timer, request: func.TimerRequest, context: AppContext) -> None:
    """Sweep for the products ``timer`` must pass, hand each to a message (one product:
    inline), then keep the tick's mark. Should the sweep or a send fail, the mark is not kept
    and the next tick finds the same products again."""
    if request.past_due:
        log.info("%s timer is running late", timer)
    sweeper = sweep(context)
    plan = sweeper.plan(timer)
    at = plan.at
    if len(plan.products) == 1:
        _inline(context, timer, plan.products[0], at)
    else:
        for product in plan.products:
            context.stores.queues.send(
                context.settings.passes_queue, pass_message(timer, product, at)
            )
    sweeper.advance(plan)
    if plan.products:
        log.info("%s tick: %d product(s) to pass", timer, len(plan.products))


def _inline(context: AppContext, timer: Timer, product: str, at: str) -> None:
    """The pass, here; should it fail in any way, it goes to the queue as a message would
    have, to be retried there and, failing every delivery, poisoned and alerted on (a failure
    kept here would fail every tick and alert no one)."""
    try:
        PASSES[timer](context, product)
    except Exception as exc:  # whatever failed, the queue's rules take over
        log.warning("%s pass over %s failed (%r): handed to the queue", timer, product, exc)
        context.stores.queues.send(context.settings.passes_queue, pass_message(timer, product, at))


def _parse(msg: func.QueueMessage) -> tuple[Timer, str] | None:
    """The (timer, product) a pass message names, or None (logged) for anything else."""
    try:
        raw = msg.get_body()
        if len(raw) > MAX_MESSAGE_CHARS:
            raise ValueError(f"{len(raw)} bytes")
        body = json.loads(raw)
        timer, product = body["timer"], body["product"]
    except (ValueError, KeyError, TypeError) as exc:
        log.error("pass message %s is not one (%s): dropped", msg.id, exc)
        return None
    if timer not in TIMERS or not isinstance(product, str) or not NAME.fullmatch(product):
        log.error("pass message %s names no known timer and product: dropped", msg.id)
        return None
    return timer, product


def fleet_pass(msg: func.QueueMessage, context: AppContext) -> None:
    """One timer's pass over one product, from its message. A store error is raised to the
    host, which makes the message visible again after the visibility timeout, and after
    ``maxDequeueCount`` deliveries moves it to the poison queue (``fleet_pass_poisoned``)."""
    parsed = _parse(msg)
    if parsed is None:
        return
    timer, product = parsed
    try:
        PASSES[timer](context, product)
    except FleetError as exc:
        log.warning(
            "%s pass over %s failed (delivery %s): %s %s",
            timer,
            product,
            msg.dequeue_count,
            exc.code,
            exc.message,
        )
        raise


def fleet_pass_poisoned(msg: func.QueueMessage, context: AppContext) -> None:
    """A pass given up: kept on the product (``Metrics.record_pass_failure``) and its
    ``pass_failed`` alert raised at once by a metrics pass (through the alert webhook too,
    when there is one), or else by the next metrics tick; the alert clears an hour after the
    last such failure."""
    parsed = _parse(msg)
    if parsed is None:
        return
    timer, product = parsed
    log.error(
        "ALERT %s pass over %s was given up: every delivery of its message failed (message %s)",
        timer,
        product,
        msg.id,
    )
    # Recorded first (should that fail, the host retries this message): the record is due at
    # once, so the next metrics tick raises the alert even if this pass cannot.
    context.coordinator.record_pass_failure(product, {"timer": timer, "messageId": msg.id})
    try:
        context.monitor.run(product)
    except FleetError as exc:
        log.warning("pass_failed alert of %s left to the next metrics tick: %s", product, exc)
