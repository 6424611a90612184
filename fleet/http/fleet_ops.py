"""The claim, the queue-state gate, factories, the product-wide event feed, metrics, demand,
learned routing's recommendations, alerts and settings. The replies' models are in
``fleet.http.fleet_views`` and ``fleet.http.factory_views``."""

from __future__ import annotations

import azure.functions as func

from fleet.coordinator.feed import EventFilter
from fleet.coordinator.service import KEEP
from fleet.domain.audit import redacted
from fleet.domain.demand import capability_set
from fleet.domain.fields import CAPABILITY, MAX_CAPABILITIES, MAX_CAPABILITY_CHARS
from fleet.domain.models import parse_ts
from fleet.domain.routing import MIN_RUNS_TO_RECOMMEND
from fleet.domain.scheduler import FactoryView
from fleet.errors import Problem, ValidationFailed
from fleet.http.factory_views import FactoryList, FactoryRecord
from fleet.http.fleet_views import (
    MIN_RATIO,
    Alerts,
    ClaimReply,
    DemandView,
    LearnedRouting,
    Metrics,
    ProductEvents,
    QueueState,
    Recommendations,
    Settings,
)
from fleet.http.operation import Call, Operations, Reply, json_body, query_param
from fleet.http.parsing import ClaimBody, FactorySelf, SettingsBody, body_model, int_param
from fleet.http.responses import reply

operations = Operations()


def _view(factory_id: str, body: FactorySelf) -> FactoryView:
    return FactoryView(
        id=factory_id,
        capabilities=frozenset(body.capabilities),
        seats=body.seats,
        load=body.load,
        cost=body.cost,
    )


@operations.route(
    "fleet/claim",
    "POST",
    caller="factory",
    id="claim",
    summary="Claim the best queued job for this factory",
    tag="fleet",
    description=(
        "403 when the capabilities exceed the factory's enrollment allowlist. "
        "`requestId` (the factory's own id for this claim, 8-64 of `A-Za-z0-9_-`) is "
        "stored in the lease. A factory whose claim reply was lost (a timeout, a dropped "
        "connection) re-sends the same `requestId` with `retry: true`: if that claim won "
        "a job that is still `assigned` (or `building`, when it claimed with `start`) to it "
        "under a current lease, the reply is that claim's again (same job, lease and epoch; "
        "no new event); otherwise a normal claim. `retry` without `requestId` is 400. With "
        "`start`, the job is assigned and started in the one write: it comes back "
        "`building`, and the factory sends no `building` report."
    ),
    body=json_body(
        ClaimBody,
        required=False,
        description="What the factory says about itself, and its id for this claim.",
    ),
    replies={
        200: Reply("The job is assigned to the caller.", ClaimReply),
        204: Reply("Nothing for this factory now."),
    },
    errors=(400,),
)
def claim(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """Claim the best queued job for this factory: 200 with job, lease and cadence, or 204.
    A retry (``retry`` with the lost claim's ``requestId``) answers again with the job that
    claim won, if it is still assigned to this factory under a current lease."""
    principal = call.principal
    body = body_model(req, ClaimBody, required=False)
    if body.retry and body.requestId is None:
        raise ValidationFailed(
            [Problem(path="requestId", code="missing", message="required when retry is true")],
            "a retried claim names the requestId of the claim it retries",
        )
    principal.check_capabilities(body.capabilities)
    result = call.context.coordinator.claim(
        principal.product,
        _view(principal.id, body),
        body.requestId,
        retry=body.retry,
        start=body.start,
    )
    if result is None:
        return func.HttpResponse(status_code=204)
    return reply(ClaimReply.of(result))


@operations.route(
    "fleet/queue-state",
    "GET",
    caller="gate",
    id="queueState",
    summary="The claim gate: one point read",
    tag="fleet",
    description=(
        "Skip the claim while `version` is unchanged, but claim at least every "
        "`maxSkipSeconds` anyway: the version is a hint, never a guarantee. To keep the "
        "idle poll one point read, an instance trusts a factory token it verified in the "
        "last 30 s without reading it again (so a revocation reaches this endpoint, and a "
        "holder's reports, renewals and heartbeats, within 30 s; a claim refuses a revoked "
        "token at once)."
    ),
    replies={200: Reply("The gate.", QueueState)},
)
def queue_state(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """The gate: one point read. Skip the claim while the version is unchanged, but claim
    at least every maxSkipSeconds anyway (the version is a hint, never a guarantee).

    Authenticated through the per-instance cache of verified tokens (caller ``gate``):
    a token verified here within the last 30 s costs no read, so the idle poll stays one
    point read. A revocation therefore reaches this endpoint within that time; every other
    endpoint reads the token and refuses it on the next request."""
    principal = call.principal
    state = call.context.coordinator.queue_state(principal.product)
    return reply(QueueState.model_construct(**state))


@operations.route(
    "fleet/factories/register",
    "POST",
    caller="factory",
    id="registerFactory",
    summary="Record what a factory says about itself",
    tag="fleet",
    description=(
        "The factory is the one its token names. 403 when the capabilities exceed its "
        "enrollment allowlist."
    ),
    body=json_body(FactorySelf, required=False),
    replies={200: Reply("The factory as recorded.", FactoryRecord)},
    errors=(400,),
)
def register_factory(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """The factory named by its token records what it says about itself."""
    principal = call.principal
    body = body_model(req, FactorySelf, required=False)
    principal.check_capabilities(body.capabilities)
    factory = call.context.coordinator.register_factory(
        principal.product, _view(principal.id, body), body.version
    )
    return reply(FactoryRecord.of(factory))


@operations.route(
    "fleet/factories",
    "GET",
    caller="any",
    id="listFactories",
    summary="The product's factories",
    tag="fleet",
    description=(
        "With an operator token each factory carries `heartbeat`: its last heartbeat in "
        "brief (age, load, seats, held jobs with their idle seconds, pending commands), "
        "or null. The whole list costs one query and two table queries, whatever the "
        "fleet's size; `GET /api/fleet/factories/{id}/heartbeat` has the full record."
    ),
    replies={200: Reply("The factories, by id.", FactoryList)},
)
def list_factories(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """The product's factories. An operator also gets each one's last heartbeat in brief
    (``heartbeat``, null when none): one query and two table queries for the whole fleet,
    however large (the per-factory heartbeat endpoint stays for the full detail)."""
    principal = call.principal
    coord = call.context.coordinator
    known = coord.factories(principal.product)
    live = {v.id: v.live for v in coord.factory_views(principal.product, known)}
    beats = (
        call.context.health.heartbeat_summaries(principal.product)
        if principal.kind == "operator"
        else None
    )
    return reply(FactoryList.of(known, live, beats))


@operations.route(
    "fleet/events",
    "GET",
    caller="operator",
    id="productEvents",
    summary="The product's event log: jobs' transitions, fleet operations, alerts",
    tag="fleet",
    description=(
        "Oldest first after `after` (follow `cursor` for live views), or, with `before` "
        "(empty: now), the newest events older than it, newest first (pass `cursor` back as "
        "`before` for the next page; `more` says whether older ones may follow). Fleet events "
        "(`fleet: true`) have an actor and a reason: enrollment, tokens, registration, "
        "commands queued and acknowledged, live/stale/down, budgets, settings, channels, "
        "profiles, tracker bindings. Filters: `type`, `factory`, `job`, `operator`."
    ),
    params=(
        query_param("after", "The `cursor` of the previous page.", {"type": "string"}),
        query_param(
            "before",
            "Newest first: events older than this cursor (empty: now).",
            {"type": "string"},
        ),
        query_param(
            "limit",
            "At most this many events (larger values are capped at 500).",
            {"type": "integer", "minimum": 1, "default": 200},
        ),
        query_param("type", "Only these event types (comma-separated).", {"type": "string"}),
        query_param(
            "factory",
            "Only this factory's events and those of the jobs it held.",
            {"type": "string"},
        ),
        query_param("job", "Only this job's events.", {"type": "string"}),
        query_param(
            "operator",
            "Only what this actor did (`operator:NAME`; a bare name is an operator's).",
            {"type": "string"},
        ),
    ),
    replies={200: Reply("The events and the cursor to pass back.", ProductEvents)},
    errors=(400,),
)
def product_events(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """The product's event log, oldest first after a cursor (live views) or newest first
    before one (the log's pages). Operators only: a factory reads the history of the jobs
    it holds, not everyone's."""
    principal = call.principal
    limit = min(500, int_param(req, "limit", 200, minimum=1))
    only = _event_filter(req)
    coord = call.context.coordinator
    if "before" in req.params:
        if req.params.get("after"):
            raise ValidationFailed.one("before", "exclusive", "give `after` or `before`, not both")
        events, cursor, more = coord.product_events_before(
            principal.product, req.params.get("before") or None, limit, only=only
        )
    else:
        events, cursor = coord.product_events(
            principal.product, req.params.get("after"), limit, only=only
        )
        more = None
    if not principal.may("admin"):  # tokens' particulars are the admins' (as their lists)
        events = [redacted(item) for item in events]
    return reply(ProductEvents.of(events, cursor, more))


_FILTER_CHARS = 200


def _event_filter(req: func.HttpRequest) -> EventFilter | None:
    """The log's filters from the query (each bounded; none given: None)."""
    given = {}
    for name in ("type", "factory", "job", "operator"):
        value = (req.params.get(name) or "").strip()
        if len(value) > _FILTER_CHARS:
            raise ValidationFailed.one(name, "too_long", f"at most {_FILTER_CHARS} characters")
        if value:
            given[name] = value
    if not given:
        return None
    types = given.get("type")
    return EventFilter(
        types=frozenset(t.strip() for t in types.split(",") if t.strip()) if types else None,
        factory=given.get("factory"),
        job=given.get("job"),
        actor=given.get("operator"),
    )


@operations.route(
    "fleet/metrics",
    "GET",
    caller="any",
    id="metrics",
    summary="Utilization, queue depth, starvation, stale factories, stalled and unroutable jobs, "
    "spend vs ceiling",
    tag="fleet",
    description=(
        "Written by the metrics timer (`METRICS_SCHEDULE`); this is one point read (`routing`'s "
        "mode and weight come from the product's settings, cached)."
    ),
    replies={200: Reply("The metrics.", Metrics)},
)
def metrics(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """The metrics the metrics timer stored: one point read (the settings are cached)."""
    product = call.principal.product
    coord = call.context.coordinator
    stored = coord.metrics(product)
    routing = LearnedRouting.of(stored.get("routing"), coord.weights(product).outcome)
    return reply(Metrics.model_validate({**stored, "routing": routing}))


@operations.route(
    "fleet/recommendations",
    "GET",
    caller="operator",
    role="viewer",
    id="recommendations",
    summary="What the product's runs say about who ships which kind of job, in plain sentences",
    tag="fleet",
    description=(
        "For each kind of job (its persona, else its required capabilities) where two "
        f"factory and engine pairs have {MIN_RUNS_TO_RECOMMEND} runs or more: the best "
        "against the worst by the learned term (success, speed and cost, as routing weighs "
        f"them), when the best ships at least {MIN_RATIO:g}x as often, with their shrunk "
        "success rates, median durations and costs. Also whether the learned "
        "term applies (`mode`: `shadow` while `weights.outcome` is 0, else `on`) and how "
        "often the learned ranking agreed with the claim's in shadow mode; `sentences` says "
        "it in plain sentences. Kept by the metrics pass (at most one `METRICS_SCHEDULE` "
        "period behind); this is one point read (the settings are cached). It never changes "
        "routing."
    ),
    replies={200: Reply("The recommendations.", Recommendations)},
)
def recommendations(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """What learned routing says about the product's factories, as the metrics pass last kept
    it: one point read. Read only: nothing here changes routing."""
    product = call.principal.product
    coord = call.context.coordinator
    return reply(Recommendations.of(coord.routing(product), coord.weights(product).outcome))


@operations.route(
    "fleet/demand",
    "GET",
    caller="demand",
    role="viewer",
    id="demand",
    summary="What the product's queued and running work asks of the fleet, by capability set",
    tag="fleet",
    description=(
        "For each capability set queued or running jobs require: jobs queued, routable now, "
        "the oldest one's wait, jobs running, and the live seats that could serve it; and "
        "their totals. Kept by the reaper's pass (at most one `REAPER_SCHEDULE` period "
        "behind); this is one point read. What an autoscaler polls: with `capabilities`, "
        "only that set (its figures are then the totals: 0 when nothing requires it), so a "
        "scale rule reads one number (`routable`). An operator (a viewer at least) or the "
        "product's scaler token may call it; a warm poll with either is this one read."
    ),
    params=(
        query_param(
            "capabilities",
            "Only the set of exactly these capabilities, comma-separated (empty: the set of "
            "jobs that require none).",
            {"type": "string", "maxLength": MAX_CAPABILITIES * (MAX_CAPABILITY_CHARS + 1)},
        ),
    ),
    replies={200: Reply("The demand.", DemandView)},
    errors=(400,),
)
def demand(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """The product's demand as the reaper's pass last kept it: one point read."""
    only = _capability_set_param(req)
    coord = call.context.coordinator
    kept = coord.demand(call.principal.product)
    now = coord.clock.now()
    sets = [s for s in kept.sets if only is None or s.capabilities == only]

    def waited(at: str | None) -> float | None:
        return None if at is None else round((now - parse_ts(at)).total_seconds(), 3)

    view = {
        "product": kept.product,
        "sets": [{**s.as_dict(), "oldestQueuedSeconds": waited(s.oldestQueuedAt)} for s in sets],
        "queued": sum(s.queued for s in sets),
        "routable": sum(s.routable for s in sets),
        "running": sum(s.running for s in sets),
        "updatedAt": kept.updatedAt,
        "truncated": kept.truncated,
    }
    return reply(DemandView.model_validate(view))


def _capability_set_param(req: func.HttpRequest) -> tuple[str, ...] | None:
    """``?capabilities=a,b`` as a capability set (sorted, deduplicated); None when absent."""
    raw = req.params.get("capabilities")
    if raw is None:
        return None
    names = [n.strip() for n in raw.split(",") if n.strip()]
    bad = [n for n in names if len(n) > MAX_CAPABILITY_CHARS or not CAPABILITY.fullmatch(n)]
    if bad or len(names) > MAX_CAPABILITIES:
        message = (
            f"at most {MAX_CAPABILITIES} capabilities"
            if not bad
            else f"not a capability: {bad[0][:MAX_CAPABILITY_CHARS]!r}"
        )
        raise ValidationFailed(
            [Problem(path="capabilities", code="invalid_capabilities", message=message)],
            f"capabilities: {message}",
        )
    return capability_set(names)


@operations.route(
    "fleet/alerts",
    "GET",
    caller="any",
    id="alerts",
    summary="Active alerts and the recent raise/clear events",
    tag="fleet",
    description=(
        "Alerts are evaluated by the metrics timer against the product's rules "
        "(`alerts` in `/api/fleet/settings`); each raise and clear is also an event in "
        "`/api/fleet/events` and, if `ALERT_WEBHOOK_URL` is set, POSTed there signed."
    ),
    params=(
        query_param(
            "history",
            "At most this many recent events, newest first (at most 100).",
            {"type": "integer", "minimum": 0, "default": 50},
        ),
    ),
    replies={200: Reply("The alerts.", Alerts)},
    errors=(400,),
)
def alerts(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """Active alerts and the recent raise/clear events, and where the alert webhook stands."""
    principal = call.principal
    history = min(100, int_param(req, "history", 50, minimum=0))
    alerts = call.context.monitor.alerts(principal.product, history)
    if principal.kind != "operator":  # where the webhook stands is the operators' to see
        alerts["webhook"] = None
    return reply(Alerts.model_validate(alerts))


@operations.route(
    "fleet/settings",
    "GET",
    caller="any",
    id="getSettings",
    summary="The product's scheduler weights, preemption rule and alert rules",
    tag="fleet",
    replies={200: Reply("The settings in force.", Settings)},
)
def get_settings(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """The product's scheduler weights, preemption rule, alert rules and default attempt
    timeout."""
    principal = call.principal
    settings = call.context.coordinator.product_settings(principal.product)
    return reply(Settings.model_validate(settings))


@operations.route(
    "fleet/settings",
    "PUT",
    caller="operator",
    id="putSettings",
    role="admin",
    summary="Change the product's scheduler weights, preemption and alert rules (omitted ones "
    "are kept)",
    tag="operator",
    description="Instances pick up a change within 30 seconds (they cache settings).",
    body=json_body(SettingsBody),
    replies={200: Reply("The settings now in force.", Settings)},
    errors=(400,),
)
def put_settings(req: func.HttpRequest, call: Call) -> func.HttpResponse:
    """Change the product's scheduler weights, preemption and alert rules and default attempt
    timeout (omitted ones are kept)."""
    principal = call.principal
    body = body_model(req, SettingsBody)
    weights = body.weights.model_dump(exclude_none=True) if body.weights else None
    preemption = body.preemption.model_dump(exclude_none=True) if body.preemption else None
    alerts = body.alerts.model_dump(exclude_none=True) if body.alerts else None
    # Omitted: kept; null: the product has no default attempt timeout.
    timeout = body.timeoutSeconds if "timeoutSeconds" in body.model_fields_set else KEEP
    settings = call.context.coordinator.put_product_settings(
        principal.product, weights, preemption, alerts, timeout, principal.actor
    )
    return reply(Settings.model_validate(settings))
