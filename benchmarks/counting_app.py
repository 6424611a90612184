"""The app the benchmarks' host serves: the production app (``function_app.build_app``),
plus what the host process needs to report its store calls (``python -m devtools --app
benchmarks.counting_app:app``; started by ``benchmarks.common.CountingHost``).

- The app's context is the production wiring (``context_for(settings,
  azure_stores(settings))``) with one decorator at the store seam: ``ConflictCounting`` passes
  every document call through and counts the conditional writes the store refused (412: a
  stale ``If-Match``, or a false filter predicate) and the documents queries returned. Every
  call is already counted by kind by the adapters' ``StoreCounters``.
- ``GET /api/bench/store-calls`` (anonymous, no store call of its own) answers both totals.
  It exists only in this module: the deployed app and ``make up`` never serve it.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import azure.functions as func

from fleet.context import AppContext, context_for, once
from fleet.errors import ConcurrencyConflict, PreconditionFailed
from fleet.settings import Settings
from fleet.store.azure import azure_stores
from fleet.store.decorator import DocumentsDecorator, T
from fleet.store.ports import Doc, DocumentStore
from fleet.store.queries import NamedQuery
from function_app import build_app

__all__ = ["ConflictCounting", "app"]


class ConflictCounting(DocumentsDecorator):
    """A ``DocumentStore`` that delegates every call and counts refused conditional writes."""

    def __init__(self, inner: DocumentStore) -> None:
        super().__init__(inner)
        self._lock = threading.Lock()
        self._conflicts: Counter[str] = Counter()
        self._rows = 0

    def conflicts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._conflicts)

    def _call(self, operation: str, op: Callable[[], T]) -> T:
        try:
            return op()
        except (ConcurrencyConflict, PreconditionFailed):
            if operation in ("replace", "patch"):
                with self._lock:
                    self._conflicts[operation] += 1
            raise

    def query(
        self, query: NamedQuery, partition: str, params: Mapping[str, Any] | None = None
    ) -> list[Doc]:
        rows = self.inner.query(query, partition, params)
        with self._lock:
            self._rows += len(rows)
        return rows

    def rows(self) -> int:
        """Documents returned by queries so far (what a query page's cost grows with)."""
        with self._lock:
            return self._rows


def _counting_context() -> AppContext:
    """The production context, with the counting decorator at the store seam."""
    settings = Settings.from_env()
    stores = azure_stores(settings)
    return context_for(settings, replace(stores, documents=ConflictCounting(stores.documents)))


def _documents() -> ConflictCounting:
    documents = context().stores.documents
    assert isinstance(documents, ConflictCounting)
    return documents


context = once(_counting_context)
context()  # built at import, as before: the host's first request finds it ready
app = build_app(context)
bp = func.Blueprint()  # type: ignore[no-untyped-call]


@bp.route(route="bench/store-calls", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def store_calls(req: func.HttpRequest) -> func.HttpResponse:
    """This host process's store calls by kind, refused conditional writes and documents
    returned by queries, so far."""
    body = {
        "calls": context().stores.counters.snapshot(),
        "conflicts": _documents().conflicts(),
        "query_rows": _documents().rows(),
    }
    return func.HttpResponse(json.dumps(body), mimetype="application/json")


app.register_functions(bp)
