"""Claim storm: N factories race for J queued jobs through the real HTTP path.

    make bench                                     # every part, one table
    .venv/bin/python -m benchmarks.claim_storm --help

For each N (1, 8, 32 by default): J jobs are submitted to a fresh product (through
``Coordinator.submit`` over the Azure adapters, not timed), N factories are enrolled over
HTTP, then N threads (one ``requests.Session`` each, as the CLI keeps) start together and
``POST /api/fleet/claim`` until they get 204. Measured:

- claims/s (J over the time from the start to the last successful claim), and the p50/p99
  latency of a successful claim as the client sees it;
- the host's store calls per successful claim, by kind (the benchmark host's counters, see
  ``benchmarks/counting_app.py``), and the CAS conflicts per successful claim: the
  conditional replaces the emulator refused with 412, counted at the store seam;
- that every job was assigned exactly once: each job granted to one factory only, and the
  store agrees (stage ``assigned``, epoch 1, held by the factory it was granted to);
- in the same run, the raw store limit: conditional replaces (``If-Match``) per second by N
  threads through the same adapter (``CosmosDocumentStore.replace``, one client as the host
  has) on the same emulator, each thread on its own copy of a claimed job document (no
  conflicts), and the ratio claims/s / raw CAS/s.
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import requests

from benchmarks.common import (
    CLAIM_BODY,
    MAX_SEATS,
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
    host_measure,
    list_jobs,
    machine_line,
    part_payload,
    per,
    positive_sizes,
    ratio,
    run_standalone,
    seed_jobs,
    table,
)
from fleet.settings import Settings

DEFAULT_OUT = RESULTS / "claim_storm.json"
QUICK = ["--factories", "1,4", "--jobs", "40", "--cas-seconds", "1"]


@dataclass(frozen=True)
class Grant:
    job_id: str
    holder: str
    epoch: int
    seconds: float  # the claim's latency
    done_at: float  # perf_counter when its answer arrived


@dataclass
class Claimed:
    """What the factories' threads saw."""

    grants: list[Grant] = field(default_factory=list)
    empty: int = 0  # 204 answers (each thread ends on one)
    errors: list[str] = field(default_factory=list)


def storm(api: str, tokens: Sequence[str]) -> tuple[Claimed, float]:
    """Every factory claims until it gets 204, all starting together. Returns what they got
    and the start time (perf_counter)."""
    claimed = Claimed()
    lock = threading.Lock()
    start = threading.Barrier(len(tokens) + 1)
    url = f"{api.rstrip('/')}/fleet/claim"

    def factory(token: str) -> None:
        with requests.Session() as session:
            headers = headers_for(token, None)
            start.wait()
            while True:
                began = time.perf_counter()
                try:
                    response = session.post(url, json=CLAIM_BODY, headers=headers, timeout=120)
                except requests.RequestException as exc:
                    with lock:
                        claimed.errors.append(repr(exc))
                    return
                ended = time.perf_counter()
                if response.status_code == 204:
                    with lock:
                        claimed.empty += 1
                    return
                if response.status_code != 200:
                    with lock:
                        claimed.errors.append(f"{response.status_code} {response.text[:200]}")
                    return
                body = response.json()
                grant = Grant(
                    job_id=body["job"]["id"],
                    holder=body["lease"]["holder"],
                    epoch=int(body["lease"]["epoch"]),
                    seconds=ended - began,
                    done_at=ended,
                )
                with lock:
                    claimed.grants.append(grant)

    threads = [threading.Thread(target=factory, args=(t,), daemon=True) for t in tokens]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    return claimed, began


def check_assigned_once(
    job_ids: Sequence[str], grants: Sequence[Grant], stored: Sequence[Mapping[str, Any]]
) -> list[str]:
    """Problems with "every job assigned exactly once" (none: it held)."""
    problems = []
    per_job = Counter(g.job_id for g in grants)
    twice = [j for j, n in per_job.items() if n > 1]
    if twice:
        problems.append(f"{len(twice)} job(s) granted more than once, e.g. {twice[0]}")
    missing = set(job_ids) - set(per_job)
    if missing:
        problems.append(f"{len(missing)} job(s) never granted")
    foreign = set(per_job) - set(job_ids)
    if foreign:
        problems.append(f"{len(foreign)} grant(s) of jobs not submitted here")
    by_id = {j["id"]: j for j in stored}
    for grant in grants:
        job = by_id.get(grant.job_id)
        seen = None if job is None else (job.get("stage"), job.get("holder"), job.get("epoch"))
        if seen != ("assigned", grant.holder, grant.epoch):
            problems.append(f"{grant.job_id}: stored {seen}, granted to {grant.holder}")
            break
    return problems


# --------------------------------------------------------------------------- raw CAS


@dataclass
class CasRun:
    """Conditional replaces (If-Match) by ``threads`` threads, each on its own document."""

    threads: int
    seconds: float
    latencies: list[float]
    refused: int  # 412s (none expected: no two threads share a document)
    document_bytes: int

    @property
    def per_second(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0


def raw_cas(
    settings: Settings, template: Mapping[str, Any], threads: int, seconds: float
) -> CasRun:
    """The store's own limit, from the same adapter the host uses: each thread replaces its
    own copy of ``template`` with ``If-Match`` for ``seconds``."""
    import json

    from fleet.errors import ConcurrencyConflict
    from fleet.store.azure import azure_stores

    stores = azure_stores(settings, ensure=False)
    product = f"cas-{uuid.uuid4().hex[:8]}"
    body = {k: v for k, v in template.items() if not k.startswith("_")}
    docs = [
        stores.documents.create({**body, "id": f"cas-{i}", "productId": product})
        for i in range(threads)
    ]
    size = len(json.dumps(docs[0], separators=(",", ":")).encode())
    latencies: list[float] = []
    refused = 0
    lock = threading.Lock()
    start = threading.Barrier(threads + 1)
    deadline = [0.0]

    def writer(doc: dict[str, Any]) -> None:
        nonlocal refused
        mine: list[float] = []
        etag = doc["_etag"]
        doc = {k: v for k, v in doc.items() if not k.startswith("_")}
        start.wait()
        n = 0
        while time.perf_counter() < deadline[0]:
            n += 1
            doc["benchSeq"] = n
            began = time.perf_counter()
            try:
                etag = stores.documents.replace(doc, etag=etag)["_etag"]
            except ConcurrencyConflict:
                with lock:
                    refused += 1
                etag = stores.documents.read(product, doc["id"])["_etag"]
                continue
            mine.append(time.perf_counter() - began)
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=writer, args=(d,), daemon=True) for d in docs]
    for worker in workers:
        worker.start()
    deadline[0] = time.perf_counter() + seconds
    start.wait()
    began = time.perf_counter()
    for worker in workers:
        worker.join()
    return CasRun(threads, time.perf_counter() - began, latencies, refused, size)


# --------------------------------------------------------------------------- one N


@dataclass
class StormRun:
    factories: int
    jobs: int
    seconds: float  # from the start to the last successful claim
    latencies: list[float]
    empty: int
    errors: list[str]
    calls: dict[str, int]  # the host's store calls during the storm
    refused: dict[str, int]  # conditional writes the store refused (412), by call
    problems: list[str]  # "assigned exactly once" violations
    cas: CasRun

    @property
    def claims(self) -> int:
        return len(self.latencies)

    @property
    def claims_per_second(self) -> float:
        return self.claims / self.seconds if self.seconds else 0.0

    def per_claim(self) -> dict[str, float]:
        return per(self.calls, self.claims)

    def round_trips_per_claim(self) -> float:
        return sum(self.per_claim().values())

    def conflicts_per_claim(self) -> float:
        return self.refused.get("replace", 0) / self.claims if self.claims else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "factories": self.factories,
            "jobs": self.jobs,
            "claims": self.claims,
            "empty_claims": self.empty,
            "errors": self.errors,
            "seconds": round(self.seconds, 3),
            "claims_per_second": self.claims_per_second,
            "claim_latency_ms": asdict(Latency.of(self.latencies)),
            "store_calls": self.calls,
            "store_calls_per_claim": self.per_claim(),
            "round_trips_per_claim": self.round_trips_per_claim(),
            "refused_writes": self.refused,
            "cas_conflicts_per_claim": self.conflicts_per_claim(),
            "assigned_exactly_once": not self.problems,
            "problems": self.problems,
            "raw_cas": {
                "threads": self.cas.threads,
                "seconds": round(self.cas.seconds, 3),
                "replaces": len(self.cas.latencies),
                "per_second": self.cas.per_second,
                "latency_ms": asdict(Latency.of(self.cas.latencies)),
                "refused": self.cas.refused,
                "document_bytes": self.cas.document_bytes,
            },
            "claims_per_raw_cas": ratio(self.claims_per_second, self.cas.per_second),
        }


def run_one(
    target: Target, factories: int, jobs: int, cas_seconds: float, say: Callable[[str], None]
) -> StormRun:
    settings = Settings.from_env(target.env)
    product = f"storm-{uuid.uuid4().hex[:6]}-n{factories}"
    say(f"  storm N={factories}: seed {jobs} jobs in {product}, enroll {factories} factories")
    job_ids = seed_jobs(settings, product, jobs, prefix="storm")
    with HttpApi(target.api) as api:
        tokens = [
            enroll(api, target.operator_token, product, f"storm-{i:02d}") for i in range(factories)
        ]
    say(f"  storm N={factories}: {factories} factories claim until the queue is empty")
    with host_measure(target.api) as measured:
        claimed, began = storm(target.api, tokens)
    if claimed.errors:
        raise BenchError(f"claim storm N={factories}: {claimed.errors[:3]}")
    with HttpApi(target.api) as api:
        stored = list_jobs(api, target.operator_token, product)
    problems = check_assigned_once(job_ids, claimed.grants, stored)
    last = max((g.done_at for g in claimed.grants), default=began)
    say(f"  storm N={factories}: raw If-Match replaces by {factories} thread(s), {cas_seconds} s")
    from fleet.store.azure import azure_stores

    template = azure_stores(settings, ensure=False).documents.read(product, job_ids[0])
    cas = raw_cas(settings, template, factories, cas_seconds)
    return StormRun(
        factories=factories,
        jobs=jobs,
        seconds=last - began,
        latencies=[g.seconds for g in claimed.grants],
        empty=claimed.empty,
        errors=claimed.errors,
        calls=measured[0].calls,
        refused=measured[0].conflicts,
        problems=problems,
        cas=cas,
    )


# --------------------------------------------------------------------------- the part


@dataclass
class StormResult:
    runs: list[StormRun]
    args: argparse.Namespace
    name: str = "claim_storm"

    def rows(self) -> list[list[str]]:
        rows = []
        for r in self.runs:
            lat = Latency.of(r.latencies)
            rows.append(
                [
                    str(r.factories),
                    str(r.jobs),
                    f"{r.claims_per_second:.1f}",
                    f"{lat.p50_ms:.1f}",
                    f"{lat.p99_ms:.1f}",
                    f"{r.round_trips_per_claim():.2f}",
                    f"{r.conflicts_per_claim():.2f}",
                    f"{r.cas.per_second:.0f}",
                    fmt_ratio(ratio(r.claims_per_second, r.cas.per_second)),
                    "yes" if not r.problems else "NO",
                ]
            )
        return rows

    def report(self, info: Mapping[str, Any]) -> str:
        lines = [
            "",
            f"Claim storm - {machine_line(info)}",
            table(
                [
                    "N",
                    "jobs",
                    "claims/s",
                    "p50 ms",
                    "p99 ms",
                    "store calls/claim",
                    "CAS conflicts/claim",
                    "raw CAS/s",
                    "claims/raw CAS",
                    "each job once",
                ],
                self.rows(),
            ),
            "",
            "Store calls per successful claim, by kind (includes each factory's final empty "
            "claim and its first claim's cache misses):",
        ]
        for r in self.runs:
            lines.append(
                f"  N={r.factories}: {fmt_calls(r.per_claim())} "
                f"({r.claims} claims + {r.empty} empty; refused writes {r.refused or 'none'}; "
                f"raw CAS p50 {Latency.of(r.cas.latencies).p50_ms:.1f} ms on "
                f"{r.cas.document_bytes} B documents, {r.cas.refused} refused)"
            )
            for problem in r.problems:
                lines.append(f"  N={r.factories}: PROBLEM: {problem}")
        lines.append("")
        return "\n".join(lines)

    def summary(self) -> list[tuple[str, str]]:
        rows = []
        for r in self.runs:
            lat = Latency.of(r.latencies)
            n = f"storm N={r.factories}, J={r.jobs}"
            rows += [
                (
                    f"{n}: claims/s (p50 / p99 ms)",
                    f"{r.claims_per_second:.1f} ({lat.p50_ms:.1f} / {lat.p99_ms:.1f})",
                ),
                (
                    f"{n}: store calls per claim",
                    f"{r.round_trips_per_claim():.2f} ({fmt_calls(r.per_claim())})",
                ),
                (f"{n}: CAS conflicts per claim", f"{r.conflicts_per_claim():.2f}"),
                (
                    f"{n}: raw CAS/s, claims/raw CAS",
                    f"{r.cas.per_second:.0f}, "
                    f"{fmt_ratio(ratio(r.claims_per_second, r.cas.per_second))}",
                ),
                (f"{n}: every job assigned exactly once", "yes" if not r.problems else "NO"),
            ]
        return rows

    def payload(self, info: Mapping[str, Any]) -> dict[str, Any]:
        config = {
            "factories": self.args.factories,
            "jobs": self.args.jobs,
            "cas_seconds": self.args.cas_seconds,
        }
        return part_payload(self.name, info, config, runs=[r.as_dict() for r in self.runs])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.claim_storm",
        description="N factories race for J queued jobs over HTTP on the local stack.",
    )
    p.add_argument(
        "--factories", type=positive_sizes, default=[1, 8, 32], help="values of N (1,8,32)"
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=MAX_SEATS,
        help=f"J, queued jobs per storm ({MAX_SEATS}: what one factory may hold at once)",
    )
    p.add_argument(
        "--cas-seconds", type=float, default=3.0, help="raw If-Match replace run per N (3)"
    )
    add_common_arguments(p, DEFAULT_OUT)
    return p


def measure(target: Target, args: argparse.Namespace, say: Callable[[str], None]) -> StormResult:
    runs = [run_one(target, n, args.jobs, args.cas_seconds, say) for n in args.factories]
    failed = [r for r in runs if r.problems]
    if failed:
        say(f"  storm: NOT every job assigned exactly once: {failed[0].problems}")
    return StormResult(runs, args)


def main(argv: Sequence[str] | None = None) -> int:
    return run_standalone(parser().parse_args(argv), measure)


if __name__ == "__main__":
    raise SystemExit(main())
