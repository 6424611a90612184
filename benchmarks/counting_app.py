"""The app the benchmarks' host serves: the production app (``function_app.build_app``),
plus what the host process needs to report what it spent (``python -m devtools --app
benchmarks.counting_app:app``; started by ``benchmarks.common.CountingHost``).

- The app's context is the production wiring (``context_for(settings,
  azure_stores(settings))``) with one decorator at the store seam: ``ConflictCounting`` passes
  every document call through and counts the conditional writes the store refused (412: a
  stale ``If-Match``, or a false filter predicate) and the documents queries returned. Every
  call is already counted by kind by the adapters' ``StoreCounters``; the decorator also
  counts each document call by operation and by the API route that made it, and samples the
  size (bytes of JSON) of the documents read and written.
- Every HTTP function's handler is wrapped (``_Timed``): the thread CPU time it spent
  (``time.thread_time``: the handler and the store calls it makes run on the request's own
  thread), by route and method.
- New TCP connections the host opens (``urllib3``, which the Azure SDKs' transport uses) are
  counted by ``host:port``.
- ``GET /api/bench/store-calls`` (anonymous, no store call of its own) answers all of it, and
  the host process's CPU time so far. It exists only in this module: the deployed app and
  ``make up`` never serve it.
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

import azure.functions as func
import urllib3.connection
from azure.functions.decorators.http import HttpTrigger

from fleet.context import AppContext, context_for, once
from fleet.errors import ConcurrencyConflict, PreconditionFailed
from fleet.settings import Settings
from fleet.store.azure import azure_stores
from fleet.store.decorator import DocumentsDecorator, T
from fleet.store.ports import Doc, DocumentStore
from fleet.store.queries import NamedQuery
from function_app import build_app

__all__ = ["ConflictCounting", "app"]

SIZE_SAMPLE_EVERY = 8  # one document in 8 is measured (json.dumps costs the host CPU)
NO_ROUTE = "-"  # a store call made outside any HTTP function (none, with timers off)

_route = threading.local()  # the route of the HTTP function running on this thread


def _current_route() -> str:
    return getattr(_route, "key", NO_ROUTE)


def _json_bytes(doc: Any) -> int:
    return len(json.dumps(doc, separators=(",", ":"), default=str).encode())


class ConflictCounting(DocumentsDecorator):
    """A ``DocumentStore`` that delegates every call and counts refused conditional writes,
    calls by route and operation, and (sampled) document sizes."""

    def __init__(self, inner: DocumentStore) -> None:
        super().__init__(inner)
        self._lock = threading.Lock()
        self._conflicts: Counter[str] = Counter()
        self._route_conflicts: Counter[tuple[str, str]] = Counter()
        self._ops: Counter[tuple[str, str]] = Counter()  # (route, operation)
        # (route, operation, document type) -> [calls seen, samples, bytes, max bytes]
        self._sizes: dict[tuple[str, str, str], list[int]] = {}
        self._rows = 0
        self._overhead = 0.0  # thread CPU seconds spent measuring sizes (inside route CPU)

    def conflicts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._conflicts)

    def _sized(self, operation: str, docs: list[Doc]) -> None:
        began = time.thread_time()
        route = _current_route()
        for doc in docs:
            kind = str(doc.get("type", "?"))
            if kind == "job":  # a job's size by its stage: what each step of its life weighs
                kind = f"job:{doc.get('stage')}"
            key = (route, operation, kind)
            with self._lock:
                entry = self._sizes.setdefault(key, [0, 0, 0, 0])
                entry[0] += 1
                sample = entry[0] % SIZE_SAMPLE_EVERY == 1
            if sample:
                size = _json_bytes(doc)
                with self._lock:
                    entry[1] += 1
                    entry[2] += size
                    entry[3] = max(entry[3], size)
        spent = time.thread_time() - began
        with self._lock:
            self._overhead += spent

    def _call(self, operation: str, op: Callable[[], T]) -> T:
        route = _current_route()
        with self._lock:
            self._ops[(route, operation)] += 1
        try:
            result = op()
        except (ConcurrencyConflict, PreconditionFailed):
            if operation in ("replace", "patch"):
                with self._lock:
                    self._conflicts[operation] += 1
                    self._route_conflicts[(route, operation)] += 1
            raise
        if isinstance(result, dict):
            self._sized(operation, [result])
        return result

    def query(
        self, query: NamedQuery, partition: str, params: Mapping[str, Any] | None = None
    ) -> list[Doc]:
        rows = super().query(query, partition, params)
        with self._lock:
            self._rows += len(rows)
        self._sized("query", rows)
        return rows

    def rows(self) -> int:
        """Documents returned by queries so far (what a query page's cost grows with)."""
        with self._lock:
            return self._rows

    def by_route(self) -> dict[str, Any]:
        """Document calls and refused writes by route and operation; sampled sizes by route,
        operation and document type."""
        with self._lock:
            calls: dict[str, dict[str, int]] = {}
            for (route, operation), n in self._ops.items():
                calls.setdefault(route, {})[operation] = n
            refused: dict[str, dict[str, int]] = {}
            for (route, operation), n in self._route_conflicts.items():
                refused.setdefault(route, {})[operation] = n
            sizes = [
                {
                    "route": route,
                    "operation": operation,
                    "type": kind,
                    "documents": seen,
                    "samples": samples,
                    "bytes_total": total,
                    "bytes_max": largest,
                }
                for (route, operation, kind), (seen, samples, total, largest) in sorted(
                    self._sizes.items()
                )
            ]
            overhead = self._overhead
        return {"calls": calls, "refused": refused, "sizes": sizes, "overhead_cpu_s": overhead}


# --------------------------------------------------------------------------- connections

_connections: Counter[str] = Counter()
_connections_lock = threading.Lock()


def _count_connections() -> None:
    """Count every new TCP connection urllib3 opens, by ``host:port``. ``_new_conn`` is the
    one place both ``HTTPConnection.connect`` and ``HTTPSConnection.connect`` open a socket."""
    original = urllib3.connection.HTTPConnection._new_conn

    @functools.wraps(original)
    def counted(self: urllib3.connection.HTTPConnection) -> Any:
        sock = original(self)
        with _connections_lock:
            _connections[f"{self.host}:{self.port}"] += 1
        return sock

    urllib3.connection.HTTPConnection._new_conn = counted  # type: ignore[method-assign]


_count_connections()


# --------------------------------------------------------------------------- CPU by route


class _RouteCpu:
    """Thread CPU and wall time spent in each HTTP function, by ``METHOD route``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: Counter[str] = Counter()
        self._cpu: dict[str, float] = {}
        self._wall: dict[str, float] = {}

    def add(self, key: str, cpu: float, wall: float) -> None:
        with self._lock:
            self._calls[key] += 1
            self._cpu[key] = self._cpu.get(key, 0.0) + cpu
            self._wall[key] = self._wall.get(key, 0.0) + wall

    def snapshot(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {
                key: {"calls": n, "cpu_s": self._cpu[key], "wall_s": self._wall[key]}
                for key, n in sorted(self._calls.items())
            }


_route_cpu = _RouteCpu()


def _timed(route: str, handler: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(handler)
    def timed(*args: Any, **kwargs: Any) -> Any:
        request = next(
            (a for a in (*args, *kwargs.values()) if isinstance(a, func.HttpRequest)), None
        )
        key = f"{request.method.upper() if request is not None else '?'} {route}"
        _route.key = key
        cpu, wall = time.thread_time(), time.perf_counter()
        try:
            return handler(*args, **kwargs)
        finally:
            _route_cpu.add(key, time.thread_time() - cpu, time.perf_counter() - wall)
            _route.key = NO_ROUTE

    return timed


def _time_http_functions(register: func.FunctionApp) -> None:
    """Wrap every HTTP function's handler in place: the host reads them from
    ``get_functions()``, which returns the ``Function`` each builder holds. (Not through
    ``get_functions()`` here: it records the names it has seen, and a second call, the
    host's, would refuse them as duplicates.)"""
    for builder in register._function_builders:
        function = builder.build(register.auth_level)
        trigger = function.get_trigger()
        if isinstance(trigger, HttpTrigger):
            route = trigger.route or function.get_function_name()
            function._func = _timed(str(route), function.get_user_function())


# --------------------------------------------------------------------------- the app


def _counting_context() -> AppContext:
    """The production context, with the counting decorator at the store seam."""
    settings = Settings.from_env()
    stores = azure_stores(settings)
    return context_for(settings, replace(stores, documents=ConflictCounting(stores.documents)))


def _documents() -> ConflictCounting:
    documents = context().stores.documents
    assert isinstance(documents, ConflictCounting)
    return documents


def _process_cpu() -> dict[str, float]:
    times = os.times()
    return {"user_s": times.user, "system_s": times.system}


context = once(_counting_context)
context()  # built at import, as before: the host's first request finds it ready
app = build_app(context)
_time_http_functions(app)
bp = func.Blueprint()  # type: ignore[no-untyped-call]


@bp.route(route="bench/store-calls", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def store_calls(req: func.HttpRequest) -> func.HttpResponse:
    """This host process's store calls by kind, refused conditional writes, documents
    returned by queries, document calls by route, new connections, CPU by route and the
    process's CPU time, so far."""
    with _connections_lock:
        connections = dict(_connections)
    body = {
        "calls": context().stores.counters.snapshot(),
        "conflicts": _documents().conflicts(),
        "query_rows": _documents().rows(),
        "routes": _documents().by_route(),
        "connections": connections,
        "cpu_by_route": _route_cpu.snapshot(),
        "process_cpu": _process_cpu(),
        "pid": os.getpid(),
    }
    return func.HttpResponse(json.dumps(body), mimetype="application/json")


app.register_functions(bp)
