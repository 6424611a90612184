"""The per-attempt quota's conditional patch behaves alike on the twin and on the Cosmos
emulator: taken all or none under the limit, created on first use, given back."""

from __future__ import annotations

import pytest

from fleet.coordinator.attempt_quota import (
    ARTIFACTS,
    EVENT_BYTES,
    EVENTS,
    AttemptQuota,
    quota_id,
)
from fleet.errors import QuotaExceeded
from fleet.store.ports import Stores

LIMITS = {EVENTS: 5, EVENT_BYTES: 100, ARTIFACTS: 2}


def _counts(stores: Stores, partition: str) -> dict[str, int]:
    doc = stores.documents.read(partition, quota_id("j1", 1))
    return {k: doc[k] for k in LIMITS}


def test_attempt_quota_takes_all_or_none_under_its_limits(stores: Stores, partition: str) -> None:
    quota = AttemptQuota(stores.documents, LIMITS, ttl_seconds=3600)
    quota.take(partition, "j1", 1, {EVENTS: 3, EVENT_BYTES: 60})  # creates it
    quota.take(partition, "j1", 1, {EVENTS: 2, EVENT_BYTES: 40})  # exactly the limits
    assert _counts(stores, partition) == {EVENTS: 5, EVENT_BYTES: 100, ARTIFACTS: 0}
    with pytest.raises(QuotaExceeded) as refused:
        quota.take(partition, "j1", 1, {EVENTS: 0, EVENT_BYTES: 1})
    assert (refused.value.details["quota"], refused.value.details["used"]) == (EVENT_BYTES, 100)
    quota.give_back(partition, "j1", 1, {EVENTS: 1, EVENT_BYTES: 10})
    with pytest.raises(QuotaExceeded) as refused:  # one of two would pass: neither is taken
        quota.take(partition, "j1", 1, {EVENTS: 1, EVENT_BYTES: 11})
    assert refused.value.details["quota"] == EVENT_BYTES
    quota.take(partition, "j1", 1, {ARTIFACTS: 2})
    assert _counts(stores, partition) == {EVENTS: 4, EVENT_BYTES: 90, ARTIFACTS: 2}
    quota.take(partition, "j1", 2, {ARTIFACTS: 2})  # another attempt: its own counts
    doc = stores.documents.read(partition, quota_id("j1", 2))
    assert (doc["type"], doc["jobId"], doc["epoch"], doc["ttl"]) == ("attempt_quota", "j1", 2, 3600)
