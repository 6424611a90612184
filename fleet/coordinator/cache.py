"""Per-instance values trusted for a while: what keeps the claim path at one query and one
write (product settings, whether a budget exists, a factory's standing) and a burst of
submits from reading the fleet once per job; the job documents this instance wrote last
(what lets a holder's report skip its read)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from datetime import datetime
from typing import Any, Generic, TypeVar

from fleet.coordinator.clock import Clock

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """Values remembered for ``ttl`` seconds of ``clock`` time, then loaded again."""

    def __init__(self, clock: Clock, ttl: float) -> None:
        self.clock = clock
        self.ttl = ttl
        self._lock = threading.Lock()
        self._values: dict[K, tuple[datetime, V]] = {}

    def get(self, key: K, load: Callable[[], V], *, fresh: bool = False) -> V:
        """The remembered value, or ``load()``'s (remembered from now) when there is none,
        it is ``ttl`` old, or ``fresh`` is asked for."""
        now = self.clock.now()
        with self._lock:
            known = self._values.get(key)
        if not fresh and known is not None and (now - known[0]).total_seconds() < self.ttl:
            return known[1]
        value = load()
        self.put(key, value)
        return value

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._values[key] = (self.clock.now(), value)

    def forget(self, key: K) -> None:
        with self._lock:
            self._values.pop(key, None)


class LastWritten(Generic[K, V]):
    """The last value this instance wrote under each key, the newest ``capacity`` of them.

    A hint, never the truth: what it holds carries the etag it was written with, so a write
    decided on it lands only if nothing changed since (``If-Match``); else the caller reads
    the stored value and decides again."""

    def __init__(self, capacity: int = 1024) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._values: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        with self._lock:
            return self._values.get(key)

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._values[key] = value
            self._values.move_to_end(key)
            while len(self._values) > self.capacity:
                self._values.popitem(last=False)

    def forget(self, key: K) -> None:
        with self._lock:
            self._values.pop(key, None)


class QueuedLists:
    """The head of each product's queue as this instance last read it, shared by its claims
    for ``seconds`` of ``clock`` time. A hint, like every claim's read: each candidate is
    written with the etag it was read with, so a job that changed since is refused by the
    store, never claimed twice. This instance forgets a product's list when it changes the
    queue itself (a submit, a requeue, a reprioritize); what other instances change, it
    sees within ``seconds``."""

    MAX_PRODUCTS = 1024  # lists kept before the old ones are swept

    def __init__(self, clock: Clock, seconds: float) -> None:
        self.clock = clock
        self.seconds = seconds
        self._lock = threading.Lock()
        self._lists: dict[str, tuple[datetime, list[Any]]] = {}

    def get(self, product: str) -> list[Any] | None:
        """The list, if read less than ``seconds`` ago."""
        with self._lock:
            known = self._lists.get(product)
        if known is None or self._age(known[0]) >= self.seconds:
            return None
        return known[1]

    def put(self, product: str, jobs: list[Any]) -> None:
        if self.seconds <= 0:
            return
        with self._lock:
            self._lists[product] = (self.clock.now(), jobs)
            if len(self._lists) > self.MAX_PRODUCTS:
                self._lists = {
                    p: v for p, v in self._lists.items() if self._age(v[0]) < self.seconds
                }

    def forget(self, product: str) -> None:
        with self._lock:
            self._lists.pop(product, None)

    def _age(self, read_at: datetime) -> float:
        return (self.clock.now() - read_at).total_seconds()
