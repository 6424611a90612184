"""HTTP operations: each handler declares once who may call it, and one decorator serves it.

A module declares its operations on its own ``Operations``, each once: its route and method,
who may call it, and what the OpenAPI document says of it (id, tag, summary, parameters, the
body model, the reply models per status, the errors it can answer)::

    operations = Operations()

    @operations.route(
        "fleet/jobs/{id}", "GET", caller="any",
        id="getJob", tag="jobs", summary="One job, with its recent events",
        params=(JOB_ID,), replies={200: Reply("The job.", JobView)}, errors=(404,),
    )
    def get_job(req: func.HttpRequest, call: Call) -> func.HttpResponse:
        job = call.context.coordinator.get_job(call.principal.product, ...)
        return reply(JobView.of(job))

and the composition root (``function_app.py``) turns the declarations into a Blueprint over
the process's context provider: ``operations.blueprint(context)``. An operation also
declares the role an operator token needs (``role=``: by default a ``GET`` needs a viewer
and anything else an operator; ``"admin"`` for tokens, budgets' ceilings and adjustments,
channels and settings) and whether it is about one product (``scope``); ``caller="demand"``
admits an operator or a scaler token of the product, and is the only caller a scaler token
may be (``fleet.coordinator.identity``). The function it registers for each operation
(``serve``) does three things in one place: it authenticates the caller the operation names
(``fleet.coordinator.identity``, with the context's ``Tokens``: the first request builds the
context) — its kind, its role, and that its token is for the product the call names
(``{productId}`` in the route, else ``X-Fleet-Product``) —, hands the handler a ``Call``
carrying the principal and the context, and maps every error to its HTTP response
(``fleet.http.responses``). Handlers repeat none of that. An anonymous operation that never
reads ``call.context`` (the OpenAPI document) never builds it; health reads it and reports a
failed build itself. The registered function carries its declaration (``operation_of``):
``fleet.http.openapi`` builds the document by walking the app's functions and reading them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import azure.functions as func
from pydantic import BaseModel

from fleet.context import AppContext, ContextProvider
from fleet.coordinator.identity import (
    NAME,
    Caller,
    Principal,
    Role,
    Scope,
    Source,
    authenticate,
)
from fleet.errors import FleetError, ValidationFailed
from fleet.http.responses import error_response, json_response

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Call:
    """What a handler is given besides its request: who is calling and the app's context."""

    provider: ContextProvider
    caller: Caller
    authenticated: Principal | None = None
    role: Role = "operator"  # what an operator must be to call it

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
        ingest: GitHub's signature, or an operator token): an operator needs the
        operation's role, and the product it names."""
        return authenticate(self.context.tokens, source, caller, role=self.role)


Handler = Callable[[func.HttpRequest, Call], func.HttpResponse]

Schema = dict[str, Any]


@dataclass(frozen=True)
class OneOf:
    """A body or reply that is one of several models (``exclusive`` False: any of them)."""

    models: tuple[type[BaseModel], ...]
    exclusive: bool = True


# A body or a reply: a pydantic model (its schema becomes a component), one of several, or
# a JSON schema.
Shape = type[BaseModel] | OneOf | Schema
# Which bearer token an operation takes, as the document says it: a factory's, an
# operator's, either, an operator's or a scaler's (the demand poll only), an enrollment token
# (enroll only), or none.
Bearer = Literal["factory", "operator", "any", "operator_or_scaler", "enrollment", "none"]
_BEARER: dict[Caller, Bearer] = {
    "factory": "factory",
    "holder": "factory",
    "operator": "operator",
    "any": "any",
    "gate": "any",
    "demand": "operator_or_scaler",
    "anonymous": "none",
}


@dataclass(frozen=True)
class Param:
    """A path or query parameter."""

    name: str
    where: Literal["path", "query"]
    description: str
    schema: Schema = field(default_factory=lambda: {"type": "string"})


def path_param(name: str, description: str, pattern: str | None = None) -> Param:
    schema: Schema = {"type": "string"}
    if pattern:
        schema["pattern"] = pattern
    return Param(name, "path", description, schema)


def query_param(name: str, description: str, schema: Schema) -> Param:
    return Param(name, "query", description, schema)


@dataclass(frozen=True)
class Body:
    """A request body: content type -> its shape."""

    content: Mapping[str, Shape]
    required: bool = True
    description: str = ""


def json_body(model: Shape, *, required: bool = True, description: str = "") -> Body:
    return Body({"application/json": model}, required=required, description=description)


@dataclass(frozen=True)
class Reply:
    """One documented reply. ``shape`` None: no body (204)."""

    description: str
    shape: Shape | None = None
    headers: Mapping[str, Schema] = field(default_factory=dict)


# The error statuses an operation declares (``Operation.errors``).
ErrorStatus = Literal[400, 404, 409, 413]


@dataclass(frozen=True)
class Operation:
    """A declared operation: how it is served (route, method, caller, handler) and what the
    OpenAPI document says of it."""

    route: str
    method: str
    caller: Caller
    handler: Handler
    id: str
    summary: str
    tag: str
    replies: Mapping[int, Reply]
    description: str = ""
    params: tuple[Param, ...] = ()
    body: Body | None = None
    # Error replies besides the ones every operation of its kind has (401 and 403 with a
    # bearer, 413 with a body, 500 and 503 when served with the fleet's errors). 413 here:
    # the operation also answers 413 ``quota_exceeded`` (an attempt's quota).
    errors: tuple[ErrorStatus, ...] = ()
    # What its 409 means (a component of the document's responses).
    conflict: Literal["Fenced", "Conflict", "FactoryConflict"] = "Conflict"
    bearer: Bearer = "none"
    # Served with the fleet's error mapping: 500 and 503 are possible (health answers its
    # 503 itself, the document has no failure of its own).
    fleet_errors: bool = True
    # What an operator token must be to call it (factories: ``caller`` says), and whether
    # it is about one product (the caller's token must be for it) or the fleet.
    role: Role = "viewer"
    scope: Scope = "product"
    # The path parameter naming the product (``{productId}``): it, not the header, says
    # which product the call is about.
    product_param: str | None = None


class Operations:
    """The operations of one module, in declaration order (the order routes are matched in
    among routes of equal precedence)."""

    def __init__(self) -> None:
        self._declared: list[Operation] = []

    def route(
        self,
        route: str,
        method: str,
        *,
        caller: Caller,
        id: str,
        summary: str,
        tag: str,
        replies: Mapping[int, Reply],
        description: str = "",
        params: tuple[Param, ...] = (),
        body: Body | None = None,
        errors: tuple[ErrorStatus, ...] = (),
        conflict: Literal["Fenced", "Conflict", "FactoryConflict"] = "Conflict",
        bearer: Bearer | None = None,
        fleet_errors: bool = True,
        role: Role | None = None,
        scope: Scope = "product",
    ) -> Callable[[Handler], Handler]:
        """Declare ``handler`` as ``method route`` (relative to ``/api``), callable by
        ``caller``, documented as said. ``bearer`` defaults to the token ``caller`` takes
        (an anonymous operation that authenticates some requests itself names its own).
        ``role``: what an operator token must be to call it; by default a ``GET`` needs a
        viewer and anything else an operator (``admin``: tokens, budgets' ceilings and
        adjustments, channels, settings). ``scope`` ``product``: the token must be for the
        product the call names (``{productId}`` in the route, else ``X-Fleet-Product``);
        ``fleet``: the operation is about no one product. The handler itself is returned
        unchanged."""

        def declare(handler: Handler) -> Handler:
            self._declared.append(
                Operation(
                    route,
                    method,
                    caller,
                    handler,
                    id=id,
                    summary=summary,
                    tag=tag,
                    replies=replies,
                    description=description,
                    params=params,
                    body=body,
                    errors=errors,
                    conflict=conflict,
                    bearer=_BEARER[caller] if bearer is None else bearer,
                    fleet_errors=fleet_errors,
                    role=role or ("viewer" if method.upper() == "GET" else "operator"),
                    scope=scope,
                    product_param=_PRODUCT_PARAM if f"{{{_PRODUCT_PARAM}}}" in route else None,
                )
            )
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
                None
                if op.caller == "anonymous"
                else authenticate(
                    context().tokens,
                    req,
                    op.caller,
                    role=op.role,
                    product=_path_product(op, req),
                    scope=op.scope,
                )
            )
            return handler(req, Call(context, op.caller, principal, op.role))
        except FleetError as exc:
            return error_response(exc)
        except Exception:
            log.exception("unhandled error in %s", handler.__name__)
            return json_response({"error": "internal", "message": "internal error"}, 500)

    function.__name__ = handler.__name__
    function.__qualname__ = handler.__qualname__
    function.__doc__ = handler.__doc__
    function.__module__ = handler.__module__
    setattr(function, _DECLARATION, op)
    return function


_PRODUCT_PARAM = "productId"


def _path_product(op: Operation, req: func.HttpRequest) -> str | None:
    """The product the path names, if the route has one (400 when it is no product name)."""
    if op.product_param is None:
        return None
    value = str(req.route_params.get(op.product_param, ""))
    if not NAME.match(value):
        raise ValidationFailed.one(
            op.product_param, "string_pattern_mismatch", "1-64 letters, digits, . _ -"
        )
    return value


_DECLARATION = "fleet_operation"


def operation_of(function: Callable[..., Any]) -> Operation | None:
    """The declaration a registered function serves (None: not one of ours, e.g. a timer)."""
    op = getattr(function, _DECLARATION, None)
    return op if isinstance(op, Operation) else None
