"""HTTP operations: each handler declares once who may call it, and one decorator serves it.

A module declares its operations on its own ``Operations``::

    operations = Operations()

    @operations.route("fleet/jobs/{id}", "GET", caller="any")
    def get_job(req: func.HttpRequest, call: Call) -> func.HttpResponse:
        job = call.context.coordinator.get_job(call.principal.product, ...)

and the composition root (``function_app.py``) turns the declarations into a Blueprint over
the process's context provider: ``operations.blueprint(context)``. The function it registers
for each operation (``serve``) does three things in one place: it authenticates the caller
the operation names (``fleet.coordinator.identity``, with the context's ``Tokens``: the
first request builds the context), hands the handler a ``Call`` carrying the principal and
the context, and maps every error to its HTTP response (``fleet.http.responses``). Handlers
repeat none of that. An anonymous operation that never reads ``call.context`` (the OpenAPI
document) never builds it; health reads it and reports a failed build itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import azure.functions as func

from fleet.context import AppContext, ContextProvider
from fleet.coordinator.identity import Caller, Principal, Source, authenticate
from fleet.errors import FleetError
from fleet.http.responses import error_response, json_response

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Call:
    """What a handler is given besides its request: who is calling and the app's context."""

    provider: ContextProvider
    caller: Caller
    authenticated: Principal | None = None

    @property
    def context(self) -> AppContext:
        """The process's context (built on its first use; an anonymous operation that never
        reads it never builds it)."""
        return self.provider()

    @property
    def principal(self) -> Principal:
        """The caller the operation names, already authenticated."""
        if self.authenticated is None:
            raise RuntimeError(f"an operation open to {self.caller!r} callers has no principal")
        return self.authenticated

    def authenticate(self, source: Source, caller: Caller) -> Principal:
        """For an anonymous operation that authenticates some requests itself (the tracker's
        ingest: GitHub's signature, or an operator token)."""
        return authenticate(self.context.tokens, source, caller)


Handler = Callable[[func.HttpRequest, Call], func.HttpResponse]


@dataclass(frozen=True)
class Operation:
    route: str
    method: str
    caller: Caller
    handler: Handler


class Operations:
    """The operations of one module, in declaration order (the order routes are matched in
    among routes of equal precedence)."""

    def __init__(self) -> None:
        self._declared: list[Operation] = []

    def route(self, route: str, method: str, *, caller: Caller) -> Callable[[Handler], Handler]:
        """Declare ``handler`` as ``method route`` (relative to ``/api``), callable by
        ``caller``. The handler itself is returned unchanged."""

        def declare(handler: Handler) -> Handler:
            self._declared.append(Operation(route, method, caller, handler))
            return handler

        return declare

    @property
    def declared(self) -> tuple[Operation, ...]:
        return tuple(self._declared)

    def blueprint(self, context: ContextProvider) -> func.Blueprint:
        """A Blueprint serving every operation over ``context``. The Functions host's own
        key check is off (``ANONYMOUS``): the app authenticates callers with bearer tokens."""
        bp = func.Blueprint()  # type: ignore[no-untyped-call]
        for op in self._declared:
            bp.route(route=op.route, methods=[op.method], auth_level=func.AuthLevel.ANONYMOUS)(
                serve(op, context)
            )
        return bp


def serve(
    op: Operation, context: ContextProvider
) -> Callable[[func.HttpRequest], func.HttpResponse]:
    """The function the host calls for ``op``: authenticate, call the handler, map errors.

    It takes only ``req`` (the trigger's binding name) and is named after the handler, which
    names the Function; it does not carry ``__wrapped__``, so the worker, which checks a
    function's parameters against its bindings, sees ``req`` alone."""
    handler = op.handler

    def function(req: func.HttpRequest) -> func.HttpResponse:
        try:
            principal = (
                None if op.caller == "anonymous" else authenticate(context().tokens, req, op.caller)
            )
            return handler(req, Call(context, op.caller, principal))
        except FleetError as exc:
            return error_response(exc)
        except Exception:
            log.exception("unhandled error in %s", handler.__name__)
            return json_response({"error": "internal", "message": "internal error"}, 500)

    function.__name__ = handler.__name__
    function.__qualname__ = handler.__qualname__
    function.__doc__ = handler.__doc__
    function.__module__ = handler.__module__
    return function
