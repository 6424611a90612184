"""Learned routing: what the ``outcome`` weight buys a fleet whose factories are good at
different kinds of job, measured by the seeded simulation ``tests.simulation.routing_sim`` at
full size (20 seeds x 24 simulated hours by default).

    .venv/bin/python -m benchmarks.routing --help
    .venv/bin/python -m benchmarks --only routing

Four factories with the same capabilities, three kinds of job, each factory's success rate,
speed and hourly cost per kind hidden from the coordinator; a steady backlog; the real claim,
reports and the metrics pass's learning on the in-memory twin with a manual clock (the
simulation's docstring has the details). Three modes from the same seeds: ``fixed`` (weight
0, no learning), ``shadow`` (weight 0, learning on: the claim only notes what the learned
ranking would choose) and ``learned`` (``--weight``, 2 by default).

Figures, per mode, over all seeds: jobs shipped per factory-hour and USD spent (every attempt
that ended, shipped or not) per shipped job, and the ratios learned / fixed (from the one run,
with their spread over seeds); how many seeds shadow mode assigned exactly what fixed mode
assigned (same job, same factory, same time, every claim); the ratio by the hour (how soon
learning pays); and whether the learned model ranks each kind's best factory first. It needs
no stack: every figure is the simulation's, on simulated time, so it is the same on any
machine (only the wall time is not).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

from benchmarks.common import (
    RESULTS,
    BenchError,
    Target,
    fmt_ratio,
    machine,
    machine_line,
    part_payload,
    ratio,
    say,
    table,
    write_json,
)
from tests.simulation.routing_sim import (
    BACKLOG,
    FACTORIES,
    MODES,
    PERSONAS,
    REFRESH_SECONDS,
    WEIGHT,
    Mode,
    ModeRun,
    SeedRuns,
    Totals,
    against_truth,
    run_seed,
    same_assignments,
    totals,
)

DEFAULT_OUT = RESULTS / "routing.json"
QUICK = ["--seeds", "4", "--hours", "4"]
NEEDS_STACK = False  # ``python -m benchmarks`` runs it after the stack is stopped
HOUR_EDGES = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 24.0, 48.0)


def assignments_digest(run: ModeRun) -> str:
    """A short digest of a run's every assignment, to compare runs across commits."""
    rows = [[a.at, a.job, a.ordinal, a.factory, a.epoch] for a in run.assignments]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


def truth_of(run: ModeRun) -> dict[str, Any]:
    """The seed's hidden fleet: each factory's hourly cost, specialty and, per kind, its
    success rate and median minutes."""
    return {
        f.name: {
            "usd_per_hour": f.usd_per_hour,
            "specialty": f.specialty,
            "skills": {p: [s.rate, s.minutes] for p, s in f.skills.items()},
        }
        for f in run.truth.factories
    }


def hour_buckets(hours: float) -> list[tuple[float, float]]:
    edges = [e for e in HOUR_EDGES if e < hours] + [hours]
    return list(pairwise(edges))


@dataclass
class RoutingResult:
    seeds: list[SeedRuns]
    args: argparse.Namespace
    wall_seconds: float
    name: str = "routing"

    # --- figures -------------------------------------------------------------------------

    def sums(self) -> dict[Mode, Totals]:
        return totals(self.seeds)

    def ratios(self, mode: Mode = "learned") -> dict[str, float | None]:
        """``mode`` / fixed, over all seeds."""
        sums = self.sums()
        this, fixed = sums[mode], sums["fixed"]
        return {
            "shipped_per_factory_hour": ratio(
                this.shipped_per_factory_hour, fixed.shipped_per_factory_hour
            ),
            "usd_per_shipped": ratio(this.usd_per_shipped, fixed.usd_per_shipped),
            "shipped_per_attempt": ratio(this.ship_rate, fixed.ship_rate),
        }

    def per_seed_ratios(self) -> dict[str, list[float]]:
        shipped, spend = [], []
        for s in self.seeds:
            learned, fixed = s["learned"], s["fixed"]
            shipped.append(learned.shipped_per_factory_hour / fixed.shipped_per_factory_hour)
            spend.append(learned.usd_per_shipped / fixed.usd_per_shipped)
        return {"shipped_per_factory_hour": shipped, "usd_per_shipped": spend}

    def better_on_both(self) -> int:
        return sum(
            1
            for s in self.seeds
            if s["learned"].shipped_per_factory_hour > s["fixed"].shipped_per_factory_hour
            and s["learned"].usd_per_shipped < s["fixed"].usd_per_shipped
        )

    def shadow_identical(self) -> int:
        return sum(1 for s in self.seeds if same_assignments(s["shadow"], s["fixed"]))

    def by_hour(self) -> list[dict[str, Any]]:
        """Shipped per factory-hour in each stretch of the run, per mode, over all seeds."""
        rows = []
        for start, end in hour_buckets(self.args.hours):
            shipped = {
                m: sum(
                    1 for s in self.seeds for t in s[m].shipped_at if start * 3600 < t <= end * 3600
                )
                for m in MODES
            }
            factory_hours = FACTORIES * (end - start) * len(self.seeds)
            rows.append(
                {
                    "from_hour": start,
                    "to_hour": end,
                    **{f"{m}_per_factory_hour": shipped[m] / factory_hours for m in MODES},
                    "learned_over_fixed": ratio(shipped["learned"], shipped["fixed"]),
                }
            )
        return rows

    def evidence(self) -> dict[str, dict[str, int]]:
        found = {}
        for mode in ("shadow", "learned"):
            verdicts = [against_truth(s[mode]) for s in self.seeds]
            found[mode] = {
                "kinds": sum(v.pairs for v in verdicts),
                "best_term_is_most_productive": sum(v.pairs - len(v.misranked) for v in verdicts),
                "likeliest_rated_above_fleet": sum(v.pairs - len(v.unseen) for v in verdicts),
            }
        return found

    # --- output --------------------------------------------------------------------------

    def report(self, info: Mapping[str, Any]) -> str:
        sums = self.sums()
        rows = [
            [
                t.mode,
                f"{t.shipped:,}",
                f"{t.attempts:,}",
                f"{t.shipped_per_factory_hour:.3f}",
                f"{t.usd_per_shipped:.3f}",
                f"{t.ship_rate:.3f}",
                f"{t.specialty_share:.3f}",
                f"{t.dead_lettered:,}",
                "-" if not t.shadow_notes else f"{t.shadow_agreed / t.shadow_notes:.3f}",
            ]
            for t in sums.values()
        ]
        r, spread, n = self.ratios(), self.per_seed_ratios(), len(self.seeds)
        hourly = self.by_hour()
        evidence = self.evidence()
        lines = [
            "",
            f"Learned routing, {n} seeds x {self.args.hours:g} simulated hours, {FACTORIES} "
            f"factories, {len(PERSONAS)} kinds, backlog {BACKLOG}, learning every "
            f"{REFRESH_SECONDS:g} s, learned weight {self.args.weight:g} - {machine_line(info)}",
            table(
                [
                    "mode",
                    "shipped",
                    "attempts",
                    "shipped/factory-h",
                    "USD/shipped",
                    "shipped/attempt",
                    "specialists on own kind",
                    "dead-lettered",
                    "shadow agrees",
                ],
                rows,
            ),
            "learned / fixed (figures as ratios from one run): shipped per factory-hour "
            f"{fmt_ratio(r['shipped_per_factory_hour'])} (seeds "
            f"{_spread(spread['shipped_per_factory_hour'])}), USD per shipped job "
            f"{fmt_ratio(r['usd_per_shipped'])} (seeds {_spread(spread['usd_per_shipped'])}), "
            f"shipped per attempt {fmt_ratio(r['shipped_per_attempt'])}; better on both in "
            f"{self.better_on_both()} of {n} seeds",
            f"shadow / fixed: every assignment identical (job, factory, time, epoch) in "
            f"{self.shadow_identical()} of {n} seeds",
            "learned / fixed shipped, by the hour: "
            + ", ".join(
                f"{h['from_hour']:g}-{h['to_hour']:g} h {fmt_ratio(h['learned_over_fixed'])}"
                for h in hourly
            ),
            "the learned model against the hidden fleet, per (seed, kind): the most productive "
            "factory has the highest term in "
            + ", ".join(
                f"{e['best_term_is_most_productive']} of {e['kinds']} ({m})"
                for m, e in evidence.items()
            )
            + "; the likeliest to ship is rated above the kind's fleet in "
            + ", ".join(
                f"{e['likeliest_rated_above_fleet']} of {e['kinds']} ({m})"
                for m, e in evidence.items()
            ),
            f"wall {self.wall_seconds:.1f} s",
            "",
        ]
        return "\n".join(lines)

    def summary(self) -> list[tuple[str, str]]:
        sums, r, n = self.sums(), self.ratios(), len(self.seeds)
        size = f"{n} seeds x {self.args.hours:g} h"
        return [
            (
                f"routing ({size}): shipped per factory-hour, fixed / shadow / learned",
                " / ".join(f"{sums[m].shipped_per_factory_hour:.3f}" for m in MODES),
            ),
            (
                "routing: USD per shipped job, fixed / shadow / learned",
                " / ".join(f"${sums[m].usd_per_shipped:.3f}" for m in MODES),
            ),
            (
                "routing: learned / fixed",
                f"{fmt_ratio(r['shipped_per_factory_hour'])} shipped per factory-hour, "
                f"{fmt_ratio(r['usd_per_shipped'])} USD per shipped job; better on both in "
                f"{self.better_on_both()} of {n} seeds",
            ),
            (
                "routing: shadow assigns exactly what fixed assigns",
                f"{self.shadow_identical()} of {n} seeds",
            ),
        ]

    def payload(self, info: Mapping[str, Any]) -> dict[str, Any]:
        config = {
            "seeds": len(self.seeds),
            "hours": self.args.hours,
            "weight": self.args.weight,
            "factories": FACTORIES,
            "kinds": list(PERSONAS),
            "backlog": BACKLOG,
            "refresh_seconds": REFRESH_SECONDS,
        }
        spread = self.per_seed_ratios()
        return part_payload(
            self.name,
            info,
            config,
            modes={m: t.as_dict() for m, t in self.sums().items()},
            ratios={
                "learned_over_fixed": self.ratios("learned"),
                "shadow_over_fixed": self.ratios("shadow"),
                "learned_over_fixed_per_seed": {
                    k: {"min": min(v), "median": statistics.median(v), "max": max(v)}
                    for k, v in spread.items()
                },
            },
            better_on_both_seeds=self.better_on_both(),
            shadow_identical_seeds=self.shadow_identical(),
            by_hour=self.by_hour(),
            evidence=self.evidence(),
            per_seed=[
                {
                    "seed": s.seed,
                    "truth": truth_of(s["fixed"]),
                    **{
                        m: {
                            **s[m].figures(),
                            "assignments": len(s[m].assignments),
                            "assignments_sha256": assignments_digest(s[m]),
                        }
                        for m in MODES
                    },
                }
                for s in self.seeds
            ],
            wall_seconds=round(self.wall_seconds, 1),
        )


def _spread(values: Sequence[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}x, median {statistics.median(values):.2f}x"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.routing",
        description="Learned routing against hidden factory strengths: shipped per "
        "factory-hour and USD per shipped job, fixed / shadow / learned, from the same seeds "
        "(the seeded simulation on the in-memory twin; no stack).",
    )
    p.add_argument("--seeds", type=int, default=20, help="seeds 0..N-1 (20)")
    p.add_argument("--hours", type=float, default=24.0, help="simulated hours per run (24)")
    p.add_argument(
        "--weight", type=float, default=WEIGHT, help=f"learned mode's outcome weight ({WEIGHT:g})"
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON ({DEFAULT_OUT})")
    return p


def measure(
    target: Target | None, args: argparse.Namespace, say: Callable[[str], None]
) -> RoutingResult:
    """``target`` is not used: the part runs on the in-memory twin."""
    if args.seeds < 1 or args.hours <= 0 or args.weight <= 0:
        raise BenchError("--seeds, --hours and --weight must be positive")
    began = time.perf_counter()
    seeds = []
    for seed in range(args.seeds):
        seeds.append(run_seed(seed, hours=args.hours, weight=args.weight))
        say(f"  routing: seed {seed + 1} of {args.seeds} ({time.perf_counter() - began:.0f} s)")
    return RoutingResult(seeds, args, time.perf_counter() - began)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    began = time.perf_counter()
    try:
        result = measure(None, args, say)
    except BenchError as exc:
        say(f"bench failed: {exc}")
        return 1
    info = machine()
    info["wall_seconds"] = round(time.perf_counter() - began, 1)
    print(result.report(info))
    write_json(args.out, result.payload(info))
    print(f"JSON: {args.out} (wall time {info['wall_seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
