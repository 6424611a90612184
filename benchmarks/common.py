"""What every benchmark shares: the stack it measures, the HTTP helpers, the host's store-call
counters, percentiles, the text table and the machine it ran on.

The stack: Azurite and the Cosmos emulator from ``devtools.stack`` (a fresh one on free
ports, stopped on exit), and a local Functions host (``python -m devtools``) started by
``CountingHost`` to serve ``benchmarks.counting_app:app``: the real ``function_app.app``, the
same handlers and adapters, plus one anonymous read-only route that reports the host process's
store calls by kind and the conditional writes the store refused (412). The host runs with its
timers off (``--no-timers``), so every store call it makes is one a benchmark asked for.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import platform
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any, Protocol
from urllib.parse import quote

import requests

from devtools.stack import host_command
from fleet.coordinator.service import Coordinator
from fleet.domain.models import Factory
from fleet.domain.scheduler import FactoryView
from fleet.settings import local_stack_env
from fleet.store.counters import KINDS
from fleet.store.ports import Stores

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
CAPABILITIES = ("python",)
SELF = {"capabilities": list(CAPABILITIES), "seats": 1, "load": 0, "version": "bench"}
CLAIM_BODY = {k: v for k, v in SELF.items() if k != "version"}
# A benchmark factory holds every job it claims (none is finished): it enrolls with the most
# seats a factory may have, since the coordinator never lets one hold more live leases.
MAX_SEATS = 256
STORE_CALLS_ROUTE = "bench/store-calls"  # served by benchmarks.counting_app


class BenchError(Exception):
    """The benchmark could not measure what it set out to (the message says what failed)."""


def say(line: str) -> None:
    """Progress goes to stderr; the table and the JSON path to stdout."""
    print(line, file=sys.stderr, flush=True)


def interrupt_on_signals() -> None:
    """Ctrl-C or SIGTERM unwinds through ``stack_target``, which stops what it started."""

    def _interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)


# --------------------------------------------------------------------------- the API


class Api(Protocol):
    """One way to make an API call: over HTTP to the host, or in-process."""

    def call(
        self,
        method: str,
        path: str,
        *,
        token: str,
        body: Any = None,
        product: str | None = None,
    ) -> tuple[int, Any]: ...


def headers_for(token: str, product: str | None) -> dict[str, str]:
    headers = {"authorization": f"Bearer {token}", "content-type": "application/json"}
    if product is not None:
        headers["x-fleet-product"] = product
    return headers


class HttpApi:
    """The real HTTP path: the local host serving function_app.py. Keeps one connection
    (a ``requests.Session``, as the factory CLI does); not thread-safe: one per thread."""

    def __init__(self, api: str) -> None:
        self.api = api.rstrip("/")
        self.session = requests.Session()

    def call(
        self,
        method: str,
        path: str,
        *,
        token: str,
        body: Any = None,
        product: str | None = None,
    ) -> tuple[int, Any]:
        response = self.session.request(
            method,
            f"{self.api}/{path.lstrip('/')}",
            json=body,
            headers=headers_for(token, product),
            timeout=60,
        )
        return response.status_code, (response.json() if response.content else None)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> HttpApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def ok(status: int, body: Any, expected: int, what: str) -> Any:
    if status != expected:
        raise BenchError(f"{what}: expected {expected}, got {status}: {body}")
    return body


def enroll(api: Api, operator_token: str, product: str, name: str) -> str:
    """An enrollment token from the operator, exchanged for the factory's own token."""
    status, body = api.call(
        "POST", "fleet/enrollment-tokens", token=operator_token, body={}, product=product
    )
    enrollment = ok(status, body, 201, "create an enrollment token")["token"]
    status, body = api.call(
        "POST",
        "fleet/factories/enroll",
        token=enrollment,
        body={"name": name, **SELF, "seats": MAX_SEATS},
    )
    return str(ok(status, body, 201, f"enroll {name}")["token"])


def job_fields(title: str) -> dict[str, Any]:
    """A job any benchmark factory can take (JSON submit fields)."""
    return {"title": title, "capabilities": list(CAPABILITIES), "body": "benchmark job"}


def submit(api: Api, operator_token: str, product: str, title: str) -> dict[str, Any]:
    status, body = api.call(
        "POST", "fleet/jobs", token=operator_token, product=product, body=job_fields(title)
    )
    job: dict[str, Any] = ok(status, body, 201, "submit a job")["job"]
    return job


def list_jobs(api: Api, operator_token: str, product: str) -> list[dict[str, Any]]:
    """Every job of the product: ``GET /api/fleet/jobs`` page after page (``next``)."""
    jobs: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = "limit=1000" + (f"&cursor={quote(cursor)}" if cursor else "")
        status, body = api.call("GET", f"fleet/jobs?{query}", token=operator_token, product=product)
        page = ok(status, body, 200, "list jobs")
        jobs += page["jobs"]
        cursor = page.get("next")
        if not cursor:
            return jobs


# --------------------------------------------------------------------------- counters


@dataclass(frozen=True)
class HostCalls:
    """The host process's store calls by kind, the conditional writes the store refused
    (``replace``: a stale ``If-Match`` on a replace; ``patch``: a stale etag or a false
    filter predicate on a patch) and the documents its queries returned, since it started."""

    calls: dict[str, int]
    conflicts: dict[str, int]
    query_rows: int  # documents returned by queries

    def minus(self, before: HostCalls) -> HostCalls:
        return HostCalls(
            calls=_delta(self.calls, before.calls),
            conflicts=_delta(self.conflicts, before.conflicts),
            query_rows=self.query_rows - before.query_rows,
        )


def _delta(after: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    keys = sorted(set(after) | set(before))
    return {
        k: after.get(k, 0) - before.get(k, 0) for k in keys if after.get(k, 0) != before.get(k, 0)
    }


def host_calls(api: str) -> HostCalls:
    """Read the counting host's totals (the route itself makes no store call)."""
    response = requests.get(f"{api.rstrip('/')}/{STORE_CALLS_ROUTE}", timeout=30)
    if response.status_code != 200:
        raise BenchError(
            f"GET {STORE_CALLS_ROUTE}: {response.status_code} (is the host serving "
            "benchmarks.counting_app:app?)"
        )
    body = response.json()
    return HostCalls(
        calls=dict(body["calls"]),
        conflicts=dict(body["conflicts"]),
        query_rows=int(body["query_rows"]),
    )


def host_snapshot(api: str) -> dict[str, Any]:
    """Everything the counting host reports (``benchmarks.counting_app.store_calls``): its
    store calls, refused writes, document calls and sampled sizes by route, new connections
    by ``host:port``, CPU by route and the process's CPU time, so far."""
    response = requests.get(f"{api.rstrip('/')}/{STORE_CALLS_ROUTE}", timeout=30)
    if response.status_code != 200:
        raise BenchError(f"GET {STORE_CALLS_ROUTE}: {response.status_code}")
    body: dict[str, Any] = response.json()
    if "cpu_by_route" not in body:
        raise BenchError(
            f"GET {STORE_CALLS_ROUTE} has no CPU or connection counters: the host serves an "
            "older benchmarks.counting_app"
        )
    return body


@contextmanager
def host_measure(api: str) -> Iterator[list[HostCalls]]:
    """Yields a list that holds, on exit, the host's store calls made inside the block."""
    out: list[HostCalls] = []
    before = host_calls(api)
    yield out
    out.append(host_calls(api).minus(before))


def per(calls: Mapping[str, int], n: int) -> dict[str, float]:
    return {k: v / n for k, v in calls.items()} if n else {}


# --------------------------------------------------------------------------- statistics


def percentile(ordered: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of sorted samples."""
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Latency:
    samples: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Latency:
        if not seconds:
            raise BenchError("no latency samples")
        ordered = sorted(seconds)
        return cls(
            samples=len(ordered),
            p50_ms=percentile(ordered, 50) * 1000,
            p99_ms=percentile(ordered, 99) * 1000,
            mean_ms=sum(ordered) / len(ordered) * 1000,
            max_ms=ordered[-1] * 1000,
        )


def ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def fmt_calls(calls: Mapping[str, float]) -> str:
    parts = []
    for kind in KINDS:
        value = calls.get(kind, 0)
        if value:
            text = f"{value:.0f}" if float(value).is_integer() else f"{value:.2f}"
            parts.append(f"{kind} {text}")
    return ", ".join(parts) or "none"


def table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], *, numbers_right: bool = True
) -> str:
    """A plain text table: numbers right-aligned (unless ``numbers_right`` is off), text
    left-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def numeric(cell: str) -> bool:
        return numbers_right and cell.replace(",", "").replace(".", "").rstrip("x").isdigit()

    def line(cells: Sequence[str]) -> str:
        out = [c.rjust(w) if numeric(c) else c.ljust(w) for c, w in zip(cells, widths, strict=True)]
        return "  ".join(out).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


# --------------------------------------------------------------------------- the stack


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Target:
    env: dict[str, str]  # the app settings that point at the stack
    api: str  # the counting host's base URL, ending in /api
    operator_token: str


class CountingHost:
    """``python -m devtools`` serving ``benchmarks.counting_app:app`` against ``env``,
    timers off, in its own process group; it exits with this process (``--parent-pid``)."""

    def __init__(self, env: Mapping[str, str], log_dir: Path, port: int | None = None) -> None:
        self.env = dict(env)
        self.port = port or free_port()
        self.log_path = log_dir / "bench-host.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self, timeout: float = 60) -> CountingHost:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            host_command(
                "127.0.0.1",
                self.port,
                REPO,
                "--app",
                "benchmarks.counting_app:app",
                "--no-timers",
                # One log line per request costs the host CPU the benchmark is measuring.
                "--log-level",
                "WARNING",
            ),
            cwd=REPO,
            env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise BenchError(f"the benchmark host exited; see {self.log_path}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.api}/health", timeout=5).status_code == 200:
                    return self
            time.sleep(0.2)
        self.stop()
        raise BenchError(f"the benchmark host was not healthy within {timeout:.0f} s")

    def stop(self, grace: float = 5.0) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(grace)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> CountingHost:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def external_env(token: str) -> dict[str, str]:
    """The app settings of an already-running stack named by the FLEET_*_PORT variables."""
    env = local_stack_env(
        cosmos_port=int(os.environ.get("FLEET_COSMOS_PORT", "8081")),
        blob_port=int(os.environ.get("FLEET_BLOB_PORT", "10000")),
        queue_port=int(os.environ.get("FLEET_QUEUE_PORT", "10001")),
        table_port=int(os.environ.get("FLEET_TABLE_PORT", "10002")),
    )
    env["FLEET_OPERATOR_TOKENS"] = f"sha256:{hashlib.sha256(token.encode()).hexdigest()}"
    return env


@contextmanager
def stack_target(external: bool, say: Callable[[str], None]) -> Iterator[Target]:
    """Azurite and the Cosmos emulator (a fresh pair on free ports, or the running ones named
    by FLEET_*_PORT and FLEET_OPERATOR_TOKEN), and a counting host of our own in front of
    them. Everything started here is stopped on exit, whatever happens."""
    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as scratch:
        if external:
            token = os.environ.get("FLEET_OPERATOR_TOKEN")
            if not token:
                raise BenchError("--external needs the stack's token in FLEET_OPERATOR_TOKEN")
            env = external_env(token)
            say("starting the benchmark host against the running emulators")
            with CountingHost(env, Path(scratch)) as host:
                yield Target(env=env, api=host.api, operator_token=token)
            return
        from devtools.stack import LocalStack, StackConfig

        config = StackConfig(
            cosmos_port=free_port(),
            blob_port=free_port(),
            queue_port=free_port(),
            table_port=free_port(),
            data_dir=Path(scratch) / "azurite",
            log_dir=Path(scratch) / "logs",
            with_host=False,
            repo_root=REPO,
            operator_token="flo_" + secrets.token_urlsafe(32),
        )
        stack = LocalStack(config, echo=lambda line: say(f"  stack: {line}"))
        say("starting a local stack on free ports (Azurite, the Cosmos emulator, the host)")
        stack.start(timeout=120)
        try:
            env = stack.env()
            with CountingHost(env, Path(scratch) / "logs") as host:
                say(f"  stack: benchmark host (timers off) at {host.api}, pid {host.pid}")
                yield Target(env=env, api=host.api, operator_token=stack.operator_token)
        finally:
            say("stopping the local stack")
            stack.stop()


# --------------------------------------------------------------------------- the machine


def machine() -> dict[str, Any]:
    """Where and when this ran: cores, RAM, Python, platform, commit."""
    commit = "unknown"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
        commit += "+dirty" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        pass
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "ram_gb": _ram_gb(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "commit": commit,
    }


def _ram_gb() -> float | None:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None
    return round(pages * size / 2**30, 1)


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return None


def machine_line(info: Mapping[str, Any]) -> str:
    return (
        f"{info['date']} - {info['nproc']} cores ({info.get('cpu_model') or 'unknown CPU'}), "
        f"{info.get('ram_gb')} GB RAM, Python {info['python']}, commit {info['commit']}"
    )


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- running a part


class PartResult(Protocol):
    """What one benchmark measured: its own tables, its rows of the combined table, its JSON."""

    name: str  # the JSON file's stem: claim_storm, dispatch_latency, scale_curve, idle_cost

    def report(self, info: Mapping[str, Any]) -> str: ...

    def summary(self) -> list[tuple[str, str]]: ...  # (figure, value) rows

    def payload(self, info: Mapping[str, Any]) -> dict[str, Any]: ...


Measure = Callable[[Target, Any, Callable[[str], None]], PartResult]


def add_common_arguments(p: Any, default_out: Path) -> None:
    p.add_argument(
        "--external",
        action="store_true",
        help="use the running emulators named by FLEET_*_PORT and FLEET_OPERATOR_TOKEN "
        "(a benchmark host of our own is still started in front of them)",
    )
    p.add_argument("--out", type=Path, default=default_out, help=f"JSON ({default_out})")


def part_payload(
    name: str, info: Mapping[str, Any], config: Mapping[str, Any], **figures: Any
) -> dict[str, Any]:
    """A part's JSON: its name, the machine, its configuration, then its figures."""
    return {"benchmark": name, "machine": dict(info), "config": dict(config), **figures}


def on_stack(external: bool, work: Callable[[Target], None]) -> int:
    """Run ``work`` against a stack (``stack_target``), stopped whatever happens. Returns 0,
    1 when a benchmark could not measure (``BenchError``), 130 on Ctrl-C or SIGTERM."""
    interrupt_on_signals()
    try:
        with stack_target(external, say) as target:
            work(target)
    except KeyboardInterrupt:
        say("interrupted: the stack was stopped")
        return 130
    except BenchError as exc:
        say(f"bench failed: {exc}")
        return 1
    return 0


def run_standalone(parsed: Any, measure: Measure) -> int:
    """Run one part on its own stack: print its tables, write its JSON."""
    began = time.perf_counter()
    results: list[PartResult] = []
    code = on_stack(parsed.external, lambda target: results.append(measure(target, parsed, say)))
    if code:
        return code
    info = machine()
    info["wall_seconds"] = round(time.perf_counter() - began, 1)
    print(results[0].report(info))
    write_json(parsed.out, results[0].payload(info))
    print(f"JSON: {parsed.out} (wall time {info['wall_seconds']} s)")
    return 0


def positive_sizes(text: str) -> list[int]:
    """``"1,8,32"`` -> ``[1, 8, 32]`` (an argparse type)."""
    import argparse

    try:
        sizes = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError("sizes must be positive")
    return sizes


def seed_jobs(
    settings: Any, product: str, count: int, *, threads: int = 8, prefix: str = "seed"
) -> list[str]:
    """Submit ``count`` jobs straight through ``Coordinator.submit`` over the Azure adapters
    (the handler's own call, without HTTP). One thing differs from a real submit: the fleet
    listing of the unroutable check is read once, not once per job (``_SeedingCoordinator``).
    Every submit queries the product's factories, and the emulator answers each query by
    copying every document of the container, so seeding 10,000 jobs the real way grows
    quadratically (it had not finished after 15 minutes). Returns the job ids."""
    from concurrent.futures import ThreadPoolExecutor

    from fleet.domain.manifest import parse_json
    from fleet.store.azure import azure_stores

    # Two threads missing the fleet cache at once both read it and store the same list.
    coordinator = _SeedingCoordinator(azure_stores(settings, ensure=False))

    def one(n: int) -> str:
        job, _ = coordinator.submit(product, parse_json(job_fields(f"{prefix} {n}")), "bench")
        return job.id

    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(one, range(count)))


class _SeedingCoordinator(Coordinator):
    """A coordinator whose fleet listing is read once per product (seeding only).

    The submit's unroutable check asks its ``Products`` part (``known_fleet``, which confirms
    "unroutable" with a fresh listing every time), not the coordinator's front: the listing
    is remembered on that part."""

    def __init__(self, stores: Stores) -> None:
        super().__init__(stores)
        fleets: dict[str, list[FactoryView]] = {}
        listing = self._products.factory_views

        def factory_views(
            product: str, factories: list[Factory] | None = None
        ) -> list[FactoryView]:
            if factories is not None:
                return listing(product, factories)
            if product not in fleets:
                fleets[product] = listing(product)
            return fleets[product]

        self._products.factory_views = factory_views  # type: ignore[method-assign]
