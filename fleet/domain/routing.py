"""Learned routing, pure: what the fleet's own runs say about who ships what.

**Evidence.** Every closed run is a sample for its *kind* of job, its factory and its engine:

- the kind is the job's persona (``persona:backend-dev``) or, without one, its required
  capability set (``caps:gpu,python``; ``caps:-`` for none);
- a run that ``shipped`` is a success; one that ``failed``, was retried, ran out of time or
  budget, or was taken back (stalled, expired) is a failure. A run released by its factory,
  fenced by an operator or preempted for a more urgent job says nothing about who ran it and
  is not counted;
- its duration and its cost, when known.

**Estimates, shrunk.** For each (kind, factory, engine): the success rate, the median duration
and the median cost, each pulled toward the kind's *average factory* as if ``PRIOR_RUNS`` more
runs had shown its figures. The average factory is the mean over the kind's (factory, engine)
pairs, each counted once (itself pulled toward the whole fleet's figures), not the mean over
its runs: that one would drift toward whichever factory routing sends the most work. Three
runs that shipped do not make a 100 % factory; forty do, nearly.

**The term.** ``outcome`` compares one (kind, factory, engine) with the kind's average factory:
the mean of the natural logs of its shipped-per-hour ratio (success rate / median duration) and
its shipped-per-dollar ratio (success rate / median cost), where a duration or a cost is left
out when either side does not know it (the success rates still count), clamped to [-1, 1].
A factory twice as productive on a kind scores about +0.69; one with no evidence scores 0.
The scheduler adds ``weights.outcome`` x the term. Weight 0 is *shadow mode*: the claim ranks
as before and records what the learned ranking (``SHADOW_WEIGHT``) would have put first, so
the operator sees how often they agree before turning it on.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

PRIOR_RUNS = 5.0  # how many runs' worth of the fleet's average an estimate starts from
MAX_SAMPLES = 25  # the newest durations and costs kept per (kind, factory, engine)
MAX_KEYS = 400  # (kind, factory, engine) triples kept in a product's routing document
SHADOW_WEIGHT = 2.0  # the learned ranking's weight when shadow mode asks what it would do
TERM_LIMIT = 1.0
# Recommendations compare only estimates with at least this many runs behind them.
MIN_RUNS_TO_RECOMMEND = 5

SUCCESS = frozenset({"shipped"})
FAILURE = frozenset({"failed", "retry", "timeout", "budget_exceeded", "taken_back"})
NO_ENGINE = "-"


def kind_of(persona: str | None, capabilities: Iterable[str]) -> str:
    """A job's kind for learning: its persona, else its required capability set."""
    if persona:
        return f"persona:{persona}"
    return "caps:" + (",".join(sorted(set(capabilities))) or "-")


def engine_of(capabilities: Iterable[str]) -> str | None:
    """The engine a factory runs, when it offers exactly one ``engine:*`` capability."""
    engines = sorted(c.removeprefix("engine:") for c in capabilities if c.startswith("engine:"))
    return engines[0] if len(engines) == 1 else None


def describe_kind(kind: str) -> str:
    """``persona:backend-dev`` -> ``backend-dev``; ``caps:gpu,python`` -> ``gpu,python``."""
    head, _, rest = kind.partition(":")
    if head == "caps" and rest == "-":
        return "no-capability"
    return rest or kind


@dataclass(frozen=True)
class Sample:
    """One closed run, as learning sees it."""

    kind: str
    factory: str
    engine: str
    shipped: bool
    duration: float | None = None
    cost: float | None = None


def counts(outcome: str | None, reason: str | None) -> bool | None:
    """Whether a run with this outcome is a success (True), a failure (False) or not evidence
    about its factory at all (None)."""
    if outcome in SUCCESS:
        return True
    if outcome in FAILURE:
        if outcome == "taken_back" and reason and "preempt" in reason.lower():
            return None  # moved for a more urgent job: not the factory's doing
        return False
    return None


def samples_of(job: Mapping[str, Any]) -> list[Sample]:
    """The closed runs of one job document (or a row with ``persona``, ``capabilities`` and
    ``runs``) that count as evidence."""
    kind = kind_of(_str(job.get("persona")), _strs(job.get("capabilities")))
    found: list[Sample] = []
    runs = job.get("runs")
    for run in runs if isinstance(runs, list) else []:
        if not isinstance(run, Mapping) or not run.get("endedAt"):
            continue
        shipped = counts(_str(run.get("outcome")), _str(run.get("reason")))
        factory = _str(run.get("factory"))
        if shipped is None or not factory:
            continue
        found.append(
            Sample(
                kind=kind,
                factory=factory,
                engine=_str(run.get("engine")) or NO_ENGINE,
                shipped=shipped,
                duration=_positive(run.get("durationSeconds")),
                cost=_positive(run.get("costUsd"), zero=True),
            )
        )
    return found


@dataclass(frozen=True)
class Evidence:
    """What the runs of one (kind, factory, engine) showed."""

    kind: str
    factory: str
    engine: str
    runs: int = 0
    shipped: int = 0
    durations: tuple[float, ...] = ()  # the newest MAX_SAMPLES known durations, oldest first
    costs: tuple[float, ...] = ()

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.factory, self.engine)

    def as_doc(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "factory": self.factory,
            "engine": self.engine,
            "runs": self.runs,
            "shipped": self.shipped,
            "durations": [round(d, 3) for d in self.durations],
            "costs": [round(c, 6) for c in self.costs],
        }

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Evidence | None:
        kind, factory, engine = (_str(doc.get(k)) for k in ("kind", "factory", "engine"))
        runs, shipped = _count(doc.get("runs")), _count(doc.get("shipped"))
        if not (kind and factory and engine) or runs is None or shipped is None or shipped > runs:
            return None
        return cls(
            kind=kind,
            factory=factory,
            engine=engine,
            runs=runs,
            shipped=shipped,
            durations=_floats(doc.get("durations")),
            costs=_floats(doc.get("costs")),
        )


@dataclass(frozen=True)
class Pooled:
    """Runs pooled over many triples (a kind's fleet, or the whole fleet)."""

    runs: int = 0
    shipped: int = 0
    durations: tuple[float, ...] = ()
    costs: tuple[float, ...] = ()


@dataclass(frozen=True)
class Estimate:
    """A shrunk estimate: success rate, median duration (s) and median cost (USD)."""

    rate: float
    duration: float | None
    cost: float | None
    runs: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "rate": round(self.rate, 4),
            "medianSeconds": None if self.duration is None else round(self.duration, 1),
            "medianCostUsd": None if self.cost is None else round(self.cost, 4),
            "runs": self.runs,
        }


@dataclass(frozen=True)
class Term:
    """The outcome term for one (kind, factory, engine) and its evidence, for ``explain``."""

    value: float
    kind: str
    factory: str
    engine: str
    estimate: Estimate
    fleet: Estimate

    def evidence(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "engine": self.engine,
            "value": round(self.value, 4),
            "this": self.estimate.as_dict(),
            "fleet": self.fleet.as_dict(),
        }


@dataclass(frozen=True)
class Learned:
    """The routing model of one product: its evidence, and the shrunk estimates from it."""

    evidence: Mapping[tuple[str, str, str], Evidence] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.evidence

    @cached_property
    def _kinds(self) -> dict[str, list[Evidence]]:
        kinds: dict[str, list[Evidence]] = {}
        for evidence in self.evidence.values():
            kinds.setdefault(evidence.kind, []).append(evidence)
        return kinds

    @cached_property
    def _whole(self) -> Estimate:
        return _estimate(_pool(self.evidence.values()), None)

    @cached_property
    def _memo(self) -> dict[tuple[str, str | None, str | None], Estimate]:
        return {}

    def fleet_estimate(self, kind: str) -> Estimate:
        """The kind's *average factory*: the mean over its (factory, engine) pairs of their
        own figures (success rates averaged; medians by their geometric mean), shrunk toward
        the whole fleet's by the kind's runs. Each pair counts once, however many runs it
        had: a baseline weighted by runs would drift toward whichever factory learned routing
        sends the most work, and its lead would vanish from its own term."""
        key = (kind, None, None)
        if key not in self._memo:
            self._memo[key] = _average_factory(self._kinds.get(kind, ()), self._whole)
        return self._memo[key]

    def estimate(self, kind: str, factory: str, engine: str | None) -> Estimate:
        """This factory's (and engine's, when known) figures on this kind, shrunk toward the
        kind's average factory. With no runs of its own: that average."""
        key = (kind, factory, engine or "")
        if key not in self._memo:
            chosen = [
                e
                for e in self._kinds.get(kind, ())
                if e.factory == factory and (engine is None or e.engine == engine)
            ]
            self._memo[key] = _estimate(_pool(chosen), self.fleet_estimate(kind))
        return self._memo[key]

    def term(self, kind: str, factory: str, engine: str | None) -> Term:
        fleet = self.fleet_estimate(kind)
        this = self.estimate(kind, factory, engine)
        return Term(
            value=relative_value(this, fleet),
            kind=kind,
            factory=factory,
            engine=engine or NO_ENGINE,
            estimate=this,
            fleet=fleet,
        )

    def as_doc(self) -> list[dict[str, Any]]:
        return [e.as_doc() for e in self.evidence.values()]

    @classmethod
    def from_doc(cls, rows: Any) -> Learned:
        found: dict[tuple[str, str, str], Evidence] = {}
        for row in rows if isinstance(rows, list) else []:
            evidence = Evidence.from_doc(row) if isinstance(row, Mapping) else None
            if evidence is not None:
                found[evidence.key] = evidence
        return cls(evidence=found)


EMPTY = Learned()


def learn(samples: Iterable[Sample]) -> Learned:
    """The model from ``samples``, oldest first (the newest durations and costs are kept). At
    most ``MAX_KEYS`` triples: those with the most runs."""
    runs: dict[tuple[str, str, str], list[Sample]] = {}
    for sample in samples:
        runs.setdefault((sample.kind, sample.factory, sample.engine), []).append(sample)
    kept = sorted(runs.items(), key=lambda item: (-len(item[1]), item[0]))[:MAX_KEYS]
    evidence: dict[tuple[str, str, str], Evidence] = {}
    for key, group in sorted(kept):
        durations = [s.duration for s in group if s.duration is not None]
        costs = [s.cost for s in group if s.cost is not None]
        evidence[key] = Evidence(
            kind=key[0],
            factory=key[1],
            engine=key[2],
            runs=len(group),
            shipped=sum(1 for s in group if s.shipped),
            durations=tuple(durations[-MAX_SAMPLES:]),
            costs=tuple(costs[-MAX_SAMPLES:]),
        )
    return Learned(evidence=evidence)


def relative_value(this: Estimate, fleet: Estimate) -> float:
    """The mean of ln(shipped per hour ratio) and ln(shipped per dollar ratio), clamped to
    [-1, 1]; a duration or cost only when both sides know it. 0 when they are the same."""
    floor = 1e-3  # a rate of 0 is "very bad", not minus infinity
    rate, base = max(this.rate, floor), max(fleet.rate, floor)
    speed = math.log(rate / base)
    if this.duration and fleet.duration:
        speed += math.log(fleet.duration / this.duration)
    thrift = math.log(rate / base)
    if this.cost and fleet.cost:
        thrift += math.log(fleet.cost / this.cost)
    return max(-TERM_LIMIT, min(TERM_LIMIT, (speed + thrift) / 2))


def _average_factory(evidence: Sequence[Evidence], whole: Estimate) -> Estimate:
    pairs = [e for e in evidence if e.runs > 0]
    runs = sum(e.runs for e in pairs)
    if not pairs:
        return Estimate(whole.rate, whole.duration, whole.cost, 0)
    m = PRIOR_RUNS
    mean_rate = statistics.fmean(e.shipped / e.runs for e in pairs)
    rate = (runs * mean_rate + m * whole.rate) / (runs + m)
    return Estimate(
        rate=rate,
        duration=_shrunk_mean_of_medians([e.durations for e in pairs], whole.duration, m),
        cost=_shrunk_mean_of_medians([e.costs for e in pairs], whole.cost, m),
        runs=runs,
    )


def _shrunk_mean_of_medians(
    samples: Sequence[Sequence[float]], prior: float | None, m: float
) -> float | None:
    """The geometric mean of each pair's median (pairs that know none left out), pulled
    toward ``prior`` as if ``m`` more samples had shown it."""
    medians = [statistics.median(s) for s in samples if s]
    medians = [v for v in medians if v > 0]
    if not medians:
        return prior
    own = math.exp(statistics.fmean(math.log(v) for v in medians))
    if prior is None or prior <= 0:
        return own
    n = sum(len(s) for s in samples)
    return math.exp((n * math.log(own) + m * math.log(prior)) / (n + m))


def _pool(chosen: Iterable[Evidence]) -> Pooled:
    chosen = list(chosen)
    return Pooled(
        runs=sum(e.runs for e in chosen),
        shipped=sum(e.shipped for e in chosen),
        durations=tuple(d for e in chosen for d in e.durations),
        costs=tuple(c for e in chosen for c in e.costs),
    )


def _estimate(pooled: Pooled, prior: Estimate | None) -> Estimate:
    m = PRIOR_RUNS
    if prior is None:  # the whole fleet: shrunk toward an even chance
        rate = (pooled.shipped + 0.5 * m) / (pooled.runs + m)
        return Estimate(rate, _median(pooled.durations), _median(pooled.costs), pooled.runs)
    rate = (pooled.shipped + m * prior.rate) / (pooled.runs + m)
    return Estimate(
        rate=rate,
        duration=_shrunk_median(pooled.durations, prior.duration, m),
        cost=_shrunk_median(pooled.costs, prior.cost, m),
        runs=pooled.runs,
    )


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _shrunk_median(values: Sequence[float], prior: float | None, m: float) -> float | None:
    """The median of ``values`` pulled toward ``prior`` in log space (durations and costs are
    ratios): as if ``m`` more samples had shown ``prior``."""
    own = _median(values)
    if own is None or own <= 0:
        return prior
    if prior is None or prior <= 0:
        return own
    n = len(values)
    return math.exp((n * math.log(own) + m * math.log(prior)) / (n + m))


# --- shadow agreement ----------------------------------------------------------------


@dataclass(frozen=True)
class Agreement:
    """How often the learned ranking put first the job the claim's ranking put first, over
    the claims made in shadow mode that a document shows."""

    claims: int = 0
    agreed: int = 0

    @property
    def rate(self) -> float | None:
        return None if self.claims == 0 else self.agreed / self.claims

    def as_dict(self) -> dict[str, Any]:
        rate = self.rate
        return {
            "claims": self.claims,
            "agreed": self.agreed,
            "rate": None if rate is None else round(rate, 4),
        }


def agreement_of(jobs: Iterable[Mapping[str, Any]]) -> Agreement:
    """The shadow records (``runs[].learned``) of these job rows."""
    claims = agreed = 0
    for job in jobs:
        runs = job.get("runs")
        for run in runs if isinstance(runs, list) else []:
            learned = run.get("learned") if isinstance(run, Mapping) else None
            if isinstance(learned, Mapping) and isinstance(learned.get("agrees"), bool):
                claims += 1
                agreed += 1 if learned["agrees"] else 0
    return Agreement(claims=claims, agreed=agreed)


# --- recommendations -----------------------------------------------------------------


@dataclass(frozen=True)
class Recommendation:
    kind: str
    best: tuple[str, str]  # (factory, engine)
    worst: tuple[str, str]
    ratio: float  # best's success rate / worst's
    runs: int  # runs behind the two
    best_estimate: Estimate
    worst_estimate: Estimate

    def sentence(self) -> str:
        def who(pair: tuple[str, str]) -> str:
            factory, engine = pair
            return f"engine:{engine} on {factory}" if engine != NO_ENGINE else factory

        speed = ""
        b, w = self.best_estimate.duration, self.worst_estimate.duration
        if b and w and w / b >= 1.2:
            speed = f", in {w / b:.1f}x less time"
        return (
            f"{describe_kind(self.kind)} jobs: {who(self.best)} ships {self.ratio:.1f}x as "
            f"often as {who(self.worst)}{speed}, {self.runs} runs"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "sentence": self.sentence(),
            "best": {
                "factory": self.best[0],
                "engine": self.best[1],
                **self.best_estimate.as_dict(),
            },
            "worst": {
                "factory": self.worst[0],
                "engine": self.worst[1],
                **self.worst_estimate.as_dict(),
            },
            "ratio": round(self.ratio, 2),
            "runs": self.runs,
        }


def recommendations(
    learned: Learned, *, min_runs: int = MIN_RUNS_TO_RECOMMEND, min_ratio: float = 1.2
) -> list[Recommendation]:
    """For each kind with at least two (factory, engine) pairs of ``min_runs`` runs or more:
    the best against the worst by the learned term (what routing would weigh: success, speed
    and cost), when the best ships at least ``min_ratio`` times as often. Largest gap first.
    Never changes routing by itself."""
    kinds = sorted({e.kind for e in learned.evidence.values()})
    found: list[Recommendation] = []
    for kind in kinds:
        # Per (factory, engine), so one factory's two engines are compared too.
        pairs = [e for e in learned.evidence.values() if e.kind == kind and e.runs >= min_runs]
        if len(pairs) < 2:
            continue
        rated = sorted(
            (
                (
                    learned.term(kind, e.factory, e.engine).value,
                    learned.estimate(kind, e.factory, e.engine),
                    e,
                )
                for e in pairs
            ),
            key=lambda item: (-item[0], item[2].factory, item[2].engine),
        )
        (_, best_est, best), (_, worst_est, worst) = rated[0], rated[-1]
        ratio = best_est.rate / max(worst_est.rate, 1e-3)
        if ratio < min_ratio:
            continue
        found.append(
            Recommendation(
                kind=kind,
                best=(best.factory, best.engine),
                worst=(worst.factory, worst.engine),
                ratio=ratio,
                runs=best.runs + worst.runs,
                best_estimate=best_est,
                worst_estimate=worst_est,
            )
        )
    return sorted(found, key=lambda r: (-r.ratio, r.kind))


# --- parsing helpers -----------------------------------------------------------------


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _strs(value: Any) -> list[str]:
    return [v for v in value if isinstance(v, str)] if isinstance(value, list | tuple) else []


def _positive(value: Any, *, zero: bool = False) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    if not math.isfinite(number) or number < 0 or (number == 0 and not zero):
        return None
    return number


def _floats(value: Any) -> tuple[float, ...]:
    if not isinstance(value, list):
        return ()
    found = [_positive(v, zero=True) for v in value[-MAX_SAMPLES:]]
    return tuple(v for v in found if v is not None)


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value
