"""The timers' sweeps: which products a tick must visit, found without visiting them.

A timer no longer walks every product. Each tick asks the store, across products, what is
due, in a few bounded queries whose cost follows what is due and not how many products
exist; each product found is then passed (``fleet.timers``: one queue message per product).

- **Due** (``DUE_PRODUCTS``): documents whose ``dueAt`` has come. A job keeps ``dueAt`` in
  the write that changes what it derives from (``fleet.domain.models.Job.due_at``): a leased
  job's lease expiry, a queued job or one in review from its last write; a blocked or a
  finished job has none. The pass-failures record of a product keeps one too (the moment its
  alert may clear). An idle product has no document due.
- **Changed** (``CHANGED_PRODUCTS``): products with an event (a job's transition, a factory's
  or a budget's fleet event) since the timer's previous tick, less ``slack_seconds`` for the
  clocks of other instances. The previous tick's start is kept in one document of the system
  partition per timer (``sweep-<timer>``): read once and written once per tick.
- **Leased** (``LEASED_PRODUCTS``): products with a job under lease, whose holders' progress
  and silence are in heartbeats, not in any document.
- **Silent** (``FLEET_FACTORIES`` and one scan of the heartbeats table): products with a
  factory whose silence calls for a verdict the healer has not written yet (stale, down,
  pruned), judged with the healer's own thresholds and rules (``fleet.domain.healer``).

Which timer passes which (``Sweep.products``):

========  =============================================
reaper    due | changed (the tracker echo, a finished job's dependents)
healer    leased | silent
metrics   due | leased | changed
========  =============================================

Cost per tick, with nothing due: reaper 3 requests (the due query, the watermark's read and
write, and the changed query: 4), healer 2 (the leased query, the factories query, the
heartbeats scan: 3), metrics 5, whatever the number of products. With work: one more query
per ``page`` rows (a product's rows fill a page, never take another product's turn: every
query leaves out the products already found), at most ``max_pages`` per set; what a tick
leaves, the next one finds first (oldest due first, and the changed set's watermark moves
only as far as it read).
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


@dataclass(frozen=True)
class Plan:
    """One tick's sweep: the products to pass and the mark to keep once they are handed
    out (``None``: the timer keeps none)."""

    timer: Timer
    at: str
    products: list[str]
    mark: str | None


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
        now = self.clock.now()
        sets: list[list[str]]
        mark: str | None = None
        if timer == "reaper":
            changed, mark = self.changed(timer, now)
            sets = [self.due(now).products, changed]
        elif timer == "healer":
            sets = [self.leased().products, self.silent(now)]
        elif timer == "metrics":
            changed, mark = self.changed(timer, now)
            sets = [self.due(now).products, self.leased().products, changed]
        else:
            raise ValueError(f"no sweep for timer {timer!r}")
        products = list(dict.fromkeys(p for found in sets for p in found))
        return Plan(timer, format_ts(now), products, mark)

    def advance(self, plan: Plan) -> None:
        """Keep ``plan``'s mark: the next tick looks for changes from there."""
        if plan.mark is None:
            return
        self.docs.upsert(
            {
                "id": f"sweep-{plan.timer}",
                "productId": SYSTEM_PARTITION,
                "type": "sweep_mark",
                "since": plan.mark,
            }
        )

    # --- the sets ---------------------------------------------------------------------

    def due(self, now: datetime) -> Found:
        return self._walk(DUE_PRODUCTS, {"now": format_ts(now)}, "dueAt")

    def leased(self) -> Found:
        return self._walk(LEASED_PRODUCTS, {}, "updatedAt")

    def changed(self, timer: Timer, now: datetime) -> tuple[list[str], str]:
        """Products with an event since ``timer``'s previous tick began (less the slack),
        and the mark the next tick starts from (this tick's start; where this one stopped
        reading when it stopped short). A timer's very first tick (no mark yet) looks back
        ``first_lookback_seconds``."""
        try:
            mark = self.docs.read(SYSTEM_PARTITION, f"sweep-{timer}")
            since = parse_ts(str(mark["since"]))
        except (NotFound, KeyError, ValueError):
            since = now - timedelta(seconds=self.config.first_lookback_seconds)
        since -= timedelta(seconds=self.config.slack_seconds)
        found = self._walk(CHANGED_PRODUCTS, {"since": format_ts(since)}, "lastEventAt")
        # Stopped short: every product it left has an event at or after the last row read
        # (the rows come in that order), so the next tick starts there.
        after = found.last if found.truncated and found.last else format_ts(now)
        return found.products, after

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
        log.info("sweep %s: more than %d pages; the rest next tick", query.name, len(seen))
        return found


def _needs_verdict(
    row: Mapping[str, Any], beat: datetime | None, now: datetime, config: HealthConfig
) -> bool:
    """Whether the healer's pass would change anything for this factory (``plan_heal``'s
    status and prune rules, on what the sweep read)."""
    seen = [t for t in (_ts(row.get("lastSeen")), beat) if t is not None]
    if not seen:
        return False
    silent = (now - max(seen)).total_seconds()
    if silent >= config.prune_after_seconds:
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
