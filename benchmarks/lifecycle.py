"""Lifecycle: N queued jobs drained by C factories over HTTP, each job claimed, reported
``building`` and reported ``shipped``, with no engine.

    make bench                                     # every part, one table
    .venv/bin/python -m benchmarks --only lifecycle
    .venv/bin/python -m benchmarks.lifecycle --help

N jobs (2,000 by default) go into a fresh product (``Coordinator.submit`` over the Azure
adapters, not timed), C factories (8) enroll over HTTP with one seat each (the CLI's
default), then C threads start together. Each is one ``fleet-factory run`` without its
engine: the CLI's own HTTP client (``factory_cli.api.FleetClient``, one session per factory)
making the calls the runner makes for a job, in its order (``factory_cli.runner.Runner`` and
``factory_cli.jobrun.JobRun``):

- the gate poll ``GET /fleet/queue-state`` and the rule that turns it into a claim
  (``factory_cli.gate.Gate``): a poll before the first claim; then, within the runner's poll
  interval of a claim that found a job, the next claim goes without a poll;
- ``POST /fleet/claim`` with the runner's body (capabilities, seats 1, load, cost 0.5,
  version, a fresh ``requestId``, ``start``: the claim also starts the job);
- ``PATCH /fleet/jobs/{id}`` ``{leaseEpoch, stage: building}`` (``JobRun.start``), only when
  the claim did not start it (a coordinator without ``start``: the baseline's);
- ``PATCH /fleet/jobs/{id}`` ``{leaseEpoch, stage: shipped, result, progress}``, the body
  ``JobRun._final_body`` builds for an engine that exited 0 with nothing to say;
- ``POST /fleet/factories/heartbeat`` whenever it falls due at the cadence the coordinator
  answers (the first one at start, as the runner's first tick), with the runner's body.

Not sent, because a job with no engine and no repository gives the real factory nothing to
send: lease renewals (a job lasts milliseconds, a renewal is due after ``renewSeconds``),
agent events, artifacts (no engine log, no diff) and the runner's tick delay between calls.
Each factory stops at its first empty claim (204). Measured from one run, through the
counting host (``benchmarks/counting_app.py``):

- jobs/s: N over the time from the first claim sent to the last ship answered;
- the host's store requests per lifecycle, by kind and by operation, and by route per call;
- new TCP connections the host opened to each endpoint (Cosmos, Blob, Table) per 1,000 of
  its requests to that endpoint;
- host CPU-ms per API call by route (the handler's thread CPU time, which includes the store
  calls it makes), and the whole host process's CPU over the run;
- CAS conflicts per successful claim (conditional writes the emulator refused on the claim
  route);
- the job document's size at each step, and modelled RU per lifecycle (``RuModel``).

A later run prints each headline figure as a ratio to the baseline saved in
``benchmarks/reference/`` (``--baseline``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from benchmarks.common import (
    CAPABILITIES,
    REPO,
    RESULTS,
    BenchError,
    HostCalls,
    HttpApi,
    Latency,
    Target,
    add_common_arguments,
    fmt_calls,
    list_jobs,
    machine_line,
    ok,
    part_payload,
    per,
    run_standalone,
    say,
    seed_jobs,
    table,
)
from benchmarks.idle_cost import CostModel
from factory_cli.api import ApiError, FleetClient, Unavailable, new_request_id
from factory_cli.config import Settings as FactorySettings
from factory_cli.gate import Gate
from factory_cli.runner import DEFAULT_HEARTBEAT_SECONDS
from fleet.settings import Settings

DEFAULT_OUT = RESULTS / "lifecycle.json"
BASELINE = REPO / "benchmarks" / "reference" / "2026-12-05-lifecycle-baseline.json"
QUICK = ["--jobs", "200"]

CLAIM = "POST fleet/claim"
REPORT = "PATCH fleet/jobs/{id}"
GATE = "GET fleet/queue-state"
HEARTBEAT = "POST fleet/factories/heartbeat"
VERSION = "bench"
COST = 0.5  # the CLI's default FLEET_COST
POLL_SECONDS = FactorySettings.poll_seconds  # the CLI's default FLEET_POLL_SECONDS
DOC_KINDS = ("read", "query", "write", "patch")
TABLE_KINDS = ("table_read", "table_query", "table_write")
BLOB_KINDS = ("blob_read", "blob_write")


# --------------------------------------------------------------------------- the factories


@dataclass(frozen=True)
class Lifecycle:
    job_id: str
    epoch: int
    claim_sent: float  # perf_counter
    shipped_at: float  # perf_counter when the ship report's answer arrived


@dataclass
class Drained:
    """What the factories' threads saw."""

    lifecycles: list[Lifecycle] = field(default_factory=list)
    latencies: dict[str, list[float]] = field(default_factory=dict)  # by route, client side
    gate_polls: int = 0
    heartbeats: int = 0
    empty_claims: int = 0
    errors: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)  # 5xx/429 answers sent again
    began: float = 0.0  # perf_counter at the start barrier


class BenchFactory:
    """One factory: the calls ``fleet-factory run`` makes for each job, with no engine."""

    def __init__(
        self,
        client: FleetClient,
        factory_id: str,
        drained: Drained,
        lock: threading.Lock,
        *,
        gate: bool,
        heartbeats: bool,
        rand: random.Random,
    ) -> None:
        self.client = client
        self.factory_id = factory_id
        self.drained = drained
        self.lock = lock
        self.gate_on = gate
        self.heartbeats_on = heartbeats
        self.rand = rand
        self.gate = Gate()
        self.max_skip = 30.0
        self.heartbeat_every = DEFAULT_HEARTBEAT_SECONDS
        self.next_heartbeat_at = 0.0  # the runner beats on its first tick
        self.latencies: dict[str, list[float]] = {}
        self.lifecycles: list[Lifecycle] = []
        self.retried: list[str] = []
        self.gate_polls = self.beats = 0

    def _timed(self, route: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        answer = call(*args, **kwargs)
        self.latencies.setdefault(route, []).append(time.perf_counter() - began)
        return answer

    def _call(self, route: str, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One call, sent again after an ``Unavailable`` (5xx, 429) as the runner does after
        its backoff: a claim with the same ``requestId`` and ``retry`` (its reply may be all
        that was lost). A report refused after such a retry may have landed the first time:
        the check against the store at the end decides."""
        for attempt in range(6):
            try:
                return self._timed(route, call, *args, **kwargs)
            except Unavailable as exc:
                if attempt == 5:
                    raise
                self.retried.append(f"{route}: {exc.message}")
                if route == CLAIM:
                    kwargs["retry"] = True
                time.sleep(min(2.0, 0.25 * 2**attempt))
            except ApiError as exc:
                if attempt == 0 or route != REPORT:
                    raise
                self.retried.append(f"{route}: after a retry: {exc.message}")
                return None
        return None

    def _beat(self, running: tuple[str, int] | None) -> None:
        """``Runner._heartbeat`` when due: its body, its next-beat rule."""
        now = time.monotonic()
        if not self.heartbeats_on or now < self.next_heartbeat_at:
            return
        jobs = [] if running is None else [{"jobId": running[0], "leaseEpoch": running[1]}]
        for entry in jobs:
            entry["tokens"] = 0
        beat = {
            "capabilities": list(CAPABILITIES),
            "seats": 1,
            "load": 0 if running is None else 1,
            "cost": COST,
            "version": VERSION,
            "jobs": jobs,
            "ack": [],
        }
        reply = self._call(HEARTBEAT, self.client.heartbeat, beat)
        self.beats += 1
        cadence = reply.get("cadence") or {}
        if cadence.get("heartbeatSeconds"):
            self.heartbeat_every = float(cadence["heartbeatSeconds"])
        self.next_heartbeat_at = now + max(1.0, self.heartbeat_every) * (
            0.9 + 0.1 * self.rand.random()
        )

    def run(self, start: threading.Barrier) -> None:
        try:
            start.wait()
            self._drain()
        except ApiError as exc:
            with self.lock:
                self.drained.errors.append(f"{self.factory_id}: {exc}")
        finally:
            with self.lock:
                self.drained.lifecycles += self.lifecycles
                for route, seconds in self.latencies.items():
                    self.drained.latencies.setdefault(route, []).extend(seconds)
                self.drained.gate_polls += self.gate_polls
                self.drained.retried += self.retried
                self.drained.heartbeats += self.beats

    def _drain(self) -> None:
        while True:
            self._beat(None)
            version: int | None = None
            if self.gate_on and not self.gate.claim_directly(time.monotonic(), POLL_SECONDS):
                state = self._call(GATE, self.client.queue_state)
                self.gate_polls += 1
                version = int(state.get("version", 0))
                self.max_skip = float(state.get("maxSkipSeconds", self.max_skip))
                if not self.gate.should_claim(version, time.monotonic()):
                    return  # only after an empty claim, which already ended the drain
            sent = time.perf_counter()
            claim = self._call(
                CLAIM,
                self.client.claim,
                capabilities=list(CAPABILITIES),
                seats=1,
                load=0,
                cost=COST,
                version=VERSION,
                request_id=new_request_id(),
                start=True,  # as the runner claims
            )
            self.gate.claimed(
                found=claim is not None,
                version=version,
                now=time.monotonic(),
                max_skip=self.max_skip,
                u=self.rand.random(),
            )
            if claim is None:
                with self.lock:
                    self.drained.empty_claims += 1
                return
            job_id, epoch = str(claim["job"]["id"]), int(claim["lease"]["epoch"])
            began = time.monotonic()
            every = float((claim.get("cadence") or {}).get("heartbeatSeconds") or 0)
            if every:  # Runner._start: the job's cadence may bring the next beat forward
                self.next_heartbeat_at = min(self.next_heartbeat_at, began + every)
            self._beat((job_id, epoch))
            if claim["job"].get("stage") != "building":  # JobRun.start: not started by the claim
                self._call(REPORT, self.client.report, job_id, epoch, stage="building")
                self._beat((job_id, epoch))
            result: dict[
                str, Any
            ] = {  # JobRun._final_body for an engine that exited 0, said nothing
                "exitCode": 0,
                "tokens": 0,
                "costUsd": None,
                "durationSeconds": round(time.monotonic() - began, 3),
                "lastOutputLine": None,
                "factory": self.factory_id,
                "engine": "none",
                "artifacts": [],
            }
            self._call(
                REPORT,
                self.client.report,
                job_id,
                epoch,
                stage="shipped",
                result=result,
                progress={"tokens": 0},
            )
            self.lifecycles.append(Lifecycle(job_id, epoch, sent, time.perf_counter()))


def enroll_one_seat(target: Target, product: str, name: str) -> tuple[str, str]:
    """An enrollment token from the operator, exchanged as the CLI does (one seat):
    ``(factory id, factory token)``."""
    with HttpApi(target.api) as api:
        status, body = api.call(
            "POST", "fleet/enrollment-tokens", token=target.operator_token, body={}, product=product
        )
        enrollment = ok(status, body, 201, "create an enrollment token")["token"]
    client = FleetClient(target.api, None)
    try:
        answer = client.enroll(
            enrollment, name=name, capabilities=list(CAPABILITIES), seats=1, version=VERSION
        )
    finally:
        client.close()
    return str(answer["factoryId"]), str(answer["token"])


def drain(
    target: Target,
    factories: Sequence[tuple[str, str]],
    *,
    gate: bool = True,
    heartbeats: bool = True,
    seed: int = 17,
) -> Drained:
    """The factories (``(id, token)``) drain the queue together; each stops at its first
    empty claim."""
    drained = Drained()
    lock = threading.Lock()
    start = threading.Barrier(len(factories) + 1)
    clients = [FleetClient(target.api, token) for _, token in factories]
    workers = [
        BenchFactory(
            client,
            factory_id,
            drained,
            lock,
            gate=gate,
            heartbeats=heartbeats,
            rand=random.Random(seed + i),
        )
        for i, (client, (factory_id, _)) in enumerate(zip(clients, factories, strict=True))
    ]
    threads = [threading.Thread(target=w.run, args=(start,), daemon=True) for w in workers]
    for thread in threads:
        thread.start()
    start.wait()
    drained.began = time.perf_counter()
    for thread in threads:
        thread.join()
    for client in clients:
        client.close()
    return drained


def check_shipped_once(
    job_ids: Sequence[str], drained: Drained, stored: Sequence[Mapping[str, Any]]
) -> list[str]:
    """Problems with "every job shipped exactly once" (none: it held)."""
    problems = []
    per_job = Counter(lc.job_id for lc in drained.lifecycles)
    twice = [j for j, n in per_job.items() if n > 1]
    if twice:
        problems.append(f"{len(twice)} job(s) shipped more than once, e.g. {twice[0]}")
    missing = set(job_ids) - set(per_job)
    if missing:
        problems.append(f"{len(missing)} job(s) never shipped")
    if set(per_job) - set(job_ids):
        problems.append("ships of jobs not submitted here")
    by_id = {j["id"]: j for j in stored}
    not_shipped = [j for j in job_ids if (by_id.get(j) or {}).get("stage") != "shipped"]
    if not_shipped:
        job = by_id.get(not_shipped[0]) or {}
        problems.append(
            f"{len(not_shipped)} job(s) not stored as shipped, e.g. {not_shipped[0]}: "
            f"{job.get('stage')}"
        )
    return problems


# --------------------------------------------------------------------------- the cost model


@dataclass(frozen=True)
class RuModel:
    """RU of one Cosmos operation at a measured item size. Documented (Azure Cosmos DB,
    "Optimize request cost": point reads): a point read of a 1 KB item costs 1 RU, of a
    100 KB item 10 RU; sizes between are interpolated linearly, and no read costs less than
    1 RU. Every other figure is an assumption (``CostModel`` of the idle-cost part): a write
    (create, replace, upsert, delete) or a patch of an item up to 1 KB costs 6 RU and grows
    with size as a read does; a query page costs 2.8 RU, its floor; a refused conditional
    write costs 1 RU. See benchmarks/README.md."""

    base: CostModel = field(default_factory=CostModel)
    refused_ru: float = 1.0

    @staticmethod
    def size_factor(size_bytes: float | None) -> float:
        """1 up to 1 KB, 10 at 100 KB, linear between (the documented point-read curve)."""
        if size_bytes is None:
            return 1.0
        kb = size_bytes / 1024
        return max(1.0, 1.0 + 9.0 * (kb - 1.0) / 99.0)

    def operation(self, operation: str, size_bytes: float | None) -> float:
        factor = self.size_factor(size_bytes)
        if operation == "read":
            return self.base.read_ru * factor
        if operation in ("query", "count"):
            return self.base.query_ru
        if operation == "patch":
            return self.base.patch_ru * factor
        return self.base.write_ru * factor  # create, replace, upsert, delete


# --------------------------------------------------------------------------- figures


def _delta_nested(after: Mapping[str, Any], before: Mapping[str, Any]) -> dict[str, Any]:
    """``after - before`` for nested dicts of numbers (absent counts as 0)."""
    out: dict[str, Any] = {}
    for key, value in after.items():
        old = before.get(key)
        if isinstance(value, Mapping):
            inner = _delta_nested(value, old if isinstance(old, Mapping) else {})
            if inner:
                out[key] = inner
        elif isinstance(value, int | float):
            diff = value - (old if isinstance(old, int | float) else 0)
            if diff:
                out[key] = diff
    return out


def endpoint_names(env: Mapping[str, str]) -> dict[str, str]:
    """``host:port`` -> ``cosmos`` / ``blob`` / ``table`` / ``queue``, from the app settings."""
    names: dict[str, str] = {}
    cosmos = env.get("COSMOS_ENDPOINT") or env.get("COSMOS__accountEndpoint")
    if cosmos:
        parts = urlsplit(cosmos)
        names[f"{parts.hostname}:{parts.port}"] = "cosmos"
    for segment in (env.get("AzureWebJobsStorage") or "").split(";"):
        key, _, value = segment.partition("=")
        if key.endswith("Endpoint") and value.startswith("http"):
            parts = urlsplit(value)
            names[f"{parts.hostname}:{parts.port}"] = key[: -len("Endpoint")].lower()
    return names


def _machine_busy_seconds() -> float | None:
    """CPU seconds every core of the machine spent not idle, so far (``/proc/stat``)."""
    try:
        first = Path("/proc/stat").read_text(encoding="utf-8").splitlines()[0].split()
    except OSError:
        return None
    ticks = [int(x) for x in first[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def stack_processes(env: Mapping[str, str]) -> dict[str, list[int]]:
    """The emulators' processes on this machine, found by the ports they serve: ``cosmos``
    (its port on the command line, ``cosmos`` in it) and ``azurite`` (any of its ports)."""
    ports = {address.rpartition(":")[2]: name for address, name in endpoint_names(env).items()}
    found: dict[str, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        text = b" ".join(args).decode(errors="replace")
        served = {
            ports[a.decode(errors="replace")] for a in args if a.decode(errors="replace") in ports
        }
        if "cosmos" in served and "cosmos" in text:
            found.setdefault("cosmos emulator", []).append(int(entry.name))
        elif served & {"blob", "table", "queue"} and "azurite" in text:
            found.setdefault("azurite", []).append(int(entry.name))
    return found


def processes_cpu(pids: Mapping[str, Sequence[int]]) -> dict[str, float]:
    """CPU seconds (user + system) each named group of processes has used so far."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for name, group in pids.items():
        total = 0.0
        for pid in group:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
            except OSError:
                continue
            fields = stat.rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
        out[name] = total
    return out


def _self_cpu() -> float:
    times = os.times()
    return times.user + times.system


@dataclass
class LifecycleRun:
    jobs: int
    factories: int
    gate: bool
    heartbeats: bool
    drained: Drained
    before: dict[str, Any]  # host snapshots
    after: dict[str, Any]
    endpoints: dict[str, str]  # host:port -> endpoint name
    problems: list[str]
    submitted_bytes: int  # the job document as submitted (read back by the benchmark)
    machine_cpu_s: float | None  # the machine's busy CPU over the drain, every process
    bench_cpu_s: float  # this process's CPU over the drain (the factories' client side)
    emulators_cpu_s: dict[str, float]  # the emulators' processes' CPU over the drain
    model: RuModel = field(default_factory=RuModel)

    # ---- raw deltas

    @property
    def seconds(self) -> float:
        lcs = self.drained.lifecycles
        if not lcs:
            return 0.0
        return max(lc.shipped_at for lc in lcs) - min(lc.claim_sent for lc in lcs)

    @property
    def shipped(self) -> int:
        return len(self.drained.lifecycles)

    def calls(self) -> dict[str, int]:
        return (
            HostCalls(self.after["calls"], {}, 0)
            .minus(HostCalls(self.before["calls"], {}, 0))
            .calls
        )

    def operations_by_route(self) -> dict[str, dict[str, int]]:
        return _delta_nested(self.after["routes"]["calls"], self.before["routes"]["calls"])

    def refused_by_route(self) -> dict[str, dict[str, int]]:
        return _delta_nested(self.after["routes"]["refused"], self.before["routes"]["refused"])

    def connections(self) -> dict[str, int]:
        return _delta_nested(self.after["connections"], self.before["connections"])

    def cpu_by_route(self) -> dict[str, dict[str, float]]:
        return _delta_nested(self.after["cpu_by_route"], self.before["cpu_by_route"])

    def host_cpu_s(self) -> float:
        a, b = self.after["process_cpu"], self.before["process_cpu"]
        return float(a["user_s"] + a["system_s"] - b["user_s"] - b["system_s"])

    def sizes(self) -> list[dict[str, Any]]:
        """Per (route, operation, document type): documents seen in the run and their mean
        and largest sampled size."""
        old = {(s["route"], s["operation"], s["type"]): s for s in self.before["routes"]["sizes"]}
        out = []
        for s in self.after["routes"]["sizes"]:
            b = old.get((s["route"], s["operation"], s["type"]), {})
            seen = s["documents"] - b.get("documents", 0)
            samples = s["samples"] - b.get("samples", 0)
            total = s["bytes_total"] - b.get("bytes_total", 0)
            if seen:
                out.append(
                    {
                        "route": s["route"],
                        "operation": s["operation"],
                        "type": s["type"],
                        "documents": seen,
                        "mean_bytes": round(total / samples) if samples else None,
                        "max_bytes": s["bytes_max"],
                    }
                )
        return out

    # ---- figures

    def jobs_per_second(self) -> float:
        return self.shipped / self.seconds if self.seconds else 0.0

    def per_lifecycle(self) -> dict[str, float]:
        return per(self.calls(), self.shipped)

    def store_requests_per_lifecycle(self) -> float:
        return sum(self.per_lifecycle().values())

    def operations_per_lifecycle(self) -> dict[str, float]:
        total: Counter[str] = Counter()
        for ops in self.operations_by_route().values():
            total.update(ops)
        return per(dict(total), self.shipped)

    def route_calls(self, key: str) -> int:
        return int(self.cpu_by_route().get(key, {}).get("calls", 0))

    def cpu_ms_per_call(self) -> dict[str, float]:
        return {
            key: 1000 * v.get("cpu_s", 0.0) / v["calls"]
            for key, v in self.cpu_by_route().items()
            if v.get("calls")
        }

    def wall_ms_per_call(self) -> dict[str, float]:
        return {
            key: 1000 * v.get("wall_s", 0.0) / v["calls"]
            for key, v in self.cpu_by_route().items()
            if v.get("calls")
        }

    def store_calls_per_call(self) -> dict[str, dict[str, float]]:
        out = {}
        for key, ops in self.operations_by_route().items():
            n = self.route_calls(key)
            if n:
                out[key] = per(ops, n)
        return out

    def endpoint_requests(self) -> dict[str, int]:
        calls = self.calls()
        return {
            "cosmos": sum(calls.get(k, 0) for k in DOC_KINDS),
            "table": sum(calls.get(k, 0) for k in TABLE_KINDS),
            "blob": sum(calls.get(k, 0) for k in BLOB_KINDS),
        }

    def new_connections(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for address, n in self.connections().items():
            out[self.endpoints.get(address, address)] += n
        return dict(out)

    def connections_per_1000(self) -> dict[str, float | None]:
        """New connections to each endpoint per 1,000 of the host's requests to it."""
        requests = self.endpoint_requests()
        made = self.new_connections()
        return {
            name: (1000 * made.get(name, 0) / n if n else None)
            for name, n in requests.items()
            if n or made.get(name)
        }

    def claim_conflicts(self) -> int:
        return sum(self.refused_by_route().get(CLAIM, {}).values())

    def conflicts_per_claim(self) -> float:
        return self.claim_conflicts() / self.shipped if self.shipped else 0.0

    def job_sizes(self) -> dict[str, int | None]:
        """The job document's size (bytes of JSON, as the store returns it, system properties
        included) at each step: as submitted, then as each step wrote it."""
        steps: dict[str, int | None] = {"submitted": self.submitted_bytes}
        written = ("replace", "patch", "upsert", "create")
        for label, route, stage in (
            ("claimed", CLAIM, "assigned"),
            ("claimed", CLAIM, "building"),  # a claim that started the job
            ("building", REPORT, "building"),
            ("shipped", REPORT, "shipped"),
        ):
            for s in self.sizes():
                if (
                    s["route"] == route
                    and s["type"] == f"job:{stage}"
                    and s["operation"] in written
                ):
                    steps[label] = s["mean_bytes"]
        return steps

    def ru_by_operation(self) -> dict[str, float]:
        """Modelled RU of the run, by operation: each call priced at its measured size."""
        sized: dict[tuple[str, str], list[tuple[int, float | None]]] = {}
        for s in self.sizes():
            sized.setdefault((s["route"], s["operation"]), []).append(
                (s["documents"], s["mean_bytes"])
            )
        refused = self.refused_by_route()
        out: dict[str, float] = {}

        def add(operation: str, ru: float) -> None:
            out[operation] = out.get(operation, 0.0) + ru

        for route, ops in self.operations_by_route().items():
            for operation, n in ops.items():
                lost = refused.get(route, {}).get(operation, 0)
                add(operation, lost * self.model.refused_ru)
                if operation in ("query", "count"):
                    add(operation, n * self.model.operation(operation, None))
                    continue
                docs = sized.get((route, operation), [])
                priced = 0
                for count, mean in docs:
                    take = min(count, n - lost - priced)
                    add(operation, take * self.model.operation(operation, mean))
                    priced += take
                # Calls without a document back (a 404 read, a delete): priced at <= 1 KB.
                add(operation, max(0, n - lost - priced) * self.model.operation(operation, None))
        return out

    def ru_per_lifecycle(self) -> float:
        return sum(self.ru_by_operation().values()) / self.shipped if self.shipped else 0.0

    def headline(self) -> dict[str, float | None]:
        """The figures compared with the baseline (``x of baseline``)."""
        cpu = self.cpu_ms_per_call()
        conns = self.connections_per_1000()
        return {
            "jobs_per_second": self.jobs_per_second(),
            "store_requests_per_lifecycle": self.store_requests_per_lifecycle(),
            "cosmos_connections_per_1000": conns.get("cosmos"),
            "table_connections_per_1000": conns.get("table"),
            "cpu_ms_per_claim": cpu.get(CLAIM),
            "cpu_ms_per_report": cpu.get(REPORT),
            "cpu_ms_per_gate_poll": cpu.get(GATE),
            "cpu_ms_per_heartbeat": cpu.get(HEARTBEAT),
            "host_cpu_ms_per_lifecycle": 1000 * self.host_cpu_s() / self.shipped
            if self.shipped
            else None,
            "cas_conflicts_per_claim": self.conflicts_per_claim(),
            "ru_per_lifecycle": self.ru_per_lifecycle(),
        }

    def as_dict(self) -> dict[str, Any]:
        d = self.drained
        return {
            "jobs": self.jobs,
            "factories": self.factories,
            "gate": self.gate,
            "heartbeats": self.heartbeats,
            "shipped": self.shipped,
            "seconds": round(self.seconds, 3),
            "headline": self.headline(),
            "store_calls": self.calls(),
            "store_calls_per_lifecycle": self.per_lifecycle(),
            "operations_per_lifecycle": self.operations_per_lifecycle(),
            "operations_by_route": self.operations_by_route(),
            "store_calls_per_api_call": self.store_calls_per_call(),
            "refused_by_route": self.refused_by_route(),
            "api_calls": {k: int(v["calls"]) for k, v in self.cpu_by_route().items()},
            "cpu_ms_per_call": self.cpu_ms_per_call(),
            "handler_wall_ms_per_call": self.wall_ms_per_call(),
            "host_cpu_seconds": round(self.host_cpu_s(), 3),
            "host_cores_busy": self.host_cpu_s() / self.seconds if self.seconds else None,
            "machine_cpu_seconds": self.machine_cpu_s,
            "bench_process_cpu_seconds": round(self.bench_cpu_s, 3),
            "emulators_cpu_seconds": self.emulators_cpu_s,
            "emulators_cpu_ms_per_lifecycle": {
                name: 1000 * v / self.shipped for name, v in self.emulators_cpu_s.items()
            }
            if self.shipped
            else {},
            "size_sampling_cpu_seconds": self.after["routes"].get("overhead_cpu_s", 0)
            - self.before["routes"].get("overhead_cpu_s", 0),
            "new_connections": self.connections(),
            "new_connections_by_endpoint": self.new_connections(),
            "endpoint_requests": self.endpoint_requests(),
            "connections_per_1000_requests": self.connections_per_1000(),
            "document_sizes": self.sizes(),
            "job_document_bytes": self.job_sizes(),
            "ru_by_operation": self.ru_by_operation(),
            "ru_model": {
                "read_ru_1kb": self.model.base.read_ru,
                "read_ru_100kb": 10 * self.model.base.read_ru,
                "query_ru": self.model.base.query_ru,
                "write_ru_1kb": self.model.base.write_ru,
                "patch_ru_1kb": self.model.base.patch_ru,
                "refused_ru": self.model.refused_ru,
            },
            "client_latency_ms": {k: asdict(Latency.of(v)) for k, v in d.latencies.items() if v},
            "gate_polls": d.gate_polls,
            "heartbeats_sent": d.heartbeats,
            "empty_claims": d.empty_claims,
            "errors": d.errors,
            "retried": d.retried,
            "shipped_exactly_once": not self.problems,
            "problems": self.problems,
        }


def measure_drain(
    target: Target,
    jobs: int,
    factories: int,
    *,
    gate: bool = True,
    heartbeats: bool = True,
    seed_threads: int = 8,
    profile: Path | None = None,
    profile_idle: bool = True,
    say: Callable[[str], None] = say,
) -> LifecycleRun:
    """Seed ``jobs``, enroll ``factories``, drain, and read what the host spent."""
    from benchmarks.common import host_snapshot
    from fleet.store.azure import azure_stores

    settings = Settings.from_env(target.env)
    product = f"life-{uuid.uuid4().hex[:6]}"
    say(f"  lifecycle: seed {jobs} jobs in {product}, enroll {factories} factories (1 seat)")
    job_ids = seed_jobs(settings, product, jobs, threads=seed_threads, prefix="lifecycle")
    submitted = azure_stores(settings, ensure=False).documents.read(product, job_ids[0])
    submitted_bytes = len(json.dumps(submitted, separators=(",", ":")).encode())
    fleet = [enroll_one_seat(target, product, f"life-{i:02d}") for i in range(factories)]
    say(f"  lifecycle: {factories} factories drain {jobs} jobs (claim, building, shipped)")
    before = host_snapshot(target.api)
    spy = _start_profile(before.get("pid"), profile, idle=profile_idle)
    emulators = stack_processes(target.env)
    emulators_before = processes_cpu(emulators)
    machine_before, self_before = _machine_busy_seconds(), _self_cpu()
    try:
        drained = drain(target, fleet, gate=gate, heartbeats=heartbeats)
    finally:
        machine_after, self_after = _machine_busy_seconds(), _self_cpu()
        emulators_after = processes_cpu(emulators)
        _stop_profile(spy)
    after = host_snapshot(target.api)
    if drained.errors:
        raise BenchError(f"lifecycle: {drained.errors[:3]}")
    with HttpApi(target.api) as api:
        stored = list_jobs(api, target.operator_token, product)
    problems = check_shipped_once(job_ids, drained, stored)
    return LifecycleRun(
        jobs=jobs,
        factories=factories,
        gate=gate,
        heartbeats=heartbeats,
        drained=drained,
        before=before,
        after=after,
        endpoints=endpoint_names(target.env),
        problems=problems,
        submitted_bytes=submitted_bytes,
        machine_cpu_s=None
        if machine_before is None or machine_after is None
        else round(machine_after - machine_before, 3),
        bench_cpu_s=self_after - self_before,
        emulators_cpu_s={
            name: round(emulators_after[name] - emulators_before.get(name, 0.0), 3)
            for name in emulators_after
        },
    )


def _start_profile(
    pid: int | None, out: Path | None, *, idle: bool = True
) -> subprocess.Popen[bytes] | None:
    """``py-spy record`` on the host for the drain (collapsed stacks, every thread), if asked
    for: with ``idle``, threads waiting on a socket are sampled too (where the request
    threads' wall time goes); without, only the thread holding the GIL (``--gil``: where
    the host's Python CPU goes)."""
    if out is None or pid is None:
        return None
    out.parent.mkdir(parents=True, exist_ok=True)
    spy = os.environ.get("PY_SPY", "py-spy")
    # --nonblocking: never pause the host to sample it (a paused host times its store
    # calls out, and its callers see errors the product would not give).
    command = [spy, "record", "-p", str(pid), "--threads", "--nonblocking", "-f", "raw"]
    command += ["-r", "100"]
    command += ["--idle"] if idle else ["--gil"]
    try:
        process = subprocess.Popen(
            [*command, "-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    except OSError as exc:
        raise BenchError(f"--profile needs py-spy ({spy}): {exc}") from exc
    time.sleep(1.0)  # attached before the drain starts
    return process


def _stop_profile(process: subprocess.Popen[bytes] | None) -> None:
    if process is None:
        return
    process.send_signal(2)  # py-spy writes its output on SIGINT
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


# --------------------------------------------------------------------------- the part


def load_baseline(path: Path | None) -> dict[str, Any] | None:
    """The baseline's headline figures and sizes, if its JSON is there."""
    if path is None or not path.is_file():
        return None
    body = json.loads(path.read_text(encoding="utf-8"))
    run = body.get("run", body)
    if not run.get("headline"):
        return None
    return {
        "path": str(path),
        "headline": run["headline"],
        "jobs": run.get("jobs"),
        "factories": run.get("factories"),
        "machine": body.get("machine"),
    }


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def _times(value: float | None, base: float | None) -> str:
    if value is None or base is None:
        return "n/a"
    if base == 0:
        return "same" if value == 0 else "n/a (baseline 0)"
    return f"{value / base:.2f}x"


FIGURES: tuple[tuple[str, str, int], ...] = (
    ("jobs_per_second", "lifecycle jobs/s", 1),
    ("store_requests_per_lifecycle", "store requests per lifecycle", 2),
    ("cosmos_connections_per_1000", "new Cosmos connections per 1,000 Cosmos requests", 1),
    ("table_connections_per_1000", "new Table connections per 1,000 Table requests", 1),
    ("cpu_ms_per_claim", "host CPU-ms per claim", 2),
    ("cpu_ms_per_report", "host CPU-ms per report", 2),
    ("cpu_ms_per_gate_poll", "host CPU-ms per gate poll", 2),
    ("cpu_ms_per_heartbeat", "host CPU-ms per heartbeat", 2),
    ("host_cpu_ms_per_lifecycle", "host process CPU-ms per lifecycle", 1),
    ("cas_conflicts_per_claim", "CAS conflicts per successful claim", 2),
    ("ru_per_lifecycle", "modelled RU per lifecycle", 1),
)


@dataclass
class LifecycleResult:
    run: LifecycleRun
    args: argparse.Namespace
    baseline: dict[str, Any] | None
    name: str = "lifecycle"

    def _base(self, key: str) -> float | None:
        if self.baseline is None:
            return None
        value = self.baseline["headline"].get(key)
        return None if value is None else float(value)

    def report(self, info: Mapping[str, Any]) -> str:
        r = self.run
        head = r.headline()
        base = self.baseline
        lines = [
            "",
            f"Lifecycle - {machine_line(info)}",
            f"{r.shipped} of {r.jobs} jobs shipped by {r.factories} factories in "
            f"{r.seconds:.1f} s (gate {'on' if r.gate else 'off'}, heartbeats "
            f"{'on' if r.heartbeats else 'off'}); every job shipped exactly once: "
            f"{'yes' if not r.problems else 'NO'}",
            "",
            table(
                ["figure", "value", "baseline", "x of baseline"],
                [
                    [
                        label,
                        _num(head.get(key), digits),
                        _num(self._base(key), digits) if base else "-",
                        _times(head.get(key), self._base(key)) if base else "-",
                    ]
                    for key, label, digits in FIGURES
                ],
            ),
        ]
        if base:
            lines.append(
                f"baseline: {base['path']} (commit {(base.get('machine') or {}).get('commit')})"
            )
            if (base.get("jobs"), base.get("factories")) != (r.jobs, r.factories):
                lines.append(
                    f"NOTE: the baseline drained {base.get('jobs')} jobs with "
                    f"{base.get('factories')} factories, this run {r.jobs} with {r.factories}: "
                    "jobs/s and the per-call figures are not comparable (the emulator's "
                    "queries copy the whole container, so they slow as it fills)."
                )
        lines += [
            "",
            f"Store requests per lifecycle, by kind: {fmt_calls(r.per_lifecycle())}",
            "  by operation: "
            + ", ".join(f"{k} {v:.2f}" for k, v in sorted(r.operations_per_lifecycle().items())),
            "",
            "Per API call, by route (host side; CPU = the handler thread's CPU time):",
            table(
                ["route", "calls", "CPU ms", "handler wall ms", "client p50 ms", "store calls"],
                [
                    [
                        key,
                        str(r.route_calls(key)),
                        _num(r.cpu_ms_per_call().get(key)),
                        _num(r.wall_ms_per_call().get(key)),
                        _num(
                            Latency.of(r.drained.latencies[key]).p50_ms
                            if r.drained.latencies.get(key)
                            else None
                        ),
                        ", ".join(
                            f"{op} {v:.2f}"
                            for op, v in sorted(r.store_calls_per_call().get(key, {}).items())
                        )
                        or "none",
                    ]
                    for key in sorted(r.cpu_by_route())
                ],
                numbers_right=False,
            ),
            "",
            f"Host process CPU over the drain: {r.host_cpu_s():.1f} s "
            f"({_num(head['host_cpu_ms_per_lifecycle'], 1)} ms per lifecycle, "
            f"{_num(r.host_cpu_s() / r.seconds if r.seconds else None)} cores busy); "
            f"machine busy {_num(r.machine_cpu_s, 1)} CPU-s: the host {r.host_cpu_s():.1f}, "
            f"this process (the factories) {r.bench_cpu_s:.1f}, "
            + ", ".join(f"{k} {v:.1f}" for k, v in sorted(r.emulators_cpu_s.items()))
            + ", the rest anything else running.",
            "Emulators' CPU-ms per lifecycle (not the product's): "
            + (
                ", ".join(
                    f"{k} {1000 * v / r.shipped:.1f}" for k, v in sorted(r.emulators_cpu_s.items())
                )
                if r.shipped and r.emulators_cpu_s
                else "n/a (emulators not found on this machine)"
            ),
            "New connections by endpoint (count; per 1,000 requests to it): "
            + ", ".join(
                f"{name} {r.new_connections().get(name, 0)} ({_num(v, 1)})"
                for name, v in r.connections_per_1000().items()
            ),
            f"CAS conflicts on the claim route: {r.claim_conflicts()} for {r.shipped} claims; "
            f"refused writes by route: {r.refused_by_route() or 'none'}",
            "Job document (bytes of JSON): "
            + ", ".join(f"{k} {v}" for k, v in r.job_sizes().items()),
            "Modelled RU per lifecycle by operation: "
            + ", ".join(f"{k} {v / r.shipped:.1f}" for k, v in sorted(r.ru_by_operation().items()))
            + f" = {r.ru_per_lifecycle():.1f}",
            f"Factories: {r.drained.gate_polls} gate polls, {r.drained.heartbeats} heartbeats, "
            f"{r.drained.empty_claims} empty claims, {len(r.drained.retried)} calls sent again "
            f"after a server error" + (f": {r.drained.retried[:3]}" if r.drained.retried else "."),
        ]
        for problem in r.problems:
            lines.append(f"PROBLEM: {problem}")
        lines.append("")
        return "\n".join(lines)

    def summary(self) -> list[tuple[str, str]]:
        r = self.run
        head = r.headline()
        n = f"lifecycle N={r.jobs}, C={r.factories}"

        def cell(key: str, digits: int) -> str:
            text = _num(head.get(key), digits)
            if self.baseline:
                text += f" ({_times(head.get(key), self._base(key))} of baseline)"
            return text

        return [
            (f"{n}: jobs/s", cell("jobs_per_second", 1)),
            (
                f"{n}: store requests per lifecycle",
                f"{cell('store_requests_per_lifecycle', 2)}: {fmt_calls(r.per_lifecycle())}",
            ),
            (
                f"{n}: new Cosmos connections per 1,000 requests",
                cell("cosmos_connections_per_1000", 1),
            ),
            (
                f"{n}: host CPU-ms per claim / per report",
                f"{cell('cpu_ms_per_claim', 2)} / {cell('cpu_ms_per_report', 2)}",
            ),
            (f"{n}: CAS conflicts per successful claim", cell("cas_conflicts_per_claim", 2)),
            (f"{n}: modelled RU per lifecycle", cell("ru_per_lifecycle", 1)),
            (f"{n}: every job shipped exactly once", "yes" if not r.problems else "NO"),
        ]

    def payload(self, info: Mapping[str, Any]) -> dict[str, Any]:
        config = {
            "jobs": self.args.jobs,
            "factories": self.args.factories,
            "gate": not self.args.no_gate,
            "heartbeats": not self.args.no_heartbeats,
        }
        return part_payload(
            self.name,
            info,
            config,
            run=self.run.as_dict(),
            baseline=None
            if self.baseline is None
            else {
                "path": self.baseline["path"],
                "ratios": {
                    key: (
                        None
                        if (v := self.run.headline().get(key)) is None or not (b := self._base(key))
                        else v / b
                    )
                    for key, _, _ in FIGURES
                },
            },
        )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.lifecycle",
        description="N queued jobs drained by C factories over HTTP on the local stack: "
        "claim, building, shipped (no engine).",
    )
    p.add_argument("--jobs", type=int, default=2000, help="N, jobs to drain (2000; --quick 200)")
    p.add_argument("--factories", type=int, default=8, help="C, factories (8)")
    p.add_argument("--quick", action="store_true", help="200 jobs (a smoke run)")
    p.add_argument(
        "--no-gate", action="store_true", help="no gate poll before each claim (the CLI polls)"
    )
    p.add_argument(
        "--no-heartbeats", action="store_true", help="no heartbeats (the CLI sends them)"
    )
    p.add_argument(
        "--baseline",
        type=Path,
        default=BASELINE,
        help=f"figures to print ratios against, if the file exists ({BASELINE.name})",
    )
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="py-spy collapsed stacks of the host during the drain, to this file (py-spy on "
        "PATH, or PY_SPY=/path/to/py-spy)",
    )
    p.add_argument(
        "--profile-cpu",
        action="store_true",
        help="with --profile: sample only the thread holding the GIL (default: every request "
        "thread, waiting ones too)",
    )
    add_common_arguments(p, DEFAULT_OUT)
    return p


def measure(
    target: Target, args: argparse.Namespace, say: Callable[[str], None]
) -> LifecycleResult:
    jobs = 200 if args.quick and args.jobs == 2000 else args.jobs
    if jobs < 1 or args.factories < 1:
        raise BenchError("--jobs and --factories must be positive")
    run = measure_drain(
        target,
        jobs,
        args.factories,
        gate=not args.no_gate,
        heartbeats=not args.no_heartbeats,
        profile=args.profile,
        profile_idle=not args.profile_cpu,
        say=say,
    )
    if args.profile is not None and args.profile.is_file():
        from benchmarks.profile_summary import parse, render

        with args.profile.open(encoding="utf-8") as f:
            say("  lifecycle: where the host's request threads spent the drain (py-spy):")
            for line in render(parse(f)).splitlines():
                say(f"    {line}")
    if run.problems:
        say(f"  lifecycle: NOT every job shipped exactly once: {run.problems}")
    args.jobs = jobs
    return LifecycleResult(run, args, load_baseline(args.baseline))


def main(argv: Sequence[str] | None = None) -> int:
    return run_standalone(parser().parse_args(argv), measure)


if __name__ == "__main__":
    raise SystemExit(main())
