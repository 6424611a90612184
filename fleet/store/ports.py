"""The narrow I/O seams: documents (Cosmos), tables (Table Storage), blobs (Blob Storage).

Everything above the store talks to these protocols only. Each has an Azure adapter and an
in-memory twin with the same etag / filter-predicate semantics and the same errors.

Conditions on writes are structured expressions (``fleet.store.expr``), not SQL strings, so
the Cosmos adapter can render them as a ``filter_predicate`` and the twin can evaluate them.
Queries are named in one place (``fleet.store.queries``); the twin implements each by name.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from fleet.store.counters import StoreCounters
from fleet.store.expr import Expr
from fleet.store.queries import NamedQuery

Doc = dict[str, Any]
Entity = dict[str, Any]

ETAG = "_etag"  # the key under which documents and entities carry their etag


# --- patch operations (Cosmos partial document update) -----------------------------


@dataclass(frozen=True)
class Set:
    path: str
    value: Any


@dataclass(frozen=True)
class Incr:
    path: str
    value: int | float


@dataclass(frozen=True)
class Remove:
    path: str


PatchOp = Set | Incr | Remove


class DocumentStore(Protocol):
    """One Cosmos container, partitioned by ``productId``."""

    counters: StoreCounters

    def read(self, partition: str, doc_id: str) -> Doc:
        """Point read. Raises NotFound."""
        ...

    def create(self, doc: Doc) -> Doc:
        """Create; raises AlreadyExists if the id is taken in the partition."""
        ...

    def replace(self, doc: Doc, *, etag: str | None) -> Doc:
        """Replace the whole document. With ``etag``: only if unchanged (ConcurrencyConflict)."""
        ...

    def upsert(self, doc: Doc) -> Doc: ...

    def patch(
        self,
        partition: str,
        doc_id: str,
        ops: Sequence[PatchOp],
        *,
        etag: str | None = None,
        condition: Expr | None = None,
    ) -> Doc:
        """Apply ``ops`` atomically server-side.

        With ``etag``: only if unchanged, else ConcurrencyConflict. With ``condition``: only
        if the stored document satisfies it, else PreconditionFailed. Raises NotFound.
        """
        ...

    def delete(self, partition: str, doc_id: str, *, etag: str | None = None) -> None: ...

    def query(
        self, query: NamedQuery, partition: str, params: Mapping[str, Any] | None = None
    ) -> list[Doc]:
        """Run a named query inside one partition (every query names the partition key)."""
        ...

    def count(
        self, query: NamedQuery, partition: str, params: Mapping[str, Any] | None = None
    ) -> int:
        """Run a named ``SELECT VALUE COUNT(1)`` query inside one partition."""
        ...

    def query_across(self, query: NamedQuery, params: Mapping[str, Any] | None = None) -> list[Doc]:
        """Run a named query marked ``across`` over every partition (the timers' sweeps:
        once per tick, bounded by its ``TOP``), read to its last page."""
        ...

    def ping(self) -> None:
        """Raise StoreUnavailable if the container cannot be reached."""
        ...


class TableStore(Protocol):
    """Azure Table Storage: entities keyed by (PartitionKey, RowKey), etag CAS."""

    counters: StoreCounters

    def get(self, table: str, partition: str, row: str) -> Entity: ...

    def create(self, table: str, entity: Entity) -> Entity: ...

    def upsert(self, table: str, entity: Entity) -> Entity:
        """Insert or merge, unconditionally (cheap high-frequency writes like heartbeats)."""
        ...

    def update(self, table: str, entity: Entity, *, etag: str) -> Entity:
        """Merge only if the stored etag matches (ConcurrencyConflict otherwise)."""
        ...

    def delete(self, table: str, partition: str, row: str, *, etag: str | None = None) -> None: ...

    def list_partition(self, table: str, partition: str) -> list[Entity]: ...

    def list_all(self, table: str) -> list[Entity]:
        """Every entity of the table, by (PartitionKey, RowKey): one scan, page by page (the
        healer's sweep of the heartbeats, once per tick)."""
        ...

    def list_partitions(self, table: str, prefix: str) -> list[Entity]:
        """Every entity whose PartitionKey starts with ``prefix`` (not empty), by
        (PartitionKey, RowKey): one range query, for tables keyed ``{product}:{...}``."""
        ...

    def ping(self) -> None: ...


@dataclass(frozen=True)
class BlobInfo:
    name: str
    size: int
    content_type: str | None


class BlobStore(Protocol):
    counters: StoreCounters

    def upload(
        self, container: str, name: str, data: bytes, *, content_type: str | None = None
    ) -> BlobInfo: ...

    def download(self, container: str, name: str) -> bytes: ...

    def info(self, container: str, name: str) -> BlobInfo: ...

    def delete(self, container: str, name: str) -> None: ...

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
        """A URL granting ``permissions`` ("r", "cw", ...) on one blob until ``expires_at``.
        ``content_disposition`` and ``content_type``: the headers a read through it is
        answered with, whatever the blob's own (the SAS's ``rscd`` and ``rsct``)."""
        ...

    def ping(self) -> None: ...


class QueueStore(Protocol):
    """Azure Queue Storage, send only: the timers hand each product's pass to a message that
    a queue-triggered function runs (``fleet.timers``); the Functions host (or the local
    host, ``devtools.queues``) receives, retries and poisons."""

    counters: StoreCounters

    def send(self, queue: str, message: str) -> None:
        """Put ``message`` (text) on ``queue``, encoded as the host's ``messageEncoding``."""
        ...

    def ping(self) -> None: ...


@dataclass
class Stores:
    documents: DocumentStore
    tables: TableStore
    blobs: BlobStore
    counters: StoreCounters
    queues: QueueStore
