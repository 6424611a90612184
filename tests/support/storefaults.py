"""Faults at the store seam for the in-memory twin: a ``DocumentStore`` wrapper that fails
calls the way a real store does, at random (seeded) or on demand."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable

from fleet.errors import StoreUnavailable
from fleet.store.decorator import DocumentsDecorator, T
from fleet.store.ports import DocumentStore


class FaultyDocuments(DocumentsDecorator):
    """The store seam with faults: each call fails, at ``rate``, the way a real store fails —
    throttled (429, with a retry-after), unavailable (503), timed out — before it reaches the
    store; or, for a write, after it succeeded (the response is lost). Every fault is the
    project's ``StoreUnavailable``, as the Azure adapter raises it."""

    KINDS = ("throttled", "unavailable", "timeout", "lost")

    def __init__(self, inner: DocumentStore, rng: random.Random, rate: float) -> None:
        super().__init__(inner)
        self.rng = rng
        self.rate = rate
        self.enabled = False
        self.injected: Counter[str] = Counter()
        self._forced: list[tuple[str, str]] = []  # (operation, kind), in order

    def force(self, operation: str, kind: str) -> None:
        """Fail the next call of ``operation`` ('read', 'replace', ...) with ``kind``."""
        assert kind in self.KINDS, kind
        self._forced.append((operation, kind))

    def _fault(self, operation: str, write: bool) -> str | None:
        forced = next((f for f in self._forced if f[0] == operation), None)
        if forced is not None:
            self._forced.remove(forced)
            kind: str | None = forced[1]
        elif not self.enabled or self.rng.random() >= self.rate:
            return None
        else:
            kind = self.rng.choice(self.KINDS if write else self.KINDS[:3])
        assert kind is not None
        self.injected[kind] += 1
        return kind

    @staticmethod
    def _error(kind: str) -> StoreUnavailable:
        if kind == "throttled":
            return StoreUnavailable("store unavailable (429)", retry_after=0.25)
        if kind == "unavailable":
            return StoreUnavailable("store unavailable (503)")
        if kind == "timeout":
            return StoreUnavailable("store unavailable (ServiceResponseError): timed out")
        return StoreUnavailable("store unavailable (ServiceResponseError): connection reset")

    def _call(self, operation: str, op: Callable[[], T]) -> T:
        kind = self._fault(operation, operation not in ("read", "query", "count"))
        if kind is not None and kind != "lost":
            raise self._error(kind)
        result = op()
        if kind == "lost":
            raise self._error(kind)  # it happened; the caller will never know
        return result
