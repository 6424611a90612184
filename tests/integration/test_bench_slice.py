"""A slice of the idle-cost benchmark (``benchmarks/idle_cost.py``) kept in the suite.

The same in-process measurement the benchmark makes, once, on the real local stack: a
factory enrolled over HTTP, then the real ``GET /api/fleet/queue-state`` handler of
``function_app.app`` called with its bearer token over the Azure adapters, counting store
calls. Counts only: timing is the benchmark's business, not a test's.
"""

from __future__ import annotations

import pytest

from benchmarks.idle_cost import gate_costs
from fleet.context import context_for
from fleet.settings import Settings
from fleet.store.ports import Stores
from tests.conftest import RunningStack

pytestmark = pytest.mark.integration


def test_bench_slice_warm_idle_gate_poll_is_one_point_read(
    running_stack: RunningStack, azure_settings: Settings, azure_backend: Stores, partition: str
) -> None:
    token = running_stack.enroll(partition, "bench-slice")
    # A fresh context: this instance has never verified the token.
    costs = gate_costs(context_for(azure_settings, azure_backend), token, polls=20)
    # The first poll also reads the token (then trusted for 30 s by this instance's cache).
    assert costs.cold == {"read": 2}
    assert costs.warm == [{"read": 1}] * 20
