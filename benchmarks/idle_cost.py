"""Idle cost: what an idle fleet costs, measured on the real local stack.

    make bench                                   # a fresh stack on free ports, then stopped
    .venv/bin/python -m benchmarks.idle_cost --help

Four measurements in one run (benchmarks/README.md explains each figure and the cost model):

1. **Store calls per request** on the idle path. The host runs in another process, so its
   ``StoreCounters`` are out of reach; the same code runs in-process instead: the real
   handler functions of ``function_app.app``, routed like the local host routes them, called
   with real ``func.HttpRequest``s carrying a factory's bearer token, over the Azure adapters
   pointed at the stack's Cosmos emulator and Azurite (``context_for(settings,
   azure_stores(settings))``). The gate poll is measured cold (the token's first poll on an
   instance: its token cache is empty) and warm (every later poll).
2. **An idle fleet on a virtual clock.** F factories run the idle loop (gate poll every
   ``--poll-seconds``; a claim when the gate's version moved or ``maxSkipSeconds`` passed;
   a heartbeat at the cadence the heartbeat reply names), and the timers (reaper, healer,
   metrics) run on their schedules, against the same stores, with a ``ManualClock`` driving
   the coordinator: every cache expiry (the gate's token cache, the factory-standing and
   settings caches) happens as it would in real time. Every store call is counted and
   attributed to the request or timer that made it. F = 1, 10, 100 by default.
3. **Latency of real HTTP gate polls** against the host (p50/p99, cold and warm).
4. **The same measurements on the in-memory twins**, in the same run, and the ratios.

The figures then go through a documented cost model (``CostModel``): RU and table
transactions per idle factory-hour, and USD per month for fleets of 10, 100 and 1000. The
emulator's own request-charge header is never used (it is a constant, not a measurement).

Every process this starts is stopped before it returns (``LocalStack.stop``), also on
Ctrl-C. ``--external`` measures an already-running stack instead (ports from the
``FLEET_*_PORT`` variables, its operator token from ``FLEET_OPERATOR_TOKEN``).
"""

from __future__ import annotations

import argparse
import functools
import heapq
import json
import math
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import azure.functions as func
import requests

from benchmarks.common import (
    RESULTS,
    SELF,
    Api,
    BenchError,
    HttpApi,
    Latency,
    Target,
    add_common_arguments,
    enroll,
    fmt_calls,
    fmt_ratio,
    headers_for,
    ok,
    positive_sizes,
    ratio,
    run_standalone,
    submit,
    table,
)
from devtools.host import AppIndex, HttpFunction, TimerRunner, index_app
from fleet.context import AppContext, context_for
from fleet.coordinator.clock import ManualClock, SystemClock
from fleet.errors import NotFound
from fleet.settings import Settings, local_stack_env
from fleet.store.memory import memory_stores
from fleet.store.ports import Stores

DEFAULT_OUT = RESULTS / "idle_cost.json"


# --------------------------------------------------------------------------- cost model


@dataclass(frozen=True)
class CostModel:
    """Unit costs. Only ``read_ru`` is documented by Microsoft (a point read of a 1 KB item is
    1 RU); every other constant is a stated assumption. Sources: benchmarks/README.md."""

    read_ru: float = 1.0  # point read of an item up to 1 KB (documented)
    query_ru: float = 2.8  # one single-partition query page: the minimum charge (assumption)
    write_ru: float = 6.0  # create/replace/upsert/delete of a <= 1 KB item (assumption)
    patch_ru: float = 6.0  # partial update of a <= 1 KB item (assumption)
    usd_per_million_ru: float = 0.25  # Cosmos DB serverless (assumption: list price)
    usd_per_10k_table_tx: float = 0.00036  # Table Storage transactions (assumption)
    usd_per_million_executions: float = 0.20  # Functions consumption plan (assumption)
    hours_per_month: float = 730.0

    def ru(self, calls: Mapping[str, float]) -> float:
        return (
            calls.get("read", 0) * self.read_ru
            + calls.get("query", 0) * self.query_ru
            + calls.get("write", 0) * self.write_ru
            + calls.get("patch", 0) * self.patch_ru
        )

    @staticmethod
    def table_tx(calls: Mapping[str, float]) -> float:
        return sum(calls.get(k, 0) for k in ("table_read", "table_query", "table_write"))

    def cosmos_usd(self, ru: float) -> float:
        return ru * self.usd_per_million_ru / 1e6

    def table_usd(self, tx: float) -> float:
        return tx * self.usd_per_10k_table_tx / 1e4

    def executions_usd(self, executions: float) -> float:
        return executions * self.usd_per_million_executions / 1e6


@dataclass(frozen=True)
class IdleLoop:
    """What an idle factory does: poll the gate every ``poll_seconds``; claim when the gate
    rule says so (``maxSkipSeconds`` from the gate's reply); heartbeat at the cadence the
    heartbeat's reply names. ``*_source`` says where each came from."""

    poll_seconds: float = 5.0
    poll_source: str = "assumption (no factory CLI default found)"
    gate_source: str = "built-in rule (factory_cli.gate not found)"


class GateRule(Protocol):
    """When an idle poll turns into a claim (``factory_cli.gate.Gate`` has this shape)."""

    def should_claim(self, version: int, now: float) -> bool: ...

    def claimed(
        self, *, found: bool, version: int | None, now: float, max_skip: float, u: float
    ) -> None: ...


class PlainGate:
    """The documented rule without jitter: claim when the version moved since the last
    empty claim, or when ``maxSkipSeconds`` passed since the last claim."""

    def __init__(self) -> None:
        self.empty_version: int | None = None
        self.forced_at = 0.0
        self.version: int | None = None

    def should_claim(self, version: int, now: float) -> bool:
        self.version = version
        return self.empty_version is None or version != self.empty_version or now >= self.forced_at

    def claimed(
        self, *, found: bool, version: int | None, now: float, max_skip: float, u: float
    ) -> None:
        self.forced_at = now + max_skip
        self.empty_version = None if found else (version if version is not None else self.version)


def cli_defaults() -> IdleLoop:
    """The factory CLI's own poll interval and gate rule when it has them (factory_cli is
    written alongside; until then the documented assumption)."""
    loop = IdleLoop()
    try:
        from factory_cli.config import Settings as CliSettings

        poll = float(CliSettings().poll_seconds)
        if poll > 0:
            loop = replace(loop, poll_seconds=poll, poll_source="factory_cli.config default")
    except (ImportError, AttributeError, TypeError, ValueError):
        pass
    if _cli_gate_class() is not None:
        loop = replace(loop, gate_source="factory_cli.gate.Gate (forced claims jittered)")
    return loop


def _cli_gate_class() -> Callable[[], GateRule] | None:
    try:
        from factory_cli.gate import Gate
    except ImportError:
        return None
    if not all(hasattr(Gate, m) for m in ("should_claim", "claimed")):
        return None
    return Gate


def new_gate() -> GateRule:
    make = _cli_gate_class()
    return make() if make is not None else PlainGate()


@dataclass(frozen=True)
class Call:
    status: int
    body: Any
    cost: dict[str, int]  # store calls made while the handler ran, by kind
    seconds: float


class InProcess:
    """The handlers of the production app (``function_app.build_app``) built over
    ``context``, routed like the local host routes them, called with real
    ``func.HttpRequest``s; each call's store calls are counted. Not thread-safe: the counters
    see every thread of the process."""

    def __init__(self, context: AppContext) -> None:
        self.context = context
        self.index = app_index(context=context)

    def _route(self, method: str, path: str) -> tuple[HttpFunction, dict[str, str]]:
        for function in self.index.http:
            values = function.route.match(path)
            if values is not None and function.allows(method):
                return function, values
        raise BenchError(f"no function serves {method} {path}")

    def request(
        self,
        method: str,
        path: str,
        *,
        token: str,
        body: Any = None,
        product: str | None = None,
    ) -> Call:
        function, route_values = self._route(method, path.lstrip("/"))
        request = func.HttpRequest(
            method,
            f"http://127.0.0.1/api/{path.lstrip('/')}",
            headers=headers_for(token, product),
            params={},
            route_params=route_values,
            body=json.dumps(body).encode() if body is not None else b"",
        )
        counters = self.context.stores.counters
        with counters.measure() as cost:
            started = time.perf_counter()
            response = function.handler(request)
            seconds = time.perf_counter() - started
        raw = response.get_body()
        return Call(response.status_code, json.loads(raw) if raw else None, dict(cost), seconds)

    def call(
        self,
        method: str,
        path: str,
        *,
        token: str,
        body: Any = None,
        product: str | None = None,
    ) -> tuple[int, Any]:
        done = self.request(method, path, token=token, body=body, product=product)
        return done.status, done.body


def app_index(
    environ: Mapping[str, str] | None = None, *, context: AppContext | None = None
) -> AppIndex:
    """The app's function metadata, read the way the local host reads it. ``environ`` names
    the timer schedules (``REAPER_SCHEDULE`` ...). With ``context``, the handlers are the
    app's built over that context (an app of its own); without, ``function_app.app``'s."""
    env = {**local_stack_env(), **(environ or {})}
    if context is not None:
        from function_app import build_app

        return index_app(build_app(lambda: context), env)
    return _index(tuple(sorted(env.items())))


@functools.cache
def _index(environ: tuple[tuple[str, str], ...]) -> AppIndex:
    import function_app

    return index_app(function_app.app, dict(environ))


def prepare_product(api: Api, operator_token: str, product: str, factories: int) -> list[str]:
    """A product that has had work (one job, submitted then cancelled, so its queue-state
    document exists and its queue is empty) and ``factories`` enrolled factories."""
    job = submit(api, operator_token, product, "bench warm-up")
    status, body = api.call(
        "POST", f"fleet/jobs/{job['id']}/cancel", token=operator_token, product=product, body={}
    )
    ok(status, body, 200, "cancel the job")
    return [enroll(api, operator_token, product, f"idle-{i:04d}") for i in range(factories)]


# --------------------------------------------------------------------------- per request


@dataclass(frozen=True)
class GateCosts:
    """Store calls of the gate poll (``GET /api/fleet/queue-state``) on one instance."""

    cold: dict[str, int]  # the token's first poll on this instance
    warm: list[dict[str, int]]  # every later poll
    cold_seconds: float
    warm_seconds: list[float]

    @property
    def warm_distinct(self) -> list[dict[str, int]]:
        """The different warm costs seen, most frequent first."""
        seen = Counter(json.dumps(c, sort_keys=True) for c in self.warm)
        return [json.loads(key) for key, _ in seen.most_common()]


def gate_costs(context: AppContext, token: str, polls: int) -> GateCosts:
    """Poll the gate ``polls + 1`` times in-process with a factory token this instance has
    not seen yet: the first poll is the cold one. Fast enough (well under the token cache's
    30 s) that every later poll is warm."""
    probe = InProcess(context)
    cold = probe.request("GET", "fleet/queue-state", token=token)
    ok(cold.status, cold.body, 200, "gate poll")
    warm = [probe.request("GET", "fleet/queue-state", token=token) for _ in range(polls)]
    for done in warm:
        ok(done.status, done.body, 200, "gate poll")
    return GateCosts(
        cold=cold.cost,
        warm=[w.cost for w in warm],
        cold_seconds=cold.seconds,
        warm_seconds=[w.seconds for w in warm],
    )


def request_costs(context: AppContext, token: str) -> dict[str, dict[str, int]]:
    """Store calls of the other idle requests, each in its cold and warm form."""
    probe = InProcess(context)
    out: dict[str, dict[str, int]] = {}

    def run(name: str, method: str, path: str, body: Any, expected: int) -> None:
        done = probe.request(method, path, token=token, body=body)
        ok(done.status, done.body, expected, name)
        out[name] = done.cost

    claim = {k: v for k, v in SELF.items() if k != "version"}
    run("claim_idle_cold", "POST", "fleet/claim", claim, 204)
    run("claim_idle_warm", "POST", "fleet/claim", claim, 204)
    run("heartbeat_first", "POST", "fleet/factories/heartbeat", SELF, 200)
    run("heartbeat_steady", "POST", "fleet/factories/heartbeat", SELF, 200)
    return out


def item_sizes(stores: Stores, product: str, token: str, factory: str) -> dict[str, int | None]:
    """Bytes (JSON, as the store returns it) of each item the idle path point-reads: the cost
    model prices a point read at 1 RU, which holds for items up to 1 KB. None: absent (the
    read is a 404, still charged)."""
    from fleet.coordinator.service import QUEUE_STATE_ID, SETTINGS_ID, SYSTEM_PARTITION
    from fleet.coordinator.tokens import doc_id, hash_token

    wanted = {
        "queue-state": (product, QUEUE_STATE_ID),
        "factory token": (SYSTEM_PARTITION, doc_id(hash_token(token))),
        "factory": (product, f"factory-{factory}"),
        "product settings": (product, SETTINGS_ID),
    }
    sizes: dict[str, int | None] = {}
    for name, (partition, item) in wanted.items():
        try:
            doc = stores.documents.read(partition, item)
        except NotFound:
            sizes[name] = None
            continue
        sizes[name] = len(json.dumps(doc, separators=(",", ":")).encode())
    return sizes


# --------------------------------------------------------------------------- virtual clock


def context_with_clock(settings: Settings, stores: Stores, clock: ManualClock) -> AppContext:
    """``fleet.context.context_for``'s own wiring on ``clock``. The objects it built
    (coordinator, tokens, budgets, channel limits, ...) are walked: a real clock left behind
    is an error, not a silently real-time cache."""
    context = context_for(settings, stores, clock=clock)
    left = _find_clocks(context, seen=set(), depth=3)
    if left:
        raise BenchError(f"real clocks left in the context: {', '.join(left)}")
    return context


def _children(obj: object) -> list[tuple[str, object]]:
    fields = getattr(obj, "__dict__", None)
    if not isinstance(fields, dict):
        return []
    # Only the project's own objects: never into SDK clients or the stores' internals.
    return [(k, v) for k, v in fields.items() if type(v).__module__.startswith("fleet.")]


def _find_clocks(obj: object, *, seen: set[int], depth: int, path: str = "context") -> list[str]:
    if depth < 0 or id(obj) in seen:
        return []
    seen.add(id(obj))
    found = []
    for name, value in _children(obj):
        if isinstance(value, SystemClock):
            found.append(f"{path}.{name}")
        else:
            found += _find_clocks(value, seen=seen, depth=depth - 1, path=f"{path}.{name}")
    return found


def _add(into: dict[str, int], cost: Mapping[str, int]) -> None:
    for kind, n in cost.items():
        into[kind] = into.get(kind, 0) + n


@dataclass
class FleetRun:
    """What an idle fleet of ``fleet`` factories cost over ``window_seconds`` of virtual time
    (after a warm-up that is not counted)."""

    fleet: int
    window_seconds: float
    requests: dict[str, int] = field(default_factory=dict)  # gate / claim / heartbeat
    calls: dict[str, dict[str, int]] = field(default_factory=dict)  # per request kind
    claims: dict[str, int] = field(default_factory=dict)  # forced / version moved
    timer_ticks: dict[str, int] = field(default_factory=dict)
    timer_calls: dict[str, dict[str, int]] = field(default_factory=dict)  # this product's
    listing_calls: dict[str, int] = field(default_factory=dict)  # products(), per deployment
    gate_costs: dict[str, int] = field(default_factory=dict)  # each gate cost seen: how often
    seconds: float = 0.0  # wall time of the run

    def per_factory_hour(self) -> dict[str, float]:
        """Store calls of the factories' own requests, per factory-hour."""
        total: dict[str, int] = {}
        for cost in self.calls.values():
            _add(total, cost)
        scale = 3600.0 / self.window_seconds / self.fleet
        return {k: v * scale for k, v in sorted(total.items())}

    def requests_per_factory_hour(self) -> float:
        return sum(self.requests.values()) * 3600.0 / self.window_seconds / self.fleet

    def timers_per_hour(self) -> dict[str, float]:
        """Store calls of the timers' work on this product, plus the products listing each
        tick makes, per hour."""
        total: dict[str, int] = dict(self.listing_calls)
        for cost in self.timer_calls.values():
            _add(total, cost)
        scale = 3600.0 / self.window_seconds
        return {k: v * scale for k, v in sorted(total.items())}


def simulate_fleet(
    settings: Settings,
    stores: Stores,
    product: str,
    tokens: Sequence[str],
    loop: IdleLoop,
    *,
    warmup_seconds: float,
    window_seconds: float,
    index: AppIndex | None = None,
) -> FleetRun:
    """Run an idle fleet on a virtual clock; count what the window costs.

    Factories start spread evenly over one poll interval. At each poll the gate rule
    (``factory_cli.gate.Gate`` when present) decides whether a claim follows.
    Timer ticks follow the app's own schedules (``REAPER_SCHEDULE`` ...) and do their
    per-product work for this product only (a real tick lists every product first: that
    listing is counted apart, it is paid once per deployment, not per product)."""
    started = time.perf_counter()
    index = index or app_index(settings_env(settings))
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    context = context_with_clock(settings, stores, clock)
    probe = InProcess(context)
    coordinator = context.coordinator
    health = context.health
    origin = clock.now()
    run = FleetRun(fleet=len(tokens), window_seconds=window_seconds)
    end_ms = round((warmup_seconds + window_seconds) * 1000)
    warmup_ms = round(warmup_seconds * 1000)
    poll_ms = round(loop.poll_seconds * 1000)

    # (due in ms since origin, order, kind, factory index)
    queue: list[tuple[int, int, str, int]] = []
    order = 0

    def push(due_ms: int, kind: str, who: int) -> None:
        nonlocal order
        order += 1
        heapq.heappush(queue, (due_ms, order, kind, who))

    for i in range(len(tokens)):
        offset = i * poll_ms // len(tokens)
        push(offset, "poll", i)
        # Heartbeats run on their own timer in a factory: half a poll out of phase here, so
        # no beat and poll of one factory ever coincide (their order would then decide
        # whether the gate's token cache was refreshed just in time).
        push(offset + poll_ms // 2, "beat", i)
    timer_work: dict[str, Callable[[], Any]] = {
        "reaper_timer": lambda: coordinator.reap(product),
        "healer_timer": lambda: health.heal(product),
        "metrics_timer": lambda: coordinator.compute_metrics(product),
    }
    schedules = {t.name: t.schedule for t in index.timers if t.name in timer_work}
    if set(schedules) != set(timer_work):
        raise BenchError(f"timers not found in the app: {set(timer_work) - set(schedules)}")
    timer_names = sorted(schedules)

    def next_tick(name: str, after: datetime) -> int:
        due = TimerRunner.next_occurrence(schedules[name], after)
        return round((due - origin).total_seconds() * 1000)

    for n, name in enumerate(timer_names):
        push(next_tick(name, origin), "timer", n)

    gates = [new_gate() for _ in tokens]
    jitter = random.Random(20261123)  # the gate rule's jitter, reproducible
    version: dict[int, int | None] = dict.fromkeys(range(len(tokens)))
    now_ms = 0

    def count(what: str, cost: Mapping[str, int]) -> None:
        run.requests[what] = run.requests.get(what, 0) + 1
        _add(run.calls.setdefault(what, {}), cost)

    while queue and queue[0][0] < end_ms:
        due_ms, _, kind, who = heapq.heappop(queue)
        clock.advance((due_ms - now_ms) / 1000)
        now_ms = due_ms
        counted = due_ms >= warmup_ms
        if kind == "timer":
            name = timer_names[who]
            with stores.counters.measure() as listing:
                coordinator.products()
            with stores.counters.measure() as work:
                timer_work[name]()
            if counted:
                run.timer_ticks[name] = run.timer_ticks.get(name, 0) + 1
                _add(run.timer_calls.setdefault(name, {}), work)
                _add(run.listing_calls, listing)
            push(next_tick(name, clock.now()), "timer", who)
            continue
        token = tokens[who]
        if kind == "beat":
            done = probe.request("POST", "fleet/factories/heartbeat", token=token, body=SELF)
            reply = ok(done.status, done.body, 200, "heartbeat")
            if counted:
                count("heartbeat", done.cost)
            push(due_ms + int(reply["cadence"]["heartbeatSeconds"]) * 1000, "beat", who)
            continue
        done = probe.request("GET", "fleet/queue-state", token=token)
        gate = ok(done.status, done.body, 200, "gate poll")
        if counted:
            count("gate", done.cost)
            key = json.dumps(done.cost, sort_keys=True)
            run.gate_costs[key] = run.gate_costs.get(key, 0) + 1
        moved = version[who] is not None and gate["version"] != version[who]
        version[who] = gate["version"]
        now = due_ms / 1000
        if gates[who].should_claim(int(gate["version"]), now):
            claim = {k: v for k, v in SELF.items() if k != "version"}
            done = probe.request("POST", "fleet/claim", token=token, body=claim)
            ok(done.status, done.body, 204, "idle claim (nothing queued)")
            gates[who].claimed(
                found=False,
                version=int(gate["version"]),
                now=now,
                max_skip=float(gate["maxSkipSeconds"]),
                u=jitter.random(),
            )
            if counted:
                count("claim", done.cost)
                why = "version_moved" if moved else "forced"
                run.claims[why] = run.claims.get(why, 0) + 1
        push(due_ms + poll_ms, "poll", who)
    run.seconds = time.perf_counter() - started
    return run


def settings_env(settings: Settings) -> dict[str, str]:
    return dict(settings.schedules)


def http_gate_latency(api: str, cold_tokens: Sequence[str], polls: int) -> dict[str, Latency]:
    """Real gate polls against the host. ``cold``: the first poll of each token (the host
    has not verified it yet), over one keep-alive connection; ``warm``: ``polls`` more
    polls of one token over that connection (what a factory's ``requests.Session`` does);
    ``warm_new_connection``: as many, each on a new connection."""
    url = f"{api.rstrip('/')}/fleet/queue-state"

    def poll(session: requests.Session | None, token: str) -> float:
        headers = {"Authorization": f"Bearer {token}"}
        started = time.perf_counter()
        if session is None:
            response = requests.get(url, headers=headers, timeout=30)
        else:
            response = session.get(url, headers=headers, timeout=30)
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise BenchError(f"gate poll over HTTP: {response.status_code} {response.text}")
        return elapsed

    with requests.Session() as session:
        poll(session, cold_tokens[-1])  # open the connection: TCP setup is not the gate's
        cold = [poll(session, t) for t in cold_tokens[:-1]]
        warm = [poll(session, cold_tokens[0]) for _ in range(polls)]
    fresh = [poll(None, cold_tokens[0]) for _ in range(polls)]
    return {
        "cold": Latency.of(cold),
        "warm": Latency.of(warm),
        "warm_new_connection": Latency.of(fresh),
    }


# --------------------------------------------------------------------------- one backend


@dataclass
class BackendResult:
    name: str
    gate: GateCosts
    gate_cold_all: list[dict[str, int]]  # the cold poll of every enrolled token
    requests: dict[str, dict[str, int]]
    runs: list[FleetRun]
    sizes: dict[str, int | None]

    def in_process_latency(self) -> dict[str, Latency]:
        return {
            "cold": Latency.of([self.gate.cold_seconds]),
            "warm": Latency.of(self.gate.warm_seconds),
        }


def measure_backend(
    name: str,
    settings: Settings,
    stores: Stores,
    setup: Api,
    operator_token: str,
    *,
    fleets: Sequence[int],
    polls: int,
    loop: IdleLoop,
    warmup_seconds: float,
    window_seconds: float,
    tag: str,
    say: Callable[[str], None],
) -> tuple[BackendResult, list[str]]:
    """Every in-process measurement on one backend. ``setup`` makes the products (over HTTP
    for the stack, in-process for the twin). Returns the result and the tokens of the
    biggest product (their first polls on the host are its cold HTTP samples)."""
    index = app_index(settings_env(settings))
    products = {f: f"bench-{tag}-{name}-f{f}" for f in fleets}
    tokens: dict[int, list[str]] = {}
    for f, product in products.items():
        say(f"  {name}: product {product}: submit+cancel a job, enroll {f} factories")
        tokens[f] = prepare_product(setup, operator_token, product, f)
    probe_tokens = tokens[max(fleets)]

    say(f"  {name}: gate poll in-process, 1 cold + {polls} warm")
    gate = gate_costs(context_for(settings, stores), probe_tokens[0], polls)
    cold = InProcess(context_for(settings, stores))
    cold_all = [cold.request("GET", "fleet/queue-state", token=t).cost for t in probe_tokens[1:]]
    requests_cost = request_costs(context_for(settings, stores), probe_tokens[0])

    runs = []
    for f in fleets:
        say(
            f"  {name}: idle fleet of {f}, {warmup_seconds:.0f} s warm-up + "
            f"{window_seconds:.0f} s measured (virtual clock)"
        )
        run = simulate_fleet(
            settings,
            stores,
            products[f],
            tokens[f],
            loop,
            warmup_seconds=warmup_seconds,
            window_seconds=window_seconds,
            index=index,
        )
        say(f"    {sum(run.requests.values())} requests in {run.seconds:.1f} s wall time")
        runs.append(run)
    sizes = item_sizes(stores, products[max(fleets)], probe_tokens[0], "idle-0000")
    return BackendResult(name, gate, cold_all, requests_cost, runs, sizes), probe_tokens


# --------------------------------------------------------------------------- the model


def run_for(runs: Sequence[FleetRun], fleet: int) -> FleetRun:
    """The measured run that prices a fleet: the largest simulated fleet not larger than it
    (the smallest one if all are larger). Per-factory cost only falls as a fleet grows (the
    one thing factories share on an instance is the product's settings cache), so pricing a
    bigger fleet with a smaller run's per-factory figure errs high, never low."""
    fitting = [r for r in runs if r.fleet <= fleet]
    return max(fitting, key=lambda r: r.fleet) if fitting else min(runs, key=lambda r: r.fleet)


def timers_at(run: FleetRun, fleet: int, model: PageModel) -> dict[str, float]:
    """The timers' calls per product-hour at another fleet size. Two timer passes list the
    whole fleet: the healer (a factory query and a heartbeat table query per tick) and the
    metrics writer (a factory query per tick). Each listing costs one call per page, so a
    bigger fleet costs more pages. A lower bound: a page's RU also grows with the bytes it
    returns, which this model does not price."""
    calls = run.timers_per_hour()
    per_hour = 3600.0 / run.window_seconds
    healer = run.timer_ticks.get("healer_timer", 0) * per_hour
    metrics = run.timer_ticks.get("metrics_timer", 0) * per_hour
    query_pages = model.query_pages(fleet) - model.query_pages(run.fleet)
    table_pages = model.table_pages(fleet) - model.table_pages(run.fleet)
    calls["query"] = calls.get("query", 0.0) + query_pages * (healer + metrics)
    calls["table_query"] = calls.get("table_query", 0.0) + table_pages * healer
    return calls


@dataclass(frozen=True)
class PageModel:
    """Items per page of a listing (assumptions: Cosmos's default page size for a query,
    Table Storage's maximum entities per query response)."""

    query_items: int = 100
    table_entities: int = 1000

    def query_pages(self, items: int) -> int:
        return max(1, math.ceil(items / self.query_items))

    def table_pages(self, items: int) -> int:
        return max(1, math.ceil(items / self.table_entities))


@dataclass(frozen=True)
class FleetCost:
    fleet: int
    priced_from: int  # the simulated fleet whose per-factory figures price this one
    requests_per_hour: float
    ru_per_hour: float
    table_tx_per_hour: float
    timers_ru_per_hour: float
    timers_table_tx_per_hour: float
    usd_per_month: float  # Cosmos + Table Storage, factories and timers
    usd_per_factory_hour: float
    executions_usd_per_month: float  # Functions executions, reported apart


def fleet_costs(result: BackendResult, fleets: Sequence[int], model: CostModel) -> list[FleetCost]:
    out = []
    for fleet in fleets:
        run = run_for(result.runs, fleet)
        calls = {k: v * fleet for k, v in run.per_factory_hour().items()}
        ru = model.ru(calls)
        tx = model.table_tx(calls)
        timer_calls = timers_at(run, fleet, PageModel())
        timer_ru = model.ru(timer_calls)
        timer_tx = model.table_tx(timer_calls)
        requests_hour = fleet * run.requests_per_factory_hour()
        usd_hour = model.cosmos_usd(ru + timer_ru) + model.table_usd(tx + timer_tx)
        out.append(
            FleetCost(
                fleet=fleet,
                priced_from=run.fleet,
                requests_per_hour=requests_hour,
                ru_per_hour=ru,
                table_tx_per_hour=tx,
                timers_ru_per_hour=timer_ru,
                timers_table_tx_per_hour=timer_tx,
                usd_per_month=usd_hour * model.hours_per_month,
                usd_per_factory_hour=usd_hour / fleet,
                executions_usd_per_month=model.executions_usd(requests_hour)
                * model.hours_per_month,
            )
        )
    return out


def report(
    results: Mapping[str, BackendResult],
    http: Mapping[str, Latency],
    costs: Mapping[str, list[FleetCost]],
    model: CostModel,
    loop: IdleLoop,
    info: Mapping[str, Any],
) -> str:
    azure, memory = results["azure"], results["memory"]
    lines = [
        "",
        f"agent-fleet idle cost - {info['date']} - {info['nproc']} cores, "
        f"Python {info['python']}, commit {info['commit']}",
        f"idle loop: gate poll every {loop.poll_seconds:g} s ({loop.poll_source}); "
        f"claims by {loop.gate_source}; heartbeat at the reply's cadence",
        "",
        "Store calls per request (in-process, the real handlers):",
    ]
    rows = []
    for what, on_azure, on_memory in [
        ("gate poll, cold (1st on instance)", azure.gate.cold, memory.gate.cold),
        (
            f"gate poll, warm (x{len(azure.gate.warm)})",
            azure.gate.warm_distinct[0],
            memory.gate.warm_distinct[0],
        ),
        *[
            (name.replace("_", " "), azure.requests[name], memory.requests[name])
            for name in azure.requests
        ],
    ]:
        rows.append([what, fmt_calls(on_azure), fmt_calls(on_memory)])
    lines.append(table(["request", "azure (emulators)", "memory twin"], rows))
    warm_ok = all(c == {"read": 1} for c in azure.gate.warm)
    lines.append(
        f"target: warm idle poll = exactly one point read: "
        f"{'MET' if warm_ok else 'NOT MET'} on azure "
        f"({len(azure.gate.warm_distinct)} distinct warm cost(s)); cold polls seen: "
        + "; ".join(sorted({fmt_calls(c) for c in [azure.gate.cold, *azure.gate_cold_all]}))
    )
    lines.append(
        "idle-path items (bytes as read; <= 1024 means 1 RU a point read): "
        + ", ".join(
            f"{k} {'absent (404 read)' if v is None else v}" for k, v in azure.sizes.items()
        )
    )
    lines += ["", "Gate poll latency:"]
    lat_rows = []
    in_a, in_m = azure.in_process_latency(), memory.in_process_latency()
    for label, lat in [
        ("HTTP, keep-alive, warm", http["warm"]),
        ("HTTP, keep-alive, cold", http["cold"]),
        ("HTTP, new connection, warm", http["warm_new_connection"]),
        ("in-process, azure, warm", in_a["warm"]),
        ("in-process, memory, warm", in_m["warm"]),
    ]:
        lat_rows.append(
            [label, str(lat.samples), f"{lat.p50_ms:.2f}", f"{lat.p99_ms:.2f}", f"{lat.max_ms:.2f}"]
        )
    lines.append(table(["path", "n", "p50 ms", "p99 ms", "max ms"], lat_rows))

    lines += ["", "Idle fleet on a virtual clock: store calls per factory-hour (own requests):"]
    sim_rows = []
    for run_a, run_m in zip(azure.runs, memory.runs, strict=True):
        pa, pm = run_a.per_factory_hour(), run_m.per_factory_hour()
        sim_rows.append(
            [
                str(run_a.fleet),
                f"{run_a.requests_per_factory_hour():.0f}",
                fmt_calls(pa),
                f"{model.ru(pa):.1f}",
                f"{model.table_tx(pa):.0f}",
                fmt_ratio(ratio(sum(pa.values()), sum(pm.values()))),
            ]
        )
    lines.append(
        table(
            ["fleet", "req/h", "store calls / factory-hour (azure)", "RU", "table tx", "az/mem"],
            sim_rows,
        )
    )
    big = max(azure.runs, key=lambda r: r.fleet)
    lines.append(
        f"gate costs seen (fleet {big.fleet}): "
        + ", ".join(f"{k} x{v}" for k, v in sorted(big.gate_costs.items(), key=lambda kv: -kv[1]))
        + f"; claims: {big.claims}"
    )
    timers = fmt_calls(big.timers_per_hour())
    lines.append(f"timers, per product-hour (fleet {big.fleet}): {timers}")

    lines += ["", "Cost model (Cosmos serverless + Table Storage; constants in README):"]
    cost_rows = []
    for c in costs["azure"]:
        cost_rows.append(
            [
                str(c.fleet),
                str(c.priced_from),
                f"{c.requests_per_hour:,.0f}",
                f"{c.ru_per_hour:,.0f}",
                f"{c.table_tx_per_hour:,.0f}",
                f"{c.timers_ru_per_hour:,.0f}",
                f"{c.usd_per_factory_hour:.7f}",
                f"{c.usd_per_month:,.2f}",
                f"{c.executions_usd_per_month:,.2f}",
            ]
        )
    lines.append(
        table(
            [
                "fleet",
                "from",
                "req/h",
                "RU/h",
                "table tx/h",
                "timer RU/h",
                "USD/factory-h",
                "USD/month",
                "+Functions/month",
            ],
            cost_rows,
        )
    )
    lines += ["", "Ratios measured in this run:"]
    ratio_rows = [
        [
            "warm gate store calls, azure / memory",
            fmt_ratio(ratio(sum(azure.gate.warm[0].values()), sum(memory.gate.warm[0].values()))),
        ],
        [
            "warm gate latency p50, azure / memory (in-process)",
            fmt_ratio(ratio(in_a["warm"].p50_ms, in_m["warm"].p50_ms)),
        ],
        [
            "warm gate latency p50, HTTP / in-process azure",
            fmt_ratio(ratio(http["warm"].p50_ms, in_a["warm"].p50_ms)),
        ],
        [
            "cold / warm gate latency p50, HTTP",
            fmt_ratio(ratio(http["cold"].p50_ms, http["warm"].p50_ms)),
        ],
    ]
    for run_a, run_m in zip(azure.runs, memory.runs, strict=True):
        total_a = sum(run_a.per_factory_hour().values())
        total_m = sum(run_m.per_factory_hour().values())
        ratio_rows.append(
            [
                f"store calls per factory-hour, fleet {run_a.fleet}, azure / memory",
                fmt_ratio(ratio(total_a, total_m)),
            ]
        )
    lines.append(table(["ratio", "value"], ratio_rows))
    lines.append("")
    return "\n".join(lines)


def to_json(
    results: Mapping[str, BackendResult],
    http: Mapping[str, Latency],
    costs: Mapping[str, list[FleetCost]],
    model: CostModel,
    loop: IdleLoop,
    info: Mapping[str, Any],
    args: argparse.Namespace,
) -> dict[str, Any]:
    backends: dict[str, Any] = {}
    for name, r in results.items():
        backends[name] = {
            "gate": {
                "cold": r.gate.cold,
                "cold_all_tokens": r.gate_cold_all,
                "warm_polls": len(r.gate.warm),
                "warm_distinct": r.gate.warm_distinct,
                "warm_is_one_read": all(c == {"read": 1} for c in r.gate.warm),
                "latency_in_process_ms": {k: asdict(v) for k, v in r.in_process_latency().items()},
            },
            "requests": r.requests,
            "item_bytes": r.sizes,
            "fleets": [
                {
                    "fleet": run.fleet,
                    "window_seconds": run.window_seconds,
                    "wall_seconds": round(run.seconds, 2),
                    "requests": run.requests,
                    "calls_by_request": run.calls,
                    "claims": run.claims,
                    "gate_costs": run.gate_costs,
                    "per_factory_hour": run.per_factory_hour(),
                    "requests_per_factory_hour": run.requests_per_factory_hour(),
                    "timer_ticks": run.timer_ticks,
                    "timer_calls": run.timer_calls,
                    "listing_calls": run.listing_calls,
                    "timers_per_product_hour": run.timers_per_hour(),
                }
                for run in r.runs
            ],
            "costs": [asdict(c) for c in costs[name]],
        }
    return {
        "benchmark": "idle_cost",
        "machine": dict(info),
        "config": {
            "poll_seconds": loop.poll_seconds,
            "poll_source": loop.poll_source,
            "gate_source": loop.gate_source,
            "warm_polls": args.polls,
            "http_polls": args.http_polls,
            "sim_fleets": args.sim_fleets,
            "warmup_seconds": args.warmup,
            "window_seconds": args.window,
            "external_stack": args.external,
        },
        "cost_model": asdict(model),
        "http_gate_latency_ms": {k: asdict(v) for k, v in http.items()},
        "backends": backends,
    }


# --------------------------------------------------------------------------- main


def parser() -> argparse.ArgumentParser:
    poll = cli_defaults().poll_seconds
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.idle_cost",
        description="Measure what an idle agent-fleet costs on the real local stack.",
    )
    p.add_argument("--polls", type=int, default=300, help="warm in-process gate polls (300)")
    p.add_argument("--http-polls", type=int, default=300, help="warm HTTP gate polls (300)")
    p.add_argument(
        "--sim-fleets",
        type=positive_sizes,
        default=[1, 10, 100],
        help="idle fleet sizes run on the virtual clock (1,10,100)",
    )
    p.add_argument("--fleets", type=positive_sizes, default=[10, 100, 1000], help="fleets priced")
    p.add_argument("--poll-seconds", type=float, default=poll, help=f"gate poll ({poll:g})")
    p.add_argument("--warmup", type=float, default=120, help="virtual warm-up seconds (120)")
    p.add_argument("--window", type=float, default=600, help="virtual measured seconds (600)")
    add_common_arguments(p, DEFAULT_OUT)
    return p


# Smaller sizes for `python -m benchmarks --quick`.
QUICK = ["--polls", "50", "--http-polls", "50", "--sim-fleets", "1,10", "--window", "300"]


@dataclass
class IdleResult:
    """Everything the idle-cost run measured (``PartResult``)."""

    results: dict[str, BackendResult]
    http: dict[str, Latency]
    costs: dict[str, list[FleetCost]]
    model: CostModel
    loop: IdleLoop
    args: argparse.Namespace
    name: str = "idle_cost"

    def report(self, info: Mapping[str, Any]) -> str:
        return report(self.results, self.http, self.costs, self.model, self.loop, info)

    def payload(self, info: Mapping[str, Any]) -> dict[str, Any]:
        return to_json(self.results, self.http, self.costs, self.model, self.loop, info, self.args)

    def summary(self) -> list[tuple[str, str]]:
        azure = self.results["azure"]
        warm = azure.gate.warm
        ones = sum(1 for c in warm if c == {"read": 1})
        big = max(azure.runs, key=lambda r: r.fleet)
        per_hour = big.per_factory_hour()
        rows = [
            ("idle gate poll, warm: store calls", f"read 1 in {ones} of {len(warm)} polls"),
            (
                "idle gate poll over HTTP (keep-alive), p50 / p99",
                f"{self.http['warm'].p50_ms:.1f} / {self.http['warm'].p99_ms:.1f} ms",
            ),
            (
                f"RU per idle factory-hour (fleet of {big.fleet})",
                f"{self.model.ru(per_hour):,.0f}",
            ),
        ]
        for cost in self.costs["azure"]:
            rows.append((f"idle fleet of {cost.fleet}: USD/month", f"${cost.usd_per_month:,.2f}"))
        return rows


def measure(target: Target, args: argparse.Namespace, say: Callable[[str], None]) -> IdleResult:
    loop = cli_defaults()
    if args.poll_seconds != loop.poll_seconds:
        loop = replace(loop, poll_seconds=args.poll_seconds, poll_source="--poll-seconds")
    model = CostModel()
    tag = uuid.uuid4().hex[:6]
    sim = sorted(set(args.sim_fleets) | {10})  # >= 10 tokens for the cold HTTP samples
    settings = Settings.from_env(target.env)
    from fleet.store.azure import azure_stores

    measure_on = functools.partial(
        measure_backend,
        fleets=sim,
        polls=args.polls,
        loop=loop,
        warmup_seconds=args.warmup,
        window_seconds=args.window,
        tag=tag,
        say=say,
    )
    with HttpApi(target.api) as http_setup:
        azure, latency_tokens = measure_on(
            "azure", settings, azure_stores(settings), http_setup, target.operator_token
        )
    say(f"  http: gate poll against the host, cold x{len(latency_tokens) - 1} + warm")
    http = http_gate_latency(target.api, latency_tokens, args.http_polls)
    memory_settings = Settings.from_env({**target.env, "FLEET_STORE": "memory"})
    twin = memory_stores()
    setup = InProcess(context_for(memory_settings, twin))
    memory, _ = measure_on("memory", memory_settings, twin, setup, target.operator_token)
    results = {"azure": azure, "memory": memory}
    costs = {name: fleet_costs(result, args.fleets, model) for name, result in results.items()}
    return IdleResult(results, http, costs, model, loop, args)


def main(argv: Sequence[str] | None = None) -> int:
    return run_standalone(parser().parse_args(argv), measure)


if __name__ == "__main__":
    raise SystemExit(main())
