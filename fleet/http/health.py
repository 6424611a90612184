"""GET /api/health: is each dependency reachable from this instance?"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import azure.functions as func

from fleet.errors import FleetError
from fleet.http.operation import Call, Operations
from fleet.http.responses import json_response

operations = Operations()


def _probe(check: Callable[[], None]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        check()
    except FleetError as exc:
        return {"ok": False, "error": exc.code, "message": exc.message}
    return {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 1)}


@operations.route("health", "GET", caller="anonymous")
def health(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    try:
        context = call.context
    except FleetError as exc:
        # Settings missing or the store unreachable at start-up: say which, don't crash.
        down: dict[str, Any] = {"status": "down", "error": exc.code, "message": exc.message}
        return json_response(down, 503)
    stores = context.stores
    dependencies = {
        "cosmos": _probe(stores.documents.ping),
        "tables": _probe(stores.tables.ping),
        "blobs": _probe(stores.blobs.ping),
    }
    healthy = all(d["ok"] for d in dependencies.values())
    body: dict[str, Any] = {
        "status": "ok" if healthy else "degraded",
        "store": context.settings.store,
        "dependencies": dependencies,
    }
    return json_response(body, 200 if healthy else 503)
