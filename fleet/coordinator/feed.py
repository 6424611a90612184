"""What is read about jobs: lists and pages, a job's history (events, runs, what its
agent said), the product-wide event feed for live views, and why a job waits (explain)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from fleet.coordinator.attempt_quota import EVENT_BYTES, EVENTS, AttemptQuota
from fleet.coordinator.budgets import Budgets, estimate_of
from fleet.coordinator.channels import ChannelLimits
from fleet.coordinator.config import Part
from fleet.coordinator.metrics import alert_feed
from fleet.coordinator.product import Products
from fleet.coordinator.routing import Routing
from fleet.coordinator.writer import Writer
from fleet.domain import jobs as J
from fleet.domain.audit import FleetEvent
from fleet.domain.models import Event, EventDoc, Job, Run, RunDoc, format_ts, parse_ts
from fleet.domain.scheduler import FactoryView, Verdict, can_ever_run, explain
from fleet.domain.stages import LEASED, Stage
from fleet.errors import AlreadyExists, Problem, ValidationFailed
from fleet.store.queries import (
    AGENT_EVENTS_OF_JOB,
    DOCS_OF_TYPE,
    EVENTS_CHANGED_SINCE,
    EVENTS_OF_JOB,
    JOBS_CHANGED_SINCE,
    JOBS_OF_HOLDER_PAGE,
    JOBS_PAGE,
    RUNS_OF_JOB,
)

log = logging.getLogger(__name__)

FEED_SCAN_FACTOR = 20  # the event feed reads at most this many times its limit in jobs
_AFTER_EVERY_ID = "~"  # sorts after every job id (lower-case letters and digits)


@dataclass(frozen=True)
class AgentEvent:
    seq: int  # the sender's own sequence number within its attempt
    type: str
    payload: Any


def agent_event_key(epoch: int, seq: int) -> str:
    """Sorts agent events by attempt, then by the sender's sequence."""
    return f"{epoch:08d}:{seq:010d}"


def payload_bytes(payload: Any) -> int:
    """An agent event's payload as its attempt's quota counts it: its JSON text (the
    measure of the request's 16 KiB limit per payload)."""
    return len(json.dumps(payload, default=str))


@dataclass(frozen=True, eq=False)
class Feed(Part):
    writer: Writer
    products: Products
    budgets: Budgets
    channels: ChannelLimits
    attempt_quota: AttemptQuota
    routing: Routing | None = field(default=None, compare=False)  # learned routing's model

    def list_jobs(self, product: str) -> list[Job]:
        rows = self.docs.query(DOCS_OF_TYPE, product, {"type": "job"})
        return sorted((Job.from_doc(r) for r in rows), key=lambda j: j.id)

    def jobs_page(
        self,
        product: str,
        limit: int,
        before: str | None = None,
        stage: Stage | None = None,
        reader: str | None = None,
    ) -> tuple[list[Job], bool]:
        """One page of the product's jobs, newest first (by id: ids sort by creation time),
        older than the job id ``before``: at most ``limit`` jobs, and whether more follow.
        ``stage`` filters; ``reader`` (a factory) narrows to the jobs it holds and the jobs
        in review. The jobs are summaries (``JOB_SUMMARY_FIELDS``): their body, events,
        checkpoint, progress and result are not read (empty here; ``get_job`` has them).

        Cost: one bounded query; two for a factory without a stage filter (the jobs it
        holds, the jobs in review: merged by id, so the page stays flat and bounded)."""
        every = [s.value for s in Stage]
        wanted = [stage.value] if stage else every
        base = {"before": before or _AFTER_EVERY_ID, "top": limit + 1}
        if reader is None or stage is Stage.REVIEW:
            rows = self.docs.query(JOBS_PAGE, product, {**base, "stages": wanted})
        else:
            held = {**base, "stages": wanted, "holder": reader}
            rows = self.docs.query(JOBS_OF_HOLDER_PAGE, product, held)
            if stage is None:
                review = {**base, "stages": [Stage.REVIEW.value]}
                rows += self.docs.query(JOBS_PAGE, product, review)
        by_id = {str(r["id"]): r for r in rows}
        ids = sorted(by_id, reverse=True)
        return [Job.from_doc(by_id[i]) for i in ids[:limit]], len(ids) > limit

    def job_events(self, product: str, job_id: str, after: int = 0) -> list[Event]:
        """The job's history after ``after``: spilled event documents, then embedded ones."""
        job = self.writer.get_job(product, job_id)
        events: list[Event] = []
        if after < job.spilledThrough:
            rows = self.docs.query(EVENTS_OF_JOB, product, {"jobId": job_id, "after": after})
            events.extend(EventDoc.from_doc(r).event for r in rows)
        seen = {e.seq for e in events}
        events.extend(e for e in job.events if e.seq > after and e.seq not in seen)
        return sorted(events, key=lambda e: e.seq)

    def job_runs(self, product: str, job_id: str) -> list[Run]:
        """Every run of the job, oldest first: spilled run documents, then embedded ones."""
        job = self.writer.get_job(product, job_id)
        runs: dict[int, Run] = {}
        if job.runsSpilledThrough > 0:
            rows = self.docs.query(RUNS_OF_JOB, product, {"jobId": job_id})
            runs.update((r.epoch, r.run) for r in map(RunDoc.from_doc, rows))
        runs.update((r.epoch, r) for r in job.runs)  # the embedded copy is the newest
        return [runs[epoch] for epoch in sorted(runs)]

    def product_events(
        self,
        product: str,
        cursor: str | None,
        limit: int = 200,
        *,
        alerts: bool = True,
        fleet: bool = True,
        settle_seconds: float = 0.0,
        only: EventFilter | None = None,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The product's events after ``cursor`` (``at|source|seq``), oldest first, for live
        views: every job's transitions, the fleet events (``fleet.domain.audit``: enrollment,
        tokens, registration, commands, live/stale/down, budgets, settings...) unless
        ``fleet`` is False, and the product's alert events (one more point read) unless
        ``alerts`` is False. ``only`` keeps the events it matches (the cursor still moves past
        the others). Returns the events and the next cursor. The query reads each document's
        id and events, nothing else of it (not a job's body or checkpoint).

        Documents are found by ``lastEventAt``, so one changed again since hides its earlier
        events behind its latest time: when more changed than the query's ``TOP``, the query is
        widened (4x at a time, up to ``FEED_SCAN_FACTOR`` x ``limit`` documents) rather than
        moving the cursor past a document it did not read. ``settle_seconds`` holds back
        events younger than that (an event is stamped just before its write lands): a
        consumer that must see every event (the tracker echo) uses it."""
        after_key = _parse_cursor(cursor, "after")
        until = (
            format_ts(self.clock.now() - timedelta(seconds=settle_seconds))
            if settle_seconds > 0
            else None
        )
        page, last = self._page(product, after_key, limit, alerts, fleet, until, only)
        next_cursor = _cursor_of(last) if last else cursor
        return [item for _, item in page], next_cursor

    def product_events_before(
        self,
        product: str,
        before: str | None,
        limit: int = 50,
        *,
        only: EventFilter | None = None,
    ) -> tuple[list[dict[str, Any]], str | None, bool]:
        """The newest events older than ``before`` (a cursor; None: now), newest first, for
        the event log: the events, the cursor to pass back as ``before`` for the next (older)
        page, and whether there may be more. ``only`` filters.

        Reads forward, as the live feed does (so it skips nothing the live feed shows), over
        a window ending at ``before``: a minute, then 8x wider each time the page is not full,
        each wider window reading only the part older than the last one, up to the events'
        TTL. A job's history older than what its document keeps (spilled) is on its own page,
        not here."""
        if before:
            upper = _parse_cursor(before, "before")
        else:
            now = format_ts(self.clock.now() + timedelta(seconds=1))
            upper = (now, _AFTER_EVERY_ID, 0)
        end = parse_ts(upper[0])
        widest = float(self.config.event_ttl_seconds)
        window = 60.0
        found: list[tuple[FeedKey, dict[str, Any]]] = []
        while True:
            lower: FeedKey = (format_ts(end - timedelta(seconds=window)), "", 0)
            found = self._between(product, lower, upper, only) + found
            if len(found) >= limit or window >= widest:
                break
            upper, window = lower, min(widest, window * 8)
        page = found[::-1][:limit]
        cursor = _cursor_of(page[-1][0]) if page else before
        more = len(found) > limit or window < widest
        return [item for _, item in page], cursor, more

    def _between(
        self, product: str, lower: FeedKey, upper: FeedKey, only: EventFilter | None
    ) -> list[tuple[FeedKey, dict[str, Any]]]:
        """Every event after ``lower`` and before ``upper``, oldest first (pages of the live
        feed, followed until they pass ``upper``)."""
        out: list[tuple[FeedKey, dict[str, Any]]] = []
        after = lower
        while True:
            page, last = self._page(product, after, _SCAN_PAGE, True, True, None, only)
            out.extend(pair for pair in page if pair[0] < upper)
            if last is None or last >= upper or last == after:
                return out
            after = last

    def _page(
        self,
        product: str,
        after_key: FeedKey,
        limit: int,
        alerts: bool,
        fleet: bool,
        until: str | None,
        only: EventFilter | None,
    ) -> tuple[list[tuple[FeedKey, dict[str, Any]]], FeedKey | None]:
        """One page of the feed after ``after_key``: at most ``limit`` events ``only``
        matches, and the key of the last event looked at (matching or not; None: none)."""
        rows = self._rows_since(product, after_key[0], limit, jobs_only=not fleet)
        found = {
            key: item
            for key, item in _events_of(rows, fleet)
            if key > after_key and (until is None or key[0] <= until)
        }  # by key: an event spilled by a write that then lost its race is read once
        if alerts:
            found.update(alert_feed(self.docs, product, after_key))
        kept: list[tuple[FeedKey, dict[str, Any]]] = []
        last = None
        for key in sorted(found):
            if len(kept) >= limit:
                break
            last = key
            if only is None or only.matches(found[key]):
                kept.append((key, found[key]))
        return kept, last

    def _rows_since(
        self, product: str, since: str, limit: int, *, jobs_only: bool = False
    ) -> list[dict[str, Any]]:
        query = JOBS_CHANGED_SINCE if jobs_only else EVENTS_CHANGED_SINCE
        top = limit
        while True:
            rows = self.docs.query(query, product, {"since": since, "top": top})
            if len(rows) < top or top >= limit * FEED_SCAN_FACTOR:
                break
            top *= 4
        if len(rows) >= top and rows:
            log.warning(
                "event feed of %s: more than %d documents changed since %s; some events may "
                "be skipped (poll more often)",
                product,
                top,
                since or "the start",
            )
        return rows

    # --- what agents say ------------------------------------------------------------

    def record_agent_events(
        self,
        product: str,
        job_id: str,
        factory_id: str,
        epoch: int,
        events: list[AgentEvent],
    ) -> int:
        """Store events an engine wrote while it worked (its decisions, tool calls, notes)
        beside the job's transition history. Fenced: only the holder at this epoch. They
        never change the job: stage, lease and epoch are untouched. Each event carries the
        sender's own sequence number, so a batch sent twice (a retry after a lost reply)
        is stored once. Returns how many were new.

        The attempt's quota (``fleet.coordinator.attempt_quota``: events and payload bytes)
        is taken for the whole batch before anything is stored: a batch that would pass it
        is refused whole (``QuotaExceeded``), nothing stored. Cost beyond the fence's read
        and one create per event: one patch (a 404 patch and a create on the attempt's
        first batch), and one more patch giving back what a retried batch had stored
        already."""
        J.check_fence(self.writer.get_job(product, job_id), factory_id, epoch)
        sizes = [payload_bytes(e.payload) for e in events]
        self.attempt_quota.take(
            product, job_id, epoch, {EVENTS: len(events), EVENT_BYTES: sum(sizes)}
        )
        now = self.clock.now()
        stored = 0
        again = {EVENTS: 0, EVENT_BYTES: 0}  # taken for events already stored: given back
        for event, size in zip(events, sizes, strict=True):
            doc = {
                "id": f"{job_id}:agent:{epoch}:{event.seq}",
                "productId": product,
                "type": "agent_event",
                "jobId": job_id,
                "epoch": epoch,
                "seq": event.seq,
                "key": agent_event_key(epoch, event.seq),
                "eventType": event.type,
                "payload": event.payload,
                "factory": factory_id,
                "at": format_ts(now),
                "ttl": self.config.event_ttl_seconds,
            }
            try:
                self.docs.create(doc)
                stored += 1
            except AlreadyExists:
                again[EVENTS] += 1
                again[EVENT_BYTES] += size
        self.attempt_quota.give_back(product, job_id, epoch, again)
        return stored

    def agent_events(
        self, product: str, job_id: str, after: str | None = None, limit: int = 200
    ) -> list[dict[str, Any]]:
        """A job's agent events after a cursor (the ``key`` of the last one seen)."""
        self.writer.get_job(product, job_id)  # 404 for an unknown job, not an empty list
        rows = self.docs.query(
            AGENT_EVENTS_OF_JOB, product, {"jobId": job_id, "after": after or "", "top": limit}
        )
        keep = ("key", "epoch", "seq", "eventType", "payload", "factory", "at")
        return [{k: row.get(k) for k in keep} for row in rows]

    # --- explain ---------------------------------------------------------------------

    def explain(self, product: str, job_id: str) -> dict[str, Any]:
        job = self.writer.get_job(product, job_id)
        now = self.clock.now()
        views = self.products.factory_views(product)
        weights = self.products.weights(product)
        learned = self.routing.read(product).learned if self.routing is not None else None
        verdicts = explain(job, views, now, weights, learned)
        blockers = self._quota_blockers(job, now) if job.stage is Stage.QUEUED else []
        summary = _explain_summary(job, verdicts, views)
        if blockers and summary.startswith("queued"):
            summary = "queued: " + "; ".join(blockers)
        return {
            "jobId": job.id,
            "stage": job.stage.value,
            "holder": job.lease.holder if job.lease else None,
            "epoch": job.epoch,
            "failedBy": list(job.failedBy),
            "stalled": job.stalled,
            "unroutable": not can_ever_run(job, views),
            "blockers": blockers,
            "summary": summary,
            "learnedRouting": {
                "weight": weights.outcome,
                "mode": "on" if weights.outcome != 0 else "shadow",
                "learned": learned is not None and not learned.empty,
            },
            "factories": [
                {
                    "factory": v.factory,
                    "eligible": v.eligible,
                    "reasons": list(v.reasons),
                    "missingCapabilities": list(v.missing),
                    "score": v.breakdown.as_dict() if v.breakdown else None,
                    "outcome": v.extra.get("outcome"),
                }
                for v in verdicts
            ],
        }

    def _quota_blockers(self, job: Job, now: datetime) -> list[str]:
        """What holds a queued job back whatever the factory: its budget, its channel."""
        blockers = []
        budget = self.budgets.get(job.productId)
        if budget is not None:
            why = budget.why_not(estimate_of(job))
            if why:
                blockers.append(why)
        if job.channel:
            channel = self.channels.get(job.productId, job.channel)
            why = channel.why_not(now) if channel else None
            if why:
                blockers.append(why)
        return blockers


@dataclass(frozen=True)
class EventFilter:
    """What the event log is narrowed to: event types, a factory (its own events, and the
    events of jobs it held), a job, an actor (``operator:NAME``; a bare name means an
    operator's)."""

    types: frozenset[str] | None = None
    factory: str | None = None
    job: str | None = None
    actor: str | None = None

    def matches(self, item: dict[str, Any]) -> bool:
        if self.types is not None and item.get("type") not in self.types:
            return False
        if self.job is not None and item.get("jobId") != self.job:
            return False
        if self.factory is not None and self.factory not in (
            item.get("factory"),
            item.get("holder"),
            _factory_of(item.get("actor")),
        ):
            return False
        if self.actor is not None:
            wanted = self.actor if ":" in self.actor else f"operator:{self.actor}"
            return item.get("actor") == wanted
        return True


FeedKey = tuple[str, str, int]


def _factory_of(actor: Any) -> str | None:
    """The factory an actor names (``factory:NAME``), else None."""
    text = str(actor or "")
    return text.removeprefix("factory:") if text.startswith("factory:") else None


def _events_of(rows: list[dict[str, Any]], fleet: bool) -> Iterator[tuple[FeedKey, dict[str, Any]]]:
    """Each row's events as the feed keys and shows them: a job's transitions (``jobId``
    its id), a fleet event (``fleet`` true) keyed by the document it was written in (its
    ``source`` when spilled or logged beside), so it keys the same wherever it is read."""
    for row in rows:
        source = str(row.get("source") or row["id"])
        model: type[Event] | type[FleetEvent] = Event if row.get("type") == "job" else FleetEvent
        if model is FleetEvent and not fleet:
            continue
        for raw in row.get("events") or ():
            try:
                event = model.model_validate(raw)
            except ValidationError:
                log.warning("event feed: a malformed event in %s skipped", source)
                continue
            dumped = event.model_dump(mode="json")
            item = {"jobId": source, **dumped} if model is Event else {"fleet": True, **dumped}
            yield (format_ts(event.at), source, event.seq), item


_SCAN_PAGE = 500  # events a newest-first page reads forward at a time


def _parse_cursor(cursor: str | None, name: str) -> FeedKey:
    """A feed cursor (``at|source|seq``) as its key; 400 naming ``name`` when it is not one."""
    if not cursor:
        return ("", "", 0)
    parts = cursor.split("|")
    try:
        if len(parts) != 3 or not parts[2].isdigit():
            raise ValueError(cursor)
        if not 2000 <= parse_ts(parts[0]).year <= 9000:  # a time the feed can look back from
            raise ValueError(cursor)
    except (ValueError, OverflowError):
        raise ValidationFailed(
            [Problem(path=name, code="invalid_cursor", message="not a cursor")], "bad cursor"
        ) from None
    return (parts[0], parts[1], int(parts[2]))


def _cursor_of(key: FeedKey) -> str:
    return "|".join(map(str, key))


def _explain_summary(job: Job, verdicts: list[Verdict], views: list[FactoryView]) -> str:
    if job.stage in LEASED and job.lease:
        return (
            f"held by {job.lease.holder} (epoch {job.epoch}) until {format_ts(job.lease.expiresAt)}"
        )
    if job.stage is Stage.BLOCKED:
        return "blocked: waiting for its dependencies"
    if job.stage is not Stage.QUEUED:
        return f"not waiting: stage is {job.stage.value}"
    if not views:
        return "queued: no factory has registered with this product yet"
    if not can_ever_run(job, views):
        return "unroutable: no known factory advertises every required capability"
    eligible = [v for v in verdicts if v.eligible]
    if not eligible:
        return "queued: every capable factory is busy, paused, stale or excluded"
    return f"queued: {len(eligible)} factories can take it; best is {eligible[0].factory}"
