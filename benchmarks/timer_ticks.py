"""Timer ticks: what the reaper, the healer and the metrics timer cost per tick, by how many
products the coordinator holds, when nothing in any of them is due; and how long a job whose
lease expired waits for the reaper.

    .venv/bin/python -m benchmarks.timer_ticks --help
    .venv/bin/python -m benchmarks --only ticks

Products are added in steps (10, then 100 by default; 10, 100 and 1,000 with ``--twin``,
``--sizes``), each an idle product as an operator leaves it: one job submitted and cancelled
(its documents, its queue-state, its place in the registry), no factory, nothing queued,
nothing leased. They are made in-process (the production handlers called with real requests,
``idle_cost.InProcess``; not timed), in a Cosmos container of the part's own (``ticks-<tag>``,
deleted at the end), so a size is exactly that many products, whatever else the stack holds.

At each size, each timer function of the app (``function_app.build_app``: ``reaper_timer``,
``healer_timer``, ``metrics_timer``) is called as the Functions host calls it, over the app's
own context on the same stores, and every pass message the tick queued (``fleet.timers``: one
per product to pass, on ``fleet-passes``) is then delivered to the app's ``fleet_pass``, as the
host does (retried up to host.json's ``maxDequeueCount``, then to ``fleet_pass_poisoned``).
The passes' store requests count as the tick's. The messages go to an in-process queue, not
through Azurite: their sends are counted (``queue_send``) like any store request; the host's
receive and delete of each message are the host's, not the app's.

A product's events are looked for from the previous tick's start less the sweep's slack
(``fleet.coordinator.sweep``), so after products are added the part first waits out that
slack (the only wait in the tick measurement). Then, per timer, one tick that passes what was
just added (reported as the first tick after adding), then ``--ticks`` measured idle ticks.
Per timer and size:

- the store requests one idle tick makes (Cosmos, Table, Blob and queue calls, counted at the
  adapters), and the pass messages it sent;
- the tick's wall time;
- the growth from the smallest size to the largest, the figure the timers' scaling is judged
  by (flat is 1.0x; the target is within 1.5x for the three timers together), and each figure
  as a ratio to the baseline's at the same size (``--baseline``: the timers before the sweep,
  when each tick walked every product).

Then the lease's wait, at the largest size: one product more, with a factory that claimed a
job under the shortest lease a manifest may ask (``leaseSeconds``' minimum), while the reaper
timer fires every ``--reaper-period`` seconds (2 s) in a thread, on the period's boundaries as
the host fires a schedule. After each tick the job is read, until it is queued again. The
figure: from the lease's expiry to the requeue's event, in seconds and in reaper periods
(the target: within 2). It is on the real clock: a latency, one sample per run.

The request counts are the product's. The wall times are the emulator's (its queries copy
the whole container) or, with ``--twin``, the in-memory twins' (the same code makes the same
requests; at 10 and 100 products the emulator's counts and the twin's were the same).
"""

from __future__ import annotations

import argparse
import json
import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from annotated_types import Ge
from azure.core.exceptions import AzureError
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest
from croniter import croniter  # type: ignore[import-untyped, unused-ignore]

from benchmarks.common import (
    CLAIM_BODY,
    REPO,
    RESULTS,
    BenchError,
    Target,
    add_common_arguments,
    enroll,
    fmt_calls,
    fmt_ratio,
    job_fields,
    machine_line,
    ok,
    part_payload,
    positive_sizes,
    ratio,
    run_standalone,
    submit,
    table,
)
from devtools.queues import QueueSettings
from fleet.context import AppContext, context_for
from fleet.coordinator.sweep import SweepConfig
from fleet.domain.manifest import Manifest
from fleet.domain.stages import Stage
from fleet.settings import DEFAULT_SCHEDULES, Settings
from fleet.store.azure import azure_stores, cosmos_client
from fleet.store.memory import MemoryQueueStore, memory_stores
from fleet.timers import PASSES_QUEUE
from function_app import build_app

if TYPE_CHECKING:
    from benchmarks.idle_cost import CostModel

DEFAULT_OUT = RESULTS / "timer_ticks.json"
BASELINE = REPO / "benchmarks" / "reference" / "2026-12-05-ticks-baseline.json"
QUICK = ["--sizes", "3,12", "--ticks", "1"]
# make bench's sizes on the emulator; with --twin, 1,000 products too
DEFAULT_SIZES = [10, 100]
TWIN_SIZES = [10, 100, 1000]
# The timers, by the name the part reports, and the app's function for each.
TIMERS: dict[str, str] = {
    "reaper": "reaper_timer",
    "healer": "healer_timer",
    "metrics": "metrics_timer",
}
FLAT_TARGET = 1.5  # growth of the three timers' idle ticks, smallest to largest size
PERIODS_TARGET = 2.0  # lease expiry to requeue, in reaper periods
SLACK_SECONDS = SweepConfig().slack_seconds  # the sweep the timers build (fleet.timers.sweep)
MARGIN_SECONDS = 0.2  # beyond the slack, so that no event sits on its edge


def min_lease_seconds() -> int:
    """The shortest lease a manifest may ask for (``Manifest.leaseSeconds``' ``ge``)."""
    for rule in Manifest.model_fields["leaseSeconds"].metadata:
        if isinstance(rule, Ge):
            minimum: object = rule.ge
            if isinstance(minimum, int):
                return minimum
    raise BenchError("the manifest sets no minimum leaseSeconds")


# --------------------------------------------------------------------------- the host


@dataclass(frozen=True)
class Tick:
    calls: dict[str, int]  # store requests of the tick and of the passes it queued, by kind
    messages: int  # pass messages the tick sent
    seconds: float


class AppHost:
    """The app's functions (``function_app.build_app`` over ``context``) called as the
    Functions host calls them: a timer with a ``TimerRequest``; then each pass message it put
    on the in-process queue (``context``'s queues are a ``MemoryQueueStore``) to
    ``fleet_pass``, again after a failure up to ``maxDequeueCount`` deliveries (host.json),
    then once to ``fleet_pass_poisoned``. One thread calls it at a time."""

    def __init__(self, context: AppContext) -> None:
        queues = context.stores.queues
        if not isinstance(queues, MemoryQueueStore):
            raise BenchError("the timers' context needs the in-process queue")
        self.context = context
        self.queues = queues
        app = build_app(lambda: context)
        self.functions = {f.get_function_name(): f.get_user_function() for f in app.get_functions()}
        self.max_dequeue = QueueSettings.from_host_json(REPO).max_dequeue_count
        self.poisoned = 0

    def tick(self, timer: str) -> Tick:
        """One tick of ``timer`` and the deliveries of what it queued, counted together."""
        with self.context.stores.counters.measure() as cost:
            began = time.perf_counter()
            self.functions[TIMERS[timer]](TimerRequest(past_due=False))
            sent = self.deliver()
            seconds = time.perf_counter() - began
        return Tick(dict(cost), sent, seconds)

    def deliver(self) -> int:
        """Deliver every pass message waiting; returns how many there were."""
        delivered = 0
        while bodies := self.queues.take(PASSES_QUEUE):
            for body in bodies:
                delivered += 1
                self._deliver(body)
        return delivered

    def _deliver(self, body: str) -> None:
        for count in range(1, self.max_dequeue + 1):
            try:
                self.functions["fleet_pass"](_message(body, count))
            except Exception:  # the host's rule: any failure is delivered again, then poisoned
                continue
            return
        # The host moves it to the poison queue, whose function gets it once.
        self.poisoned += 1
        self.functions["fleet_pass_poisoned"](_message(body, 1))


def _message(body: str, dequeue_count: int) -> QueueMessage:
    return QueueMessage(  # type: ignore[no-untyped-call]
        id=f"bench-{uuid.uuid4().hex[:8]}", body=body.encode(), dequeue_count=dequeue_count
    )


# --------------------------------------------------------------------------- the ticks


@dataclass
class SizeTicks:
    products: int
    calls: dict[str, dict[str, int]] = field(default_factory=dict)  # timer -> per idle tick
    messages: dict[str, float] = field(default_factory=dict)  # timer -> per idle tick
    seconds: dict[str, float] = field(default_factory=dict)  # timer -> wall s per idle tick
    # The first tick after products were added: it passes them (not an idle tick).
    first_calls: dict[str, dict[str, int]] = field(default_factory=dict)
    first_messages: dict[str, int] = field(default_factory=dict)
    first_seconds: dict[str, float] = field(default_factory=dict)
    poisoned: int = 0  # pass messages that failed every delivery, over this size's ticks

    def requests(self, timer: str | None = None) -> float:
        names = [timer] if timer else list(self.calls)
        return float(sum(sum(self.calls[n].values()) for n in names))

    def first_requests(self, timer: str) -> int:
        return sum(self.first_calls[timer].values())

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "requests_per_tick": {n: self.requests(n) for n in self.calls}}


def idle_product(api: Any, operator_token: str, product: str) -> None:
    """A product with one job submitted and cancelled: registered, nothing due."""
    job = submit(api, operator_token, product, "bench idle product")
    status, body = api.call(
        "POST", f"fleet/jobs/{job['id']}/cancel", token=operator_token, product=product, body={}
    )
    ok(status, body, 200, "cancel the job")


def quiet(since: float) -> None:
    """Wait until the sweep's slack has passed since ``since`` (``time.time()``): a tick
    after that passes what changed before it, and the ticks after that one find nothing
    changed. (A tick looks for events from the previous tick's start less the slack.)"""
    left = since + SLACK_SECONDS + MARGIN_SECONDS - time.time()
    if left > 0:
        time.sleep(left)


class TickBench:
    """The stores the part measures (the twins, or the stack's emulators with a Cosmos
    container of the part's own), the handlers that add products, and the app's functions
    over the timers' context. A context manager: the container is deleted on exit."""

    def __init__(self, target: Target, *, twin: bool = False) -> None:
        self.target = target
        self.twin = twin
        self.tag = uuid.uuid4().hex[:6]
        if twin:
            self.settings = Settings.from_env({**target.env, "FLEET_STORE": "memory"})
            self.stores = memory_stores()
        else:
            env = {**target.env, "COSMOS_CONTAINER": f"ticks-{self.tag}"}
            self.settings = Settings.from_env(env)
            stores = azure_stores(self.settings, ensure=True)
            # Pass messages stay in-process, to be delivered here (see the module docstring).
            self.stores = replace(stores, queues=MemoryQueueStore(stores.counters))
        from benchmarks.idle_cost import InProcess

        self.maker = InProcess(context_for(self.settings, self.stores))
        self.context = context_for(self.settings, self.stores)  # the timers' instance
        self.host = AppHost(self.context)
        self.made = len(self.context.coordinator.products())

    def __enter__(self) -> TickBench:
        return self

    def __exit__(self, *_: object) -> None:
        cosmos = self.settings.cosmos
        if self.twin or cosmos is None:
            return
        try:
            # Not closed: the SDK's endpoint health check, started with the client, would
            # find its transport gone. The process ends soon after.
            client = cosmos_client(cosmos)
            client.get_database_client(cosmos.database).delete_container(cosmos.container)
        except AzureError:
            pass  # a benchmark container left behind on a stack: nothing reads it

    def grow(self, size: int, say: Callable[[str], None]) -> None:
        """Idle products until there are ``size``, then the sweep's slack waited out."""
        started = time.perf_counter()
        added = 0
        while self.made < size:
            idle_product(
                self.maker, self.target.operator_token, f"ticks-{self.tag}-{self.made:05d}"
            )
            self.made += 1
            added += 1
        say(f"  ticks: {self.made:,} products ({time.perf_counter() - started:.1f} s to add)")
        if added:
            quiet(time.time())

    def size(self, size: int, ticks: int, say: Callable[[str], None]) -> SizeTicks:
        self.grow(size, say)
        run = SizeTicks(products=self.made)
        poisoned = self.host.poisoned
        for name in TIMERS:
            first = self.host.tick(name)
            run.first_calls[name] = first.calls
            run.first_messages[name] = first.messages
            run.first_seconds[name] = first.seconds
            spent: dict[str, int] = {}
            messages = 0
            seconds = 0.0
            for _ in range(ticks):
                done = self.host.tick(name)
                for kind, n in done.calls.items():
                    spent[kind] = spent.get(kind, 0) + n
                messages += done.messages
                seconds += done.seconds
            run.calls[name] = {k: round(v / ticks) for k, v in spent.items()}
            run.messages[name] = messages / ticks
            run.seconds[name] = seconds / ticks
        run.poisoned = self.host.poisoned - poisoned
        say(
            f"  ticks: {self.made:,} products: "
            + ", ".join(f"{n} {run.requests(n):.0f}" for n in TIMERS)
            + " store requests per idle tick, "
            + f"{sum(run.messages.values()):.0f} messages"
        )
        return run


def measure_sizes(
    target: Target,
    sizes: Sequence[int],
    ticks: int,
    say: Callable[[str], None],
    *,
    twin: bool = False,
) -> list[SizeTicks]:
    """The idle ticks at each size, in a container (or twin) of their own."""
    with TickBench(target, twin=twin) as bench:
        return [bench.size(size, ticks, say) for size in sorted(sizes)]


# --------------------------------------------------------------------------- the lease


@dataclass
class LeaseRun:
    products: int  # products in all, the one holding the lease among them
    period: float  # seconds between reaper ticks
    lease_seconds: int
    expired_at: str
    requeued_at: str  # the requeue's event
    seconds: float  # requeued_at - expired_at
    seen_seconds: float  # from the expiry to the read that found the job queued
    ticks: int  # reaper ticks, from the claim to the requeue
    messages: int  # pass messages those ticks sent
    poisoned: int

    @property
    def periods(self) -> float:
        return self.seconds / self.period

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "periods": self.periods}


class Schedule:
    """One of the app's timers fired every ``period`` seconds on the period's boundaries (as
    the host fires ``*/P * * * * *``), in a thread, each tick's messages delivered. ``ticked``
    is set after each tick; ``error`` holds what stopped it."""

    def __init__(self, host: AppHost, timer: str, period: float) -> None:
        self.host = host
        self.timer = timer
        self.period = period
        self.ticks: list[Tick] = []
        self.ticked = threading.Event()
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"bench-{timer}", daemon=True)

    def __enter__(self) -> Schedule:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            now = time.time()
            if self._stop.wait((math.floor(now / self.period) + 1) * self.period - now):
                return
            try:
                self.ticks.append(self.host.tick(self.timer))
            except BaseException as exc:
                self.error = exc
                self.ticked.set()
                return
            self.ticked.set()


def measure_lease(bench: TickBench, period: float, say: Callable[[str], None]) -> LeaseRun:
    """A job claimed under the shortest lease, the reaper firing every ``period`` seconds
    until the job is queued again (see the module docstring)."""
    api, operator = bench.maker, bench.target.operator_token
    product = f"ticks-{bench.tag}-lease"
    lease = min_lease_seconds()
    token = enroll(api, operator, product, "lease-holder")
    status, body = api.call(
        "POST",
        "fleet/jobs",
        token=operator,
        product=product,
        body={**job_fields("bench short lease"), "leaseSeconds": lease},
    )
    job_id = str(ok(status, body, 201, "submit a job")["job"]["id"])
    status, body = api.call("POST", "fleet/claim", token=token, product=product, body=CLAIM_BODY)
    ok(status, body, 200, "claim the job")
    coordinator = bench.context.coordinator
    claimed = coordinator.get_job(product, job_id)
    if claimed.lease is None:
        raise BenchError(f"job {job_id} was claimed without a lease")
    expires = claimed.lease.expiresAt
    products = len(coordinator.products())
    say(
        f"  ticks: {products:,} products, job {job_id} leased for {lease} s; the reaper every "
        f"{period:g} s until it is queued again"
    )
    deadline = expires.timestamp() + 10 * period + 30
    poisoned = bench.host.poisoned
    with Schedule(bench.host, "reaper", period) as schedule:
        while True:
            schedule.ticked.wait(max(0.0, deadline - time.time()))
            schedule.ticked.clear()
            if schedule.error is not None:
                raise BenchError(f"a reaper tick failed: {schedule.error!r}")
            job = coordinator.get_job(product, job_id)
            if job.stage is Stage.QUEUED:
                seen = time.time()
                break
            if time.time() > deadline:
                late = deadline - expires.timestamp()
                raise BenchError(f"job {job_id} still {job.stage} {late:.0f} s after expiry")
        ticks = list(schedule.ticks)
    requeued = [e.at for e in job.events if e.toStage is Stage.QUEUED][-1]
    run = LeaseRun(
        products=products,
        period=period,
        lease_seconds=lease,
        expired_at=expires.isoformat(),
        requeued_at=requeued.isoformat(),
        seconds=(requeued - expires).total_seconds(),
        seen_seconds=seen - expires.timestamp(),
        ticks=len(ticks),
        messages=sum(t.messages for t in ticks),
        poisoned=bench.host.poisoned - poisoned,
    )
    say(
        f"  ticks: requeued {run.seconds:.2f} s after the lease expired "
        f"({run.periods:.2f} reaper periods), {run.ticks} reaper ticks, {run.messages} messages"
    )
    return run


# --------------------------------------------------------------------------- the part


def load_baseline(path: Path | None) -> dict[str, Any] | None:
    """The baseline's store requests per idle tick, by products and timer, if its JSON is
    there."""
    if path is None or not path.is_file():
        return None
    body = json.loads(path.read_text(encoding="utf-8"))
    runs = {int(r["products"]): dict(r["requests_per_tick"]) for r in body.get("runs", [])}
    if not runs:
        return None
    calls = {int(r["products"]): dict(r.get("calls") or {}) for r in body.get("runs", [])}
    shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    return {
        "path": str(shown),
        "commit": (body.get("machine") or {}).get("commit"),
        "runs": runs,
        "calls": calls,
    }


def ticks_per_hour() -> dict[str, float]:
    """Each timer's ticks per hour at its default schedule (``DEFAULT_SCHEDULES``)."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    end = start + timedelta(hours=1)
    out: dict[str, float] = {}
    for name in TIMERS:
        schedule = croniter(
            DEFAULT_SCHEDULES[f"{name.upper()}_SCHEDULE"],
            start - timedelta(microseconds=1),
            second_at_beginning=True,
        )
        count = 0
        while schedule.get_next(datetime) < end:
            count += 1
        out[name] = float(count)
    return out


def ru_per_hour(calls: Mapping[str, Mapping[str, float]], model: CostModel) -> float:
    """Modelled Cosmos RU per hour of idle ticks at the default schedules (``CostModel``:
    its unit costs are assumptions stated in benchmarks/README.md)."""
    rates = ticks_per_hour()
    return float(sum(model.ru(calls.get(name) or {}) * rates[name] for name in TIMERS))


def _times(value: float, base: float | None) -> str:
    """``value`` as a multiple of ``base``, with the digits a small ratio needs."""
    if base is None:
        return "n/a"
    if not base:
        return "same" if not value else "n/a (baseline 0)"
    return f"{value / base:.3g}x"


@dataclass
class TicksResult:
    runs: list[SizeTicks]
    args: argparse.Namespace
    lease: LeaseRun | None = None
    baseline: dict[str, Any] | None = None
    name: str = "timer_ticks"

    def growth(self, timer: str | None = None) -> float | None:
        return ratio(self.runs[-1].requests(timer), self.runs[0].requests(timer))

    def base(self, products: int, timer: str | None = None) -> float | None:
        """The baseline's requests per idle tick at ``products`` (all three: ``timer``
        None), if it measured that size."""
        if self.baseline is None or products not in self.baseline["runs"]:
            return None
        figures = self.baseline["runs"][products]
        return float(sum(figures.values()) if timer is None else figures[timer])

    def flat(self) -> str:
        growth = self.growth()
        met = growth is not None and growth <= FLAT_TARGET
        return f"{fmt_ratio(growth)} (target: within {FLAT_TARGET}x: {'met' if met else 'NOT met'})"

    def report(self, info: Mapping[str, Any]) -> str:
        rows = []
        for r in self.runs:
            for name in TIMERS:
                rows.append(
                    [
                        f"{r.products:,}",
                        name,
                        f"{r.requests(name):.0f}",
                        fmt_calls({k: float(v) for k, v in r.calls[name].items()}),
                        f"{r.messages[name]:g}",
                        _num(self.base(r.products, name)),
                        _times(r.requests(name), self.base(r.products, name)),
                        f"{r.seconds[name] * 1000:.2f}",
                        f"{r.first_requests(name):,} / {r.first_messages[name]:,}",
                    ]
                )
            rows.append(
                [
                    f"{r.products:,}",
                    "all three",
                    f"{r.requests():.0f}",
                    "",
                    f"{sum(r.messages.values()):g}",
                    _num(self.base(r.products)),
                    _times(r.requests(), self.base(r.products)),
                    f"{sum(r.seconds.values()) * 1000:.2f}",
                    "",
                ]
            )
        first, last = self.runs[0], self.runs[-1]
        stores = "the in-memory twins" if self.args.twin else "the emulators"
        lines = [
            "",
            f"Timer ticks, nothing due, on {stores} - {machine_line(info)}",
            table(
                [
                    "products",
                    "timer",
                    "requests/tick",
                    "by kind",
                    "messages/tick",
                    "baseline",
                    "x baseline",
                    "wall ms/tick",
                    "first tick after adding: requests / messages",
                ],
                rows,
            ),
            f"growth {last.products:,} / {first.products:,} products: store requests per "
            f"idle tick (all three timers) {self.flat()}; "
            + ", ".join(f"{n} {fmt_ratio(self.growth(n))}" for n in TIMERS),
        ]
        if self.baseline is not None:
            then = (self.base(first.products), self.base(last.products))
            lines.append(
                f"baseline: {self.baseline['path']} (commit {self.baseline['commit']}); "
                + (
                    f"its growth {last.products:,} / {first.products:,}: "
                    + fmt_ratio(ratio(then[1], then[0]))
                    if then[0] is not None and then[1] is not None
                    else "measured "
                    + " / ".join(f"{n:,}" for n in sorted(self.baseline["runs"]))
                    + " products"
                )
            )
        lines.append(self.hourly())
        poisoned = sum(r.poisoned for r in self.runs) + (self.lease.poisoned if self.lease else 0)
        if poisoned:
            lines.append(f"WARNING: {poisoned} pass message(s) failed every delivery (poisoned)")
        if self.lease is not None:
            lease = self.lease
            lines.append(
                f"lease expiry -> queued again, {lease.products:,} products, reaper every "
                f"{lease.period:g} s, lease {lease.lease_seconds} s: {lease.seconds:.2f} s "
                f"({lease.periods:.2f} periods; target within {PERIODS_TARGET:g}: "
                f"{'met' if lease.periods <= PERIODS_TARGET else 'NOT met'}), seen "
                f"{lease.seen_seconds:.2f} s after expiry; {lease.ticks} reaper ticks from the "
                f"claim, {lease.messages} messages"
            )
        lines.append("")
        return "\n".join(lines)

    def hourly_ru(self) -> tuple[float, float | None]:
        """Modelled Cosmos RU per hour of idle ticks at the default schedules, at the largest
        size: now, and the baseline's at that size (None: it has none)."""
        from benchmarks.idle_cost import CostModel

        model = CostModel()
        last = self.runs[-1]
        now = ru_per_hour(
            {n: {k: float(v) for k, v in c.items()} for n, c in last.calls.items()}, model
        )
        then = (self.baseline or {}).get("calls", {}).get(last.products)
        return now, None if not then else ru_per_hour(then, model)

    def hourly(self) -> str:
        rates = ticks_per_hour()
        now, then = self.hourly_ru()
        return (
            f"modelled Cosmos RU per hour of idle ticks, {self.runs[-1].products:,} products, "
            "at the default schedules ("
            + ", ".join(f"{n} {rates[n]:g}/h" for n in TIMERS)
            + f"; benchmarks/README.md: the unit costs): {now:,.0f}"
            + ("" if then is None else f" (baseline {then:,.0f}: {_times(now, then)})")
        )

    def summary(self) -> list[tuple[str, str]]:
        rows = []
        for r in self.runs:
            versus = self.base(r.products)
            rows.append(
                (
                    f"ticks, {r.products:,} products: store requests per idle tick",
                    f"{r.requests():.0f} ("
                    + ", ".join(f"{n} {r.requests(n):.0f}" for n in TIMERS)
                    + f"), {sum(r.messages.values()):g} messages"
                    + ("" if versus is None else f"; {_times(r.requests(), versus)} of baseline"),
                )
            )
        rows.append(
            (
                f"ticks, growth {self.runs[-1].products:,} / {self.runs[0].products:,} products",
                self.flat(),
            )
        )
        now, then = self.hourly_ru()
        rows.append(
            (
                f"ticks, modelled RU per idle hour, {self.runs[-1].products:,} products",
                f"{now:,.0f}" + ("" if then is None else f" ({_times(now, then)} of baseline)"),
            )
        )
        if self.lease is not None:
            rows.append(
                (
                    f"ticks, lease expiry -> queued again ({self.lease.products:,} products, "
                    f"reaper every {self.lease.period:g} s)",
                    f"{self.lease.seconds:.2f} s, {self.lease.periods:.2f} periods",
                )
            )
        return rows

    def payload(self, info: Mapping[str, Any]) -> dict[str, Any]:
        config = {
            "sizes": [r.products for r in self.runs],
            "ticks": self.args.ticks,
            "stores": "in-memory twins" if self.args.twin else "the local stack's emulators",
            "reaper_period": None if self.args.no_lease else self.args.reaper_period,
        }
        return part_payload(
            self.name,
            info,
            config,
            runs=[r.as_dict() for r in self.runs],
            requests_growth=self.growth(),
            baseline=None
            if self.baseline is None
            else {
                "path": self.baseline["path"],
                "commit": self.baseline["commit"],
                "ratios": {
                    str(r.products): {
                        **{
                            n: ratio(r.requests(n), self.base(r.products, n) or 0.0) for n in TIMERS
                        },
                        "all": ratio(r.requests(), self.base(r.products) or 0.0),
                    }
                    for r in self.runs
                    if self.base(r.products) is not None
                },
            },
            lease=None if self.lease is None else self.lease.as_dict(),
            ru_per_idle_hour=dict(zip(("now", "baseline"), self.hourly_ru(), strict=True)),
        )


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.timer_ticks",
        description="Store requests per idle timer tick with 10 / 100 / 1,000 products, and "
        "the wait from a lease's expiry to the job queued again.",
    )
    p.add_argument(
        "--sizes",
        type=positive_sizes,
        default=None,
        help="products (10,100; with --twin 10,100,1000)",
    )
    p.add_argument("--ticks", type=int, default=2, help="measured ticks per timer and size (2)")
    p.add_argument(
        "--twin",
        action="store_true",
        help="on the in-memory twins instead of the emulators: the same code makes the same "
        "requests (the counts are the product's), in seconds",
    )
    p.add_argument(
        "--reaper-period",
        type=float,
        default=2.0,
        help="seconds between reaper ticks while a lease expires (2)",
    )
    p.add_argument(
        "--no-lease", action="store_true", help="skip the lease-expiry measurement (~35 s)"
    )
    p.add_argument(
        "--baseline",
        type=Path,
        default=BASELINE,
        help=f"figures to print ratios against, if the file exists ({BASELINE.name})",
    )
    add_common_arguments(p, DEFAULT_OUT)
    return p


def measure(target: Target, args: argparse.Namespace, say: Callable[[str], None]) -> TicksResult:
    if args.ticks < 1:
        raise BenchError("--ticks must be at least 1")
    if args.reaper_period <= 0:
        raise BenchError("--reaper-period must be positive")
    if args.sizes is None:
        args.sizes = TWIN_SIZES if args.twin else DEFAULT_SIZES
    with TickBench(target, twin=args.twin) as bench:
        runs = [bench.size(size, args.ticks, say) for size in sorted(args.sizes)]
        lease = None if args.no_lease else measure_lease(bench, args.reaper_period, say)
    return TicksResult(runs, args, lease, load_baseline(args.baseline))


def main(argv: Sequence[str] | None = None) -> int:
    return run_standalone(parser().parse_args(argv), measure)


if __name__ == "__main__":
    raise SystemExit(main())
