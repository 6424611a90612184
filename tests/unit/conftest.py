"""Fixtures of the unit tests: the coordinator on the in-memory twin, with a manual clock."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import responses

from fleet.coordinator import Coordinator, CoordinatorConfig
from fleet.coordinator.clock import ManualClock
from fleet.store.memory import memory_stores
from fleet.store.ports import Stores


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
    """A clean environment: its own config dir, an empty PATH (no engines, no tools)."""
    return {"FLEET_CONFIG_DIR": str(tmp_path / "cfg"), "PATH": "", "HOME": str(tmp_path)}
