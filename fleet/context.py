"""The application context: settings, stores and the coordinator's parts, wired once.

Nothing here is a process global. The composition root (``function_app.py``) makes one
provider with ``once(...)`` and hands it to every Blueprint; the context is built on first
use and then kept: Azure Functions keeps a worker process alive across invocations, so
clients (and their connection pools) are created once per process, not per request.
Tests, the simulation and the benchmarks build the app over a context of their own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from fleet.coordinator import Coordinator, CoordinatorConfig
from fleet.coordinator.clock import Clock
from fleet.coordinator.fleet_health import FleetHealth, fleet_health
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
    health: FleetHealth


# What a Blueprint is given: the process's context, built on the first call.
ContextProvider = Callable[[], AppContext]


def context_for(settings: Settings, stores: Stores, *, clock: Clock | None = None) -> AppContext:
    """The app's parts over ``stores``, on ``clock`` (the system's by default): every part
    reads the coordinator's."""
    container = settings.storage.artifacts_container if settings.storage else "artifacts"
    coordinator = Coordinator(
        stores,
        clock=clock,
        config=CoordinatorConfig(artifacts_container=container, quotas=settings.quotas),
    )
    tokens = Tokens(
        coordinator,
        operator_hashes=settings.operator_token_hashes,
        config=TokenConfig(
            grace_seconds=settings.token_grace_seconds,
            enrollment_ttl_seconds=settings.enrollment_ttl_seconds,
        ),
    )
    tracker = Tracker(
        coordinator,
        TrackerConfig(echo_url=settings.tracker_echo_url, echo_secret=settings.tracker_echo_secret),
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
        health=fleet_health(coordinator, settings.healer, tokens),
    )


def build_context(settings: Settings) -> AppContext:
    if settings.store == "memory":
        from fleet.store.memory import memory_stores

        return context_for(settings, memory_stores())
    from fleet.store.azure import azure_stores

    return context_for(settings, azure_stores(settings))


def once(build: Callable[[], AppContext]) -> ContextProvider:
    """A provider that builds the context on its first call and answers that one after. A
    failed build (a missing setting, the store unreachable) raises to its caller and is
    retried on the next call."""
    lock = threading.Lock()
    built: list[AppContext] = []

    def context() -> AppContext:
        if not built:
            with lock:
                if not built:
                    built.append(build())
        return built[0]

    return context
