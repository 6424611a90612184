"""Fixtures of the unit tests: the coordinator on the in-memory twin, with a manual clock."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import responses

from fleet.context import AppContext
from fleet.coordinator import Coordinator, CoordinatorConfig
from fleet.coordinator.clock import ManualClock
from fleet.coordinator.fleet_health import FleetHealth
from fleet.coordinator.metrics import Monitor
from fleet.coordinator.tokens import Tokens, hash_token
from fleet.coordinator.tracker import Tracker, TrackerConfig
from fleet.settings import Settings
from fleet.store.memory import memory_stores
from fleet.store.ports import Stores
from tests.support.handlers import OPERATOR


@pytest.fixture
def stores() -> Stores:
    """The in-memory twins (unit tests never touch the local stack)."""
    return memory_stores()


@pytest.fixture
def clock() -> ManualClock:
    """Starts at 2026-01-01T00:00:00Z and moves only when a test says so."""
    return ManualClock()


def counting_entropy() -> Callable[[int], bytes]:
    """Deterministic, thread-safe 'randomness': job ids come out 1, 2, 3, ..."""
    counter = iter(range(1, 1_000_000))
    lock = threading.Lock()

    def entropy(n: int) -> bytes:
        with lock:
            return next(counter).to_bytes(n, "big")

    return entropy


@pytest.fixture
def coord(stores: Stores, clock: ManualClock) -> Coordinator:
    return Coordinator(stores, clock=clock, config=CoordinatorConfig(), entropy=counting_entropy())


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    """The factory CLI's HTTP calls, answered by ``responses`` (every one must be used)."""
    with responses.RequestsMock() as mock:
        yield mock


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A clean environment: its own config dir, an empty PATH (no engines, no tools); engines
    may run as root (the tests run as root in CI)."""
    return {
        "FLEET_CONFIG_DIR": str(tmp_path / "cfg"),
        "PATH": "",
        "HOME": str(tmp_path),
        "FLEET_ALLOW_ROOT_ENGINE": "1",
    }


@pytest.fixture
def tokens(coord: Coordinator, clock: ManualClock) -> Tokens:
    """Tokens over the coordinator; ``OPERATOR`` (tests.support.handlers) is a bootstrap
    operator token."""
    return Tokens(coord, operator_hashes=[hash_token(OPERATOR)], clock=clock)


@pytest.fixture
def app_context(stores: Stores, coord: Coordinator, tokens: Tokens) -> AppContext:
    """The app's context on the in-memory twin, for calling HTTP handlers directly
    (``tests.support.handlers.call``)."""
    return AppContext(
        settings=Settings.from_env({"FLEET_STORE": "memory"}),
        stores=stores,
        coordinator=coord,
        tokens=tokens,
        tracker=Tracker(coord, TrackerConfig()),
        monitor=Monitor(coord),
        health=FleetHealth(coord, tokens=tokens),
    )
