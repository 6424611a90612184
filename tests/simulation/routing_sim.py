"""Learned routing against a fleet whose strengths are hidden: a deterministic, seeded
simulation on the in-memory twin, with an injected clock.

**The fleet.** Four factories with the same capabilities (``python`` and one engine), so the
scheduler's capability, cost and load terms cannot tell them apart. Three kinds of job
(personas). Per seed, three factories are each a specialist of one kind (it ships 85-95 % of
its attempts there, in about 12 minutes) and poor at the other two (40-50 %, about 25
minutes); the fourth is a generalist (60-70 % on every kind, about 18 minutes). Each factory
costs $2-4 an hour, so an attempt costs its duration times that rate. Which factory is which,
and the exact figures, are drawn from the seed; the coordinator never sees them.

**The work.** A steady backlog: at the start, and whenever a job ends, jobs of random kinds
are submitted until ``BACKLOG`` wait beyond the ones running. A factory claims when it is
free (the real ``Coordinator.claim``, starting the job at once, as ``fleet-factory run``
does); the attempt takes its hidden duration (log-normal around the factory's median for the
kind), then ships or fails with the hidden probability and reports its engine, cost and
duration the way a factory's final report does. A failed attempt is reported retryable, so
the coordinator queues the job again until ``maxAttempts`` (3), then dead-letters it. Leases
are an hour and no attempt is that long, so the reaper has nothing to do and is not run.
Every draw is keyed by (seed, job, attempt), not by the order of events: the same job's
first attempt ships or fails on the same coin in every mode, so the modes differ only in who
ran what.

**Learning.** Every ``REFRESH_SECONDS`` (300 s, like ``METRICS_SCHEDULE``) the metrics pass's
``refresh_routing`` learns from the product's runs; it also puts the new model in the
claim's cache of the same coordinator, so the next claim ranks with it.

**Modes, from the same seeds:** ``fixed`` (weight 0, no learning at all), ``shadow`` (weight
0, learning on: each claim notes what the learned ranking would have chosen, and must assign
exactly what ``fixed`` assigns), ``learned`` (weight ``WEIGHT``, learning on).

**Figures:** jobs shipped per factory-hour, and USD spent (every attempt that ended, shipped
or not) per shipped job, over ``hours`` of simulated time; attempts still running at the end
count for neither.

**The weight.** Tried over 20 seeds x 8 hours, learned / fixed (shipped per factory-hour;
USD per shipped job): ``outcome`` 0.25: 1.73x, 0.58x; 0.5: 1.79x, 0.56x; 1.0: 1.79x, 0.56x;
2.0: 1.83x, 0.55x; 4.0: 1.85x, 0.55x; 8.0: 1.85x, 0.54x. The gain is nearly flat from 0.5 on:
``TERM_LIMIT`` clamps the term to [-1, 1], and with a backlog the queue's head is older than
``aging_seconds``, so no starvation penalty competes with it and even 0.25 (a spread of up to
0.5 on a kind) is far outside the tie band (0.05). A larger weight only wins a little more
against the young jobs' starvation penalty and the health term of a job the factory failed.
``WEIGHT`` is 2.0, ``SHADOW_WEIGHT``: what shadow mode notes is what this mode does.

Run ``python -m tests.simulation.routing_sim [--seeds N] [--hours H] [--weight W]``.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from fleet.coordinator import Coordinator, CoordinatorConfig
from fleet.coordinator.clock import ManualClock
from fleet.domain.manifest import Manifest
from fleet.domain.models import Job
from fleet.domain.profiles import ProfileSpec
from fleet.domain.routing import Learned, kind_of
from fleet.domain.scheduler import FactoryView
from fleet.domain.stages import TERMINAL, Stage
from fleet.store.memory import MemoryDocumentStore, memory_stores

Mode = Literal["fixed", "shadow", "learned"]
MODES: tuple[Mode, ...] = ("fixed", "shadow", "learned")

PRODUCT = "routing-sim"
PERSONAS = ("backend-dev", "frontend-dev", "data-eng")
ENGINE = "claude"
CAPABILITIES = frozenset({"python", f"engine:{ENGINE}"})
FACTORIES = 4
BACKLOG = 24  # jobs waiting beyond the ones running, kept topped up
MAX_ATTEMPTS = 3
LEASE_SECONDS = 3600  # longer than any attempt: nothing for the reaper
REFRESH_SECONDS = 300.0  # the metrics pass (METRICS_SCHEDULE's default period)
IDLE_POLL_SECONDS = 30.0  # a factory that found nothing asks again after this
WEIGHT = 2.0
HOURS = 8.0
SPREAD = 0.35  # sigma of an attempt's log-normal duration around the median
MIN_MINUTES, MAX_MINUTES = 2.0, 55.0


def kind(persona: str) -> str:
    """The kind learned routing files a persona's jobs under."""
    return kind_of(persona, ())


# --- the hidden truth ----------------------------------------------------------------


@dataclass(frozen=True)
class Skill:
    """How one factory does on one kind of job: the chance an attempt ships, and its median
    duration in minutes."""

    rate: float
    minutes: float

    @property
    def shipped_per_hour(self) -> float:
        return self.rate * 60.0 / self.minutes


@dataclass(frozen=True)
class HiddenFactory:
    name: str
    usd_per_hour: float
    skills: Mapping[str, Skill]  # by persona
    specialty: str | None  # the persona it is good at; None: the generalist

    def view(self) -> FactoryView:
        return FactoryView(id=self.name, capabilities=CAPABILITIES, seats=1)


@dataclass(frozen=True)
class Truth:
    """A seed's fleet: what each factory really does on each kind."""

    factories: tuple[HiddenFactory, ...]

    @classmethod
    def for_seed(cls, seed: int) -> Truth:
        rng = random.Random(f"truth-{seed}")
        roles: list[str | None] = [*PERSONAS, None]
        rng.shuffle(roles)
        factories = []
        for i, role in enumerate(roles[:FACTORIES]):
            skills = {}
            for persona in PERSONAS:
                if role is None:
                    rate, minutes = 0.65, 18.0
                elif role == persona:
                    rate, minutes = 0.90, 12.0
                else:
                    rate, minutes = 0.45, 25.0
                skills[persona] = Skill(
                    rate=round(rate + rng.uniform(-0.05, 0.05), 3),
                    minutes=round(minutes * rng.uniform(0.85, 1.15), 2),
                )
            factories.append(
                HiddenFactory(
                    name=f"factory-{i}",
                    usd_per_hour=rng.choice((2.0, 2.5, 3.0, 3.5, 4.0)),
                    skills=skills,
                    specialty=role,
                )
            )
        return cls(tuple(factories))

    def factory(self, name: str) -> HiddenFactory:
        return next(f for f in self.factories if f.name == name)

    def best_rate(self, persona: str) -> str:
        """The factory most likely to ship this kind."""
        return max(self.factories, key=lambda f: f.skills[persona].rate).name

    def best_speed(self, persona: str) -> str:
        """The factory that ships the most of this kind per hour."""
        return max(self.factories, key=lambda f: f.skills[persona].shipped_per_hour).name


@dataclass(frozen=True)
class Attempt:
    """One attempt's hidden fate: drawn from (seed, job, epoch) alone."""

    shipped: bool
    seconds: float
    usd: float


def fate(seed: int, ordinal: int, epoch: int, factory: HiddenFactory, persona: str) -> Attempt:
    rng = random.Random(f"attempt-{seed}-{ordinal}-{epoch}")
    coin, noise = rng.random(), rng.gauss(0.0, 1.0)
    skill = factory.skills[persona]
    minutes = min(MAX_MINUTES, max(MIN_MINUTES, skill.minutes * math.exp(SPREAD * noise)))
    seconds = round(minutes * 60.0, 1)
    return Attempt(
        shipped=coin < skill.rate,
        seconds=seconds,
        usd=round(seconds / 3600.0 * factory.usd_per_hour, 4),
    )


# --- what a run of one mode records ---------------------------------------------------


@dataclass(frozen=True)
class Assignment:
    """One claim that won a job: when (seconds from the start), which job (its id and its
    place in the submission order), to whom, at which epoch."""

    at: float
    job: str
    ordinal: int
    factory: str
    epoch: int


@dataclass
class ModeRun:
    seed: int
    mode: Mode
    weight: float
    hours: float
    truth: Truth
    assignments: list[Assignment] = field(default_factory=list)
    shipped_at: list[float] = field(default_factory=list)  # seconds from the start
    attempts: int = 0  # attempts that ended within the run
    shipped: int = 0
    dead_lettered: int = 0
    spent_usd: float = 0.0
    # Ended attempts run by a specialist, and those on its own kind.
    specialist_attempts: int = 0
    on_specialty: int = 0
    submitted: int = 0
    refreshes: int = 0
    first_learned_at: float | None = None  # when a refresh first learned something
    learned: Learned = field(default_factory=Learned)  # the model at the end
    shadow_notes: int = 0  # runs carrying a shadow note (runs[].learned)
    shadow_agreed: int = 0
    notes_before_learning: int = 0  # runs opened before anything was learned, with a note
    unnoted_after_learning: int = 0  # runs opened after something was learned, without one
    wall_seconds: float = 0.0

    @property
    def factory_hours(self) -> float:
        return len(self.truth.factories) * self.hours

    @property
    def shipped_per_factory_hour(self) -> float:
        return self.shipped / self.factory_hours

    @property
    def usd_per_shipped(self) -> float:
        return self.spent_usd / self.shipped if self.shipped else math.inf

    def figures(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "mode": self.mode,
            "shipped": self.shipped,
            "attempts": self.attempts,
            "dead_lettered": self.dead_lettered,
            "spent_usd": round(self.spent_usd, 4),
            "shipped_per_factory_hour": round(self.shipped_per_factory_hour, 4),
            "usd_per_shipped": round(self.usd_per_shipped, 4),
            "specialist_attempts": self.specialist_attempts,
            "on_specialty": self.on_specialty,
            "shadow_notes": self.shadow_notes,
            "shadow_agreed": self.shadow_agreed,
        }


# --- the simulation -------------------------------------------------------------------


class RoutingSim:
    """One seed in one mode: a coordinator over the twin, four hidden factories, events in
    time order."""

    def __init__(
        self, seed: int, mode: Mode, *, hours: float = HOURS, weight: float = WEIGHT
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode is one of {MODES}, not {mode!r}")
        self.seed, self.mode = seed, mode
        self.truth = Truth.for_seed(seed)
        self.horizon = hours * 3600.0
        self.clock = ManualClock()
        self.start = self.clock.now()
        stores = memory_stores()
        assert isinstance(stores.documents, MemoryDocumentStore)
        self.twin = stores.documents
        ids = random.Random(f"ids-{seed}")  # job ids: the same in every mode
        self.coord = Coordinator(
            stores, clock=self.clock, config=CoordinatorConfig(), entropy=ids.randbytes
        )
        self.kinds = random.Random(f"kinds-{seed}")  # the nth job's kind: the same in every mode
        self.record = ModeRun(
            seed=seed,
            mode=mode,
            weight=weight if mode == "learned" else 0.0,
            hours=hours,
            truth=self.truth,
        )
        for persona in PERSONAS:
            self.coord.put_profile(
                PRODUCT,
                persona,
                ProfileSpec(preamble=f"You are a {persona}.", capabilities=("python",)),
            )
        for factory in self.truth.factories:
            self.coord.register_factory(PRODUCT, factory.view(), "sim")
        if mode == "learned":
            self.coord.put_product_settings(PRODUCT, weights={"outcome": weight})
        self.ordinals: dict[str, int] = {}
        self.personas: dict[str, str] = {}
        self.open_jobs = 0
        self.requests = 0
        self._events: list[tuple[float, int, str, Any]] = []
        self._seq = 0

    # --- events ------------------------------------------------------------------------

    def at(self, seconds: float, kind: str, payload: Any = None) -> None:
        self._seq += 1
        heapq.heappush(self._events, (seconds, self._seq, kind, payload))

    def now_s(self) -> float:
        return (self.clock.now() - self.start).total_seconds()

    def run(self) -> ModeRun:
        began = time.perf_counter()
        self.top_up()
        for factory in self.truth.factories:
            self.at(0.0, "free", factory.name)
        if self.mode != "fixed":
            self.at(REFRESH_SECONDS, "refresh")
        while self._events and self._events[0][0] <= self.horizon:
            seconds, _, kind, payload = heapq.heappop(self._events)
            self.clock.advance(seconds - self.now_s())
            if kind == "free":
                self.claim(payload)
            elif kind == "done":
                self.done(*payload)
            elif kind == "refresh":
                self.refresh()
                self.at(seconds + REFRESH_SECONDS, "refresh")
        self.clock.advance(self.horizon - self.now_s())
        self.finish()
        self.record.wall_seconds = time.perf_counter() - began
        return self.record

    # --- the actors --------------------------------------------------------------------

    def top_up(self) -> None:
        """Submit jobs of random kinds until ``BACKLOG`` wait beyond the running ones."""
        while self.open_jobs < BACKLOG + len(self.truth.factories):
            ordinal = self.record.submitted
            persona = self.kinds.choice(PERSONAS)
            manifest = Manifest(
                title=f"{persona} job {ordinal}",
                persona=persona,
                maxAttempts=MAX_ATTEMPTS,
                leaseSeconds=LEASE_SECONDS,
            )
            job, created = self.coord.submit(PRODUCT, manifest, "operator:sim")
            assert created and job.stage is Stage.QUEUED, job.stage
            self.ordinals[job.id] = ordinal
            self.personas[job.id] = persona
            self.record.submitted += 1
            self.open_jobs += 1

    def claim(self, name: str) -> None:
        factory = self.truth.factory(name)
        self.requests += 1
        result = self.coord.claim(
            PRODUCT, factory.view(), f"{name}-claim-{self.requests}", start=True
        )
        if result is None:
            self.at(self.now_s() + IDLE_POLL_SECONDS, "free", name)
            return
        job, epoch = result.job, result.lease.epoch
        ordinal = self.ordinals[job.id]
        self.record.assignments.append(
            Assignment(at=self.now_s(), job=job.id, ordinal=ordinal, factory=name, epoch=epoch)
        )
        attempt = fate(self.seed, ordinal, epoch, factory, self.personas[job.id])
        self.at(self.now_s() + attempt.seconds, "done", (name, job.id, epoch, attempt))

    def done(self, name: str, job_id: str, epoch: int, attempt: Attempt) -> None:
        result = {
            "exitCode": 0 if attempt.shipped else 1,
            "costUsd": attempt.usd,
            "durationSeconds": attempt.seconds,
            "engine": ENGINE,
        }
        job = self.coord.report(
            PRODUCT,
            job_id,
            name,
            epoch,
            stage=Stage.SHIPPED if attempt.shipped else Stage.FAILED,
            retryable=not attempt.shipped,
            reason=None if attempt.shipped else "the checks failed",
            result=result,
        )
        record = self.record
        record.attempts += 1
        record.spent_usd += attempt.usd
        specialty = self.truth.factory(name).specialty
        if specialty is not None:
            record.specialist_attempts += 1
            record.on_specialty += int(specialty == self.personas[job_id])
        if job.stage is Stage.SHIPPED:
            record.shipped += 1
            record.shipped_at.append(self.now_s())
        elif job.stage is Stage.DEAD_LETTER:
            record.dead_lettered += 1
        if job.stage in TERMINAL:
            self.open_jobs -= 1
            self.top_up()
        self.claim(name)

    def refresh(self) -> None:
        doc = self.coord.refresh_routing(PRODUCT)
        self.record.refreshes += 1
        if self.record.first_learned_at is None and not doc.learned.empty:
            self.record.first_learned_at = self.now_s()

    def finish(self) -> None:
        """What the run leaves behind: the last model, and the shadow notes on the runs."""
        record = self.record
        record.learned = self.coord.routing(PRODUCT).learned
        learned_at = record.first_learned_at
        for doc in self.twin.all_docs():
            if doc.get("type") != "job" or doc.get("productId") != PRODUCT:
                continue
            for run in Job.from_doc(doc).runs:
                opened = (run.startedAt - self.start).total_seconds()
                after = learned_at is not None and opened >= learned_at
                if run.learned is not None:
                    record.shadow_notes += 1
                    record.shadow_agreed += int(run.learned.agrees)
                    record.notes_before_learning += int(not after)
                elif after:
                    record.unnoted_after_learning += 1


def run_mode(seed: int, mode: Mode, *, hours: float = HOURS, weight: float = WEIGHT) -> ModeRun:
    return RoutingSim(seed, mode, hours=hours, weight=weight).run()


@dataclass(frozen=True)
class SeedRuns:
    seed: int
    runs: Mapping[Mode, ModeRun]

    def __getitem__(self, mode: Mode) -> ModeRun:
        return self.runs[mode]


def run_seed(seed: int, *, hours: float = HOURS, weight: float = WEIGHT) -> SeedRuns:
    return SeedRuns(seed, {m: run_mode(seed, m, hours=hours, weight=weight) for m in MODES})


@dataclass(frozen=True)
class Verdicts:
    """What a run's learned model says about its hidden fleet, kind by kind."""

    pairs: int  # kinds looked at
    misranked: tuple[str, ...]  # the kind's most productive factory lacks the highest term
    unseen: tuple[str, ...]  # the likeliest to ship is not rated above the kind's fleet


def against_truth(run: ModeRun) -> Verdicts:
    """Per kind: does the factory that ships the most per hour (hidden) have the highest
    learned term, and is the one likeliest to ship rated above the kind's fleet-wide rate?"""
    misranked, unseen = [], []
    names = [f.name for f in run.truth.factories]
    for persona in PERSONAS:
        k = kind(persona)
        terms = {n: run.learned.term(k, n, ENGINE).value for n in names}
        top, best = max(names, key=lambda n: terms[n]), run.truth.best_speed(persona)
        if top != best:
            shown = ", ".join(f"{n} {v:+.2f}" for n, v in terms.items())
            misranked.append(f"seed {run.seed} {persona}: {top} over {best} ({shown})")
        likeliest = run.truth.best_rate(persona)
        estimate = run.learned.estimate(k, likeliest, ENGINE)
        fleet = run.learned.fleet_estimate(k)
        if estimate.rate <= fleet.rate:
            unseen.append(
                f"seed {run.seed} {persona}: {likeliest} rated {estimate.rate:.2f} over "
                f"{estimate.runs} runs, the fleet {fleet.rate:.2f}"
            )
    return Verdicts(len(PERSONAS), tuple(misranked), tuple(unseen))


# --- figures over seeds ---------------------------------------------------------------


@dataclass(frozen=True)
class Totals:
    """One mode's figures summed over seeds."""

    mode: Mode
    seeds: int
    shipped: int
    attempts: int
    dead_lettered: int
    spent_usd: float
    factory_hours: float
    specialist_attempts: int
    on_specialty: int
    shadow_notes: int
    shadow_agreed: int
    wall_seconds: float

    @classmethod
    def of(cls, mode: Mode, runs: Sequence[ModeRun]) -> Totals:
        return cls(
            mode=mode,
            seeds=len(runs),
            shipped=sum(r.shipped for r in runs),
            attempts=sum(r.attempts for r in runs),
            dead_lettered=sum(r.dead_lettered for r in runs),
            spent_usd=sum(r.spent_usd for r in runs),
            factory_hours=sum(r.factory_hours for r in runs),
            specialist_attempts=sum(r.specialist_attempts for r in runs),
            on_specialty=sum(r.on_specialty for r in runs),
            shadow_notes=sum(r.shadow_notes for r in runs),
            shadow_agreed=sum(r.shadow_agreed for r in runs),
            wall_seconds=sum(r.wall_seconds for r in runs),
        )

    @property
    def shipped_per_factory_hour(self) -> float:
        return self.shipped / self.factory_hours if self.factory_hours else 0.0

    @property
    def usd_per_shipped(self) -> float:
        return self.spent_usd / self.shipped if self.shipped else math.inf

    @property
    def ship_rate(self) -> float:
        """Shipped jobs per ended attempt."""
        return self.shipped / self.attempts if self.attempts else 0.0

    @property
    def specialty_share(self) -> float:
        """The share of the specialists' attempts that were on their own kind (a third when
        kinds are handed out blindly)."""
        return self.on_specialty / self.specialist_attempts if self.specialist_attempts else 0.0

    def as_dict(self) -> dict[str, Any]:
        agreement = self.shadow_agreed / self.shadow_notes if self.shadow_notes else None
        return {
            "mode": self.mode,
            "seeds": self.seeds,
            "shipped": self.shipped,
            "attempts": self.attempts,
            "dead_lettered": self.dead_lettered,
            "spent_usd": round(self.spent_usd, 2),
            "factory_hours": self.factory_hours,
            "shipped_per_factory_hour": round(self.shipped_per_factory_hour, 4),
            "usd_per_shipped": round(self.usd_per_shipped, 4),
            "shipped_per_attempt": round(self.ship_rate, 4),
            "on_specialty_share": round(self.specialty_share, 4),
            "shadow_notes": self.shadow_notes,
            "shadow_agreement": None if agreement is None else round(agreement, 4),
            "wall_seconds": round(self.wall_seconds, 2),
        }


def totals(seeds: Sequence[SeedRuns]) -> dict[Mode, Totals]:
    return {m: Totals.of(m, [s[m] for s in seeds]) for m in MODES}


def same_assignments(a: ModeRun, b: ModeRun) -> bool:
    return a.assignments == b.assignments


def table(seeds: Sequence[SeedRuns]) -> str:
    """Per mode: shipped per factory-hour and USD per shipped job over every seed, then the
    ratios learned / fixed."""
    sums = totals(seeds)
    rows = [
        [
            t.mode,
            f"{t.shipped}",
            f"{t.attempts}",
            f"{t.shipped_per_factory_hour:.3f}",
            f"{t.usd_per_shipped:.3f}",
            f"{t.ship_rate:.1%}",
            f"{t.specialty_share:.1%}",
            "-" if not t.shadow_notes else f"{t.shadow_agreed / t.shadow_notes:.1%}",
        ]
        for t in sums.values()
    ]
    headers = [
        "mode",
        "shipped",
        "attempts",
        "shipped/factory-h",
        "USD/shipped",
        "shipped/attempt",
        "on specialty",
        "shadow agrees",
    ]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    fixed, learned = sums["fixed"], sums["learned"]
    wins = sum(
        1
        for s in seeds
        if s["learned"].shipped_per_factory_hour > s["fixed"].shipped_per_factory_hour
        and s["learned"].usd_per_shipped < s["fixed"].usd_per_shipped
    )
    identical = sum(1 for s in seeds if same_assignments(s["shadow"], s["fixed"]))
    lines += [
        f"learned / fixed: shipped per factory-hour "
        f"{learned.shipped_per_factory_hour / fixed.shipped_per_factory_hour:.2f}x, "
        f"USD per shipped job {learned.usd_per_shipped / fixed.usd_per_shipped:.2f}x; "
        f"learned better on both in {wins} of {len(seeds)} seeds",
        f"shadow assigned exactly what fixed assigned in {identical} of {len(seeds)} seeds",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tests.simulation.routing_sim",
        description="Learned routing against a fleet of hidden strengths: fixed, shadow and "
        "learned from the same seeds.",
    )
    p.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 (10)")
    p.add_argument("--hours", type=float, default=HOURS, help=f"simulated hours ({HOURS:g})")
    p.add_argument(
        "--weight", type=float, default=WEIGHT, help=f"learned mode's outcome weight ({WEIGHT:g})"
    )
    args = p.parse_args(argv)
    if args.seeds < 1 or args.hours <= 0 or args.weight <= 0:
        p.error("--seeds, --hours and --weight must be positive")
    began = time.perf_counter()
    seeds = [run_seed(s, hours=args.hours, weight=args.weight) for s in range(args.seeds)]
    print(
        f"{args.seeds} seeds x {args.hours:g} h, {FACTORIES} factories, {len(PERSONAS)} kinds, "
        f"backlog {BACKLOG}, learned weight {args.weight:g} "
        f"({time.perf_counter() - began:.1f} s)"
    )
    print(table(seeds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
