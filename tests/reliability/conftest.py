"""The reliability suite: chaos on the live local stack, injected store faults, bad input.

Its counts (``tests.reliability.counts``) and its own run time are printed at the end of the
session, after pytest's summary.
"""

from __future__ import annotations

import pytest

from tests.reliability.counts import COUNTS, ORDER

_SECONDS: list[float] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/reliability/" in item.nodeid:
            item.add_marker(pytest.mark.reliability)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "tests/reliability/" in report.nodeid:
        _SECONDS.append(report.duration)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _SECONDS:
        return
    parts = [f"{name} {COUNTS[name]}" for name in ORDER if name in COUNTS]
    parts += [f"{name} {n}" for name, n in sorted(COUNTS.items()) if name not in ORDER]
    terminalreporter.write_sep("=", "reliability suite")
    terminalreporter.write_line(", ".join(parts) or "(nothing counted)")
    terminalreporter.write_line(f"run time {sum(_SECONDS):.1f} s (setup + call + teardown)")
