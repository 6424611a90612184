"""Learned routing: the model from runs (``fleet.domain.routing``), the scheduler's ``outcome``
term and shadow mode (``fleet.domain.scheduler``), and the model kept by the metrics pass and
read by claims and explain (``fleet.coordinator.routing``), on the in-memory twin."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest

from fleet.context import context_for
from fleet.coordinator import Coordinator
from fleet.coordinator.clock import ManualClock
from fleet.domain import routing as R
from fleet.domain.manifest import Manifest
from fleet.domain.profiles import ProfileSpec
from fleet.domain.scheduler import DEFAULT_WEIGHTS, FactoryView, Weights, rank, shadow_choice
from fleet.domain.stages import Stage
from fleet.settings import Settings
from fleet.store.ports import Stores
from fleet.timers import metrics_pass
from tests.support.builders import job as job_doc

P = "prod"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def samples(
    kind: str, factory: str, engine: str, shipped: int, failed: int, **kw: Any
) -> list[R.Sample]:
    return [R.Sample(kind, factory, engine, True, **kw) for _ in range(shipped)] + [
        R.Sample(kind, factory, engine, False, **kw) for _ in range(failed)
    ]


# --- the model ----------------------------------------------------------------------------


def test_routing_kind_is_the_persona_else_the_capability_set() -> None:
    assert R.kind_of("backend-dev", ["python"]) == "persona:backend-dev"
    assert R.kind_of(None, ["python", "gpu", "python"]) == "caps:gpu,python"
    assert R.kind_of(None, []) == "caps:-"
    assert R.describe_kind("persona:backend-dev") == "backend-dev"
    assert R.describe_kind("caps:-") == "no-capability"
    assert R.engine_of(["engine:claude", "python"]) == "claude"
    assert R.engine_of(["engine:claude", "engine:codex"]) is None  # which one ran: the run says
    assert R.engine_of(["python"]) is None


@pytest.mark.parametrize(
    ("outcome", "reason", "counted"),
    [
        ("shipped", None, True),
        ("failed", None, False),
        ("retry", None, False),
        ("timeout", None, False),
        ("budget_exceeded", None, False),
        ("taken_back", "lease expired", False),
        ("taken_back", "preempted for j2", None),  # not the factory's doing
        ("released", None, None),
        ("fenced", None, None),
        (None, None, None),
    ],
)
def test_routing_which_runs_are_evidence(
    outcome: str | None, reason: str | None, counted: bool | None
) -> None:
    assert R.counts(outcome, reason) is counted


def test_routing_samples_of_a_job_are_its_closed_runs_that_count() -> None:
    job = {
        "persona": "dev",
        "capabilities": ["python"],
        "runs": [
            {"factory": "f1", "engine": "claude", "outcome": "shipped", "endedAt": "t",
             "durationSeconds": 60, "costUsd": 0.5},
            {"factory": "f2", "outcome": "failed", "endedAt": "t", "costUsd": -1},
            {"factory": "f3", "outcome": "released", "endedAt": "t"},
            {"factory": "f4", "outcome": None},  # open
            "not a run",
        ],
    }  # fmt: skip
    assert R.samples_of(job) == [
        R.Sample("persona:dev", "f1", "claude", True, duration=60.0, cost=0.5),
        R.Sample("persona:dev", "f2", R.NO_ENGINE, False, duration=None, cost=None),
    ]


def test_routing_estimates_are_shrunk_toward_the_fleet_and_few_runs_prove_little() -> None:
    learned = R.learn(
        samples("k", "few", "e", 3, 0)
        + samples("k", "many", "e", 40, 0)
        + samples("k", "poor", "e", 10, 30)
    )
    fleet = learned.fleet_estimate("k")
    few, many = learned.estimate("k", "few", "e"), learned.estimate("k", "many", "e")
    assert fleet.rate < few.rate < many.rate < 1.0  # three of three is not 100 %
    assert many.rate > 0.9 and few.rate < 0.85
    # A factory with no runs of the kind is the kind's fleet average: its term is 0.
    new = learned.estimate("k", "new", None)
    assert (new.rate, new.duration, new.cost, new.runs) == (fleet.rate, None, None, 0)
    assert learned.term("k", "new", None).value == 0
    assert learned.term("k", "many", "e").value > 0 > learned.term("k", "poor", "e").value


def test_routing_term_counts_speed_and_cost_and_is_bounded() -> None:
    learned = R.learn(
        samples("k", "fast", "e", 30, 0, duration=60.0, cost=1.0)
        + samples("k", "slow", "e", 30, 0, duration=240.0, cost=1.0)
    )
    fast, slow = learned.term("k", "fast", "e"), learned.term("k", "slow", "e")
    assert fast.value > 0 > slow.value  # same success, the faster one ships more per hour
    assert slow.value >= -1 and fast.value <= 1
    this = R.Estimate(rate=0.8, duration=60.0, cost=1.0, runs=40)
    half = R.Estimate(rate=0.4, duration=60.0, cost=1.0, runs=40)
    assert R.relative_value(this, half) == pytest.approx(math.log(2))  # twice as often
    assert R.relative_value(half, half) == 0
    assert R.relative_value(R.Estimate(1.0, 1.0, 0.01, 9), half) == 1  # clamped


def test_routing_model_round_trips_its_document_and_drops_what_is_malformed() -> None:
    learned = R.learn(samples("k", "f1", "e", 4, 1, duration=30.0, cost=0.25))
    assert R.Learned.from_doc(learned.as_doc()) == learned
    bad = [
        {"kind": "k", "factory": "f", "engine": "e", "runs": 1, "shipped": 2},  # more shipped
        {"kind": "k", "factory": "f", "engine": "e", "runs": True, "shipped": 0},
        {"kind": "", "factory": "f", "engine": "e", "runs": 1, "shipped": 0},
        "row",
    ]
    assert R.Learned.from_doc(bad).empty and R.Learned.from_doc(None).empty


def test_routing_keeps_the_newest_samples_and_a_bounded_number_of_triples() -> None:
    many = [R.Sample("k", "f", "e", True, duration=float(n)) for n in range(1, 60)]
    evidence = R.learn(many).evidence[("k", "f", "e")]
    assert evidence.runs == 59 and evidence.durations == tuple(float(n) for n in range(35, 60))
    wide = [R.Sample(f"k{n}", "f", "e", True) for n in range(R.MAX_KEYS + 10)]
    assert len(R.learn(wide).evidence) == R.MAX_KEYS


def test_routing_recommendations_are_plain_sentences_with_numbers() -> None:
    learned = R.learn(
        samples("persona:backend-dev", "mac-2", "claude", 19, 1, duration=100.0)
        + samples("persona:backend-dev", "linux-3", "codex", 8, 12, duration=300.0)
        + samples("persona:docs", "mac-2", "claude", 2, 0)  # too few runs to say anything
    )
    found = R.recommendations(learned)
    assert [r.kind for r in found] == ["persona:backend-dev"]
    sentence = found[0].sentence()
    assert sentence.startswith(
        "backend-dev jobs: engine:claude on mac-2 ships 2.0x as often as engine:codex on linux-3"
    ), sentence
    assert sentence.endswith(", 40 runs") and "less time" in sentence
    assert found[0].as_dict()["best"]["factory"] == "mac-2"
    assert (
        R.recommendations(R.learn(samples("k", "a", "e", 5, 5) + samples("k", "b", "e", 5, 5)))
        == []
    )


# --- the scheduler ------------------------------------------------------------------------


def queued(n: int, persona: str) -> Any:
    return job_doc(n, stage=Stage.QUEUED, persona=persona, createdAt=T0)


SKILLED = R.learn(
    samples("persona:back", "f1", "claude", 30, 2)
    + samples("persona:front", "f1", "claude", 3, 29)
    + samples("persona:back", "f2", "claude", 4, 28)
    + samples("persona:front", "f2", "claude", 28, 4)
)
F1 = FactoryView(id="f1", capabilities=frozenset({"engine:claude"}))


def test_routing_outcome_term_steers_a_factory_to_the_kind_it_ships() -> None:
    jobs = [queued(1, "front"), queued(2, "back")]
    on = Weights(outcome=2.0)
    ranked = rank(jobs, F1, T0, on, SKILLED)
    assert ranked[0][0].id == jobs[1].id  # f1 ships back-end work
    terms = dict(ranked[0][1].terms)
    assert terms["outcome"] > 0
    # Weight 0 (shadow): the same order as without a model, the term present and 0.
    plain = rank(jobs, F1, T0, DEFAULT_WEIGHTS)
    shadow = rank(jobs, F1, T0, DEFAULT_WEIGHTS, SKILLED)
    assert [j.id for j, _ in shadow] == [j.id for j, _ in plain]
    assert all(b.terms["outcome"] == 0 for _, b in shadow)
    assert all(b.total == p.total for (_, b), (_, p) in zip(shadow, plain, strict=True))
    # Nothing learned: no term at all.
    assert "outcome" not in rank(jobs, F1, T0, on, R.EMPTY)[0][1].terms


def test_routing_shadow_choice_notes_what_the_learned_ranking_would_put_first() -> None:
    jobs = [queued(1, "front"), queued(2, "back")]
    ranked = rank(jobs, F1, T0, DEFAULT_WEIGHTS, SKILLED)
    note = shadow_choice(jobs, ranked, F1, T0, DEFAULT_WEIGHTS, SKILLED)
    assert note is not None and note.job == jobs[1].id
    assert note.agrees is (ranked[0][0].id == jobs[1].id)
    assert shadow_choice(jobs, ranked, F1, T0, Weights(outcome=1.0), SKILLED) is None  # on
    assert shadow_choice(jobs, ranked, F1, T0, DEFAULT_WEIGHTS, R.EMPTY) is None  # unlearned


# --- kept by the metrics pass, read by the claim and explain ------------------------------


def submit(coord: Coordinator, persona: str) -> str:
    if not coord.list_profiles(P):
        coord.put_profile(P, persona, ProfileSpec(preamble="You write code."))
    job, _ = coord.submit(P, Manifest(title="t", body="x", persona=persona), "operator:o")
    return job.id


def ship_or_fail(coord: Coordinator, factory: str, shipped: bool) -> str:
    view = FactoryView(id=factory, capabilities=frozenset({"engine:demo"}))
    result = coord.claim(P, view, start=True)
    assert result is not None
    job = result.job
    outcome = {"engine": "demo", "durationSeconds": 30.123456, "costUsd": 0.123456789}
    stage = Stage.SHIPPED if shipped else Stage.FAILED
    coord.report(P, job.id, factory, job.epoch, stage=stage, result=outcome)
    return job.id


def test_routing_refresh_learns_from_runs_writes_only_on_change_and_claims_note_shadow(
    coord: Coordinator, stores: Stores, clock: ManualClock
) -> None:
    assert coord.routing(P).updatedAt is None and coord.learned(P).empty
    for _ in range(6):
        submit(coord, "dev")
    for n in range(6):
        clock.advance(1)
        ship_or_fail(coord, "good" if n % 2 == 0 else "poor", shipped=n % 2 == 0)
    stored = coord.refresh_routing(P)
    assert stored.updatedAt is not None and stored.jobs == 6
    good = stored.learned.estimate("persona:dev", "good", "demo")
    poor = stored.learned.estimate("persona:dev", "poor", "demo")
    assert good.rate > poor.rate and good.runs == poor.runs == 3
    with stores.counters.measure() as cost:
        again = coord.refresh_routing(P)
    assert again == stored and cost == {"query": 1, "read": 1}  # unchanged: nothing written
    # Claims in shadow mode (weight 0) now note what learned routing would have chosen.
    first = submit(coord, "dev")
    ship_or_fail(coord, "good", shipped=True)
    run = coord.get_job(P, first).runs[-1]
    assert run.learned is not None and run.learned.job == first and run.learned.agrees
    assert coord.refresh_routing(P).agreement == R.Agreement(claims=1, agreed=1)
    # With the weight on, claims rank by it and note nothing.
    coord.put_product_settings(P, weights={"outcome": 2.0})
    second = submit(coord, "dev")
    ship_or_fail(coord, "good", shipped=True)
    assert coord.get_job(P, second).runs[-1].learned is None


def test_routing_explain_shows_the_term_and_its_evidence(coord: Coordinator) -> None:
    for shipped in (True, True, False):
        submit(coord, "dev")
        ship_or_fail(coord, "good", shipped=shipped)
    coord.register_factory(P, FactoryView(id="good", capabilities=frozenset()), None)
    coord.refresh_routing(P)
    waiting = submit(coord, "dev")
    explained = coord.explain(P, waiting)
    assert explained["learnedRouting"] == {"weight": 0.0, "mode": "shadow", "learned": True}
    verdict = next(f for f in explained["factories"] if f["factory"] == "good")
    assert verdict["score"]["outcome"] == 0  # shadow: shown, not applied
    evidence = verdict["outcome"]
    assert evidence["kind"] == "persona:dev" and evidence["this"]["runs"] == 3


def test_routing_the_metrics_pass_keeps_the_model(stores: Stores, clock: ManualClock) -> None:
    context = context_for(Settings.from_env({"FLEET_STORE": "memory"}), stores, clock=clock)
    coord = context.coordinator
    submit(coord, "dev")
    ship_or_fail(coord, "good", shipped=True)
    metrics_pass(context, P)
    assert not coord.routing(P).learned.empty
