"""Learned routing's recommendations (``GET /api/fleet/recommendations``) and its brief in the
metrics reply (``routing``), on the in-memory twin: the routing document is kept from real
claims and reports by the metrics pass (``Coordinator.refresh_routing``), each reply reads it
once, says it in plain sentences, and is for operators only."""

from __future__ import annotations

from typing import Any

from fleet.context import AppContext
from fleet.coordinator import Coordinator
from fleet.coordinator.clock import ManualClock
from fleet.coordinator.tokens import Tokens
from fleet.domain.manifest import Manifest
from fleet.domain.models import format_ts
from fleet.domain.profiles import ProfileSpec
from fleet.domain.routing import recommendations
from fleet.domain.scheduler import FactoryView
from fleet.domain.stages import Stage
from fleet.http.parsing import FactorySelf
from fleet.store.ports import Stores
from tests.support.handlers import OPERATOR, call, documented, tick

P = "prod"
ACTOR = "operator:test"
MAC = FactoryView(id="mac-2", capabilities=frozenset({"engine:claude"}))
LINUX = FactoryView(id="linux-3", capabilities=frozenset({"engine:codex"}))
NOTHING_YET = "Nothing learned yet: the metrics pass has not read this product's runs."


def submit(coord: Coordinator, persona: str = "backend-dev", **fields: Any) -> None:
    if not any(p.name == persona for p in coord.list_profiles(P)):
        coord.put_profile(P, persona, ProfileSpec(preamble="You write code."))
    coord.submit(P, Manifest(title=persona, body="x", persona=persona, **fields), "operator:o")


def run(coord: Coordinator, clock: ManualClock, factory: FactoryView, shipped: bool) -> None:
    """The best queued job, claimed by ``factory`` and reported shipped or failed: one closed
    run, with its engine, duration (10 minutes on claude, 15 on codex) and cost."""
    engine = next(iter(factory.capabilities)).removeprefix("engine:")
    claimed = coord.claim(P, factory, start=True)
    assert claimed is not None
    seconds = 600 if engine == "claude" else 900
    clock.advance(seconds)
    result = {"engine": engine, "durationSeconds": float(seconds), "costUsd": 0.5}
    stage = Stage.SHIPPED if shipped else Stage.FAILED
    coord.report(P, claimed.job.id, factory.id, claimed.job.epoch, stage=stage, result=result)


def learn_from_runs(coord: Coordinator, clock: ManualClock) -> None:
    """mac-2 (claude) ships 8 backend-dev jobs of 8, linux-3 (codex) 2 of 8; the metrics pass
    learns from them. Then two claims in shadow mode: mac-2 takes the only queued job (the
    learned ranking agrees), and a frontend job of higher priority over a backend-dev one
    (the learned ranking would have taken the backend-dev job: it disagrees)."""
    for n in range(8):
        for factory, shipped in ((MAC, True), (LINUX, n < 2)):
            submit(coord)
            run(coord, clock, factory, shipped)
    coord.refresh_routing(P)
    submit(coord)
    run(coord, clock, MAC, shipped=True)
    submit(coord)
    submit(coord, "frontend", priority=6)
    claimed = coord.claim(P, MAC, start=True)
    assert claimed is not None and claimed.job.persona == "frontend"


def recommend(context: AppContext, token: str | None = OPERATOR, **kw: Any) -> Any:
    product = kw.pop("product", P if token == OPERATOR else None)
    return call(context, "recommendations", token=token, product=product, **kw)


def test_recommendations_name_the_best_and_worst_pair_of_a_kind_and_the_shadow_agreement(
    app_context: AppContext, coord: Coordinator, clock: ManualClock
) -> None:
    learn_from_runs(coord, clock)
    tick(app_context, "metrics_timer")  # the metrics pass keeps the routing document
    kept = coord.routing(P)
    status, body, _ = recommend(app_context)
    assert status == 200
    documented(body, "Recommendations")
    sentence = (
        "backend-dev jobs: engine:claude on mac-2 ships 2.2x as often as engine:codex on "
        "linux-3, in 1.3x less time, 17 runs"
    )
    assert body == {
        "product": P,
        "mode": "shadow",
        "weight": 0.0,
        "agreement": {"claims": 2, "agreed": 1, "rate": 0.5},
        "learnedAt": kept.updatedAt,
        "jobs": 18,  # 17 closed runs and the frontend job under way
        "recommendations": [
            {
                "kind": "persona:backend-dev",
                "sentence": sentence,
                "best": {
                    "factory": "mac-2",
                    "engine": "claude",
                    "rate": body["recommendations"][0]["best"]["rate"],
                    "medianSeconds": body["recommendations"][0]["best"]["medianSeconds"],
                    "medianCostUsd": 0.5,
                    "runs": 9,
                },
                "worst": {
                    "factory": "linux-3",
                    "engine": "codex",
                    "rate": body["recommendations"][0]["worst"]["rate"],
                    "medianSeconds": body["recommendations"][0]["worst"]["medianSeconds"],
                    "medianCostUsd": 0.5,
                    "runs": 8,
                },
                "ratio": body["recommendations"][0]["ratio"],
                "runs": 17,
            }
        ],
        "sentences": [
            sentence,
            "Shadow mode: the learned ranking agreed with today's on 1 of 2 claims (50%). "
            "Set weights.outcome above 0 to apply it.",
        ],
    }
    # The figures are the model's own, shrunk toward the kind's fleet average.
    (expected,) = recommendations(kept.learned)
    assert body["recommendations"] == [expected.as_dict()]
    best, worst = body["recommendations"][0]["best"], body["recommendations"][0]["worst"]
    assert 8 / 8 > best["rate"] > worst["rate"] > 2 / 8
    assert 600 <= best["medianSeconds"] < worst["medianSeconds"] < 900


def test_recommendations_reply_is_one_point_read_once_the_settings_are_cached(
    app_context: AppContext, coord: Coordinator, clock: ManualClock, stores: Stores
) -> None:
    submit(coord)
    run(coord, clock, MAC, shipped=True)
    coord.refresh_routing(P)
    clock.advance(3600)  # past every cache
    with stores.counters.measure() as cold:
        assert recommend(app_context).status == 200
    with stores.counters.measure() as warm:
        assert recommend(app_context).body["recommendations"] == []
    # The routing document, and the product's settings the first time (a bootstrap operator
    # needs no read); then the routing document alone. Nothing written: it never changes
    # routing.
    assert cold == {"read": 2} and warm == {"read": 1}


def test_recommendations_say_so_when_nothing_is_learned_yet(
    app_context: AppContext, coord: Coordinator, clock: ManualClock
) -> None:
    status, body, _ = recommend(app_context)
    assert status == 200
    documented(body, "Recommendations")
    assert body == {
        "product": P,
        "mode": "shadow",
        "weight": 0.0,
        "agreement": {"claims": 0, "agreed": 0, "rate": None},
        "learnedAt": None,
        "jobs": 0,
        "recommendations": [],
        "sentences": [NOTHING_YET],
    }
    coord.refresh_routing(P)
    assert recommend(app_context).body["sentences"] == [
        "Nothing learned yet: no job of this product has run."
    ]
    # A run still under way says nothing yet.
    submit(coord)
    assert coord.claim(P, MAC, start=True) is not None
    learned_at = format_ts(clock.now())
    coord.refresh_routing(P)
    body = recommend(app_context).body
    assert body["jobs"] == 1 and body["learnedAt"] == learned_at
    assert body["sentences"] == [
        "Nothing learned yet: no run of the 1 job the metrics pass read has shipped or failed "
        "on a factory."
    ]


def test_recommendations_without_enough_runs_to_compare_say_why(
    app_context: AppContext, coord: Coordinator, clock: ManualClock
) -> None:
    for factory in (MAC, LINUX, MAC):
        submit(coord)
        run(coord, clock, factory, shipped=factory is MAC)
    coord.refresh_routing(P)
    body = recommend(app_context).body
    assert body["recommendations"] == []
    assert body["sentences"] == [
        "No recommendation yet: over 3 runs of 3 jobs, no kind of job has two factory and "
        "engine pairs of 5 runs or more, one shipping 1.2x as often as the other."
    ]


def test_recommendations_with_the_weight_on_say_the_term_applies(
    app_context: AppContext, coord: Coordinator, clock: ManualClock
) -> None:
    coord.put_product_settings(P, weights={"outcome": 2.0})
    assert recommend(app_context).body["sentences"] == [
        NOTHING_YET,
        "Learned routing is on: weights.outcome (2) times the learned term is added to each "
        "job's score when a factory claims.",
    ]
    coord.put_product_settings(P, weights={"outcome": 0.0})
    learn_from_runs(coord, clock)
    coord.refresh_routing(P)
    coord.put_product_settings(P, weights={"outcome": 2.5})
    status, body, _ = recommend(app_context)
    assert status == 200 and (body["mode"], body["weight"]) == ("on", 2.5)
    assert body["sentences"][-1] == (
        "Learned routing is on: weights.outcome (2.5) times the learned term is added to each "
        "job's score when a factory claims; before, in shadow mode, the learned ranking agreed "
        "with the ranking without it on 1 of 2 claims (50%)."
    )


def test_recommendations_ignore_query_parameters_as_demand_does(
    app_context: AppContext, coord: Coordinator, clock: ManualClock
) -> None:
    learn_from_runs(coord, clock)
    coord.refresh_routing(P)
    plain = recommend(app_context)
    asked = recommend(app_context, params={"kind": "persona:frontend", "limit": "x" * 300})
    assert plain.status == asked.status == 200 and asked.body == plain.body


def test_recommendations_are_for_operators_from_viewers_up(
    app_context: AppContext, tokens: Tokens
) -> None:
    viewer = tokens.create_operator_token("vera", "viewer", [P], ACTOR).token
    assert recommend(app_context, viewer, product=P).status == 200
    assert recommend(app_context, viewer, product="other").status == 403  # not its product
    assert recommend(app_context, None, product=P).status == 401
    assert recommend(app_context, "flo_" + "x" * 43, product=P).status == 401
    scaler = tokens.create_scaler_token(P, "keda", ACTOR).token
    refused = recommend(app_context, scaler)
    assert refused.status == 403 and refused.body["error"] == "forbidden"
    enrollment = tokens.create_enrollment_token(P, ACTOR).token
    factory = tokens.enroll(enrollment, "f1", FactorySelf(capabilities=("python",))).token
    assert recommend(app_context, factory).status == 403


# --- the metrics reply's brief --------------------------------------------------------------


def test_recommendations_brief_in_the_metrics_reply_costs_no_more_read(
    app_context: AppContext, coord: Coordinator, clock: ManualClock, stores: Stores
) -> None:
    status, metrics, _ = call(app_context, "metrics", token=OPERATOR, product=P)
    assert status == 200
    documented(metrics, "Metrics")
    assert metrics["routing"] == {
        "mode": "shadow",
        "weight": 0.0,
        "agreement": {"claims": 0, "agreed": 0, "rate": None},
        "learnedAt": None,
    }
    learn_from_runs(coord, clock)
    tick(app_context, "metrics_timer")
    coord.put_product_settings(P, weights={"outcome": 1.5})
    with stores.counters.measure() as cost:
        status, metrics, _ = call(app_context, "metrics", token=OPERATOR, product=P)
    # The brief is stored with the metrics; the weight comes from the cached settings.
    assert status == 200 and cost == {"read": 1}
    documented(metrics, "Metrics")
    assert metrics["routing"] == {
        "mode": "on",
        "weight": 1.5,
        "agreement": {"claims": 2, "agreed": 1, "rate": 0.5},
        "learnedAt": coord.routing(P).updatedAt,
    }
