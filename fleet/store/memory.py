"""In-memory twins of the store ports, for unit tests and the simulation.

Same etag semantics, same filter-predicate semantics (``fleet.store.expr``), same errors as
the Azure adapters. Every stored value is deep-copied in and out, so callers cannot mutate
the store behind its back. Faults can be injected per operation kind (``inject``) to exercise
the callers' error paths.
"""

from __future__ import annotations

import copy
import secrets
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar, cast
from urllib.parse import quote

from fleet.errors import (
    AlreadyExists,
    ConcurrencyConflict,
    InvalidStoreRequest,
    NotFound,
    PreconditionFailed,
    StoreError,
)
from fleet.store.counters import StoreCounters
from fleet.store.expr import UNDEFINED, Expr, holds, lookup
from fleet.store.ports import ETAG, BlobInfo, Doc, Entity, Incr, PatchOp, Remove, Set, Stores
from fleet.store.queries import NamedQuery


class _Faults:
    """Errors queued to be raised by the next calls of a kind ('read', 'write', ...)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queued: dict[str, list[StoreError]] = {}

    def inject(self, kind: str, error: StoreError, times: int = 1) -> None:
        with self._lock:
            self._queued.setdefault(kind, []).extend([error] * times)

    def check(self, kind: str) -> None:
        with self._lock:
            queue = self._queued.get(kind)
            error = queue.pop(0) if queue else None
        if error is not None:
            raise error


T = TypeVar("T")


def _clone(value: T) -> T:
    """A deep copy of JSON-shaped data (what documents and entities are), several times
    faster than ``copy.deepcopy``; anything else is deep-copied the general way."""
    return cast(T, _clone_any(value))


def _clone_any(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clone_any(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clone_any(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, tuple):
        return tuple(_clone_any(v) for v in value)
    return copy.deepcopy(value)


def _new_etag() -> str:
    return f'"{uuid.uuid4()}"'


def _split(path: str) -> tuple[list[str], str]:
    parts = path[1:].split("/") if path.startswith("/") and path != "/" else []
    if not parts:
        raise InvalidStoreRequest(f"invalid patch path {path!r}")
    return parts[:-1], parts[-1]


def _parent(doc: Doc, path: str) -> tuple[Any, str]:
    parents, leaf = _split(path)
    node: Any = doc
    for part in parents:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise InvalidStoreRequest(f"patch path {path!r}: parent does not exist")
    if not isinstance(node, dict):
        raise InvalidStoreRequest(f"patch path {path!r}: parent is not an object")
    return node, leaf


def apply_patch(doc: Doc, ops: Sequence[PatchOp]) -> Doc:
    """Cosmos partial-update semantics: ``set`` adds or replaces, ``incr`` creates a missing
    field with the increment, ``remove`` of a missing field is an error."""
    result = _clone(doc)
    for op in ops:
        if op.path in ("/id", "/productId"):
            raise InvalidStoreRequest(f"patch cannot change {op.path}")
        parent, leaf = _parent(result, op.path)
        if isinstance(op, Set):
            parent[leaf] = _clone(op.value)
        elif isinstance(op, Incr):
            current = parent.get(leaf, 0)
            if isinstance(current, bool) or not isinstance(current, int | float):
                raise InvalidStoreRequest(f"incr on non-number at {op.path}")
            parent[leaf] = current + op.value
        elif isinstance(op, Remove):
            if leaf not in parent:
                raise InvalidStoreRequest(f"remove of missing field {op.path}")
            del parent[leaf]
    return result


class MemoryDocumentStore:
    def __init__(self, counters: StoreCounters | None = None) -> None:
        self.counters = counters or StoreCounters()
        self.faults = _Faults()
        self._lock = threading.Lock()
        self._docs: dict[tuple[str, str], Doc] = {}

    def inject(self, kind: str, error: StoreError, times: int = 1) -> None:
        self.faults.inject(kind, error, times)

    def _begin(self, kind: str) -> None:
        self.counters.add(kind)
        self.faults.check(kind)

    @staticmethod
    def _key(doc: Doc) -> tuple[str, str]:
        try:
            return str(doc["productId"]), str(doc["id"])
        except KeyError as exc:
            raise InvalidStoreRequest(f"document lacks {exc.args[0]!r}") from None

    def _stored(self, doc: Doc) -> Doc:
        clean = {k: _clone(v) for k, v in doc.items() if not k.startswith("_")}
        clean[ETAG] = _new_etag()
        clean["_ts"] = int(time.time())
        return clean

    def read(self, partition: str, doc_id: str) -> Doc:
        self._begin("read")
        with self._lock:
            doc = self._docs.get((partition, doc_id))
            if doc is None:
                raise NotFound(f"document {doc_id} not found", id=doc_id)
            return _clone(doc)

    def create(self, doc: Doc) -> Doc:
        self._begin("write")
        key = self._key(doc)
        with self._lock:
            if key in self._docs:
                raise AlreadyExists(f"document {key[1]} already exists", id=key[1])
            self._docs[key] = self._stored(doc)
            return _clone(self._docs[key])

    def replace(self, doc: Doc, *, etag: str | None) -> Doc:
        self._begin("write")
        key = self._key(doc)
        with self._lock:
            current = self._docs.get(key)
            if current is None:
                raise NotFound(f"document {key[1]} not found", id=key[1])
            if etag is not None and current[ETAG] != etag:
                raise ConcurrencyConflict(f"document {key[1]} changed", id=key[1])
            self._docs[key] = self._stored(doc)
            return _clone(self._docs[key])

    def upsert(self, doc: Doc) -> Doc:
        self._begin("write")
        key = self._key(doc)
        with self._lock:
            self._docs[key] = self._stored(doc)
            return _clone(self._docs[key])

    def patch(
        self,
        partition: str,
        doc_id: str,
        ops: Sequence[PatchOp],
        *,
        etag: str | None = None,
        condition: Expr | None = None,
    ) -> Doc:
        self._begin("patch")
        if not ops:
            raise InvalidStoreRequest("a patch needs at least one operation")
        with self._lock:
            current = self._docs.get((partition, doc_id))
            if current is None:
                raise NotFound(f"document {doc_id} not found", id=doc_id)
            if etag is not None and current[ETAG] != etag:
                raise ConcurrencyConflict(f"document {doc_id} changed", id=doc_id)
            if condition is not None and not holds(condition, current):
                raise PreconditionFailed(f"document {doc_id} fails the condition", id=doc_id)
            updated = apply_patch(current, ops)
            self._docs[(partition, doc_id)] = self._stored(updated)
            return _clone(self._docs[(partition, doc_id)])

    def delete(self, partition: str, doc_id: str, *, etag: str | None = None) -> None:
        self._begin("write")
        with self._lock:
            current = self._docs.get((partition, doc_id))
            if current is None:
                raise NotFound(f"document {doc_id} not found", id=doc_id)
            if etag is not None and current[ETAG] != etag:
                raise ConcurrencyConflict(f"document {doc_id} changed", id=doc_id)
            del self._docs[(partition, doc_id)]

    def query(
        self, query: NamedQuery, partition: str, params: Mapping[str, Any] | None = None
    ) -> list[Doc]:
        self._begin("query")
        args = dict(params or {})
        with self._lock:
            rows = [
                doc
                for (pk, _), doc in self._docs.items()
                if pk == partition and query.where(doc, args)
            ]
            return self._shaped(query, rows, args)

    def query_across(self, query: NamedQuery, params: Mapping[str, Any] | None = None) -> list[Doc]:
        if not query.across:
            raise InvalidStoreRequest(f"query {query.name} runs inside one partition")
        self._begin("query")
        args = dict(params or {})
        with self._lock:
            rows = [doc for doc in self._docs.values() if query.where(doc, args)]
            return self._shaped(query, rows, args)

    @staticmethod
    def _shaped(query: NamedQuery, rows: list[Doc], args: Mapping[str, Any]) -> list[Doc]:
        """``rows`` ordered, cut to the query's TOP and projected, as the SQL would."""
        if query.order_by is not None:
            path = query.order_by
            rows = [r for r in rows if lookup(r, path) is not UNDEFINED]
            rows.sort(key=lambda r: lookup(r, path), reverse=query.descending)
        if query.top_param is not None:
            rows = rows[: int(args[query.top_param])]
        if query.select:  # a projection: the fields the document has, no others
            return [_clone({k: doc[k] for k in query.select if k in doc}) for doc in rows]
        # Only what is returned is copied (a TOP over a long queue copies K documents).
        return [_clone(doc) for doc in rows]

    def count(
        self, query: NamedQuery, partition: str, params: Mapping[str, Any] | None = None
    ) -> int:
        self._begin("query")
        args = dict(params or {})
        with self._lock:
            return sum(
                1
                for (pk, _), doc in self._docs.items()
                if pk == partition and query.where(doc, args)
            )

    def ping(self) -> None:
        self.faults.check("read")

    def peek(self, partition: str, doc_id: str, *, copy: bool = True) -> Doc | None:
        """The stored document, without counting a call or triggering faults (assertions).
        ``copy=False`` returns the stored object itself: only for callers that never mutate
        it (invariant checkers reading thousands of documents)."""
        with self._lock:
            doc = self._docs.get((partition, doc_id))
            if doc is None or not copy:
                return doc
            return _clone(doc)

    def all_docs(self) -> list[Doc]:
        """Every stored document (for assertions in tests)."""
        with self._lock:
            return [_clone(d) for d in self._docs.values()]


class MemoryTableStore:
    def __init__(self, counters: StoreCounters | None = None) -> None:
        self.counters = counters or StoreCounters()
        self.faults = _Faults()
        self._lock = threading.Lock()
        self._tables: dict[str, dict[tuple[str, str], Entity]] = {}

    def inject(self, kind: str, error: StoreError, times: int = 1) -> None:
        self.faults.inject(kind, error, times)

    def _begin(self, kind: str) -> None:
        self.counters.add(kind)
        self.faults.check(kind)

    @staticmethod
    def _key(entity: Entity) -> tuple[str, str]:
        try:
            return str(entity["PartitionKey"]), str(entity["RowKey"])
        except KeyError as exc:
            raise InvalidStoreRequest(f"entity lacks {exc.args[0]!r}") from None

    @staticmethod
    def _stored(entity: Entity) -> Entity:
        clean = {k: _clone(v) for k, v in entity.items() if k != ETAG}
        clean[ETAG] = _new_etag()
        return clean

    def _table(self, table: str) -> dict[tuple[str, str], Entity]:
        return self._tables.setdefault(table, {})

    def get(self, table: str, partition: str, row: str) -> Entity:
        self._begin("table_read")
        with self._lock:
            entity = self._table(table).get((partition, row))
            if entity is None:
                raise NotFound(f"entity {partition}/{row} not found in {table}")
            return _clone(entity)

    def create(self, table: str, entity: Entity) -> Entity:
        self._begin("table_write")
        key = self._key(entity)
        with self._lock:
            rows = self._table(table)
            if key in rows:
                raise AlreadyExists(f"entity {key[0]}/{key[1]} already exists in {table}")
            rows[key] = self._stored(entity)
            return _clone(rows[key])

    def upsert(self, table: str, entity: Entity) -> Entity:
        self._begin("table_write")
        key = self._key(entity)
        with self._lock:
            rows = self._table(table)
            merged = {**rows.get(key, {}), **entity}
            rows[key] = self._stored(merged)
            return _clone(rows[key])

    def update(self, table: str, entity: Entity, *, etag: str) -> Entity:
        self._begin("table_write")
        key = self._key(entity)
        with self._lock:
            rows = self._table(table)
            current = rows.get(key)
            if current is None:
                raise NotFound(f"entity {key[0]}/{key[1]} not found in {table}")
            if current[ETAG] != etag:
                raise ConcurrencyConflict(f"entity {key[0]}/{key[1]} changed")
            rows[key] = self._stored({**current, **entity})
            return _clone(rows[key])

    def delete(self, table: str, partition: str, row: str, *, etag: str | None = None) -> None:
        self._begin("table_write")
        with self._lock:
            rows = self._table(table)
            current = rows.get((partition, row))
            if current is None:
                raise NotFound(f"entity {partition}/{row} not found in {table}")
            if etag is not None and current[ETAG] != etag:
                raise ConcurrencyConflict(f"entity {partition}/{row} changed")
            del rows[(partition, row)]

    def list_partition(self, table: str, partition: str) -> list[Entity]:
        self._begin("table_query")
        with self._lock:
            return [
                _clone(e) for (pk, _), e in sorted(self._table(table).items()) if pk == partition
            ]

    def list_all(self, table: str) -> list[Entity]:
        # Counted as the query it is; its faults are injected apart ("table_scan"), so a test
        # can fail a sweep's scan or a product's pass alone.
        self.counters.add("table_query")
        self.faults.check("table_scan")
        with self._lock:
            return [_clone(e) for _, e in sorted(self._table(table).items())]

    def list_partitions(self, table: str, prefix: str) -> list[Entity]:
        if not prefix:
            raise InvalidStoreRequest("a partition prefix must not be empty")
        self._begin("table_query")
        with self._lock:
            return [
                _clone(e)
                for (pk, _), e in sorted(self._table(table).items())
                if pk.startswith(prefix)
            ]

    def ping(self) -> None:
        self.faults.check("table_read")


class MemoryBlobStore:
    def __init__(self, counters: StoreCounters | None = None) -> None:
        self.counters = counters or StoreCounters()
        self._lock = threading.Lock()
        self._blobs: dict[tuple[str, str], tuple[bytes, str | None]] = {}

    def upload(
        self, container: str, name: str, data: bytes, *, content_type: str | None = None
    ) -> BlobInfo:
        self.counters.add("blob_write")
        with self._lock:
            self._blobs[(container, name)] = (bytes(data), content_type)
        return BlobInfo(name=name, size=len(data), content_type=content_type)

    def _get(self, container: str, name: str) -> tuple[bytes, str | None]:
        with self._lock:
            blob = self._blobs.get((container, name))
        if blob is None:
            raise NotFound(f"blob {container}/{name} not found")
        return blob

    def download(self, container: str, name: str) -> bytes:
        self.counters.add("blob_read")
        return self._get(container, name)[0]

    def info(self, container: str, name: str) -> BlobInfo:
        self.counters.add("blob_read")
        data, content_type = self._get(container, name)
        return BlobInfo(name=name, size=len(data), content_type=content_type)

    def delete(self, container: str, name: str) -> None:
        self.counters.add("blob_write")
        with self._lock:
            if self._blobs.pop((container, name), None) is None:
                raise NotFound(f"blob {container}/{name} not found")

    def sas_url(
        self,
        container: str,
        name: str,
        *,
        permissions: str,
        expires_at: datetime,
        content_disposition: str | None = None,
        content_type: str | None = None,
    ) -> str:
        expiry = quote(expires_at.isoformat())
        overrides = "".join(
            f"&{key}={quote(value, safe='')}"
            for key, value in (("rscd", content_disposition), ("rsct", content_type))
            if value
        )
        return (
            f"memory://blobs/{container}/{quote(name)}"
            f"?sp={permissions}&se={expiry}{overrides}&sig={secrets.token_urlsafe(16)}"
        )

    def ping(self) -> None:
        return None


class MemoryQueueStore:
    """Queues as lists of text messages, in order. ``take`` is what a test (or the unit tests'
    stand-in for the host, ``tests.support.handlers.tick``) uses to deliver them."""

    def __init__(self, counters: StoreCounters | None = None) -> None:
        self.counters = counters or StoreCounters()
        self.faults = _Faults()
        self._lock = threading.Lock()
        self._queues: dict[str, list[str]] = {}

    def inject(self, kind: str, error: StoreError, times: int = 1) -> None:
        self.faults.inject(kind, error, times)

    def send(self, queue: str, message: str) -> None:
        self.counters.add("queue_send")
        self.faults.check("queue_send")
        with self._lock:
            self._queues.setdefault(queue, []).append(message)

    def pending(self, queue: str) -> list[str]:
        """The messages waiting on ``queue``, oldest first (not taken)."""
        with self._lock:
            return list(self._queues.get(queue, []))

    def take(self, queue: str) -> list[str]:
        """Every message waiting on ``queue``, oldest first, taken off it."""
        with self._lock:
            return self._queues.pop(queue, [])

    def ping(self) -> None:
        self.faults.check("queue_send")


def memory_stores() -> Stores:
    counters = StoreCounters()
    return Stores(
        documents=MemoryDocumentStore(counters),
        tables=MemoryTableStore(counters),
        blobs=MemoryBlobStore(counters),
        counters=counters,
        queues=MemoryQueueStore(counters),
    )
