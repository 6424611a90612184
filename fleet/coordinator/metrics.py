"""Metrics and alerts: what the metrics timer computes, stores and tells.

One pass over one product (``Monitor.run``, from the metrics timer):

1. **Metrics**, from bounded reads only: a ``COUNT`` per stage, the fleet (one query over the
   factory documents), the oldest ``scan`` queued jobs (one ``TOP`` query: oldest age,
   starvation, unroutable), the stalled jobs (one ``TOP`` query), the budget (one point read).
   Never a full scan of a big queue: starvation and unroutable are judged over the oldest
   ``scan`` queued jobs (``scanned``/``truncated`` say so), and starving jobs are the oldest
   ones by definition. Stored in the ``metrics`` document, which ``GET /api/fleet/metrics``
   reads with one point read.
2. **Alerts**: the product's rules (``ProductSettings.alerts``) over those metrics
   (``fleet.domain.alerts``, pure). The ``alerts`` document keeps the active alerts, a
   per-product event ``seq`` and the recent alert events; it is written with ``If-Match`` and
   a lost race re-applies the same evaluation to the fresh document, so an alert is raised
   (and cleared) once per change however many instances run the timer. Alert events join the
   product-wide event feed (``Coordinator.product_events``) for live views.
3. **The alert webhook** (optional): each alert event is POSTed, signed, from a cursor, with
   backoff (``fleet.coordinator.webhooks``). A failing endpoint is logged and retried on a
   later pass; it never fails or delays the metrics and the alerts.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from fleet.coordinator.bounded import append_bounded
from fleet.coordinator.budgets import Budgets
from fleet.coordinator.clock import Clock
from fleet.coordinator.config import CoordinatorConfig, Part
from fleet.coordinator.product import Products, ProductSettings
from fleet.coordinator.routing import Routing
from fleet.coordinator.webhooks import Dispatcher, Endpoint, Item, Poster
from fleet.domain import alerts as A
from fleet.domain.models import Job, format_ts, parse_ts
from fleet.domain.routing import Agreement
from fleet.domain.scheduler import FactoryView, capabilities_offered
from fleet.domain.stages import LEASED, Stage
from fleet.errors import AlreadyExists, ConcurrencyConflict, FleetError, NotFound
from fleet.store.ports import DocumentStore
from fleet.store.queries import COUNT_JOBS_IN_STAGE, JOBS_OLDEST_IN_STAGE, STALLED_JOBS

log = logging.getLogger(__name__)

METRICS_ID = "metrics"
ALERTS_ID = "alerts"
WEBHOOK_CURSOR_ID = "alert-webhook"
ALERT_FEED_ID = "alert"  # stands for the job id in the feed's cursor of an alert event
LISTED = 10  # job and factory ids named per metric
STALLED_SCAN = 100
REVIEW_SCAN = 100  # jobs in review looked at, oldest first
PASS_FAILURES_ID = "pass-failures"
PASS_FAILURE_WINDOW_SECONDS = 3600  # a pass given up keeps ``pass_failed`` raised this long
MAX_PASS_FAILURES = 20
_INTERNAL = ("id", "productId", "type")


def _public(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if not k.startswith("_") and k not in _INTERNAL}


def queued_since(job: Job) -> datetime:
    """When the job last entered ``queued`` (a requeued job starts waiting again): its
    latest entry event, else its submit time."""
    for event in reversed(job.events):
        if event.toStage is Stage.QUEUED and event.fromStage is not Stage.QUEUED:
            return event.at
    return job.createdAt


@dataclass(frozen=True, eq=False)
class Metrics(Part):
    """The product's metrics: computed from bounded reads, stored, read back."""

    products: Products
    budgets: Budgets
    routing: Routing | None = field(default=None, compare=False)  # learned routing's model

    def compute(self, product: str) -> dict[str, Any]:
        """Compute the product's metrics and store them (the ``metrics`` document)."""
        now = self.clock.now()
        docs = self.docs
        depth = {
            stage.value: docs.count(COUNT_JOBS_IN_STAGE, product, {"stage": stage.value})
            for stage in Stage
        }
        factories = self.products.factories(product)
        views = self.products.factory_views(product, factories)
        live = [v for v in views if v.live]
        listed = [f for f in factories if not f.revoked and not f.deregistered]
        stale = [f.id.removeprefix("factory-") for f in listed if f.status == "stale"]
        down = [f.id.removeprefix("factory-") for f in listed if f.status == "down"]
        held = sum(depth[s.value] for s in LEASED)
        seats = sum(v.seats for v in live)

        scan = self.config.metrics_scan
        rows = docs.query(JOBS_OLDEST_IN_STAGE, product, {"stage": "queued", "top": scan})
        queued = [Job.from_doc(r) for r in rows]
        threshold = self.products.settings(product).alerts.starvationSeconds
        starving: list[tuple[float, str]] = []
        unroutable: list[str] = []
        for job in queued:
            # Unroutable is judged against the fleet as it is now, not as it was at submit.
            if not capabilities_offered(job.capabilities, views):
                unroutable.append(job.id)
                continue
            waited = (now - queued_since(job)).total_seconds()
            if threshold > 0 and waited >= threshold and _routable(job, live):
                starving.append((waited, job.id))
        starving.sort(reverse=True)
        stalled_rows = docs.query(STALLED_JOBS, product, {"top": STALLED_SCAN})
        review = self._review_waiting(product, now, self.products.settings(product).alerts)

        metrics: dict[str, Any] = {
            "id": METRICS_ID,
            "productId": product,
            "type": "metrics",
            "at": format_ts(now),
            "queueDepth": depth,
            "oldestQueuedSeconds": (now - queued[0].createdAt).total_seconds() if queued else None,
            "utilization": {
                "held": held,
                "seats": seats,
                "fraction": round(held / seats, 4) if seats else None,
            },
            "factories": {
                "total": len(listed),
                "live": len(live),
                "stale": stale,
                "down": down,
            },
            "starvation": {
                "thresholdSeconds": threshold,
                "count": len(starving),
                "jobs": [{"jobId": j, "waitingSeconds": round(w, 1)} for w, j in starving[:LISTED]],
            },
            "stalled": {
                "count": len(stalled_rows),
                "jobs": [str(r["id"]) for r in stalled_rows[:LISTED]],
            },
            "unroutable": len(unroutable),
            "unroutableJobs": unroutable[:LISTED],
            "review": review,
            "scanned": len(queued),
            "truncated": len(queued) >= scan,
            "spend": None,
            "passFailures": self._pass_failures(product, now),
            "routing": self._routing(product),
        }
        budget = self.budgets.get(product)
        if budget is not None:
            view = budget.view()
            used = view["usedFraction"]
            metrics["budget"] = view
            metrics["spend"] = {
                "spentUsd": view["spentUsd"],
                "reservedUsd": view["reservedUsd"],
                "ceilingUsd": view["ceilingUsd"],
                "fraction": round(used, 4) if used is not None else None,
            }
            self.budgets.record_point(product)
        docs.upsert(metrics)
        return _public(metrics)

    def _routing(self, product: str) -> dict[str, Any]:
        """Learned routing's shadow agreement and when it last learned (one point read of the
        routing document the same metrics pass keeps just before)."""
        if self.routing is None:
            return {"agreement": Agreement().as_dict(), "learnedAt": None}
        kept = self.routing.read(product)
        return {"agreement": kept.agreement.as_dict(), "learnedAt": kept.updatedAt}

    def _pass_failures(self, product: str, now: datetime) -> dict[str, Any]:
        """Timer passes over the product given up within ``PASS_FAILURE_WINDOW_SECONDS``
        (``record_pass_failure``): one point read."""
        try:
            doc = self.docs.read(product, PASS_FAILURES_ID)
        except NotFound:
            doc = {}
        since = format_ts(now - timedelta(seconds=PASS_FAILURE_WINDOW_SECONDS))
        # Recent while younger than the window: at its end (the record's ``dueAt``) it is not.
        recent = [f for f in doc.get("failures") or [] if str(f.get("at", "")) > since]
        # Due again when the newest failure leaves the window (the alert clears then); none
        # once it has: nothing left to clear.
        due = (
            format_ts(parse_ts(recent[-1]["at"]) + timedelta(seconds=PASS_FAILURE_WINDOW_SECONDS))
            if recent
            else None
        )
        if doc and doc.get("dueAt") != due:
            kept = {k: v for k, v in doc.items() if k != "dueAt"}
            with contextlib.suppress(ConcurrencyConflict, NotFound):
                self.docs.replace({**kept, "dueAt": due} if due else kept, etag=doc.get("_etag"))
        return {
            "count": len(recent),
            "timers": sorted({str(f.get("timer")) for f in recent}),
            "lastAt": recent[-1]["at"] if recent else None,
            "windowSeconds": PASS_FAILURE_WINDOW_SECONDS,
        }

    def record_pass_failure(self, product: str, failure: dict[str, Any]) -> None:
        """Keep a timer pass given up (its message poisoned: ``fleet.timers``) for the
        ``pass_failed`` alert: the newest ``MAX_PASS_FAILURES`` in the product's
        ``pass-failures`` document. Its ``dueAt`` is now: the timers' next sweeps pass the
        product (the metrics pass raises the alert, whoever else failed to), and that pass
        moves it to the window's end, when the alert may clear (``_pass_failures``)."""
        now = format_ts(self.clock.now())
        append_bounded(
            self.docs,
            product,
            {"id": PASS_FAILURES_ID, "type": "pass_failures"},
            "failures",
            {**failure, "at": now},
            limit=MAX_PASS_FAILURES,
            retries=self.config.write_retries,
            also={"dueAt": now},
        )

    def read(self, product: str) -> dict[str, Any]:
        """The stored metrics: one point read (computed on the spot the very first time)."""
        try:
            return _public(self.docs.read(product, METRICS_ID))
        except NotFound:
            return self.compute(product)

    def _review_waiting(self, product: str, now: datetime, rules: A.AlertRules) -> dict[str, Any]:
        """Jobs waiting in review: the oldest's wait, and those past ``reviewWaitingSeconds``
        (over the ``REVIEW_SCAN`` oldest by submit time; a round's wait counts from its
        opening)."""
        rows = self.docs.query(
            JOBS_OLDEST_IN_STAGE, product, {"stage": Stage.REVIEW.value, "top": REVIEW_SCAN}
        )
        waits: list[tuple[float, str]] = []
        for job in (Job.from_doc(r) for r in rows):
            opened = job.reviewState.openedAt if job.reviewState else job.lastEventAt
            waits.append(((now - opened).total_seconds(), job.id))
        waits.sort(reverse=True)
        threshold = rules.reviewWaitingSeconds
        overdue = [(w, j) for w, j in waits if threshold > 0 and w >= threshold]
        return {
            "thresholdSeconds": threshold,
            "oldestSeconds": round(waits[0][0], 1) if waits else None,
            "overdue": len(overdue),
            "waiting": [{"jobId": j, "waitingSeconds": round(w, 1)} for w, j in overdue[:LISTED]],
        }


def _routable(job: Job, live: list[FactoryView]) -> bool:
    """Some live factory advertises every capability the job needs (busy or not)."""
    return capabilities_offered(job.capabilities, live)


# --- alerts -----------------------------------------------------------------------------


def alert_feed(
    docs: DocumentStore, product: str, after: tuple[str, str, int]
) -> list[tuple[tuple[str, str, int], dict[str, Any]]]:
    """Alert events after a product-feed cursor position, keyed like job events
    (``at|alert|seq``), shaped for the feed (``jobId`` null, ``alert`` true)."""
    try:
        doc = docs.read(product, ALERTS_ID)
    except NotFound:
        return []
    out = []
    for event in doc.get("history") or []:
        key = (str(event["at"]), ALERT_FEED_ID, int(event["seq"]))
        if key > after:
            item = {
                **event,
                "jobId": None,
                "alert": True,
                "actor": "alerts",
                "reason": f"{event['kind']} {event['key']}: {event['message']}",
            }
            out.append((key, item))
    return out


@dataclass
class PassReport:
    product: str
    metrics: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)  # alert events appended
    delivered: int = 0  # alert events the webhook took


class Source(Protocol):
    """What a metrics pass needs of the coordinator: its stores, clock and config, the
    product's settings (the alert rules), the metrics themselves."""

    @property
    def docs(self) -> DocumentStore: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def config(self) -> CoordinatorConfig: ...

    def settings(self, product: str) -> ProductSettings: ...

    def compute_metrics(self, product: str) -> dict[str, Any]: ...


class Monitor:
    """Metrics, alerts and the alert webhook over the coordinator's stores and clock."""

    def __init__(
        self,
        coordinator: Source,
        webhook: Endpoint | None = None,
        poster: Poster | None = None,
    ) -> None:
        self.source = coordinator
        self.docs = coordinator.docs
        self.webhook = Dispatcher(
            coordinator.docs,
            coordinator.clock,
            webhook or Endpoint(None),
            doc_id=WEBHOOK_CURSOR_ID,
            doc_type="alert_webhook_cursor",
            what="alert webhook",
            poster=poster,
        )

    def run(self, product: str) -> PassReport:
        """One metrics pass: metrics, then alerts, then the webhook (whose failures are only
        logged: they are retried by a later pass)."""
        report = PassReport(product)
        report.metrics = self.source.compute_metrics(product)
        report.events = self.evaluate(product, report.metrics)
        try:
            report.delivered = self.deliver(product)
        except FleetError as exc:  # the cursor's store trouble: next pass
            log.warning("alert webhook for %s: %s", product, exc.message)
        return report

    def evaluate(self, product: str, metrics: dict[str, Any]) -> list[dict[str, Any]]:
        """Apply the product's rules to ``metrics``; store the transitions. Returns the alert
        events appended (raised / cleared), none when nothing changed."""
        rules = self.source.settings(product).alerts
        now_alerts = A.evaluate(metrics, rules)
        for _ in range(self.source.config.write_retries):
            current = self._alerts_doc(product)
            updated, events = A.apply(current, now_alerts, self.source.clock.now())
            try:
                self.docs.replace(updated, etag=current.get("_etag"))
            except ConcurrencyConflict:
                continue  # another pass wrote: re-apply to what it wrote
            for event in events:
                line = "ALERT %s %s/%s (%s): %s"
                log.log(
                    logging.WARNING if event["kind"] == "raised" else logging.INFO,
                    line,
                    event["kind"],
                    product,
                    event["key"],
                    event["severity"],
                    event["message"],
                )
            return events
        log.warning("alerts of %s changing too fast; left to the next pass", product)
        return []

    def _alerts_doc(self, product: str) -> dict[str, Any]:
        try:
            return self.docs.read(product, ALERTS_ID)
        except NotFound:
            doc = {"id": ALERTS_ID, "productId": product, "type": "alerts", "seq": 0}
            with contextlib.suppress(AlreadyExists):
                return self.docs.create({**doc, "active": {}, "history": []})
            return self.docs.read(product, ALERTS_ID)

    def alerts(self, product: str, history: int = 50) -> dict[str, Any]:
        """Active alerts (oldest first) and the recent raise/clear events (newest first)."""
        try:
            doc = self.docs.read(product, ALERTS_ID)
        except NotFound:
            doc = {}
        active = sorted((doc.get("active") or {}).values(), key=lambda a: (a["since"], a["key"]))
        recent = list(reversed(doc.get("history") or []))[:history]
        return {
            "active": active,
            "history": recent,
            "evaluatedAt": doc.get("evaluatedAt"),
            "webhook": self.webhook_status(product),
        }

    # --- the webhook ------------------------------------------------------------------

    def deliver(self, product: str) -> int:
        """POST the alert events after the webhook's cursor (a ``seq``), in order."""
        return self.webhook.dispatch(product, lambda cursor: self._items(product, cursor))

    def _items(self, product: str, cursor: str | None) -> Iterator[Item]:
        try:
            doc = self.docs.read(product, ALERTS_ID)
        except NotFound:
            return
        after = int(cursor) if cursor and cursor.isdigit() else 0
        for event in doc.get("history") or []:
            if int(event["seq"]) > after:
                yield str(event["seq"]), {"product": product, **event}

    def webhook_status(self, product: str) -> dict[str, Any]:
        return {
            "configured": bool(self.webhook.endpoint.url),
            **self.webhook.status(product),
        }
