"""Learned routing, kept: one ``routing`` document per product (the rules:
``fleet.domain.routing``).

**Kept by the metrics pass** (``refresh``): it reads the product's ``LEARN_SCAN`` most recently
changed jobs that have runs (only persona, capabilities and runs), learns from their closed
runs and counts the shadow records of their claims, and writes the document only when what
it says changed. So the model is at most one ``METRICS_SCHEDULE`` period (5 min by default)
behind the runs, and it learns from the newest ``LEARN_SCAN`` jobs' runs (up to 20 each): an
old run ages out as newer jobs come in.

**Read by the claim** through a per-instance cache (``learned``), like the product's settings:
a warm claim reads nothing more; a change reaches every instance within
``settings_ttl_seconds``. ``GET /api/fleet/recommendations`` and the metrics reply read it once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fleet.coordinator.cache import TtlCache
from fleet.coordinator.config import Part
from fleet.domain.models import format_ts
from fleet.domain.routing import (
    EMPTY,
    Agreement,
    Learned,
    agreement_of,
    learn,
    samples_of,
)
from fleet.errors import NotFound
from fleet.store.queries import RECENT_RUNS

ROUTING_ID = "routing"
LEARN_SCAN = 300  # the most recently changed jobs with runs one refresh reads


@dataclass(frozen=True)
class RoutingDoc:
    """A product's routing document: what it learned, the shadow agreement, when it last
    changed (None: never), and how many jobs' runs it was learned from."""

    product: str
    learned: Learned
    agreement: Agreement
    updatedAt: str | None
    jobs: int = 0


@dataclass(frozen=True, eq=False)
class Routing(Part):
    _cache: TtlCache[str, Learned] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        cache: TtlCache[str, Learned] = TtlCache(self.clock, self.config.settings_ttl_seconds)
        object.__setattr__(self, "_cache", cache)

    def refresh(self, product: str) -> RoutingDoc:
        """Learn from the product's newest runs and store the model if it changed (the
        metrics pass)."""
        rows = self.docs.query(RECENT_RUNS, product, {"top": LEARN_SCAN})
        ordered = sorted(rows, key=lambda row: str(row.get("updatedAt") or ""))  # oldest first
        # As it will be stored (figures rounded), so an unchanged model compares equal.
        learned = Learned.from_doc(
            learn(sample for row in ordered for sample in samples_of(row)).as_doc()
        )
        agreement = agreement_of(ordered)
        stored = self.read(product)
        if stored.updatedAt is not None and (
            stored.learned,
            stored.agreement,
            stored.jobs,
        ) == (learned, agreement, len(rows)):
            return stored
        now = format_ts(self.clock.now())
        self.docs.upsert(
            {
                "id": ROUTING_ID,
                "productId": product,
                "type": "routing",
                "evidence": learned.as_doc(),
                "agreement": agreement.as_dict(),
                "jobs": len(rows),
                "updatedAt": now,
            }
        )
        self._cache.put(product, learned)
        return RoutingDoc(product, learned, agreement, now, len(rows))

    def read(self, product: str) -> RoutingDoc:
        """The stored model: one point read (none stored yet: nothing learned)."""
        try:
            doc: dict[str, Any] = self.docs.read(product, ROUTING_ID)
        except NotFound:
            return RoutingDoc(product, EMPTY, Agreement(), None)
        return RoutingDoc(
            product,
            Learned.from_doc(doc.get("evidence")),
            _agreement(doc.get("agreement")),
            doc.get("updatedAt") if isinstance(doc.get("updatedAt"), str) else None,
            doc["jobs"] if isinstance(doc.get("jobs"), int) else 0,
        )

    def learned(self, product: str) -> Learned:
        """The model the claim ranks with: cached per instance for ``settings_ttl_seconds``."""
        return self._cache.get(product, lambda: self.read(product).learned)


def _agreement(raw: Any) -> Agreement:
    if not isinstance(raw, Mapping):
        return Agreement()
    claims, agreed = raw.get("claims"), raw.get("agreed")
    if not isinstance(claims, int) or not isinstance(agreed, int) or not 0 <= agreed <= claims:
        return Agreement()
    return Agreement(claims=claims, agreed=agreed)
