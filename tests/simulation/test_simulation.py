"""The deterministic simulation: many seeds, invariants checked after every step."""

from __future__ import annotations

import os

from tests.simulation.sim import InvariantBroken, run_seed

SEEDS = int(os.environ.get("FLEET_SIM_SEEDS", "1000"))


def test_simulation_invariants_hold_for_every_seed() -> None:
    failures: list[str] = []
    totals = {"claims": 0, "fenced": 0, "races": 0, "replays": 0}
    for seed in range(SEEDS):
        try:
            result = run_seed(seed)
        except InvariantBroken as exc:
            failures.append(
                f"seed {seed}: {exc}  (replay: python -m tests.simulation.sim {seed} -v)"
            )
            continue
        totals["claims"] += result.claims
        totals["fenced"] += result.fenced
        totals["races"] += result.races
        totals["replays"] += result.replays
    assert not failures, "\n".join(failures[:20])
    # The runs must actually exercise the dangerous paths, or they prove nothing.
    assert totals["fenced"] > SEEDS // 4, totals
    assert totals["races"] > SEEDS, totals
    assert totals["claims"] > SEEDS * 3, totals
    assert totals["replays"] > SEEDS // 10, totals  # lost claim replies handed back
