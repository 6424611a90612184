"""Faults at the store seam for the in-memory twin: a ``DocumentStore`` wrapper that fails
calls the way a real store does, at random (seeded) or on demand."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fleet.errors import StoreUnavailable
from fleet.store.expr import Expr
from fleet.store.ports import Doc, DocumentStore, PatchOp
from fleet.store.queries import NamedQuery


class FaultyDocuments:
    """The store seam with faults: each call fails, at ``rate``, the way a real store fails —
    throttled (429, with a retry-after), unavailable (503), timed out — before it reaches the
    store; or, for a write, after it succeeded (the response is lost). Every fault is the
    project's ``StoreUnavailable``, as the Azure adapter raises it."""

    KINDS = ("throttled", "unavailable", "timeout", "lost")

    def __init__(self, inner: DocumentStore, rng: random.Random, rate: float) -> None:
        self.inner = inner
        self.counters = inner.counters
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

    def _call(self, operation: str, op: Callable[[], Any]) -> Any:
        kind = self._fault(operation, operation not in ("read", "query", "count"))
        if kind is not None and kind != "lost":
            raise self._error(kind)
        result = op()
        if kind == "lost":
            raise self._error(kind)  # it happened; the caller will never know
        return result

    def read(self, partition: str, doc_id: str) -> Doc:
        return self._call("read", lambda: self.inner.read(partition, doc_id))  # type: ignore[no-any-return]

    def create(self, doc: Doc) -> Doc:
        return self._call("create", lambda: self.inner.create(doc))  # type: ignore[no-any-return]

    def replace(self, doc: Doc, *, etag: str | None) -> Doc:
        return self._call("replace", lambda: self.inner.replace(doc, etag=etag))  # type: ignore[no-any-return]

    def upsert(self, doc: Doc) -> Doc:
        return self._call("upsert", lambda: self.inner.upsert(doc))  # type: ignore[no-any-return]

    def patch(
        self,
        partition: str,
        doc_id: str,
        ops: Sequence[PatchOp],
        *,
        etag: str | None = None,
        condition: Expr | None = None,
    ) -> Doc:
        return self._call(  # type: ignore[no-any-return]
            "patch",
            lambda: self.inner.patch(partition, doc_id, ops, etag=etag, condition=condition),
        )

    def delete(self, partition: str, doc_id: str, *, etag: str | None = None) -> None:
        self._call("delete", lambda: self.inner.delete(partition, doc_id, etag=etag))

    def query(
        self, query: NamedQuery, partition: str, params: Mapping[str, Any] | None = None
    ) -> list[Doc]:
        return self._call("query", lambda: self.inner.query(query, partition, params))  # type: ignore[no-any-return]

    def count(
        self, query: NamedQuery, partition: str, params: Mapping[str, Any] | None = None
    ) -> int:
        return self._call("count", lambda: self.inner.count(query, partition, params))  # type: ignore[no-any-return]

    def ping(self) -> None:
        self.inner.ping()
