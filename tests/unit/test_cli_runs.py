"""The CLI's compact view of run records (``factory_cli/runs.py``) and the client's reads of
runs and artifacts."""

from __future__ import annotations

from typing import Any

import pytest
import responses

from factory_cli.api import FleetClient
from factory_cli.runs import compact, cost_text, latest_run, latest_summary, run_summary
from tests.support.cli import API


def run(epoch: int = 1, **fields: Any) -> dict[str, Any]:
    """A closed run in the contract's shape."""
    return {
        "epoch": epoch,
        "factory": "f1",
        "engine": "claude",
        "engineVersion": "2.1.3",
        "startedAt": "2026-01-01T00:00:00.000000Z",
        "endedAt": "2026-01-01T00:05:00.000000Z",
        "outcome": "shipped",
        "reason": None,
        "exitCode": 0,
        "tokens": {"input": 9000, "output": 2500, "cacheRead": 500, "cacheWrite": 0},
        "costUsd": 0.42,
        "diff": {"files": 3, "insertions": 10, "deletions": 2},
        "branch": "fleet/j1",
        "commit": "0123456789abcdef0123456789abcdef01234567",
        "prUrl": None,
        "artifacts": ["engine.log"],
        "artifactErrors": [],
        **fields,
    }


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (0, "0"),
        (950, "950"),
        (1000, "1k"),
        (12_000, "12k"),
        (12_345, "12.3k"),
        (123_456, "123k"),
        (999_999, "1M"),
        (4_500_000, "4.5M"),
        (2_000_000_000, "2G"),
    ],
)
def test_runs_compact(count: int, text: str) -> None:
    assert compact(count) == text


@pytest.mark.parametrize(
    ("cost", "text"),
    [(0.42, "$0.42"), (12.5, "$12.50"), (0.0, "$0.00"), (0.004, "<$0.01"), (None, "$?")],
)
def test_runs_cost_text_never_shows_unknown_as_zero(cost: float | None, text: str) -> None:
    assert cost_text(cost) == text


def test_runs_summary_of_a_shipped_run() -> None:
    assert run_summary(run()) == "shipped $0.42 12k tok +10-2"


def test_runs_summary_of_an_unknown_cost_and_no_diff() -> None:
    assert run_summary(run(costUsd=None, diff=None, outcome="failed")) == "failed $? 12k tok"


def test_runs_summary_of_an_open_run_says_running() -> None:
    opened = run(outcome=None, endedAt=None, costUsd=None, diff=None, tokens=None)
    assert run_summary(opened) == "running $?"


def test_runs_summary_reads_malformed_figures_as_missing() -> None:
    odd = run(costUsd=True, tokens={"input": "many"}, diff={"files": 1})
    assert run_summary(odd) == "shipped $?"


def test_runs_latest_run_is_the_last_listed() -> None:
    job = {"runs": [run(1, outcome="retry"), run(2, costUsd=1.5)]}
    assert latest_run(job) == job["runs"][1]
    assert latest_summary(job) == "shipped $1.50 12k tok +10-2"


@pytest.mark.parametrize("job", [{}, {"runs": None}, {"runs": []}, {"runs": "x"}, {"runs": [7]}])
def test_runs_a_job_without_runs_has_no_latest(job: dict[str, Any]) -> None:
    assert latest_run(job) is None
    assert latest_summary(job) == "-"


def test_client_reads_a_jobs_runs_and_artifacts() -> None:
    client = FleetClient(API, "flo_op", product="p")
    artifact = {"id": "art-j1-1-x", "jobId": "j1", "epoch": 1, "name": "engine.log", "size": 12}
    with responses.RequestsMock() as rsps:
        rsps.get(f"{API}/fleet/jobs/j1/runs", json={"runs": [run(1), run(2), "junk"]})
        rsps.get(f"{API}/fleet/jobs/j1/artifacts", json={"artifacts": [artifact]})
        assert [r["epoch"] for r in client.job_runs("j1")] == [1, 2]
        assert client.list_artifacts("j1") == [artifact]
        assert rsps.calls[0].request.headers["X-Fleet-Product"] == "p"
