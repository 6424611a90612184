"""Per-channel rate limits and concurrency caps (a job names a channel: "github-api").

Per product and channel, one Table Storage entity holds a token bucket (``ratePerMinute``,
``burst``) and a cap on running jobs (``maxRunning``), changed only by compare-and-swap on
its etag. A claim takes a token and a running slot *before* the job's own compare-and-swap
and gives both back if it then loses the race; the slot is returned when the lease ends.
The reaper recounts running jobs per channel, so a crash between two writes cannot leak a
slot for long. A channel with no entity has no limits, and costs one cheap table read.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fleet.coordinator.audit import FleetLog
from fleet.coordinator.clock import Clock
from fleet.domain.audit import new_event, sortable_stamp
from fleet.domain.models import format_ts, parse_ts
from fleet.errors import AlreadyExists, ConcurrencyConflict, NotFound
from fleet.store.ports import ETAG, Entity, TableStore

TABLE = "ratelimits"
CAS_RETRIES = 16


@dataclass(frozen=True)
class Channel:
    product: str
    name: str
    ratePerMinute: float | None  # None: no rate limit
    burst: int
    maxRunning: int | None  # None: no cap
    tokens: float
    refilledAt: datetime
    running: int
    etag: str | None = None

    @classmethod
    def from_entity(cls, entity: Entity) -> Channel:
        rate = entity.get("ratePerMinute")
        cap = entity.get("maxRunning")
        return cls(
            product=str(entity["PartitionKey"]),
            name=str(entity["RowKey"]),
            ratePerMinute=float(rate) if rate is not None and rate >= 0 else None,
            burst=int(entity.get("burst", 1)),
            maxRunning=int(cap) if cap is not None and cap >= 0 else None,
            tokens=float(entity.get("tokens", 0)),
            refilledAt=parse_ts(entity["refilledAt"]),
            running=int(entity.get("running", 0)),
            etag=entity.get(ETAG),
        )

    def refilled(self, now: datetime) -> float:
        if self.ratePerMinute is None:
            return float(self.burst)
        elapsed = max(0.0, (now - self.refilledAt).total_seconds())
        return min(float(self.burst), self.tokens + elapsed * self.ratePerMinute / 60.0)

    def why_not(self, now: datetime) -> str | None:
        if self.maxRunning is not None and self.running >= self.maxRunning:
            return f"channel {self.name} is at its cap ({self.running}/{self.maxRunning} running)"
        if self.ratePerMinute is not None and self.refilled(now) < 1.0:
            return f"channel {self.name} is rate limited ({self.ratePerMinute:g}/min)"
        return None

    def view(self, now: datetime) -> dict[str, Any]:
        return {
            "channel": self.name,
            "ratePerMinute": self.ratePerMinute,
            "burst": self.burst,
            "maxRunning": self.maxRunning,
            "tokens": round(self.refilled(now), 3),
            "running": self.running,
            "blocked": self.why_not(now),
        }


# Table Storage cannot store None: absent limits are stored as -1.
def _entity(channel: Channel, now: datetime, **changes: Any) -> Entity:
    values = {
        "PartitionKey": channel.product,
        "RowKey": channel.name,
        "ratePerMinute": channel.ratePerMinute if channel.ratePerMinute is not None else -1.0,
        "burst": channel.burst,
        "maxRunning": channel.maxRunning if channel.maxRunning is not None else -1,
        "tokens": channel.tokens,
        "refilledAt": format_ts(now),
        "running": channel.running,
    }
    values.update(changes)
    return values


class ChannelLimits:
    def __init__(self, tables: TableStore, clock: Clock, fleet_log: FleetLog) -> None:
        self.tables = tables
        self.clock = clock
        self.log = fleet_log  # channels live in Table Storage: their events are logged beside

    def get(self, product: str, name: str) -> Channel | None:
        try:
            return Channel.from_entity(self.tables.get(TABLE, product, name))
        except NotFound:
            return None

    def list(self, product: str) -> list[Channel]:
        return [Channel.from_entity(e) for e in self.tables.list_partition(TABLE, product)]

    def put(
        self,
        product: str,
        name: str,
        *,
        rate: float | None,
        burst: int,
        max_running: int | None,
        by: str = "operator",
    ) -> Channel:
        """Set the limits; the bucket level and the running count are kept. Takes effect
        on the next claim. Logs ``channel_changed``."""
        changed = self._put(product, name, rate, burst, max_running)
        limits = f"rate {rate}/min, burst {burst}, max running {max_running}"
        self._event(product, name, "channel_changed", by, limits, ratePerMinute=rate, burst=burst)
        return changed

    def _event(
        self, product: str, name: str, kind: str, by: str, reason: str, **details: Any
    ) -> None:
        now = self.clock.now()
        event = new_event(kind, by, now, reason=f"{name}: {reason}", channel=name, **details)
        self.log.beside(product, f"{kind}-{name}-{sortable_stamp(now)}", event)

    def _put(
        self, product: str, name: str, rate: float | None, burst: int, max_running: int | None
    ) -> Channel:
        for _ in range(CAS_RETRIES):
            now = self.clock.now()
            current = self.get(product, name)
            if current is None:
                fresh = Channel(product, name, rate, burst, max_running, float(burst), now, 0)
                try:
                    self.tables.create(TABLE, _entity(fresh, now))
                except AlreadyExists:
                    continue
                return fresh
            tokens = min(float(burst), current.refilled(now))
            updated = Channel(product, name, rate, burst, max_running, tokens, now, current.running)
            try:
                self.tables.update(TABLE, _entity(updated, now), etag=current.etag or "")
            except ConcurrencyConflict:
                continue
            return updated
        raise ConcurrencyConflict(f"channel {name} is changing too fast; retry")

    def delete(self, product: str, name: str, by: str = "operator") -> None:
        """Remove the channel's limits (NotFound if it has none). Logs ``channel_deleted``."""
        self.tables.delete(TABLE, product, name)
        self._event(product, name, "channel_deleted", by, "limits removed")

    def take(self, product: str, name: str) -> tuple[bool, str | None]:
        """Take one token and one running slot. (True, None) when taken or when the channel
        has no limits; (False, why) when it is exhausted or at its cap."""
        for _ in range(CAS_RETRIES):
            now = self.clock.now()
            channel = self.get(product, name)
            if channel is None:
                return True, None
            why = channel.why_not(now)
            if why is not None:
                return False, why
            tokens = channel.refilled(now) - (1.0 if channel.ratePerMinute is not None else 0.0)
            try:
                self.tables.update(
                    TABLE,
                    _entity(channel, now, tokens=tokens, running=channel.running + 1),
                    etag=channel.etag or "",
                )
            except ConcurrencyConflict:
                continue
            return True, None
        return False, f"channel {name} is contended; try again"

    def give_back(self, product: str, name: str, *, token: bool) -> None:
        """Return a running slot (and, for a claim that lost its race, the token)."""
        for _ in range(CAS_RETRIES):
            now = self.clock.now()
            channel = self.get(product, name)
            if channel is None:
                return
            tokens = channel.refilled(now)
            if token and channel.ratePerMinute is not None:
                tokens = min(float(channel.burst), tokens + 1.0)
            try:
                self.tables.update(
                    TABLE,
                    _entity(channel, now, tokens=tokens, running=max(0, channel.running - 1)),
                    etag=channel.etag or "",
                )
                return
            except ConcurrencyConflict:
                continue

    def reconcile(self, product: str, running: dict[str, int], quiet_seconds: float = 60) -> None:
        """Set each channel's running count to the number of jobs actually leased in it.
        Only channels untouched for ``quiet_seconds``: a claim between taking its slot and
        writing its job would otherwise be miscounted and let one job too many start."""
        now = self.clock.now()
        for channel in self.list(product):
            actual = running.get(channel.name, 0)
            if channel.running == actual:
                continue
            if (now - channel.refilledAt).total_seconds() < quiet_seconds:
                continue
            # If it moved meanwhile, the next pass recounts.
            with contextlib.suppress(ConcurrencyConflict):
                self.tables.update(
                    TABLE,
                    _entity(channel, now, tokens=channel.refilled(now), running=actual),
                    etag=channel.etag or "",
                )
