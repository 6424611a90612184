"""Per-product budgets: a ceiling in USD, spend settled from factories' reports, and
reservations taken as part of every claim, so concurrent claims can never overspend.

The budget is one document per product (``id = "budget"``). Claiming a job reserves its
estimated cost with a conditional patch whose filter predicate is the rule itself —
``not paused and (no ceiling or spent + reserved + estimate <= ceiling)`` — *before* the job's
compare-and-swap; a lost race releases the reservation. When the lease ends (shipped,
failed, released, expired, taken back) the reservation is settled against the spend the
holder reported for that attempt. A crash between the two writes leaves a reservation with
no live lease behind it: the reaper reconciles those. Reservations are keyed
``{jobId}-{epoch}``, so settling twice is refused by the store (the key is gone), never
counted twice.

A budget without a ceiling is valid: it tracks spend, can be paused, never blocks on money
and never divides by zero.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fleet.coordinator.audit import FleetLog
from fleet.coordinator.bounded import append_bounded
from fleet.coordinator.cache import TtlCache
from fleet.coordinator.clock import Clock
from fleet.domain.audit import new_event
from fleet.domain.models import Job, format_ts, parse_ts
from fleet.errors import (
    AlreadyExists,
    ConcurrencyConflict,
    NotFound,
    PreconditionFailed,
    ValidationFailed,
)
from fleet.store.expr import Expr, F, Not, all_of, any_of
from fleet.store.ports import DocumentStore, Incr, Remove, Set

log = logging.getLogger(__name__)

BUDGET_ID = "budget"
BURNDOWN_ID = "budget-burndown"
MAX_BURNDOWN_POINTS = 1000
MAX_ADJUSTMENTS = 50  # the newest operators' corrections kept in the budget document


@dataclass(frozen=True)
class Reservation:
    usd: float
    at: datetime

    def settled_by(self, now: datetime, quiet_seconds: float) -> bool:
        """Old enough that no claim can still be between reserving and writing its job."""
        return (now - self.at).total_seconds() >= quiet_seconds


@dataclass(frozen=True)
class Budget:
    product: str
    ceilingUsd: float | None
    spentUsd: float
    reservedUsd: float
    paused: bool
    reservations: dict[str, Reservation]
    updatedAt: str | None
    # Operators' corrections of the spend, newest first: {at, by, deltaUsd, reason,
    # spentUsd (after)}. The audit trail of every change to spend not made by a settlement.
    adjustments: tuple[dict[str, Any], ...] = ()

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Budget:
        return cls(
            product=str(doc["productId"]),
            ceilingUsd=doc.get("ceilingUsd"),
            spentUsd=float(doc.get("spentUsd", 0)),
            reservedUsd=float(doc.get("reservedUsd", 0)),
            paused=bool(doc.get("paused", False)),
            reservations={
                k: Reservation(usd=float(v["usd"]), at=parse_ts(v["at"]))
                for k, v in (doc.get("reservations") or {}).items()
            },
            updatedAt=doc.get("updatedAt"),
            adjustments=tuple(doc.get("adjustments") or ()),
        )

    @property
    def remainingUsd(self) -> float | None:
        if self.ceilingUsd is None:
            return None
        return max(0.0, self.ceilingUsd - self.spentUsd - self.reservedUsd)

    @property
    def autoPaused(self) -> bool:
        """Spend and reservations have reached the ceiling: nothing more may start until
        the ceiling is raised or spend is settled lower. Derived, never stored, so claims
        racing for the last dollars cannot leave the product paused by reservations that
        were released a moment later."""
        if self.ceilingUsd is None:
            return False
        return self.spentUsd + self.reservedUsd >= self.ceilingUsd - 1e-9

    @property
    def blocked(self) -> bool:
        return self.paused or self.autoPaused

    def view(self) -> dict[str, Any]:
        used = self.spentUsd + self.reservedUsd
        return {
            "product": self.product,
            "ceilingUsd": self.ceilingUsd,
            "spentUsd": round(self.spentUsd, 6),
            "reservedUsd": round(self.reservedUsd, 6),
            "remainingUsd": self.remainingUsd,
            # No ceiling: no percentage (and no division by zero).
            "usedFraction": (used / self.ceilingUsd) if self.ceilingUsd else None,
            "paused": self.paused,
            "autoPaused": self.autoPaused,
            "reservations": len(self.reservations),
            "updatedAt": self.updatedAt,
            "adjustments": list(self.adjustments),
        }

    def why_not(self, estimate: float) -> str | None:
        """Why a job of this estimate cannot be claimed now, or None if it can."""
        if self.paused:
            return "budget is paused by an operator"
        if self.autoPaused:
            return "budget auto-paused: spend and reservations reached the ceiling"
        remaining = self.remainingUsd
        if remaining is not None and estimate > remaining + 1e-9:
            return f"budget: estimate ${estimate:.2f} exceeds the ${remaining:.2f} remaining"
        return None


def reservation_key(job_id: str, epoch: int, nonce: str) -> str:
    """Unique per claim attempt: two factories racing for the same job at the same epoch
    each hold their own reservation, and the loser's release cannot touch the winner's."""
    return f"{job_id}-{epoch}-{nonce}"


def parse_reservation_key(key: str) -> tuple[str, int]:
    job_id, epoch, _nonce = key.split("-")
    return job_id, int(epoch)


def estimate_of(job: Job) -> float:
    return float(job.budgetUsd or 0.0)


def _fits(amount: float) -> Expr:
    """The budget rule, evaluated by the store at the moment of the reservation."""
    used = F("/spentUsd") + F("/reservedUsd")
    return all_of(
        Not(F("/paused").eq(True)),
        any_of(
            F("/ceilingUsd").eq(None),
            all_of(used < F("/ceilingUsd"), used + amount <= F("/ceilingUsd")),
        ),
    )


def _covers(amount: float) -> Expr:
    """The ceiling can take ``amount`` more (a running attempt's spend past what it holds;
    a pause stops new claims, not the spend of those already running)."""
    used = F("/spentUsd") + F("/reservedUsd")
    return any_of(F("/ceilingUsd").eq(None), used + amount <= F("/ceilingUsd"))


class BudgetBlocked(PreconditionFailed):
    """The budget does not allow this claim now."""

    code = "budget_blocked"


class Budgets:
    def __init__(
        self,
        docs: DocumentStore,
        clock: Clock,
        cache_seconds: float,
        fleet_log: FleetLog,
    ) -> None:
        self.docs = docs
        self.clock = clock
        self.log = fleet_log
        self._exists: TtlCache[str, bool] = TtlCache(clock, cache_seconds)

    # --- reading ---------------------------------------------------------------------

    def get(self, product: str) -> Budget | None:
        try:
            budget = Budget.from_doc(self.docs.read(product, BUDGET_ID))
        except NotFound:
            self._remember(product, False)
            return None
        self._remember(product, True)
        return budget

    def applies(self, product: str) -> bool:
        """Whether claims in this product go through the budget. Cached per instance (so the
        claim path pays no read for it); the reservation itself is always authoritative."""
        return self._exists.get(product, lambda: self.get(product) is not None)

    def _remember(self, product: str, exists: bool) -> None:
        self._exists.put(product, exists)

    # --- operator --------------------------------------------------------------------

    def put(self, product: str, ceiling: float | None, by: str = "operator") -> Budget:
        """Set (or clear) the ceiling, keeping spend and reservations. Raising the ceiling
        above what is used lifts the auto-pause. A ``budget_set`` event in the same write."""
        for _ in range(8):
            moment = self.clock.now()
            now = format_ts(moment)
            event = new_event(
                "budget_set",
                by,
                moment,
                reason="no ceiling" if ceiling is None else f"ceiling ${ceiling:.2f}",
                ceilingUsd=ceiling,
            )
            try:
                current = self.docs.read(product, BUDGET_ID)
            except NotFound:
                doc: dict[str, Any] = {
                    "id": BUDGET_ID,
                    "productId": product,
                    "type": "budget",
                    "ceilingUsd": ceiling,
                    "spentUsd": 0.0,
                    "reservedUsd": 0.0,
                    "paused": False,
                    "reservations": {},
                    "updatedAt": now,
                }
                try:
                    created = Budget.from_doc(self.log.create(doc, event))
                except AlreadyExists:
                    continue
                self._remember(product, True)
                return created
            updated = {**current, "ceilingUsd": ceiling, "updatedAt": now}
            try:
                stored = Budget.from_doc(self.log.replace(updated, event, etag=current["_etag"]))
            except ConcurrencyConflict:
                continue
            self._remember(product, True)
            return stored
        raise ConcurrencyConflict(f"budget of {product} is changing too fast; retry")

    def adjust(self, product: str, delta: float, reason: str, actor: str) -> Budget:
        """An operator corrects the product's spend by ``delta`` (a forged or mistaken
        figure; a refund), never below zero: one conditional replace that also records the
        correction (who, when, why, by how much, the spend after) in the budget document.
        A product without a budget gets one (no ceiling) to hold it."""
        for _ in range(8):
            now = format_ts(self.clock.now())
            try:
                current = self.docs.read(product, BUDGET_ID)
            except NotFound:
                self.put(product, None, actor)
                continue
            spent = float(current.get("spentUsd", 0.0))
            if spent + delta < -1e-9:
                raise ValidationFailed.one(
                    "deltaUsd",
                    "below_zero",
                    f"the spend is ${spent:.4f}: it cannot go below zero",
                )
            after = max(0.0, spent + delta)
            entry = {"at": now, "by": actor, "deltaUsd": delta, "reason": reason, "spentUsd": after}
            history = [entry, *(current.get("adjustments") or [])][:MAX_ADJUSTMENTS]
            updated = {**current, "spentUsd": after, "adjustments": history, "updatedAt": now}
            event = new_event(
                "budget_adjusted",
                actor,
                parse_ts(now),
                reason=reason,
                deltaUsd=delta,
                spentUsd=after,
            )
            try:
                stored = Budget.from_doc(self.log.replace(updated, event, etag=current["_etag"]))
            except ConcurrencyConflict:
                continue  # a settlement or a claim moved it meanwhile: read again
            self._remember(product, True)
            log.info("budget of %s adjusted by %+.4f USD by %s: %s", product, delta, actor, reason)
            return stored
        raise ConcurrencyConflict(f"budget of {product} is changing too fast; retry")

    def set_paused(
        self, product: str, paused: bool, by: str = "operator", reason: str | None = None
    ) -> Budget:
        """An operator's pause (or its end), with its ``budget_paused``/``budget_resumed``
        event in the same write."""
        now = self.clock.now()
        ops = [Set("/paused", paused), Set("/updatedAt", format_ts(now))]
        kind = "budget_paused" if paused else "budget_resumed"
        said = reason or ("no job may start" if paused else "jobs may start again")
        event = new_event(kind, by, now, reason=said)
        try:
            patched = self.log.patch(product, BUDGET_ID, ops, event)
        except NotFound:
            self.put(product, None, by)
            patched = self.log.patch(product, BUDGET_ID, ops, event)
        return Budget.from_doc(patched)

    # --- the claim's reservation -----------------------------------------------------

    def reserve(self, product: str, job: Job, key: str) -> Budget:
        """Reserve the job's estimate under ``key`` (see ``reservation_key``); BudgetBlocked
        if the rule does not hold (paused, or it would cross the ceiling): nothing changes."""
        amount = estimate_of(job)
        try:
            patched = self.docs.patch(
                product,
                BUDGET_ID,
                [
                    Incr("/reservedUsd", amount),
                    Set(
                        f"/reservations/{key}",
                        {"usd": amount, "at": format_ts(self.clock.now())},
                    ),
                ],
                condition=_fits(amount),
            )
        except PreconditionFailed:
            raise BudgetBlocked(f"budget does not allow job {job.id} now", jobId=job.id) from None
        except NotFound:
            self._remember(product, False)
            raise
        return Budget.from_doc(patched)

    def grow(self, product: str, key: str, spent: float) -> None:
        """A running attempt reports having spent ``spent``: when that is more than its
        reservation holds, the reservation grows to it — if the ceiling can take it, else
        ``BudgetBlocked`` (the attempt must stop: the budget would be overspent). One read and
        one conditional patch, only for an attempt that spends past what it holds."""
        for _ in range(4):
            budget = self.get(product)
            held = budget.reservations.get(key) if budget is not None else None
            if held is None or spent <= held.usd:
                return  # no budget, settled already, or covered
            more = spent - held.usd
            try:
                self.docs.patch(
                    product,
                    BUDGET_ID,
                    [
                        Incr("/reservedUsd", more),
                        Set(f"/reservations/{key}/usd", spent),
                        Set("/updatedAt", format_ts(self.clock.now())),
                    ],
                    condition=all_of(F(f"/reservations/{key}/usd").eq(held.usd), _covers(more)),
                )
                return
            except NotFound:
                return
            except PreconditionFailed:
                again = self.get(product)
                now_held = again.reservations.get(key) if again is not None else None
                if now_held is not None and now_held.usd == held.usd:
                    raise BudgetBlocked(
                        f"the budget cannot cover ${spent:.4f} spent by this attempt",
                        reservation=key,
                    ) from None
                # It moved (another report grew it, or it was settled): look again.
        raise ConcurrencyConflict(f"reservation {key} is changing too fast; retry")

    def settle(self, product: str, key: str, amount: float, cost: float) -> bool:
        """Release the attempt's reservation (``amount``, what the claim reserved, unless a
        running attempt's spend grew it: then what it holds now) and book its reported cost.
        False when there is nothing to settle (never reserved, or settled already): nothing
        is counted twice."""
        for _ in range(4):
            try:
                self.docs.patch(
                    product,
                    BUDGET_ID,
                    [
                        Incr("/reservedUsd", -amount),
                        Incr("/spentUsd", max(0.0, cost)),
                        Remove(f"/reservations/{key}"),
                        Set("/updatedAt", format_ts(self.clock.now())),
                    ],
                    condition=F(f"/reservations/{key}/usd").eq(amount),
                )
            except NotFound:
                return False
            except PreconditionFailed:
                budget = self.get(product)
                held = budget.reservations.get(key) if budget is not None else None
                if held is None:
                    return False
                amount = held.usd  # it grew while the attempt ran
                continue
            return True
        raise ConcurrencyConflict(f"reservation {key} is changing too fast; retry")

    # --- burndown --------------------------------------------------------------------

    def record_point(self, product: str) -> None:
        """Append one burndown point (called by the metrics pass), unless it says what the
        last one says: the series is a step chart, and ``burndown`` draws the last step to
        now. So a metrics pass run twice (a message delivered twice) adds nothing, and a
        product the metrics sweep skips (nothing changed) misses no point."""
        budget = self.get(product)
        if budget is None:
            return
        point = {
            "at": format_ts(self.clock.now()),
            "spentUsd": budget.spentUsd,
            "reservedUsd": budget.reservedUsd,
            "ceilingUsd": budget.ceilingUsd,
        }
        append_bounded(
            self.docs,
            product,
            {"id": BURNDOWN_ID, "type": "burndown"},
            "points",
            point,
            limit=MAX_BURNDOWN_POINTS,
            retries=8,
            same=_same_step,
        )

    def burndown(self, product: str) -> list[dict[str, Any]]:
        """The points, oldest first, the last one's values carried to now (a point ``at``
        now, when the last is older): nothing changed since it, or it would be a point."""
        try:
            points = list(self.docs.read(product, BURNDOWN_ID).get("points", []))
        except NotFound:
            return []
        now = format_ts(self.clock.now())
        if points and str(points[-1].get("at", "")) < now:
            points.append({**points[-1], "at": now})
        return points


def _same_step(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(a.get(k) == b.get(k) for k in ("spentUsd", "reservedUsd", "ceilingUsd"))
