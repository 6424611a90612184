"""Timer ticks: what the reaper, the healer and the metrics timer cost per tick, by how many
products the coordinator holds, when nothing in any of them is due.

    .venv/bin/python -m benchmarks.timer_ticks --help
    .venv/bin/python -m benchmarks --only ticks

Products are added in steps (10, then 100, then 1,000 by default, ``--sizes``), each an idle
product as an operator leaves it: one job submitted and cancelled (its documents, its
queue-state, its place in the registry), no factory, nothing queued, nothing leased. They are
made in-process (the production handlers called with real requests over the Azure adapters,
``idle_cost.InProcess``; not timed). At each size, each timer function of the app
(``fleet.timers``: ``reaper_timer``, ``healer_timer``, ``metrics_timer``) is called as the
Functions host calls it, over the app's own context on the same stores: one warm-up tick (the
instance's caches), then ``--ticks`` measured ticks. Per timer and size:

- the store requests one tick makes (Cosmos, Table and Blob calls, counted at the adapters);
- the tick's wall time;
- and the growth from the smallest size to the largest, the figure the timers' scaling is
  judged by: flat would be 1.0x; today every timer walks every product on every tick.

The emulator's query cost grows with the whole container, so wall times here are mostly the
emulator's; the request counts are the product's. At 1,000 products a metrics tick on the
emulator takes many minutes (18,000 queries, each copying the whole container): ``--twin``
runs the same code over the in-memory twins, which make the same requests (the counts are
the same; the wall times are then the twin's).
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from azure.functions.timer import TimerRequest

from benchmarks.common import (
    RESULTS,
    BenchError,
    Target,
    add_common_arguments,
    fmt_calls,
    fmt_ratio,
    machine_line,
    ok,
    part_payload,
    positive_sizes,
    ratio,
    run_standalone,
    submit,
    table,
)
from fleet import timers
from fleet.context import AppContext, context_for
from fleet.settings import Settings
from fleet.store.azure import azure_stores
from fleet.store.memory import memory_stores

DEFAULT_OUT = RESULTS / "timer_ticks.json"
QUICK = ["--sizes", "3,12", "--ticks", "1"]
# make bench's sizes on the emulator (1,000 products: ``--twin``, see above)
DEFAULT_SIZES = [10, 100]
TIMERS: dict[str, Callable[[TimerRequest, AppContext], None]] = {
    "reaper": timers.reaper_timer,
    "healer": timers.healer_timer,
    "metrics": timers.metrics_timer,
}


@dataclass
class SizeTicks:
    products: int
    calls: dict[str, dict[str, int]] = field(default_factory=dict)  # timer -> calls per tick
    seconds: dict[str, float] = field(default_factory=dict)  # timer -> wall s per tick

    def requests(self, timer: str | None = None) -> float:
        names = [timer] if timer else list(self.calls)
        return float(sum(sum(self.calls[n].values()) for n in names))

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "requests_per_tick": {n: self.requests(n) for n in self.calls}}


def idle_product(api: Any, operator_token: str, product: str) -> None:
    """A product with one job submitted and cancelled: registered, nothing due."""
    job = submit(api, operator_token, product, "bench idle product")
    status, body = api.call(
        "POST", f"fleet/jobs/{job['id']}/cancel", token=operator_token, product=product, body={}
    )
    ok(status, body, 200, "cancel the job")


def tick(context: AppContext, work: Callable[[TimerRequest, AppContext], None]) -> dict[str, int]:
    with context.stores.counters.measure() as cost:
        work(TimerRequest(past_due=False), context)  # type: ignore[no-untyped-call]
    return dict(cost)


def measure_sizes(
    target: Target,
    sizes: Sequence[int],
    ticks: int,
    say: Callable[[str], None],
    *,
    twin: bool = False,
) -> list[SizeTicks]:
    from benchmarks.idle_cost import InProcess

    if twin:
        settings = Settings.from_env({**target.env, "FLEET_STORE": "memory"})
        stores = memory_stores()
    else:
        settings = Settings.from_env(target.env)
        stores = azure_stores(settings, ensure=False)
    maker = InProcess(context_for(settings, stores))
    context = context_for(settings, stores)  # the timers' instance
    tag = uuid.uuid4().hex[:6]
    made = len(context.coordinator.products())  # what the stack already holds counts too
    results = []
    for size in sorted(sizes):
        started = time.perf_counter()
        while made < size:
            idle_product(maker, target.operator_token, f"ticks-{tag}-{made:05d}")
            made += 1
        say(f"  ticks: {made:,} products ({time.perf_counter() - started:.1f} s to add)")
        run = SizeTicks(products=made)
        for name, work in TIMERS.items():
            tick(context, work)  # warm-up: the instance's caches
            spent: dict[str, int] = {}
            began = time.perf_counter()
            for _ in range(ticks):
                for kind, n in tick(context, work).items():
                    spent[kind] = spent.get(kind, 0) + n
            run.seconds[name] = (time.perf_counter() - began) / ticks
            run.calls[name] = {k: round(v / ticks) for k, v in spent.items()}
        say(
            f"  ticks: {made:,} products: "
            + ", ".join(f"{n} {run.requests(n):.0f}" for n in TIMERS)
            + " store requests per tick"
        )
        results.append(run)
    return results


@dataclass
class TicksResult:
    runs: list[SizeTicks]
    args: argparse.Namespace
    name: str = "timer_ticks"

    def growth(self, timer: str | None = None) -> float | None:
        return ratio(self.runs[-1].requests(timer), self.runs[0].requests(timer))

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
                        f"{r.seconds[name]:.2f}",
                    ]
                )
        first, last = self.runs[0], self.runs[-1]
        return "\n".join(
            [
                "",
                f"Timer ticks, nothing due, on "
                f"{'the in-memory twins' if self.args.twin else 'the emulators'} - "
                f"{machine_line(info)}",
                table(["products", "timer", "requests/tick", "by kind", "wall s/tick"], rows),
                f"growth {last.products:,} / {first.products:,} products: store requests per "
                f"idle tick (all three timers) {fmt_ratio(self.growth())}; "
                + ", ".join(f"{n} {fmt_ratio(self.growth(n))}" for n in TIMERS),
                "",
            ]
        )

    def summary(self) -> list[tuple[str, str]]:
        rows = [
            (
                f"ticks, {r.products:,} products: store requests per idle tick",
                f"{r.requests():.0f} ("
                + ", ".join(f"{n} {r.requests(n):.0f}" for n in TIMERS)
                + ")",
            )
            for r in self.runs
        ]
        rows.append(
            (
                f"ticks, growth {self.runs[-1].products:,} / {self.runs[0].products:,} products",
                fmt_ratio(self.growth()),
            )
        )
        return rows

    def payload(self, info: Mapping[str, Any]) -> dict[str, Any]:
        config = {
            "sizes": self.args.sizes,
            "ticks": self.args.ticks,
            "stores": "in-memory twins" if self.args.twin else "the local stack's emulators",
        }
        return part_payload(
            self.name,
            info,
            config,
            runs=[r.as_dict() for r in self.runs],
            requests_growth=self.growth(),
        )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.timer_ticks",
        description="Store requests per idle timer tick with 10 / 100 / 1,000 products.",
    )
    p.add_argument("--sizes", type=positive_sizes, default=DEFAULT_SIZES, help="products (10,100)")
    p.add_argument("--ticks", type=int, default=2, help="measured ticks per timer and size (2)")
    p.add_argument(
        "--twin",
        action="store_true",
        help="on the in-memory twins instead of the emulators: the same code makes the same "
        "requests (the counts are the product's), in seconds rather than the emulator's hours "
        "at 1,000 products",
    )
    add_common_arguments(p, DEFAULT_OUT)
    return p


def measure(target: Target, args: argparse.Namespace, say: Callable[[str], None]) -> TicksResult:
    if args.ticks < 1:
        raise BenchError("--ticks must be at least 1")
    return TicksResult(measure_sizes(target, args.sizes, args.ticks, say, twin=args.twin), args)


def main(argv: Sequence[str] | None = None) -> int:
    return run_standalone(parser().parse_args(argv), measure)


if __name__ == "__main__":
    raise SystemExit(main())
