from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import azure.functions as func
import pytest

from fleet.context import AppContext, context_for, set_context
from fleet.errors import StoreUnavailable
from fleet.settings import Settings
from fleet.store.memory import MemoryDocumentStore, memory_stores
from function_app import app

# get_functions() may be called once per app (it indexes and rejects "duplicates" after).
HANDLERS = {fn.get_function_name(): fn.get_user_function() for fn in app.get_functions()}


def _handler(name: str) -> Callable[[func.HttpRequest], func.HttpResponse]:
    return HANDLERS[name]  # type: ignore[no-any-return]


@pytest.fixture
def context() -> Iterator[AppContext]:
    ctx = context_for(Settings.from_env({"FLEET_STORE": "memory"}), memory_stores())
    set_context(ctx)
    yield ctx
    set_context(None)


def _get_health() -> tuple[int, dict[str, object]]:
    request = func.HttpRequest("GET", "/api/health", body=b"")
    response = _handler("health")(request)
    return response.status_code, json.loads(response.get_body())


def test_health_reports_every_dependency_up(context: AppContext) -> None:
    status, body = _get_health()
    assert status == 200
    assert body["status"] == "ok"
    assert set(body["dependencies"]) == {"cosmos", "tables", "blobs"}  # type: ignore[arg-type]


def test_health_reports_a_dependency_down_as_503(context: AppContext) -> None:
    documents = context.stores.documents
    assert isinstance(documents, MemoryDocumentStore)
    documents.inject("read", StoreUnavailable("cosmos unreachable"))
    status, body = _get_health()
    assert status == 503
    assert body["status"] == "degraded"
    cosmos = body["dependencies"]["cosmos"]  # type: ignore[index]
    assert cosmos["ok"] is False and cosmos["error"] == "store_unavailable"


def test_health_names_a_missing_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    set_context(None)
    monkeypatch.setenv("FLEET_STORE", "azure")
    monkeypatch.delenv("COSMOS_ENDPOINT", raising=False)
    monkeypatch.delenv("COSMOS__accountEndpoint", raising=False)
    monkeypatch.delenv("COSMOS_CONNECTION_STRING", raising=False)
    status, body = _get_health()
    assert status == 503
    assert body["error"] == "settings" and "COSMOS_ENDPOINT" in str(body["message"])
