"""GET /api/health: is each dependency reachable from this instance?"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

import azure.functions as func
from pydantic import Field

from fleet.errors import FleetError
from fleet.http.operation import Call, OneOf, Operations, Reply
from fleet.http.responses import reply
from fleet.http.views import View

operations = Operations()


class DependencyUp(View):
    """A dependency that answered its probe."""

    ok: Literal[True]
    ms: float = Field(description="How long the probe took, in milliseconds.")


class DependencyDown(View):
    """A dependency whose probe failed, and why."""

    ok: Literal[False]
    error: str = Field(description="A machine-readable code.")
    message: str = Field(description="For people.")


class Health(View):
    """Each dependency's probe from this instance."""

    status: Literal["ok", "degraded"]
    store: str
    dependencies: dict[str, DependencyUp | DependencyDown]


class HealthDown(View):
    """The app cannot start: a setting is missing or the store is unreachable."""

    status: Literal["down"]
    error: str = Field(description="A machine-readable code.")
    message: str = Field(description="For people.")


def _probe(check: Callable[[], None]) -> DependencyUp | DependencyDown:
    started = time.perf_counter()
    try:
        check()
    except FleetError as exc:
        return DependencyDown.model_construct(ok=False, error=exc.code, message=exc.message)
    ms = round((time.perf_counter() - started) * 1000, 1)
    return DependencyUp.model_construct(ok=True, ms=ms)


@operations.route(
    "health",
    "GET",
    caller="anonymous",
    id="health",
    summary="Each dependency's reachability from this instance",
    tag="meta",
    replies={
        200: Reply("Every dependency is reachable.", Health),
        503: Reply(
            "A dependency is down (`degraded`, with each dependency's probe), or the app "
            "cannot start (`down`: a setting is missing or the store is unreachable).",
            OneOf((Health, HealthDown), exclusive=False),
        ),
    },
    fleet_errors=False,
)
def health(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    try:
        context = call.context
    except FleetError as exc:
        # Settings missing or the store unreachable at start-up: say which, don't crash.
        down = HealthDown.model_construct(status="down", error=exc.code, message=exc.message)
        return reply(down, 503)
    stores = context.stores
    dependencies = {
        "cosmos": _probe(stores.documents.ping),
        "tables": _probe(stores.tables.ping),
        "blobs": _probe(stores.blobs.ping),
        "queues": _probe(stores.queues.ping),
    }
    healthy = all(d.ok for d in dependencies.values())
    body = Health.model_construct(
        status="ok" if healthy else "degraded",
        store=context.settings.store,
        dependencies=dependencies,
    )
    return reply(body, 200 if healthy else 503)
