"""Bugs the reliability suite found, each pinned by a fast test on the in-memory twin.

- A lost response on a job write (claim, report, renew, release, operator action): the
  coordinator now reads the job once to learn whether the write happened
  (``Writer.landed`` in ``fleet/coordinator/writer.py``) — see ``test_store_faults`` for the
  fault scenarios.
- ``GET /api/fleet/jobs/settings`` (any route with a job id that names another document of
  the product: ``settings``, ``queue-state``, ``budget``...) answered 500; it is a 404.
- An oversized body was a 400; it is a 413 with the code ``too_large``.
- A store fault while the reaper's timer reaped one product skipped every product after it.
"""

from __future__ import annotations

import json
from dataclasses import replace

import azure.functions as func
import pytest

from fleet.context import context_for
from fleet.coordinator import Coordinator
from fleet.coordinator.clock import ManualClock
from fleet.coordinator.service import JobNotFound, ReapReport
from fleet.domain.manifest import Manifest
from fleet.domain.scheduler import FactoryView
from fleet.domain.stages import Stage
from fleet.errors import StoreUnavailable
from fleet.http.parsing import MAX_BODY_BYTES, PayloadTooLarge, body_bytes
from fleet.http.responses import error_response, status_for
from fleet.settings import Settings
from fleet.store.memory import memory_stores
from tests.support.handlers import tick


@pytest.mark.parametrize("doc_id", ["settings", "queue-state"])
def test_regression_a_job_id_naming_another_document_is_not_found(doc_id: str) -> None:
    coord = Coordinator(memory_stores(), clock=ManualClock())
    coord.put_product_settings("p", preemption={"enabled": True})
    coord.bump_gate("p")
    with pytest.raises(JobNotFound):
        coord.get_job("p", doc_id)


def test_regression_an_oversized_body_is_413_too_large() -> None:
    request = func.HttpRequest(
        "POST", "/api/fleet/jobs", body=b"x" * (MAX_BODY_BYTES + 1), headers={}
    )
    with pytest.raises(PayloadTooLarge) as caught:
        body_bytes(request)
    assert status_for(caught.value) == 413
    body = json.loads(error_response(caught.value).get_body())
    assert body["error"] == "too_large" and str(MAX_BODY_BYTES) in body["message"]
    assert body["details"]["problems"][0]["code"] == "too_large"


def test_regression_the_reaper_timer_goes_on_to_the_next_product_after_a_fault(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A store fault while reaping one product stopped the timer's pass over every product
    after it (the healer and metrics timers already went on)."""
    clock = ManualClock()
    stores = memory_stores()
    coord = Coordinator(stores, clock=clock)
    jobs = {}
    for product in ("a", "b"):
        jobs[product], _ = coord.submit(product, Manifest(title="t"), "operator:t")
        assert coord.claim(product, FactoryView(id="f", capabilities=frozenset())) is not None
    clock.advance(jobs["a"].leaseSeconds + 1)
    first = coord.products()[0]
    reap = coord.reap

    def throttled_first(product: str) -> ReapReport:
        if product == first:
            raise StoreUnavailable("store unavailable (429)", retry_after=1.0)
        return reap(product)

    monkeypatch.setattr(coord, "reap", throttled_first)
    context = context_for(Settings.from_env({"FLEET_STORE": "memory"}), stores)
    tick(replace(context, coordinator=coord), "reaper_timer")
    stages = {p: coord.get_job(p, jobs[p].id).stage for p in ("a", "b")}
    assert stages == {first: Stage.ASSIGNED, ({"a", "b"} - {first}).pop(): Stage.QUEUED}
