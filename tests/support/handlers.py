"""Calling the app's functions directly, over a context of the test's own: the one helper
(``call``) the unit tests use to call an HTTP handler or a timer, the operator token the
``tokens`` fixture (tests/unit/conftest.py) knows, a stand-in for that authentication, and a
check of replies against the served OpenAPI document.

The app is built the way ``function_app.py`` builds it (``build_app``), over a provider that
answers the given context: handlers and timers get it exactly as in production.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, NamedTuple

import azure.functions as func
import jsonschema

from fleet.context import AppContext, ContextProvider
from fleet.coordinator.identity import Principal, Want
from fleet.http.openapi import build_document
from function_app import build_app

OPERATOR = "flo_" + "o" * 43  # a bootstrap operator token of the unit tests' Tokens


def _no_context() -> AppContext:
    raise AssertionError("the document is built without a context")


# The document the app serves, generated from the declarations of the app's own functions.
DOCUMENT = build_document(build_app(_no_context).get_functions())
COMPONENTS = DOCUMENT["components"]


def documented(reply: Any, schema: str) -> None:
    """The reply is what the OpenAPI document says it is."""
    jsonschema.validate(reply, {"$ref": f"#/components/schemas/{schema}", "components": COMPONENTS})


# The last app built, with what it was built over: a test calls many handlers over one
# context.
_built: tuple[object, dict[str, Callable[..., Any]]] | None = None


def functions(context: AppContext | ContextProvider) -> dict[str, Callable[..., Any]]:
    """Every function of the app built over ``context`` (HTTP handlers and timers), by
    name: what the Functions host calls. ``context`` may be a provider instead (one that
    builds it from settings, as the production one does)."""
    global _built
    if _built is None or _built[0] is not context:
        provider = context if callable(context) else lambda: context
        app = build_app(provider)
        by_name = {f.get_function_name(): f.get_user_function() for f in app.get_functions()}
        _built = (context, by_name)
    return _built[1]


class Reply(NamedTuple):
    status: int
    body: Any  # the JSON body; None when empty
    response: func.HttpResponse


def call(
    context: AppContext | ContextProvider,
    handler: str | Callable[..., Any],
    method: str = "GET",
    url: str = "/api",
    token: str | None = None,
    body: Any = None,
    product: str | None = None,
    *,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    **route_params: str,
) -> Reply:
    """Call the app's function for ``handler`` (its name, or the handler itself, e.g.
    ``jobs.get_job``) over ``context`` with one request: ``token`` as the bearer, ``product``
    as ``X-Fleet-Product``, ``body`` as JSON (bytes as they are), ``route_params`` as the
    route's values."""
    sent = {"Content-Type": "application/json", **(headers or {})}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    if product is not None:
        sent["X-Fleet-Product"] = product
    raw = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
    request = func.HttpRequest(
        method, url, headers=sent, params=params or {}, route_params=route_params, body=raw
    )
    name = handler if isinstance(handler, str) else handler.__name__
    response = functions(context)[name](request)
    text = response.get_body()
    return Reply(response.status_code, json.loads(text) if text else None, response)


def tick(context: AppContext, timer: str, *, past_due: bool = False) -> list[str]:
    """Fire the app's timer function ``timer`` (e.g. ``"healer_timer"``) over ``context``,
    then deliver the pass messages it queued, as the host would (``deliver``). Returns the
    outcomes of the deliveries."""
    functions(context)[timer](SimpleNamespace(past_due=past_due))
    return deliver(context)


MAX_DEQUEUE_COUNT = 5  # host.json extensions.queues.maxDequeueCount


def deliver(context: AppContext) -> list[str]:
    """Deliver every message waiting on the in-memory pass queue to the app's queue-triggered
    function, as the Functions host does: a delivery that raises is retried (its dequeue
    count grows), and after ``MAX_DEQUEUE_COUNT`` the message goes to the poison queue, whose
    own function then gets it. Returns one outcome per message: "done" or "poisoned"."""
    from azure.functions.queue import QueueMessage

    from fleet.timers import PASSES_QUEUE, POISON_QUEUE

    queues = context.stores.queues
    take = getattr(queues, "take", None)
    if take is None:
        return []
    outcomes: list[str] = []
    for n, body in enumerate(take(PASSES_QUEUE)):
        for count in range(1, MAX_DEQUEUE_COUNT + 1):
            message = QueueMessage(id=f"m{n}", body=body.encode(), dequeue_count=count)
            try:
                functions(context)["fleet_pass"](message)
            except Exception:  # the host's rule: any failure is retried, then poisoned
                if count < MAX_DEQUEUE_COUNT:
                    continue
                queues.send(POISON_QUEUE, body)
                outcomes.append("poisoned")
            else:
                outcomes.append("done")
            break
    for n, body in enumerate(take(POISON_QUEUE)):
        message = QueueMessage(id=f"p{n}", body=body.encode(), dequeue_count=1)
        functions(context)["fleet_pass_poisoned"](message)
    return outcomes


@dataclasses.dataclass
class _Principals:
    """``Tokens`` whose ``authenticate`` answers ``pick(token, want)`` instead (everything
    else is the real ``Tokens``): tests of handlers that stub identity (tested where it
    lives) without monkeypatching a module."""

    tokens: Any
    pick: Callable[[str | None, Want], Principal]

    def authenticate(
        self, token: str | None, product: str | None, *, want: Want, cached: bool = False
    ) -> Principal:
        return self.pick(token, want)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.tokens, name)


def with_principals(
    context: AppContext, pick: Callable[[str | None, Want], Principal]
) -> AppContext:
    """``context`` with every caller authenticated as ``pick(bearer token, want)`` says."""
    return dataclasses.replace(context, tokens=_Principals(context.tokens, pick))
