"""The timers' sweeps: which products a tick must visit, found without visiting them.

A timer no longer walks every product. Each tick asks the store, across products, what is
due, in a few bounded queries whose cost follows what is due and not how many products
exist; each product found is then passed (``fleet.timers``: one queue message per product).

- **Due** (``DUE_PRODUCTS``, oldest first): documents whose ``dueAt`` has passed. A job keeps
  ``dueAt`` in the write that changes what it derives from (``fleet.domain.models.Job.due_at``):
  a leased job's lease expiry. A product's pass-failures record keeps one too (when its
  alert may clear). What is due is done once passed (requeued, cleared), so it does not stay.
  A leased job written before jobs kept ``dueAt`` (``UNDATED_LEASES``) is the reaper's too:
  its pass writes the job's ``dueAt``, once.
- **Waiting** (``WAITING_PRODUCTS``, a round robin): products with a job queued or in review,
  judged over time (preemption, starvation, review waits).
- **Leased** (``LEASED_PRODUCTS``, a round robin): products with a job under lease, whose
  holders' progress and silence are in heartbeats, not in any document.
- A round robin's circle (each of its products once) begins at most every ``round_seconds``
  (60 s): those judgements are over minutes, and a backlog waiting on capacity (a fleet scaled
  to zero) must not cost a pass per product on every tick. What changes a waiting product
  is an event, and puts it in the changed set on the next tick.
- **Changed** (``CHANGED_PRODUCTS``, oldest first): products with an event (a job's
  transition, a factory's or a budget's fleet event) since the timer's previous tick, less
  ``slack_seconds`` for the clocks of other instances.
- **Silent** (``FLEET_FACTORIES`` and one scan of the heartbeats table): products with a
  factory whose silence calls for a verdict the healer has not written yet (stale, down,
  pruned), judged with the healer's own thresholds and rules (``fleet.domain.healer``).

Which timer passes which (``Sweep.plan``):

========  ==========================================
reaper    due | waiting | changed (| undated leases)
healer    leased | silent
metrics   due | waiting | leased | changed
========  ==========================================

Each timer keeps one mark, a document of the system partition (``sweep-<timer>``): where its
changed set starts reading next, and where each round robin goes on. It is read once per
tick and written once the tick's passes are handed out (``advance``), when it moved; a tick
that fails before leaves it, and the next one finds the same products again.

**Cost per tick, with nothing due**, whatever the number of products: the reaper 6 requests
(the mark's read and write; the due, waiting, changed and undated-leases queries), the healer
4 (the mark's read, which an idle tick leaves as it was; the leased and factories queries;
the heartbeats scan), the metrics 6. Each query is one request per page on the twin and the
emulator; on Azure Cosmos DB a query across partitions is one request per physical partition
per page, and the factories query and the heartbeats scan read every factory of the fleet,
page by page (pages of factories, not of products). **With work**, a set costs one more
query per ``page`` rows, at most ``max_pages`` per set and tick (``page`` x ``max_pages`` =
1,000 products by default):

- a set that stops short leaves the rest to the next tick: the oldest-first sets read from
  where they stopped (the due set by what is most overdue, the changed set from its last row,
  leaving out the products it passed at that very moment), the round robins go on from the
  last product read, so every product's turn comes;
- a product's rows never take another product's turn: each page leaves out the products
  already found (oldest first) or starts after the last product read (round robin).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from fleet.coordinator.clock import Clock
from fleet.coordinator.heartbeats import HEARTBEATS, heartbeat_record
from fleet.coordinator.product import SYSTEM_PARTITION
from fleet.domain.fleet_state import FACTORY_PREFIX
from fleet.domain.healer import HealthConfig, status_after
from fleet.domain.models import format_ts, parse_ts
from fleet.errors import NotFound
from fleet.store.ports import DocumentStore, TableStore
from fleet.store.queries import (
    CHANGED_PRODUCTS,
    DUE_PRODUCTS,
    FLEET_FACTORIES,
    LEASED_PRODUCTS,
    UNDATED_LEASES,
    WAITING_PRODUCTS,
    NamedQuery,
)

log = logging.getLogger(__name__)

Timer = Literal["reaper", "healer", "metrics"]
TIMERS: tuple[Timer, ...] = ("reaper", "healer", "metrics")
_RANK = {"live": 0, "stale": 1, "down": 2}


@dataclass(frozen=True)
class SweepConfig:
    page: int = 100  # rows per sweep query
    max_pages: int = 10  # queries per set per tick; the rest is the next tick's
    slack_seconds: float = 5.0  # how far before the previous tick "changed" looks
    first_lookback_seconds: float = 3600.0  # how far a timer's very first tick looks back
    # A round robin's circle over its products begins at most this often: what waits or is
    # under lease is judged over minutes (preemption, starvation, stalls), not every tick.
    round_seconds: float = 60.0


@dataclass(frozen=True)
class Mark:
    """A timer's mark: where its changed set starts reading (``since``: a timestamp, None
    before its first tick), the products already passed for their events at exactly
    ``since`` (``at``: only after a tick that stopped short), and where each round robin
    goes on (``cursors``: the last product read, "" from the first) and when its current
    circle began (``rounds``)."""

    since: str | None = None
    at: tuple[str, ...] = ()
    cursors: Mapping[str, str] = field(default_factory=dict)
    rounds: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Mark:
        since = doc.get("since")
        at = doc.get("at")
        return cls(
            since=str(since) if isinstance(since, str) else None,
            at=tuple(str(p) for p in at) if isinstance(at, list) else (),
            cursors=_strings(doc.get("cursors")),
            rounds=_strings(doc.get("rounds")),
        )


@dataclass(frozen=True)
class Plan:
    """One tick's sweep: the products to pass, and the mark to keep once they are handed
    out."""

    timer: Timer
    at: str
    products: list[str]
    mark: Mark
    previous: Mark = field(default_factory=Mark)  # the mark this tick started from


@dataclass
class Found:
    """The products one set found, in the order found (oldest due first), and whether it
    stopped at ``max_pages`` with more to find."""

    products: list[str] = field(default_factory=list)
    truncated: bool = False
    last: str | None = None  # the ordering value of the last row read


class Sweep:
    def __init__(
        self,
        docs: DocumentStore,
        tables: TableStore,
        clock: Clock,
        health: HealthConfig,
        config: SweepConfig | None = None,
    ) -> None:
        self.docs = docs
        self.tables = tables
        self.clock = clock
        self.health = health
        self.config = config or SweepConfig()

    def products(self, timer: Timer) -> list[str]:
        """The products ``timer``'s tick must pass now, each once, the mark kept (a test's
        and a tool's shortcut for ``plan`` then ``advance``)."""
        plan = self.plan(timer)
        self.advance(plan)
        return plan.products

    def plan(self, timer: Timer) -> Plan:
        """What ``timer``'s tick must pass now (see the module's table), each product once,
        the most overdue first. ``advance`` keeps the tick's mark once its passes are handed
        out; a tick that fails before leaves the mark, so the next one finds them again."""
        if timer not in TIMERS:
            raise ValueError(f"no sweep for timer {timer!r}")
        now = self.clock.now()
        previous = self._mark(timer)
        cursors, rounds = dict(previous.cursors), dict(previous.rounds)
        sets: list[list[str]] = []
        mark = Mark(cursors=cursors, rounds=rounds)
        if timer in ("reaper", "metrics"):
            sets.append(self.due(now).products)
            sets.append(self._cycle(WAITING_PRODUCTS, cursors, rounds, "waiting", now))
        if timer == "reaper":
            sets.append(self._walk(UNDATED_LEASES, {}, "productId").products)
        if timer in ("healer", "metrics"):
            sets.append(self._cycle(LEASED_PRODUCTS, cursors, rounds, "leased", now))
        if timer in ("reaper", "metrics"):
            changed, since, at = self.changed(previous, now)
            sets.append(changed)
            mark = Mark(since=since, at=at, cursors=cursors, rounds=rounds)
        if timer == "healer":
            sets.append(self.silent(now))
        products = list(dict.fromkeys(p for found in sets for p in found))
        return Plan(timer, format_ts(now), products, mark, previous)

    def advance(self, plan: Plan) -> None:
        """Keep ``plan``'s mark: the next tick starts from there. Not written when it is the
        mark the tick started from (an idle healer's: its round robin where it was)."""
        if plan.mark == plan.previous:
            return
        self.docs.upsert(
            {
                "id": f"sweep-{plan.timer}",
                "productId": SYSTEM_PARTITION,
                "type": "sweep_mark",
                "since": plan.mark.since,
                "at": list(plan.mark.at),
                "cursors": dict(plan.mark.cursors),
                "rounds": dict(plan.mark.rounds),
            }
        )

    def _mark(self, timer: Timer) -> Mark:
        try:
            return Mark.from_doc(self.docs.read(SYSTEM_PARTITION, f"sweep-{timer}"))
        except NotFound:
            return Mark()

    # --- the sets ---------------------------------------------------------------------

    def due(self, now: datetime) -> Found:
        return self._walk(DUE_PRODUCTS, {"now": format_ts(now)}, "dueAt")

    def changed(self, previous: Mark, now: datetime) -> tuple[list[str], str, tuple[str, ...]]:
        """Products with an event since the previous tick began (less the slack; a timer's
        very first tick looks back ``first_lookback_seconds``), and where the next tick
        starts: this tick's start, or, when this one stopped short, its last row's moment,
        with the products it passed (their events at that moment are done)."""
        if previous.since is None:
            since = now - timedelta(seconds=self.config.first_lookback_seconds)
            at: tuple[str, ...] = ()
        elif previous.at:  # the previous tick stopped short: go on exactly where it did
            since, at = parse_ts(previous.since), previous.at
        else:
            since = parse_ts(previous.since) - timedelta(seconds=self.config.slack_seconds)
            at = ()
        start = format_ts(since)
        found = self._walk(CHANGED_PRODUCTS, {"since": start, "at": list(at)}, "lastEventAt")
        if not found.truncated or found.last is None:
            return found.products, format_ts(now), ()
        # Every product it left has an event at or after the last row read (the rows come in
        # that order); the products it passed are done with their events at that moment.
        passed = (*at, *found.products) if found.last == start else tuple(found.products)
        return found.products, found.last, tuple(dict.fromkeys(passed))

    def silent(self, now: datetime) -> list[str]:
        """Products with a factory whose silence the healer has yet to judge: one that
        should now be stale or down and is not marked so, or one silent long enough to be
        pruned. One query over the factories (all products, to the last page) and one scan
        of the heartbeats table."""
        factories = self.docs.query_across(FLEET_FACTORIES)
        beats: dict[tuple[str, str], datetime] = {}
        for entity in self.tables.list_all(HEARTBEATS):
            record = heartbeat_record(entity)
            if record.at is not None:
                beats[(str(entity["PartitionKey"]), record.factory)] = record.at
        found: dict[str, None] = {}
        for row in factories:
            product = str(row["productId"])
            factory_id = str(row["id"]).removeprefix(FACTORY_PREFIX)
            if _needs_verdict(row, beats.get((product, factory_id)), now, self.health):
                found[product] = None
        return list(found)

    # --- paging -----------------------------------------------------------------------

    def _walk(self, query: NamedQuery, params: Mapping[str, Any], order: str) -> Found:
        """Pages of ``query``, each leaving out the products already found, until a page
        comes back short or ``max_pages`` were read."""
        found = Found()
        seen: dict[str, None] = {}
        for _ in range(self.config.max_pages):
            rows = self.docs.query_across(
                query, {**params, "seen": list(seen), "top": self.config.page}
            )
            for row in rows:
                seen.setdefault(str(row["productId"]), None)
                found.last = str(row.get(order)) if row.get(order) is not None else found.last
            if len(rows) < self.config.page:
                found.products = list(seen)
                return found
        found.products = list(seen)
        found.truncated = True
        log.info("sweep %s: more than %d products; the rest next tick", query.name, len(seen))
        return found

    def _cycle(
        self,
        query: NamedQuery,
        cursors: dict[str, str],
        rounds: dict[str, str],
        name: str,
        now: datetime,
    ) -> list[str]:
        """A round robin over the products ``query`` finds, in product order, from
        ``cursors[name]`` (the last product the previous tick read), wrapping to the first
        once: at most ``max_pages`` pages. Leaves in ``cursors[name]`` where the next tick
        goes on ("" when this one read them all).

        A circle (every product once) begins at most every ``round_seconds``: a tick that
        would begin one sooner after the previous began reads nothing. ``rounds[name]`` is
        when the current circle began; a circle that found nothing is not one (an idle
        timer's mark stays as it was, and its next tick looks again)."""
        start = cursors.get(name, "")
        if start == "":
            began = _ts(rounds.get(name))
            if began is not None and (now - began).total_seconds() < self.config.round_seconds:
                return []
            found = self._circle(query, cursors, name, start)
            if found:
                rounds[name] = format_ts(now)
            return found
        return self._circle(query, cursors, name, start)

    def _circle(
        self, query: NamedQuery, cursors: dict[str, str], name: str, start: str
    ) -> list[str]:
        after, wrapped = start, start == ""
        found: dict[str, None] = {}
        for _ in range(self.config.max_pages):
            rows = self.docs.query_across(query, {"after": after, "top": self.config.page})
            for row in rows:
                product = str(row["productId"])
                if wrapped and start and product > start:
                    cursors[name] = ""  # full circle: every product had its turn
                    return list(found)
                found.setdefault(product, None)
            if rows:
                after = str(rows[-1]["productId"])
            if len(rows) < self.config.page:
                if wrapped:
                    cursors[name] = ""
                    return list(found)
                after, wrapped = "", True  # on from the first product, up to the start
        cursors[name] = after
        log.info("sweep %s: more than %d products; the rest next tick", query.name, len(found))
        return list(found)


def _strings(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _needs_verdict(
    row: Mapping[str, Any], beat: datetime | None, now: datetime, config: HealthConfig
) -> bool:
    """Whether the healer's pass would change anything for this factory (``plan_heal``'s
    status and prune rules, on what the sweep read: an ephemeral factory's prune comes
    sooner)."""
    seen = [t for t in (_ts(row.get("lastSeen")), beat) if t is not None]
    if not seen:
        return False
    silent = (now - max(seen)).total_seconds()
    if silent >= config.prune_seconds(row.get("ephemeral") is True):
        return True
    if row.get("revoked") is True:
        return False  # a revoked factory is only ever pruned
    status = str(row.get("status") or "live")
    return _RANK[status_after(silent, config)] > _RANK.get(status, 0)


def _ts(value: Any) -> datetime | None:
    try:
        return parse_ts(value) if value else None
    except ValueError:
        return None
