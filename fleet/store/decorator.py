"""A ``DocumentStore`` that passes every call to another: the base of the wrappers put at
the store seam by the simulation (races), the reliability suite (faults) and the benchmarks
(refused writes counted). A subclass overrides the calls it cares about, or ``_call`` to
wrap every one."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from fleet.store.counters import StoreCounters
from fleet.store.expr import Expr
from fleet.store.ports import Doc, DocumentStore, PatchOp
from fleet.store.queries import NamedQuery

T = TypeVar("T")


class DocumentsDecorator:
    """Delegates every ``DocumentStore`` call to ``inner`` through ``_call``."""

    def __init__(self, inner: DocumentStore) -> None:
        self.inner = inner
        self.counters: StoreCounters = inner.counters

    def _call(self, operation: str, op: Callable[[], T]) -> T:
        """Run one call (``operation`` names it: 'read', 'replace', ...); override to wrap
        every call."""
        return op()

    def read(self, partition: str, doc_id: str) -> Doc:
        return self._call("read", lambda: self.inner.read(partition, doc_id))

    def create(self, doc: Doc) -> Doc:
        return self._call("create", lambda: self.inner.create(doc))

    def replace(self, doc: Doc, *, etag: str | None) -> Doc:
        return self._call("replace", lambda: self.inner.replace(doc, etag=etag))

    def upsert(self, doc: Doc) -> Doc:
        return self._call("upsert", lambda: self.inner.upsert(doc))

    def patch(
        self,
        partition: str,
        doc_id: str,
        ops: Sequence[PatchOp],
        *,
        etag: str | None = None,
        condition: Expr | None = None,
    ) -> Doc:
        return self._call(
            "patch",
            lambda: self.inner.patch(partition, doc_id, ops, etag=etag, condition=condition),
        )

    def delete(self, partition: str, doc_id: str, *, etag: str | None = None) -> None:
        self._call("delete", lambda: self.inner.delete(partition, doc_id, etag=etag))

    def query(
        self, query: NamedQuery, partition: str, params: Mapping[str, Any] | None = None
    ) -> list[Doc]:
        return self._call("query", lambda: self.inner.query(query, partition, params))

    def count(
        self, query: NamedQuery, partition: str, params: Mapping[str, Any] | None = None
    ) -> int:
        return self._call("count", lambda: self.inner.count(query, partition, params))

    def query_across(self, query: NamedQuery, params: Mapping[str, Any] | None = None) -> list[Doc]:
        return self._call("query_across", lambda: self.inner.query_across(query, params))

    def ping(self) -> None:
        self.inner.ping()
