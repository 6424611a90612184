from __future__ import annotations

import pytest

from fleet.context import AppContext, ContextProvider, build_context, context_for, once
from fleet.errors import StoreUnavailable
from fleet.settings import Settings
from fleet.store.memory import MemoryDocumentStore, memory_stores
from tests.support.handlers import call, documented


@pytest.fixture
def context() -> AppContext:
    return context_for(Settings.from_env({"FLEET_STORE": "memory"}), memory_stores())


def _get_health(context: AppContext) -> tuple[int, dict[str, object]]:
    status, body, _ = call(context, "health", "GET", "/api/health")
    return status, body


def test_health_reports_every_dependency_up(context: AppContext) -> None:
    status, body = _get_health(context)
    assert status == 200
    assert body["status"] == "ok"
    assert set(body["dependencies"]) == {"cosmos", "tables", "blobs", "queues"}  # type: ignore[arg-type]
    documented(body, "Health")


def test_health_reports_a_dependency_down_as_503(context: AppContext) -> None:
    documents = context.stores.documents
    assert isinstance(documents, MemoryDocumentStore)
    documents.inject("read", StoreUnavailable("cosmos unreachable"))
    status, body = _get_health(context)
    assert status == 503
    assert body["status"] == "degraded"
    cosmos = body["dependencies"]["cosmos"]  # type: ignore[index]
    assert cosmos["ok"] is False and cosmos["error"] == "store_unavailable"
    assert set(cosmos) == {"ok", "error", "message"}
    assert body["dependencies"]["tables"]["ok"] is True  # type: ignore[index]
    documented(body, "Health")


def test_health_names_a_missing_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    # The production provider (function_app.py's), over this test's environment.
    provider: ContextProvider = once(lambda: build_context(Settings.from_env()))
    monkeypatch.setenv("FLEET_STORE", "azure")
    monkeypatch.delenv("COSMOS_ENDPOINT", raising=False)
    monkeypatch.delenv("COSMOS__accountEndpoint", raising=False)
    monkeypatch.delenv("COSMOS_CONNECTION_STRING", raising=False)
    status, body, _ = call(provider, "health", "GET", "/api/health")
    assert status == 503
    assert body["error"] == "settings" and "COSMOS_ENDPOINT" in str(body["message"])
    assert body["status"] == "down"
    documented(body, "HealthDown")
