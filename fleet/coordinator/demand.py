"""Demand, kept: one ``demand`` document per product, which ``GET /api/fleet/demand`` answers
with one point read (the rules: ``fleet.domain.demand``).

It is written by the reaper's pass (``refresh``), and only when what it says changed. The
reaper's sweep passes a product once after every event (a submit, a claim, a ship, a factory
joining or judged down) and when a lease expires: so what events change is at most one reaper
period (``REAPER_SCHEDULE``, 15 s by default) plus its pass's time in the queue behind. A
product with work queued or in review is also passed once per round of the waiting set (60 s),
which bounds what only time changes (a budget's new period). A product that turns idle is passed
once more, for the event that made it so, and its demand empties.

A refresh reads the oldest ``DEMAND_SCAN`` queued jobs and as many leased ones (only the fields
demand needs), the product's factories and its budget: bounded, whatever the queue holds
(``truncated`` says when the queue was longer than what was read).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fleet.coordinator.budgets import Budgets
from fleet.coordinator.config import Part
from fleet.coordinator.product import Products
from fleet.domain.demand import SetDemand, Waiting, capability_set, demand_of, sets_from_doc
from fleet.domain.models import format_ts
from fleet.errors import NotFound
from fleet.store.queries import LEASED_FOR_DEMAND, QUEUED_FOR_DEMAND

DEMAND_ID = "demand"
DEMAND_SCAN = 1000  # queued (and leased) jobs one refresh reads, oldest first


@dataclass(frozen=True)
class DemandDoc:
    """A product's demand as stored: its sets, when it last changed (None: never computed),
    and whether the queue held more than a refresh reads."""

    product: str
    sets: list[SetDemand]
    updatedAt: str | None
    truncated: bool


@dataclass(frozen=True, eq=False)
class Demand(Part):
    products: Products
    budgets: Budgets

    def refresh(self, product: str) -> DemandDoc:
        """Compute the product's demand and store it if it changed (the reaper's pass)."""
        rows = self.docs.query(QUEUED_FOR_DEMAND, product, {"top": DEMAND_SCAN})
        budget = self.budgets.get(product)
        waiting = [
            Waiting(
                capabilities=capability_set(row.get("capabilities") or ()),
                submitted=str(row["createdAt"]),
                routable=budget is None or budget.why_not(float(row.get("budgetUsd") or 0)) is None,
            )
            for row in rows
        ]
        leased = self.docs.query(LEASED_FOR_DEMAND, product, {"top": DEMAND_SCAN})
        running = [capability_set(row.get("capabilities") or ()) for row in leased]
        sets = demand_of(waiting, running, self.products.factory_views(product))
        truncated = len(rows) >= DEMAND_SCAN or len(leased) >= DEMAND_SCAN
        stored = self.read(product)
        if stored.updatedAt is not None and (stored.sets, stored.truncated) == (sets, truncated):
            return stored
        now = format_ts(self.clock.now())
        self.docs.upsert(
            {
                "id": DEMAND_ID,
                "productId": product,
                "type": "demand",
                "sets": [s.as_dict() for s in sets],
                "truncated": truncated,
                "updatedAt": now,
            }
        )
        return DemandDoc(product, sets, now, truncated)

    def read(self, product: str) -> DemandDoc:
        """The stored demand: one point read (none stored yet: no sets, ``updatedAt`` None)."""
        try:
            doc: dict[str, Any] = self.docs.read(product, DEMAND_ID)
        except NotFound:
            return DemandDoc(product, [], None, False)
        return DemandDoc(
            product, sets_from_doc(doc), doc.get("updatedAt"), bool(doc.get("truncated"))
        )
