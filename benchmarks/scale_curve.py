"""Scale curve: does a claim cost more when the queue is longer?

    make bench                                   # every part, one table
    .venv/bin/python -m benchmarks.scale_curve --help

One product per queue size (100 / 1,000 / 10,000 queued jobs by default). The jobs are seeded
straight through ``Coordinator.submit`` over the Azure adapters (the handler's own call,
without HTTP: 10,000 submits over HTTP would take minutes and are not what is measured).
One factory per product, enrolled over HTTP, then claims over HTTP (``POST /api/fleet/claim``,
one warm-up claim each first, not counted), round-robin across the sizes so every size sees
the same machine noise and the same container. Before each claim one job is submitted over
HTTP (not measured): the queue keeps its size, and the instance, having changed the queue,
reads it for the claim (else a claim within a second of the last read of that queue shares
it, ``queued_list_seconds``, and reads nothing). Per claim:

- its latency as the client sees it;
- the host's store calls (the benchmark host's counters), and the documents the claim's query
  returned: a top-K query returns at most K (``Contention.candidates``: twice
  ``CoordinatorConfig.claim_candidates``) whatever the queue's length, a scan would return
  the queue;
- and, in the same rounds, the latency of the claim's query alone (``JOBS_IN_STAGE``, top K,
  through the same adapter from this process).

The emulator (``@vercel/cosmosdb-server``) evaluates every query by copying and filtering
*every document of the container*, whatever the partition: a query's latency there grows with
the container, not with the partition's queue. So the smallest size is also measured before
the larger ones are seeded, which shows that emulator effect apart.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import requests

from benchmarks.common import (
    CLAIM_BODY,
    RESULTS,
    BenchError,
    HttpApi,
    Latency,
    Target,
    add_common_arguments,
    enroll,
    fmt_calls,
    fmt_ratio,
    headers_for,
    host_calls,
    machine_line,
    part_payload,
    positive_sizes,
    ratio,
    run_standalone,
    seed_jobs,
    submit,
    table,
)
from fleet.settings import Settings
from fleet.store.ports import Stores
from fleet.store.queries import JOBS_IN_STAGE

DEFAULT_OUT = RESULTS / "scale_curve.json"
QUICK = ["--sizes", "50,500", "--claims", "10", "--before-claims", "5"]


@dataclass
class SizeRun:
    """The claims measured against one product's queue."""

    queued: int
    product: str
    token: str
    seed_seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    calls: list[dict[str, int]] = field(default_factory=list)  # per claim
    rows: list[int] = field(default_factory=list)  # documents the claim's query returned
    query_latencies: list[float] = field(default_factory=list)  # the query alone
    before: list[float] = field(default_factory=list)  # before the larger sizes were seeded

    def calls_per_claim(self) -> dict[str, float]:
        total: dict[str, float] = {}
        for c in self.calls:
            for k, v in c.items():
                total[k] = total.get(k, 0) + v
        return {k: v / len(self.calls) for k, v in total.items()} if self.calls else {}

    def distinct_costs(self) -> list[dict[str, int]]:
        seen: list[dict[str, int]] = []
        for c in self.calls:
            if c not in seen:
                seen.append(c)
        return seen

    def as_dict(self) -> dict[str, Any]:
        return {
            "queued": self.queued,
            "seed_seconds": round(self.seed_seconds, 1),
            "claims": len(self.latencies),
            "claim_latency_ms": asdict(Latency.of(self.latencies)),
            "store_calls_per_claim": self.calls_per_claim(),
            "distinct_claim_costs": self.distinct_costs(),
            "query_rows_per_claim": sum(self.rows) / len(self.rows) if self.rows else None,
            "query_latency_ms": asdict(Latency.of(self.query_latencies)),
            "claim_latency_before_larger_seeded_ms": (
                asdict(Latency.of(self.before)) if self.before else None
            ),
        }


def claim_once(session: requests.Session, api: HttpApi, operator_token: str, run: SizeRun) -> None:
    """One job submitted over HTTP (not measured: it keeps the queue at its size, and the
    instance, having changed the queue, reads it again for the next claim instead of sharing
    its last read), then one claim over HTTP, its latency and the host's store calls for it."""
    submit(api, operator_token, run.product, "scale")
    before = host_calls(api.api)
    started = time.perf_counter()
    response = session.post(
        f"{api.api}/fleet/claim",
        json=CLAIM_BODY,
        headers=headers_for(run.token, None),
        timeout=120,
    )
    elapsed = time.perf_counter() - started
    if response.status_code != 200:
        raise BenchError(f"claim with {run.queued} queued: {response.status_code} {response.text}")
    spent = host_calls(api.api).minus(before)
    run.latencies.append(elapsed)
    run.calls.append(spent.calls)
    run.rows.append(spent.query_rows)


def query_once(stores: Stores, run: SizeRun, top: int) -> None:
    started = time.perf_counter()
    stores.documents.query(JOBS_IN_STAGE, run.product, {"stage": "queued", "top": top})
    run.query_latencies.append(time.perf_counter() - started)


def measure_sizes(
    target: Target,
    sizes: Sequence[int],
    *,
    claims: int,
    before_claims: int,
    seed_threads: int,
    say: Callable[[str], None],
) -> list[SizeRun]:
    from fleet.coordinator.claim import Contention
    from fleet.coordinator.service import CoordinatorConfig
    from fleet.store.azure import azure_stores

    settings = Settings.from_env(target.env)
    stores = azure_stores(settings, ensure=False)
    top = Contention.candidates(CoordinatorConfig().claim_candidates)
    tag = uuid.uuid4().hex[:6]
    runs: list[SizeRun] = []
    with HttpApi(target.api) as api, requests.Session() as session:
        for n, size in enumerate(sorted(sizes)):
            product = f"scale-{tag}-{size}"
            say(f"  scale: seed {size:,} queued jobs in {product} ({seed_threads} threads)")
            started = time.perf_counter()
            # Each claim takes one job, submitted just before it: the queue holds ``size``
            # before every submit.
            seed_jobs(settings, product, size, threads=seed_threads)
            run = SizeRun(
                queued=size,
                product=product,
                token=enroll(api, target.operator_token, product, "scale"),
                seed_seconds=time.perf_counter() - started,
            )
            say(f"    {run.seed_seconds:.1f} s")
            claim_once(session, api, target.operator_token, run)  # warm-up: the instance's caches
            run.latencies, run.calls, run.rows = [], [], []
            if n == 0 and before_claims:
                say(f"  scale: {before_claims} claims at {size:,} before the larger sizes exist")
                for _ in range(before_claims):
                    claim_once(session, api, target.operator_token, run)
                run.before = run.latencies
                run.latencies, run.calls, run.rows = [], [], []
            runs.append(run)
        say(f"  scale: {claims} claims per size, round-robin over {', '.join(map(str, sizes))}")
        for _ in range(claims):
            for run in runs:
                claim_once(session, api, target.operator_token, run)
                query_once(stores, run, top)
    return runs


@dataclass
class ScaleResult:
    runs: list[SizeRun]
    args: argparse.Namespace
    name: str = "scale_curve"

    @property
    def smallest(self) -> SizeRun:
        return self.runs[0]

    @property
    def largest(self) -> SizeRun:
        return self.runs[-1]

    def growth(self) -> float | None:
        return ratio(
            Latency.of(self.largest.latencies).p50_ms, Latency.of(self.smallest.latencies).p50_ms
        )

    def calls_growth(self) -> float | None:
        return ratio(
            sum(self.largest.calls_per_claim().values()),
            sum(self.smallest.calls_per_claim().values()),
        )

    def report(self, info: Mapping[str, Any]) -> str:
        rows = []
        for r in self.runs:
            lat, q = Latency.of(r.latencies), Latency.of(r.query_latencies)
            rows.append(
                [
                    f"{r.queued:,}",
                    str(len(r.latencies)),
                    f"{lat.p50_ms:.1f}",
                    f"{lat.p99_ms:.1f}",
                    fmt_calls(r.calls_per_claim()),
                    f"{sum(r.rows) / len(r.rows):.1f}",
                    f"{q.p50_ms:.1f}",
                ]
            )
        lines = [
            "",
            f"Scale curve - {machine_line(info)}",
            table(
                [
                    "queued",
                    "claims",
                    "claim p50 ms",
                    "p99 ms",
                    "store calls per claim",
                    "docs per query",
                    "query alone p50 ms",
                ],
                rows,
            ),
            f"growth {self.largest.queued:,} / {self.smallest.queued:,} queued: "
            f"claim p50 {fmt_ratio(self.growth())}, store calls per claim "
            f"{fmt_ratio(self.calls_growth())}",
        ]
        first = self.smallest
        if first.before:
            before = Latency.of(first.before).p50_ms
            after = Latency.of(first.latencies).p50_ms
            seeded = sum(r.queued for r in self.runs[1:])
            lines.append(
                f"emulator effect: claim p50 at {first.queued:,} queued was {before:.1f} ms before "
                f"the other {seeded:,}+ jobs were seeded in other products, {after:.1f} ms after "
                f"({fmt_ratio(ratio(after, before))}): the emulator filters the whole container "
                "on every query"
            )
        lines.append("")
        return "\n".join(lines)

    def summary(self) -> list[tuple[str, str]]:
        rows = []
        for r in self.runs:
            lat = Latency.of(r.latencies)
            rows.append(
                (
                    f"scale, {r.queued:,} queued: claim p50; store calls per claim",
                    f"{lat.p50_ms:.1f} ms; {sum(r.calls_per_claim().values()):.2f} "
                    f"({fmt_calls(r.calls_per_claim())}), {sum(r.rows) / len(r.rows):.0f} docs "
                    "per query",
                )
            )
        rows.append(
            (
                f"scale, growth {self.largest.queued:,} / {self.smallest.queued:,}: "
                "claim p50; store calls",
                f"{fmt_ratio(self.growth())}; {fmt_ratio(self.calls_growth())}",
            )
        )
        return rows

    def payload(self, info: Mapping[str, Any]) -> dict[str, Any]:
        config = {
            "sizes": self.args.sizes,
            "claims": self.args.claims,
            "before_claims": self.args.before_claims,
            "seeded_through": "Coordinator.submit over the Azure adapters (not HTTP)",
        }
        return part_payload(
            self.name,
            info,
            config,
            runs=[r.as_dict() for r in self.runs],
            claim_p50_growth=self.growth(),
            store_calls_growth=self.calls_growth(),
        )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.scale_curve",
        description="Claim latency and store calls with 100 / 1,000 / 10,000 queued jobs.",
    )
    p.add_argument("--sizes", type=positive_sizes, default=[100, 1000, 10000], help="queue sizes")
    p.add_argument("--claims", type=int, default=30, help="measured claims per size (30)")
    p.add_argument(
        "--before-claims",
        type=int,
        default=10,
        help="claims at the smallest size before the others are seeded (10)",
    )
    p.add_argument("--seed-threads", type=int, default=8, help="threads seeding jobs (8)")
    add_common_arguments(p, DEFAULT_OUT)
    return p


def measure(target: Target, args: argparse.Namespace, say: Callable[[str], None]) -> ScaleResult:
    if args.claims < 1:
        raise BenchError("--claims must be at least 1")
    runs = measure_sizes(
        target,
        args.sizes,
        claims=args.claims,
        before_claims=args.before_claims,
        seed_threads=args.seed_threads,
        say=say,
    )
    return ScaleResult(runs, args)


def main(argv: Sequence[str] | None = None) -> int:
    return run_standalone(parser().parse_args(argv), measure)


if __name__ == "__main__":
    raise SystemExit(main())
