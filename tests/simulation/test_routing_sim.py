"""Learned routing against a fleet of hidden strengths (``tests.simulation.routing_sim``): a
small slice, 5 seeds x 4 simulated hours in each of the three modes.

What 20 seeds showed at this size, the margins below are set from: learned / fixed 1.60x
shipped per factory-hour and 0.63x USD per shipped job, learned better on both in 20 of 20
seeds; the most productive factory of a kind had the kind's highest learned term in 57 of 60
(seed, kind) pairs in shadow mode and 58 of 60 in learned mode; the likeliest to ship had a
shrunk success rate above the kind's fleet-wide one in 57 and 56 of 60. (Which factory has
the *highest* shrunk success rate is noisier: 41 of 60 in shadow mode, from 1-10 runs per
factory and kind; speed and cost separate them much sooner.)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.simulation.routing_sim import SeedRuns, against_truth, run_seed, table, totals

SEEDS = range(5)
HOURS = 4.0
REPLAY = f"replay: python -m tests.simulation.routing_sim --seeds {len(SEEDS)} --hours {HOURS:g}"


@pytest.fixture(scope="module")
def seeds() -> Iterator[list[SeedRuns]]:
    yield [run_seed(seed, hours=HOURS) for seed in SEEDS]


def test_routing_sim_learned_ships_more_and_spends_less_than_fixed(seeds: list[SeedRuns]) -> None:
    sums = totals(seeds)
    fixed, learned = sums["fixed"], sums["learned"]
    shipped = learned.shipped_per_factory_hour / fixed.shipped_per_factory_hour
    spend = learned.usd_per_shipped / fixed.usd_per_shipped
    figures = f"{REPLAY}\n{table(seeds)}"
    assert shipped >= 1.25, f"learned / fixed shipped per factory-hour {shipped:.2f}x\n{figures}"
    assert spend <= 0.8, f"learned / fixed USD per shipped job {spend:.2f}x\n{figures}"
    better = [
        s.seed
        for s in seeds
        if s["learned"].shipped_per_factory_hour > s["fixed"].shipped_per_factory_hour
        and s["learned"].usd_per_shipped < s["fixed"].usd_per_shipped
    ]
    assert len(better) >= len(SEEDS) - 1, f"learned better on both in seeds {better}\n{figures}"


def test_routing_sim_shadow_assigns_exactly_what_fixed_assigns(seeds: list[SeedRuns]) -> None:
    for s in seeds:
        fixed, shadow = s["fixed"].assignments, s["shadow"].assignments
        assert fixed, f"seed {s.seed}: nothing was assigned"
        first = next(
            (i for i, (a, b) in enumerate(zip(fixed, shadow, strict=False)) if a != b), None
        )
        assert first is None and len(fixed) == len(shadow), (
            f"seed {s.seed}: shadow's assignments part from fixed's at #{first} of "
            f"{len(fixed)} / {len(shadow)}: "
            f"{None if first is None else (fixed[first], shadow[first])}; {REPLAY}"
        )


def test_routing_sim_shadow_notes_every_claim_once_something_was_learned(
    seeds: list[SeedRuns],
) -> None:
    for s in seeds:
        fixed, shadow, learned = s["fixed"], s["shadow"], s["learned"]
        assert fixed.refreshes == 0 and fixed.learned.empty and fixed.shadow_notes == 0
        assert shadow.first_learned_at is not None, f"seed {s.seed}: shadow never learned"
        assert shadow.shadow_notes > 0, f"seed {s.seed}: no shadow notes"
        assert shadow.notes_before_learning == 0, f"seed {s.seed}: a note before any learning"
        assert shadow.unnoted_after_learning == 0, (
            f"seed {s.seed}: {shadow.unnoted_after_learning} runs opened after learning "
            "carry no shadow note"
        )
        # A positive weight ranks with the model itself: there is nothing to note.
        assert learned.shadow_notes == 0
    # Blind assignment agrees with the learned ranking now and then, not always.
    notes = sum(s["shadow"].shadow_notes for s in seeds)
    agreed = sum(s["shadow"].shadow_agreed for s in seeds)
    assert 0 < agreed < notes, (agreed, notes)


@pytest.mark.parametrize("mode", ["shadow", "learned"])
def test_routing_sim_learned_model_reflects_the_hidden_truth(
    seeds: list[SeedRuns], mode: str
) -> None:
    verdicts = [against_truth(s["shadow"] if mode == "shadow" else s["learned"]) for s in seeds]
    pairs = sum(v.pairs for v in verdicts)
    misranked = [line for v in verdicts for line in v.misranked]
    unseen = [line for v in verdicts for line in v.unseen]
    # Most: at least 4 in 5 (measured: 19 in 20, over 20 seeds).
    assert len(misranked) * 5 <= pairs, f"{len(misranked)} of {pairs}:\n" + "\n".join(misranked)
    assert len(unseen) * 5 <= pairs, f"{len(unseen)} of {pairs}:\n" + "\n".join(unseen)
