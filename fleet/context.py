"""The per-process application context: settings, stores and the coordinator, built once.

Azure Functions keeps a worker process alive across invocations, so clients (and their
connection pools) are created once, on first use, not per request.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from fleet.coordinator import Coordinator, CoordinatorConfig
from fleet.coordinator.metrics import Monitor
from fleet.coordinator.tokens import TokenConfig, Tokens
from fleet.coordinator.tracker import Tracker, TrackerConfig
from fleet.coordinator.webhooks import Endpoint
from fleet.settings import Settings
from fleet.store.ports import Stores


@dataclass
class AppContext:
    settings: Settings
    stores: Stores
    coordinator: Coordinator
    tokens: Tokens
    tracker: Tracker
    monitor: Monitor


_lock = threading.Lock()
_context: AppContext | None = None


def context_for(settings: Settings, stores: Stores) -> AppContext:
    container = settings.storage.artifacts_container if settings.storage else "artifacts"
    coordinator = Coordinator(stores, config=CoordinatorConfig(artifacts_container=container))
    tokens = Tokens(
        coordinator,
        operator_hashes=settings.operator_token_hashes,
        config=TokenConfig(grace_seconds=settings.token_grace_seconds),
    )
    tracker = Tracker(
        coordinator,
        TrackerConfig(
            webhook_secret=settings.tracker_webhook_secret,
            echo_url=settings.tracker_echo_url,
            echo_secret=settings.tracker_echo_secret,
        ),
    )
    monitor = Monitor(
        coordinator, Endpoint(settings.alert_webhook_url, settings.alert_webhook_secret)
    )
    return AppContext(
        settings=settings,
        stores=stores,
        coordinator=coordinator,
        tokens=tokens,
        tracker=tracker,
        monitor=monitor,
    )


def build_context(settings: Settings) -> AppContext:
    if settings.store == "memory":
        from fleet.store.memory import memory_stores

        return context_for(settings, memory_stores())
    from fleet.store.azure import azure_stores

    return context_for(settings, azure_stores(settings))


def get_context() -> AppContext:
    """The process's context, built on first use. A failed build is retried on next use."""
    global _context
    if _context is None:
        with _lock:
            if _context is None:
                _context = build_context(Settings.from_env())
    return _context


def set_context(context: AppContext | None) -> None:
    """Install a context (tests, the simulation) or clear it so the next use rebuilds."""
    global _context
    with _lock:
        _context = context
