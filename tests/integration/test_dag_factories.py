"""A 3-level DAG run to completion on the local stack by two real ``fleet-factory`` processes
(the demo engine), in dependency order.

The operator decomposes a release into a feature and the feature into two parts (``POST
/api/fleet/jobs/{id}/children``); the factories only claim what is queued, and each level is
queued (``unblock``) by the ship of the last dependency below it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RunningStack
from tests.support.factories import Fleet, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def fleet(running_stack: RunningStack, tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(running_stack, f"dag{uuid.uuid4().hex[:10]}", tmp_path)
    try:
        yield fleet
    finally:
        fleet.stop_all()


def _at(history: list[dict[str, Any]], kind: str) -> datetime:
    (event,) = [e for e in history if e["type"] == kind]
    return datetime.fromisoformat(str(event["at"]).replace("Z", "+00:00"))


def test_dag_three_levels_shipped_by_two_cli_factories_in_dependency_order(fleet: Fleet) -> None:
    root = fleet.submit(title="release", body="Ship the release.\nTag it.")
    made = fleet.post(
        f"/fleet/jobs/{root}/children",
        {"children": [{"title": "feature", "body": "Build the feature.\nTest it."}]},
    )
    mid = made["children"][0]["id"]
    leaves = [
        child["id"]
        for child in fleet.post(
            f"/fleet/jobs/{mid}/children",
            {
                "mode": "all",
                "children": [
                    {"title": "part a", "body": "Write part a."},
                    {"manifest": "---\ntitle: part b\n---\nWrite part b.\n"},
                ],
            },
        )["children"]
    ]
    assert fleet.job(root)["stage"] == fleet.job(mid)["stage"] == "blocked"
    factories = [fleet.factory("fa"), fleet.factory("fb")]
    for factory in factories:
        factory.start()
    wait_for("the root to ship", lambda: fleet.job(root)["stage"] == "shipped", timeout=120)

    histories = {job: fleet.events(job) for job in (root, mid, *leaves)}
    for job, history in histories.items():
        kinds = [e["type"] for e in history]
        assert kinds.count("assign") == 1 and kinds.count("complete") == 1, (job, kinds)
        assert kinds[-1] == "complete" and fleet.job(job)["stage"] == "shipped"
        holder = next(e["holder"] for e in history if e["type"] == "assign")
        assert holder in ("fa", "fb")
    # Dependency order, by the events' own (server) timestamps: a level is queued only
    # after everything below it shipped, and claimed after that.
    for parent, children in ((mid, leaves), (root, [mid])):
        unblocked = _at(histories[parent], "unblock")
        assert all(_at(histories[c], "complete") <= unblocked for c in children)
        assert unblocked <= _at(histories[parent], "assign")
    tree = fleet.get(f"/fleet/jobs/{root}/dag")
    assert tree["stage"] == "shipped" and tree["deps"][0]["stage"] == "shipped"
    assert {n["stage"] for n in tree["deps"][0]["deps"]} == {"shipped"}
    for factory in factories:
        assert factory.stop() == 0, factory.output()
    shipped = sum(f.state()["outcomes"].get("shipped", 0) for f in factories)
    assert shipped == 4
