"""What a product is made of besides its jobs: its settings (scheduler weights, preemption,
alert rules, the default attempt timeout), its fleet of factories, the registry of products
the timers visit, and the queue-state gate gated factories poll.

The claim path reads settings and a factory's standing from per-instance caches
(``settings_ttl_seconds``), so it stays one query and one write; a change reaches every
instance within that time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from fleet.coordinator.audit import FleetLog
from fleet.coordinator.cache import QueuedLists, TtlCache
from fleet.coordinator.clock import Clock
from fleet.coordinator.config import CoordinatorConfig
from fleet.domain.alerts import AlertRules
from fleet.domain.audit import FleetEvent, new_event
from fleet.domain.models import Factory, format_ts
from fleet.domain.review import UNKNOWN, factory_kind
from fleet.domain.scheduler import DEFAULT_WEIGHTS, FactoryView, Weights
from fleet.errors import AlreadyExists, ConcurrencyConflict, FleetError, NotFound
from fleet.store.ports import DocumentStore, Incr
from fleet.store.queries import DOCS_OF_TYPE

log = logging.getLogger(__name__)

SETTINGS_ID = "settings"
SYSTEM_PARTITION = "_system"  # registry of products, so timers can visit every partition
QUEUE_STATE_ID = "queue-state"


class Keep(Enum):
    """A setting left as it is (distinct from None, which removes it)."""

    KEEP = "keep"


KEEP = Keep.KEEP


# --- the queue-state gate ----------------------------------------------------------------


class Gate:
    """The product's queue-state version: gated factories poll it (one point read) and
    claim only when it moved, or ``maxSkipSeconds`` passed."""

    def __init__(self, docs: DocumentStore, clock: Clock, config: CoordinatorConfig) -> None:
        self.docs = docs
        self.config = config
        # The queue's head as this instance's claims last read it (``fleet.coordinator.claim``):
        # forgotten whenever this instance changes the queue.
        self.queued = QueuedLists(clock, config.queued_list_seconds)

    def state(self, product: str) -> dict[str, Any]:
        """One point read. A missing document is version 0 (still one read)."""
        try:
            version = int(self.docs.read(product, QUEUE_STATE_ID).get("version", 0))
        except NotFound:
            version = 0
        return {"version": version, "maxSkipSeconds": self.config.max_skip_seconds}

    def bump(self, product: str) -> None:
        """Tell gated factories that work may have become claimable. Best effort by design:
        a lost bump only delays work until their forced claim (``maxSkipSeconds``)."""
        self.queued.forget(product)
        try:
            try:
                self.docs.patch(product, QUEUE_STATE_ID, [Incr("/version", 1)])
            except NotFound:
                try:
                    self.docs.create(
                        {
                            "id": QUEUE_STATE_ID,
                            "productId": product,
                            "type": "queue_state",
                            "version": 1,
                        }
                    )
                except AlreadyExists:
                    self.docs.patch(product, QUEUE_STATE_ID, [Incr("/version", 1)])
        except FleetError as exc:
            log.warning("queue-state bump for %s lost: %s", product, exc.message)


# --- settings, fleet, registry -----------------------------------------------------------


class Products:
    """Per-product settings, the factories a product knows, and the product registry."""

    def __init__(
        self, docs: DocumentStore, clock: Clock, config: CoordinatorConfig, fleet_log: FleetLog
    ) -> None:
        self.docs = docs
        self.clock = clock
        self.config = config
        self.fleet_log = fleet_log
        self._known_products: set[str] = set()
        ttl = config.settings_ttl_seconds
        self._settings_cache: TtlCache[str, ProductSettings] = TtlCache(clock, ttl)
        self._terms_cache: TtlCache[tuple[str, str], FactoryTerms] = TtlCache(clock, ttl)
        self._fleet_cache: TtlCache[str, list[FactoryView]] = TtlCache(clock, ttl)

    # --- the registry ------------------------------------------------------------------

    def products(self) -> list[str]:
        rows = self.docs.query(DOCS_OF_TYPE, SYSTEM_PARTITION, {"type": "product"})
        return sorted(str(r["product"]) for r in rows)

    def register(self, product: str) -> None:
        if product in self._known_products:
            return
        with contextlib.suppress(AlreadyExists):
            self.docs.create(
                {
                    "id": f"product-{product}",
                    "productId": SYSTEM_PARTITION,
                    "type": "product",
                    "product": product,
                }
            )
        self._known_products.add(product)

    # --- settings ----------------------------------------------------------------------

    def settings(self, product: str) -> ProductSettings:
        """The product's settings (scheduler weights, preemption). Cached per instance for
        ``settings_ttl_seconds`` so the claim path stays one query and one write; a change
        reaches every instance within that time."""

        def load() -> ProductSettings:
            try:
                doc: dict[str, Any] = self.docs.read(product, SETTINGS_ID)
            except NotFound:
                doc = {}
            return ProductSettings.from_doc(doc, self.config.weights)

        return self._settings_cache.get(product, load)

    def weights(self, product: str) -> Weights:
        return self.settings(product).weights

    def product_settings(self, product: str) -> dict[str, Any]:
        self._settings_cache.forget(product)  # an operator reading them sees them fresh
        return self.settings(product).as_dict()

    def put_product_settings(
        self,
        product: str,
        weights: dict[str, float] | None = None,
        preemption: dict[str, Any] | None = None,
        alerts: dict[str, Any] | None = None,
        timeout_seconds: int | Keep | None = KEEP,
        by: str = "operator",
    ) -> dict[str, Any]:
        """Change the product's settings: omitted parts (and omitted weights) are kept;
        ``timeout_seconds`` None removes the default attempt timeout. The write carries a
        ``settings_changed`` event saying what changed (before and after)."""
        self.register(product)
        self._settings_cache.forget(product)
        current = self.settings(product)
        updated = ProductSettings(
            weights=weights_from(weights, current.weights) if weights else current.weights,
            preemption=current.preemption.merged(preemption or {}),
            alerts=current.alerts.merged(alerts or {}),
            timeout_seconds=(
                current.timeout_seconds if isinstance(timeout_seconds, Keep) else timeout_seconds
            ),
        )
        before, after = current.as_dict(), updated.as_dict()
        changed = sorted(k for k in after if after[k] != before.get(k))
        now = self.clock.now()
        event = new_event(
            "settings_changed",
            by,
            now,
            reason="changed: " + (", ".join(changed) or "nothing"),
            before={k: before.get(k) for k in changed},
            after={k: after[k] for k in changed},
        )
        self.fleet_log.upsert(
            {
                "id": SETTINGS_ID,
                "productId": product,
                "type": "settings",
                **after,
                "updatedAt": format_ts(now),
            },
            event,
        )
        self._settings_cache.put(product, updated)
        return updated.as_dict()

    # --- factories ---------------------------------------------------------------------

    def register_factory(self, product: str, view: FactoryView, version: str | None) -> Factory:
        """Record what a factory says about itself (off the claim path: at start-up and on
        heartbeats), so the scheduler's explain and the unroutable check know the fleet.
        What the operator or the healer decided (paused, draining, revoked, ...) is kept."""
        self.register(product)
        doc_id = f"factory-{view.id}"
        log = self.fleet_log
        for _ in range(self.config.write_retries):
            try:
                current: Factory | None = Factory.from_doc(self.docs.read(product, doc_id))
            except NotFound:
                current = None
            now = self.clock.now()
            said: dict[str, Any] = {
                "capabilities": tuple(sorted(view.capabilities)),
                "seats": view.seats,
                "load": view.load,
                "cost": view.cost,
                "version": version,
                "status": "live",
                "lastSeen": now,
            }
            event = _registration_event(view, current, now)
            try:
                if current is None:
                    factory = Factory(id=doc_id, productId=product, **said)
                    return Factory.from_doc(log.create(factory.to_doc(), event))
                if current.reviewKind == UNKNOWN:
                    # Its enrollment said no kind (no token kind, no allowlist, no engine):
                    # the first registration that names one fixes it, once, as enrollment
                    # would have. Re-registering never changes a kind already fixed.
                    said["reviewKind"] = factory_kind(view.capabilities)
                updated = current.evolve(**said)
                return Factory.from_doc(log.replace(updated.to_doc(), event, etag=current.etag))
            except (AlreadyExists, ConcurrencyConflict):
                continue
        raise ConcurrencyConflict(f"factory {view.id} is changing too fast; retry")

    def factories(self, product: str) -> list[Factory]:
        rows = self.docs.query(DOCS_OF_TYPE, product, {"type": "factory"})
        return sorted((Factory.from_doc(r) for r in rows), key=lambda f: f.id)

    def factory_views(
        self, product: str, factories: list[Factory] | None = None
    ) -> list[FactoryView]:
        """The fleet as the scheduler sees it (from ``factories`` when already read).
        Liveness is the self-healer's verdict (``status``, kept from heartbeats); revoked
        and departed factories are not live."""
        return [
            FactoryView(
                id=f.id.removeprefix("factory-"),
                capabilities=frozenset(f.capabilities),
                seats=f.seats,
                load=f.load,
                cost=f.cost,
                paused=f.paused or f.draining,
                live=f.status == "live" and not f.revoked and not f.deregistered,
            )
            for f in (self.factories(product) if factories is None else factories)
        ]

    def known_fleet(self, product: str, *, fresh: bool = False) -> list[FactoryView]:
        """The fleet as submit's routability check sees it: cached per instance for
        ``settings_ttl_seconds`` (a burst of submits would otherwise read every factory
        document once per job). A cached fleet may only say *routable*; "unroutable" is
        always confirmed fresh, so a factory enrolled a moment ago is never missed."""
        return self._fleet_cache.get(product, lambda: self.factory_views(product), fresh=fresh)

    def terms(self, product: str, factory_id: str) -> FactoryTerms:
        """What a claim needs of the factory's document: why it may not claim, and how many
        live leases it may hold. Cached per instance for ``settings_ttl_seconds``: an
        operator's pause reaches every instance within that time (and the factory itself
        stops at once, told by its heartbeat). A factory that never registered has no
        objections and no seat limit."""

        def load() -> FactoryTerms:
            try:
                factory = Factory.from_doc(self.docs.read(product, f"factory-{factory_id}"))
            except NotFound:
                return FactoryTerms(None, None)
            flags = ("revoked", "deregistered", "paused", "draining")
            why_not = next((flag for flag in flags if getattr(factory, flag)), None)
            return FactoryTerms(why_not, factory.seat_limit)

        return self._terms_cache.get((product, factory_id), load)

    def standing(self, product: str, factory_id: str) -> str | None:
        """Why this factory may not claim (paused, draining, revoked, deregistered), or None."""
        return self.terms(product, factory_id).why_not


@dataclass(frozen=True)
class FactoryTerms:
    why_not: str | None  # paused, draining, revoked, deregistered; None: it may claim
    seats: int | None  # the most live leases it may hold (None: no document, no limit)


# --- the settings' shape -----------------------------------------------------------------


@dataclass(frozen=True)
class Preemption:
    """A critical job with no free seat may evict the lowest-priority running job it
    outranks. Off unless a product turns it on."""

    enabled: bool = False
    min_priority: int = 9  # jobs at or above this priority may preempt
    after_seconds: float = 60.0  # ... once they have waited this long

    def merged(self, raw: dict[str, Any]) -> Preemption:
        return Preemption(
            enabled=bool(raw.get("enabled", self.enabled)),
            min_priority=int(raw.get("minPriority", self.min_priority)),
            after_seconds=float(raw.get("afterSeconds", self.after_seconds)),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "minPriority": self.min_priority,
            "afterSeconds": self.after_seconds,
        }


@dataclass(frozen=True)
class ProductSettings:
    weights: Weights = DEFAULT_WEIGHTS
    preemption: Preemption = field(default_factory=Preemption)
    alerts: AlertRules = field(default_factory=AlertRules)  # the metrics timer's alert rules
    timeout_seconds: int | None = None  # an attempt's timeout when its manifest names none

    @classmethod
    def from_doc(cls, doc: dict[str, Any], default_weights: Weights) -> ProductSettings:
        raw = doc.get("preemption")
        rules = doc.get("alerts")
        timeout = doc.get("timeoutSeconds")
        return cls(
            weights=weights_from(doc.get("weights"), default_weights),
            preemption=Preemption().merged(raw if isinstance(raw, dict) else {}),
            alerts=AlertRules().merged(rules if isinstance(rules, dict) else {}),
            timeout_seconds=(
                timeout if isinstance(timeout, int) and not isinstance(timeout, bool) else None
            ),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "weights": weights_as_dict(self.weights),
            "preemption": self.preemption.as_dict(),
            "alerts": self.alerts.as_dict(),
            "timeoutSeconds": self.timeout_seconds,
        }


def weights_as_dict(weights: Weights) -> dict[str, float]:
    return {k: float(v) for k, v in dataclasses.asdict(weights).items()}


def weights_from(raw: Any, default: Weights) -> Weights:
    if not isinstance(raw, dict):
        return default
    known = {f.name for f in dataclasses.fields(Weights)}
    values = {k: v for k, v in raw.items() if k in known and isinstance(v, int | float)}
    values = {k: int(v) if k == "exclude_after_failures" else float(v) for k, v in values.items()}
    # Values were filtered to the dataclass's own numeric fields just above.
    return dataclasses.replace(default, **values)  # type: ignore[arg-type]


def _registration_event(view: FactoryView, current: Factory | None, now: datetime) -> FleetEvent:
    """What a registration says: a factory joined (``factory_registered``), or one marked
    stale or down is heartbeating again (``factory_live``)."""
    actor = f"factory:{view.id}"
    caps = sorted(view.capabilities)
    if current is not None and current.status != "live":
        reason = f"heartbeating again (was {current.status})"
        return new_event("factory_live", actor, now, reason=reason, factory=view.id)
    reason = f"{view.seats} seats; " + (", ".join(caps) or "no capabilities")
    again = current is not None
    return new_event(
        "factory_registered",
        actor,
        now,
        reason=("registered again: " if again else "joined: ") + reason,
        factory=view.id,
        seats=view.seats,
        capabilities=caps,
    )
